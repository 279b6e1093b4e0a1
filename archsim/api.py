"""The Python API in one place: the functions behind every ``archsim`` command, re-exported from where they live.

=====================================  ===============================================
``run_sat``, ``load_run``, ``SatRun``  :mod:`archsim.runs` (one SAT run, its folder)
``RunFolder``                          :mod:`archsim.runs.folder`
``compare_attacks``                    :mod:`archsim.applications.attacks`
``calibrate_radius``                   :mod:`archsim.applications.calibrate`
``compute_measures``                   :mod:`archsim.applications.measures`
``ensembles_on_run``                   :mod:`archsim.applications.ensembles`
``select_models``                      :mod:`archsim.applications.selection`
``add_model``                          :mod:`archsim.applications.newcomer`
``distill``, ``recommend_teachers``    :mod:`archsim.applications.distill`
``checks_on_run``, ``checks_summary``  :mod:`archsim.applications.checks`
``alpha_matrices``                     :mod:`archsim.knowledge.on_run`
``overlap_experiment``,                :mod:`archsim.knowledge.overlap`
``overlap_on_run``
``liang_synthetic``                    :mod:`archsim.knowledge.synthetic`
``analyze``, ``analyze_run``,          :mod:`archsim.report.analyze`
``compare_matrix_files``
``resolve_device``                     :mod:`archsim.hardware`
=====================================  ===============================================
"""

from archsim.applications.attacks import AttackComparison, compare_attacks
from archsim.applications.calibrate import Calibration, calibrate_radius
from archsim.applications.checks import checks_on_run, checks_summary
from archsim.applications.distill import distill, recommend_teachers
from archsim.applications.ensembles import ensembles_on_run
from archsim.applications.measures import compute_measures
from archsim.applications.newcomer import add_model
from archsim.applications.selection import select_models
from archsim.hardware import resolve_device
from archsim.knowledge.on_run import alpha_matrices
from archsim.knowledge.overlap import overlap_experiment, overlap_on_run
from archsim.knowledge.synthetic import liang_synthetic
from archsim.report.analyze import analyze, analyze_run, compare_matrix_files
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
    "add_model",
    "alpha_matrices",
    "analyze",
    "analyze_run",
    "calibrate_radius",
    "checks_on_run",
    "checks_summary",
    "compare_attacks",
    "compare_matrix_files",
    "compute_measures",
    "default_eps",
    "distill",
    "ensembles_on_run",
    "liang_synthetic",
    "load_run",
    "overlap_experiment",
    "overlap_on_run",
    "recommend_teachers",
    "resolve_device",
    "run_sat",
    "select_models",
]
