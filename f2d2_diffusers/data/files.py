"""A user's own vectors from ``.npy`` or ``.csv`` files."""

import csv
from pathlib import Path
from typing import List

import numpy as np
import torch


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _read_csv(path: Path) -> np.ndarray:
    """Rows of comma-separated numbers as a ``float64`` array; ``#`` starts a comment (as in ``np.loadtxt``), and blank
    lines are skipped.

    The first row is a header only when none of its cells is a number: a row that is partly text is an error, so that
    a data row with a typo is never dropped as a "header".
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a .csv must hold comma-separated numbers") from None
    rows: List[List[float]] = []
    seen_first = False
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    for number, cells in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        numeric = [_is_number(c) for c in cells]
        if not seen_first and not any(numeric):
            seen_first = True  # a header row: names, no numbers
            continue
        seen_first = True
        if not all(numeric):
            bad = cells[numeric.index(False)]
            raise ValueError(
                f"{path}: row {number} has {bad!r}, which is not a number; every row must be comma-separated numbers "
                "(only a first row without any number is taken as a header)"
            )
        if rows and len(cells) != len(rows[0]):
            raise ValueError(f"{path}: row {number} has {len(cells)} value(s); the rows before it have {len(rows[0])}")
        rows.append([float(c) for c in cells])
    if not rows:
        raise ValueError(f"{path}: no data rows (only a header, comments or blank lines)")
    return np.asarray(rows, dtype=np.float64)


def load_vectors(path) -> torch.Tensor:
    """Vectors from ``path``, shape ``(N, d)``, float32.

    ``.npy``: a 2-D array of real numbers (integer or float; complex is refused). ``.csv``: comma-separated numbers,
    one vector per row, an optional header row (a first row without any number). Errors name the file, and for a
    ``.csv`` the row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: cannot read it as a .npy array ({err})") from None
        if np.iscomplexobj(array):
            raise ValueError(f"{path}: holds complex numbers ({array.dtype}); vectors must be real")
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npy or .csv")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty 2-D array (samples, dims), got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: expected numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    if np.abs(array).max() > np.finfo(np.float32).max:
        raise ValueError(f"{path}: holds values beyond the float32 range (|x| > 3.4e38)")
    return torch.from_numpy(array.astype(np.float32))
