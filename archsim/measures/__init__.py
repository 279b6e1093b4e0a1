"""Measures of model similarity computed from a run's predictions."""

from archsim.measures.sat import DEFAULT_EPS_S, SatTables, sat_tables, sat_value

__all__ = ["DEFAULT_EPS_S", "SatTables", "sat_tables", "sat_value"]
