"""Runs: one SAT run computed (:func:`run_sat`), and the folder that holds it (:class:`RunFolder`)."""

from archsim.runs.folder import RUN_FILES, RUN_LOCK, RunFolder, file_label
from archsim.runs.sat import (
    DIGITS_EPS,
    IMAGENET_EPS,
    SatRun,
    default_eps,
    describe,
    load_run,
    run_like,
    run_sat,
    seed_noise,
    versions,
)
from archsim.runs.settings import RunSettings, attack_spec

__all__ = [
    "DIGITS_EPS",
    "IMAGENET_EPS",
    "RUN_FILES",
    "RUN_LOCK",
    "RunFolder",
    "RunSettings",
    "SatRun",
    "attack_spec",
    "default_eps",
    "describe",
    "file_label",
    "load_run",
    "run_like",
    "run_sat",
    "seed_noise",
    "versions",
]
