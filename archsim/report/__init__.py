"""Self-contained HTML report of an analysis (figures embedded, no network needed to open it)."""

from archsim.report.html import render_report

__all__ = ["render_report"]
