"""A user's own vectors from ``.npy`` or ``.csv`` files."""

from pathlib import Path

import numpy as np
import torch


def load_vectors(path) -> torch.Tensor:
    """Vectors from ``path``, shape ``(N, d)``, float32.

    ``.npy``: a 2-D numeric array. ``.csv``: comma-separated numbers, one vector per row, an optional header row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix == ".csv":
        try:
            array = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError:
            try:
                array = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
            except ValueError as err:
                raise ValueError(f"{path}: every row must be comma-separated numbers ({err})") from None
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .npy or .csv")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{path}: expected a non-empty 2-D array (samples, dims), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: expected numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    return torch.from_numpy(array)
