"""A run folder as one object: its settings, its claim while a run writes, its files."""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from archsim.cache import CacheStore, atomic_write_text, check_cache
from archsim.errors import ArchsimError, ParameterError, one_line
from archsim.runs.settings import RunSettings
from archsim.transfer import PROVENANCE

RUN_LOCK = ".archsim.lock"
"""Held in a run folder while a run writes into it (:meth:`RunFolder.claim`)."""
RUN_FILES = ("sat.csv", "pairs.csv", "models.csv", "cards.csv", "cache_entries.txt", "config.json")
"""The files of a run's results; ``config.json``, written last, marks a complete run."""


class RunResults(Protocol):
    """What :meth:`RunFolder.write` writes (a :class:`archsim.runs.SatRun`)."""

    sat: pd.DataFrame
    pairs: pd.DataFrame
    models: pd.DataFrame
    cards: pd.DataFrame
    config: dict[str, Any]
    cache_used: set[tuple[str, str]]

    @property
    def timings(self) -> pd.DataFrame | None: ...


class RunFolder:
    """The folder of one run (``archsim run --out``): read its settings, claim it, write its results.

    Parameters
    ----------
    path : str or Path
        The folder. Reading a property of a folder that holds no finished run is a
        one-line error naming it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @cached_property
    def config(self) -> dict[str, Any]:
        """The whole ``config.json`` of the finished run."""
        try:
            config = json.loads((self.path / "config.json").read_text())
            config["settings"]  # noqa: B018 - a config.json without settings is not a run's
        except (OSError, ValueError, KeyError, TypeError):
            raise ParameterError(
                "run_dir",
                f"{{}} {self.path} is not a finished run folder (no readable config.json); give the folder an archsim "
                "run wrote",
            ) from None
        return config

    @property
    def settings(self) -> RunSettings:
        """The settings the run was made with (models, data, attack, seed, ...)."""
        try:
            return RunSettings.from_dict(self.config["settings"])
        except (KeyError, TypeError) as error:
            raise ParameterError(
                "run_dir",
                f"{{}} {self.path}: the settings in its config.json are not a run's ({one_line(error)}); give the "
                "folder an archsim run wrote",
            ) from None

    @property
    def attack_spec(self) -> str:
        """The spec that recreates the run's attack (eps aside)."""
        return self.settings.attack_spec

    @property
    def precision(self) -> str:
        """The precision the run was computed in: work added to it must use the same."""
        return self.settings.precision

    @property
    def views(self) -> str:
        """How the run's models saw its images (:data:`archsim.data.VIEWS`); runs made before own views: shared."""
        return self.settings.views

    def cache(self, cache: CacheStore | str | Path | None = None) -> CacheStore:
        """``cache`` as a store, by default the one the run wrote to."""
        return check_cache(cache, self.config.get("cache"))

    def require_cached(self, store: CacheStore) -> None:
        """One-line error unless every adversarial set and prediction the run used is in ``store``."""
        listed = self.path / "cache_entries.txt"
        if not listed.is_file():
            return  # older run folders list nothing to check; the run then recomputes what is missing
        needed = [line.split("/", 1) for line in listed.read_text().split() if line.split("/", 1)[0] in ("adv", "pred")]
        missing = [entry for entry in needed if not store.contains(*entry)]
        if missing or not needed:
            raise ArchsimError(
                f"{len(missing)} of the {len(needed)} cached adversarial sets and predictions of {self.path} are not "
                f"in {store.root}; "
                "pass --cache where they are, or rerun `archsim run` with the run's settings to recompute them"
            )

    @contextmanager
    def claim(self, settings: RunSettings) -> Iterator[RunFolder]:
        """Hold the folder for one run with ``settings``, from :meth:`guard` to its last file.

        A lock in the folder, which the system releases when the process ends however it
        ends, keeps a second run from writing into it meanwhile: with it held, a folder
        with a ``settings.json`` but no results belongs to no live run and may be claimed anew.
        """
        out = self.path
        if out.exists() and not out.is_dir():
            raise ParameterError("out", f"{out} is a file; choose a folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ParameterError(
                "out", f"cannot make {{}} {out} ({error.strerror}); choose a folder you can write to"
            ) from None
        lock = FileLock(str(out / RUN_LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ParameterError(
                "out", f"{out} is in use by another archsim run; wait for it to end or choose another {{}}"
            ) from None
        try:
            self.guard(settings)
            yield self
        finally:
            lock.release()

    def guard(self, settings: RunSettings) -> None:
        """Refuse a folder that holds results of different settings; claim a free one.

        ``settings.json`` is written before anything is computed, so a run killed at any
        point (even between its output files) can be rerun into the same folder;
        ``config.json``, written last, marks a complete run. A folder whose run wrote
        nothing but its ``settings.json`` (it failed on its input, or was stopped while
        computing: what it computed is in the cache) holds no results and is claimed anew;
        call it under :meth:`claim`, which keeps a live run's folder from being claimed.
        """
        out = self.path
        wanted = json.loads(json.dumps(settings.to_dict()))
        results = [f.name for f in out.iterdir() if f.name in RUN_FILES] if out.is_dir() else []
        for marker in ("config.json", "settings.json"):
            path = out / marker
            if not path.exists() or not results:
                continue
            try:
                existing = json.loads(path.read_text())["settings"]
            except (ValueError, KeyError, TypeError):
                raise ParameterError("out", f"{out} holds an unreadable {marker}; choose another {{}}") from None
            if existing != wanted:
                differing = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
                raise ParameterError(
                    "out",
                    f"{out} holds results of a different configuration (differs in: {', '.join(differing)}); "
                    "choose another {} or remove it",
                )
            return
        if results:
            raise ParameterError(
                "out",
                f"{out} holds {results[0]} of an unknown run (no settings.json); choose another {{}} or remove it",
            )
        atomic_write_text(out / "settings.json", json.dumps({"settings": wanted}, indent=2, sort_keys=True) + "\n")

    def write(self, run: RunResults) -> None:
        """Write the run's tables, the cache entries it used and, last, its ``config.json``."""
        out = self.path
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "sat.csv", run.sat.to_csv(float_format=f"%.{DECIMALS['sat']}f"))
        atomic_write_text(out / "pairs.csv", run.pairs.to_csv(index=False, float_format=f"%.{DECIMALS['pairs']}f"))
        atomic_write_text(out / "models.csv", run.models.to_csv(index=False, float_format=f"%.{DECIMALS['models']}f"))
        atomic_write_text(out / "cards.csv", run.cards.to_csv())
        if run.timings is not None:
            atomic_write_text(out / "timings.csv", run.timings.to_csv(index=False, float_format="%.4g"))
        atomic_write_text(out / "cache_entries.txt", "".join(f"{kind}/{key}\n" for kind, key in sorted(run.cache_used)))
        # config.json last: its presence marks a complete run folder.
        atomic_write_text(out / "config.json", json.dumps(run.config, indent=2, sort_keys=True) + "\n")
        for name in ("config", "sat", "pairs", "models", "cards"):
            self.__dict__.pop(name, None)  # read anew from the files just written

    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's ``sat``, ``pairs``, ``models`` and ``cards`` tables read back value for value: a run's numbers
        are rounded (:func:`rounded`) to the decimals :meth:`write` keeps; text stays text, empty stays empty."""
        return {"sat": self.sat, "pairs": self.pairs, "models": self.models, "cards": self.cards}

    @cached_property
    def sat(self) -> pd.DataFrame:
        """The run's SAT matrix (``sat.csv``)."""
        self.config  # noqa: B018 - a one-line error for a folder without a finished run
        sat = pd.read_csv(self.path / "sat.csv", index_col=0)  # pandas 3 parses floats exactly (round trip)
        sat.index.name = None
        return sat

    @cached_property
    def pairs(self) -> pd.DataFrame:
        """One row per ordered pair of the run's models (``pairs.csv``)."""
        self.config  # noqa: B018 - as above
        return _read_typed(self.path / "pairs.csv", text=("source", "target"))

    @cached_property
    def models(self) -> pd.DataFrame:
        """One row per model: name, spec, fingerprint, accuracy, provenance (``models.csv``)."""
        self.config  # noqa: B018 - as above
        return _read_typed(
            self.path / "models.csv",
            text=("model", "spec", "fingerprint", "family", "architecture", "regime", "hparams", *PROVENANCE),
            whole=("seed",),
        )

    @cached_property
    def cards(self) -> pd.DataFrame:
        """The models' cards, by model name (``cards.csv``)."""
        self.config  # noqa: B018 - as above
        return pd.read_csv(self.path / "cards.csv", index_col=0, dtype=str, keep_default_na=False)


def file_label(spec: str) -> str:
    """``spec`` as a file-name part: letters, digits, '-' and '.' kept, anything else '_'."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in spec)


DECIMALS = {"sat": 9, "pairs": 9, "models": 4}
"""Decimals of the numbers in a run folder's tables (and in a run's tables, rounded to match: :func:`rounded`). SAT
and its intervals keep the same decimals in both tables, so that an interval holds its SAT in either."""


def rounded(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """``frame``'s floating-point columns rounded to the decimals its file keeps, so that a run and the run read back
    from its folder hold the same numbers."""
    floats = frame.select_dtypes("floating").columns
    return frame.assign(**{column: frame[column].round(DECIMALS[table]) for column in floats}) if len(floats) else frame


def _read_typed(path: Path, text: tuple[str, ...], whole: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table whose ``text`` columns are strings (empty ones included), ``whole`` columns nullable integers, and the
    rest numbers, read back exactly."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = {}
    for column in raw.columns:
        values = raw[column]
        if column in text:
            columns[column] = values
        elif column in whole:
            columns[column] = pd.array([int(v) if v else None for v in values], dtype="Int64")
        elif values.isin(["True", "False"]).all() and len(values):
            columns[column] = values == "True"
        else:
            # float() rounds correctly: a value rounded to the file's decimals reads back as itself.
            numbers = [float(v) if v else float("nan") for v in values]
            columns[column] = (
                np.array(numbers, dtype=np.int64)
                if all(v and v.lstrip("-").isdigit() for v in values) and len(values)
                else np.array(numbers)
            )
    return pd.DataFrame(columns, columns=raw.columns)
