"""The Python API in one place: the functions behind every ``archsim`` command, re-exported from where they live.

=====================================  ===============================================
``run_sat``, ``load_run``, ``SatRun``  :mod:`archsim.runs` (one SAT run, its folder)
``RunFolder``                          :mod:`archsim.runs.folder`
``compare_attacks``                    :mod:`archsim.applications.attacks`
``calibrate_radius``                   :mod:`archsim.applications.calibrate`
``compute_measures``                   :mod:`archsim.applications.measures`
``analyze``, ``analyze_run``           :mod:`archsim.report.analyze`
``resolve_device``                     :mod:`archsim.hardware`
=====================================  ===============================================
"""

from archsim.applications.attacks import AttackComparison, compare_attacks
from archsim.applications.calibrate import Calibration, calibrate_radius
from archsim.applications.measures import compute_measures
from archsim.hardware import resolve_device
from archsim.report.analyze import analyze, analyze_run
from archsim.runs import (
    DIGITS_EPS,
    IMAGENET_EPS,
    RunFolder,
    SatRun,
    default_eps,
    load_run,
    run_sat,
)

__all__ = [
    "AttackComparison",
    "Calibration",
    "DIGITS_EPS",
    "IMAGENET_EPS",
    "RunFolder",
    "SatRun",
    "analyze",
    "analyze_run",
    "calibrate_radius",
    "compare_attacks",
    "compute_measures",
    "default_eps",
    "load_run",
    "resolve_device",
    "run_sat",
]
