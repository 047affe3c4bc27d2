"""Sample-quality scores the benchmarks share (``bench_sampling``, ``bench_meanflow``): the digits classifier's
Frechet distances and the 2-D energy distance / MMD, and the teacher's saved Euler scheduler."""

import os

import torch

from ..data import load_test_split
from . import metrics

#: The score each data set's target and curve lead with.
PRIMARY = {"digits": "fd_test", "checkerboard": "energy_distance"}
#: Seed of the 2,000 fresh reference points for 2-D scores (the train/test splits use seeds 0 and 1).
REFERENCE_SEED = 2024
REFERENCE_POINTS = 2000
MMD_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0)


def teacher_scheduler(teacher_path: str):
    """The teacher's saved ``FlowMatchEulerDiscreteScheduler`` (``<teacher>/scheduler``), or ``None`` (a fresh one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = os.path.join(teacher_path, "scheduler")
    return FlowMatchEulerDiscreteScheduler.from_pretrained(folder) if os.path.isdir(folder) else None


def make_scorer(dataset: str, classifier_path: str, num_samples: int, reference_points: int = REFERENCE_POINTS):
    """``(score(samples) -> dict, floor dict, reference description)`` for one data set."""
    if dataset == "digits":
        from .. import dequantize
        from .digits_classifier import DigitsClassifier
        from ..data import DIGITS_NUM_LEVELS, load_digits_levels

        clf = DigitsClassifier.from_pretrained(classifier_path).eval()

        def features(x):
            with torch.no_grad():
                return torch.cat([clf.features(b.clamp(-1, 1)) for b in x.split(512)])

        test, _ = load_test_split("digits", 0, seed=0)
        train = dequantize(load_digits_levels("train"), DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(0))
        f_test, f_train = features(test), features(train)

        def score(x):
            f = features(x)
            return dict(fd_test=metrics.frechet_distance(f, f_test), fd_train=metrics.frechet_distance(f, f_train))

        # Real digits of the other split (train scored against test, i.e. test against train: one number).
        real = metrics.frechet_distance(f_train, f_test)
        floor = dict(fd_test=real, fd_train=real)
        return score, floor, f"{classifier_path} features; test split 297 images, train split 1500 (dequantised, seed 0)"

    from ..data import sample_toy

    reference = sample_toy(dataset, reference_points, torch.Generator().manual_seed(REFERENCE_SEED))

    def score(x):
        return dict(energy_distance=metrics.energy_distance(x, reference),
                    mmd=metrics.mmd_rbf(x, reference, bandwidths=MMD_BANDWIDTHS))

    test, _ = load_test_split(dataset, num_samples)  # as many test points as samples: the same finite-sample bias
    return score, score(test), f"{reference_points} fresh {dataset} points (sample_toy seed {REFERENCE_SEED}); MMD^2 biased, bandwidths {list(MMD_BANDWIDTHS)}"
