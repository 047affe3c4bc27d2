"""The held-out splits every evaluation scores: one definition for training, benchmarks, the quickstart and the Space.

Digits: scikit-learn's ``load_digits()`` images from index ``DIGITS_TEST_START`` (1500) on, never trained on,
dequantised with one seeded noise draw shared by every method. 2-D toys: fresh points from the toy's test seed.
"""

from typing import Optional, Tuple

import torch

from ..dequantization import dequantize
from .digits import DIGITS_NUM_LEVELS, load_digits_levels
from .toys import TOY_DATASETS, load_toy

#: Data sets that ship with the package (``--dataset`` of the training scripts and benchmarks).
EMBEDDED_DATASETS = ("digits",) + TOY_DATASETS
#: Points in a toy's test split unless a count is given.
TOY_TEST_SIZE = 2000


def load_test_split(dataset: str, num_samples: int = 0, seed: int = 0) -> Tuple[torch.Tensor, Optional[int]]:
    """Model-space test data ``(N, *dims)`` of an embedded data set and its grey levels (``None``: continuous).

    ``num_samples = 0`` takes the whole split (toys: ``TOY_TEST_SIZE`` points); ``seed`` fixes the dequantisation
    noise of discrete data, so two calls with the same seed score exactly the same points.
    """
    if dataset == "digits":
        levels = load_digits_levels("test")
        levels = levels[:num_samples] if num_samples else levels
        return dequantize(levels, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(seed)), DIGITS_NUM_LEVELS
    if dataset in TOY_DATASETS:
        return load_toy(dataset, "test", num_samples or TOY_TEST_SIZE), None
    raise ValueError(f"no embedded test split for {dataset!r}; choose from {EMBEDDED_DATASETS}")
