"""The digits calibration experiments' fixed yardstick: the teacher's exact dopri5 paths through 64 digits.

``benchmarks/ablate_digits.py`` (the experiment loop) and ``benchmarks/likelihood_gap.py`` (training against
held-out digits) score students against these, computed once per teacher and cached.
"""

import os

import torch

#: Digits scored per split.
NUM_TEST = 64
#: The likelihood grid whose states and divergence integrals the cache keeps (``sigma = k / 8``).
GRID = [k / 8 for k in range(9)]


def cached_reference(teacher, split: str, cache_dir: str):
    """``(data, reference)``: 64 digits of ``split`` (``"test"`` or ``"train"``, dequantisation seed 0) and the
    teacher's dopri5 trajectories through them (exact divergence, states and integrals at ``GRID``), computed once
    and cached in ``cache_dir`` by teacher weights."""
    from ..data import DIGITS_NUM_LEVELS, load_digits_levels, load_test_split
    from ..dequantization import dequantize
    from ..trajectories import load_or_compute_teacher_trajectories, teacher_digest

    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    key = teacher_digest(teacher)
    if split == "test":
        data, _ = load_test_split("digits", NUM_TEST, seed=0)
        name = f"digits_reference_{key}_seed0_n{NUM_TEST}.safetensors"
    else:
        data = dequantize(load_digits_levels("train")[:NUM_TEST], DIGITS_NUM_LEVELS, torch.Generator().manual_seed(0))
        name = f"digits_train_reference_{key}_seed0_n{NUM_TEST}.safetensors"
    reference = load_or_compute_teacher_trajectories(
        os.path.join(cache_dir, name), teacher, data, GRID, dict(teacher=key, data=f"digits {split}[:{NUM_TEST}] seed 0"),
        divergence="exact", generator=torch.Generator().manual_seed(0))
    return data, reference
