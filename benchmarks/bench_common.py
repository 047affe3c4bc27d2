"""What the benchmark scripts share: the test splits, the shipped checkpoints and timing.

Test splits (the training issue's definition): digits = scikit-learn's ``load_digits()`` images from index 1500 on
(297 images, never trained on), dequantised with one seeded noise draw shared by every method; 2-D toys = 2,000
fresh points from the fixed test seed.
"""

import os
import time
from typing import Callable, Optional, Tuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")
#: Shipped (student, teacher) checkpoint folders per benchmark data set.
SHIPPED = {
    "digits": (os.path.join(REPO_ROOT, "checkpoints", "f2d2-digits"), os.path.join(REPO_ROOT, "checkpoints", "fm-digits")),
    "checkerboard": (
        os.path.join(REPO_ROOT, "checkpoints", "f2d2-checkerboard"),
        os.path.join(REPO_ROOT, "checkpoints", "fm-checkerboard"),
    ),
}


def load_test_data(dataset: str, num_samples: int = 0, seed: int = 0) -> Tuple[torch.Tensor, Optional[int]]:
    """Model-space test data ``(N, *dims)`` and its grey levels (``None`` for continuous data).

    ``num_samples`` = 0 takes the whole split; ``seed`` fixes the dequantisation noise of discrete data.
    """
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels, load_toy

    if dataset == "digits":
        levels = load_digits_levels("test")
        levels = levels[:num_samples] if num_samples else levels
        return dequantize(levels, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(seed)), DIGITS_NUM_LEVELS
    return load_toy(dataset, "test", num_samples or 2000), None


def require_folders(*paths: str) -> None:
    """Exit with one clear line when a checkpoint folder is missing."""
    for path in paths:
        if not os.path.isdir(path):
            raise SystemExit(f"error: no checkpoint folder at {path}")


def timed(fn: Callable):
    """``(fn(), wall seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


#: The shipped digits classifier (``benchmarks/train_digits_classifier.py``): its features score generated digits.
DIGITS_CLASSIFIER = os.path.join(REPO_ROOT, "checkpoints", "digits-classifier")


def write_json(path: str, payload: dict) -> None:
    """Write a benchmark report (indented JSON), creating the folder if needed."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def score(log_prob: torch.Tensor, num_dims: int, num_levels: Optional[int]) -> torch.Tensor:
    """Per-sample score in a report's unit (:func:`f2d2_diffusers.calibration.likelihood_score`)."""
    from f2d2_diffusers.calibration import likelihood_score

    return likelihood_score(log_prob, num_dims, num_levels)


def score_unit(num_levels: Optional[int]) -> str:
    """The unit :func:`score` reports in."""
    from f2d2_diffusers.calibration import likelihood_score_unit

    return likelihood_score_unit(num_levels)
