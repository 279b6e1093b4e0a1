"""Reading and validating a SAT matrix in the ``sat.csv`` / ``SAT_release.csv`` layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from archsim.errors import ArchsimError, ParameterError


def read_matrix(path: str | Path, tolerance: float = 1e-6, allow_nan: bool = False) -> pd.DataFrame:
    """A square, symmetric, finite matrix with identical row and column names; ``allow_nan`` lets
    NaN entries through (a run's pairs without a common correctly classified image)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(
            "matrix", f"matrix file {path} {'is a folder' if path.is_dir() else 'does not exist'}; pass {{}} a sat.csv"
        )
    try:
        frame = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ArchsimError(
            f"cannot read matrix {path} ({type(error).__name__}); it must be a CSV like sat.csv"
        ) from None
    frame.index = frame.index.astype(str)
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    if frame.shape[1] <= 1 and ";" in header and "," not in header:
        raise ArchsimError(
            f"matrix {path} is separated by ';'; save it with commas (pandas: to_csv(sep=','), the sat.csv layout)"
        )
    duplicated = frame.index[frame.index.duplicated()]
    if len(duplicated):
        raise ArchsimError(f"matrix {path} lists {duplicated[0]!r} twice; each model once, in rows and columns alike")
    if frame.shape[0] != frame.shape[1]:
        raise ArchsimError(f"matrix {path} is {frame.shape[0]} x {frame.shape[1]}, not square; use the sat.csv layout")
    if frame.shape[0] < 2:
        raise ArchsimError(
            f"matrix {path} lists {frame.shape[0]} model(s); a SAT matrix needs at least 2 (the sat.csv layout)"
        )
    if list(frame.index) != list(frame.columns):
        raise ArchsimError(f"matrix {path}: row names differ from column names; both must list the models in one order")
    try:
        values = frame.to_numpy(dtype=float)
    except ValueError:
        raise ArchsimError(f"matrix {path} holds non-numeric entries; every cell must be a number") from None
    if not (np.isfinite(values) | (allow_nan & np.isnan(values))).all():
        raise ArchsimError(f"matrix {path} holds NaN or infinite entries; recompute or drop those models")
    gap = np.abs(values - values.T)
    if (gap > tolerance).any() or (np.isnan(values) != np.isnan(values.T)).any():
        raise ArchsimError(
            f"matrix {path} is not symmetric (largest gap {np.nanmax(gap):.3g}), but a SAT matrix is; "
            "give the symmetric sat.csv of a run, not a one-sided matrix"
        )
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)
