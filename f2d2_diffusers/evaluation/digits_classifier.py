"""``DigitsClassifier``: a tiny CNN on 8x8 digits in model space, the feature extractor of the sample-quality benchmark.

It plays the role Inception plays for FID: ``features`` (the penultimate layer) feed
:func:`f2d2_diffusers.metrics.frechet_distance`. Inputs are model-space images ``(B, 1, 8, 8)`` in ``[-1, 1]``
(dequantised 17-level digits, or generated samples); ``benchmarks/train_digits_classifier.py`` trains it.
"""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import ConfigMixin, register_to_config


class DigitsClassifier(ModelMixin, ConfigMixin):
    r"""
    Two 3x3 convolutions (the second with stride 2: 8x8 -> 4x4), a hidden fully-connected layer of ``feature_dim``
    units (the features) and a linear read-out to ``num_classes`` logits.

    Parameters:
        in_channels (`int`, defaults to 1): channels of the input.
        sample_size (`int`, defaults to 8): height and width of the input.
        channels (`Tuple[int, int]`, defaults to (16, 32)): widths of the two convolutions.
        feature_dim (`int`, defaults to 64): width of the penultimate layer (``features``).
        num_classes (`int`, defaults to 10): number of logits.
        dropout (`float`, defaults to 0.2): dropout before the read-out (training only).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        sample_size: int = 8,
        channels: Tuple[int, int] = (16, 32),
        feature_dim: int = 64,
        num_classes: int = 10,
        dropout: float = 0.2,
    ):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        reduced = (sample_size + 1) // 2
        self.fc = nn.Linear(c2 * reduced * reduced, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def _check_sample(self, sample: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.sample_size
        if sample.ndim != 4 or tuple(sample.shape[1:]) != (c, s, s):
            raise ValueError(f"expected a sample of shape (batch, {c}, {s}, {s}), got {tuple(sample.shape)}")

    def features(self, sample: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape ``(B, feature_dim)`` (non-negative: after a ReLU), from ``(B, C, H, W)``
        model-space input in ``[-1, 1]``."""
        self._check_sample(sample)
        h = F.relu(self.conv1(sample.to(self.dtype)))
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        """Class logits, shape ``(B, num_classes)``, from ``(B, C, H, W)`` model-space input in ``[-1, 1]``."""
        return self.head(self.drop(self.features(sample)))
