"""Uniform dequantisation of discrete data and the bits-per-dimension conversion (``docs/method.md`` section 3).

With ``L`` levels, integer data ``k`` in ``{0, ..., L-1}`` maps to model space by ``y = (k + u) / L``,
``u ~ U[0, 1)^d`` and ``z = 2 y - 1`` in ``[-1, 1]``. Then
``log P(k) >= log p_z(z) + d log 2 - d log L`` and ``bits_per_dim = -log P(k) / (d ln 2)``.
"""

import math
from typing import Optional

import numpy as np
import torch


def pixels_to_levels(pixels, num_levels: int):
    """8-bit pixel values ``0..255`` onto ``num_levels`` grey levels ``0..L-1`` (nearest level), as ``int64``.

    Accepts a numpy array or a torch tensor and returns the same kind; ``num_levels = 256`` is the identity.
    """
    if isinstance(pixels, torch.Tensor):
        return torch.from_numpy(pixels_to_levels(pixels.cpu().numpy(), num_levels))
    array = np.asarray(pixels)
    if num_levels == 256:
        return array.astype(np.int64)
    return np.rint(array.astype(np.float64) * (num_levels - 1) / 255.0).astype(np.int64)


def standard_normal_log_prob(sample: torch.Tensor) -> torch.Tensor:
    """``log N(sample; 0, I)`` per sample, in nats, shape ``(batch,)``."""
    flat = sample.reshape(sample.shape[0], -1)
    return -0.5 * (flat**2).sum(dim=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def levels_to_model_space(levels: torch.Tensor, num_levels: int, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Map integer levels to ``[-1, 1]``: ``2 (k + u) / L - 1``. ``noise=None`` uses bin centres (``u = 1/2``)."""
    levels = levels.to(torch.float32) if not levels.is_floating_point() else levels
    u = 0.5 if noise is None else noise
    return 2.0 * (levels + u) / num_levels - 1.0


def dequantize(levels: torch.Tensor, num_levels: int, generator=None) -> torch.Tensor:
    """Uniformly dequantise integer levels ``k`` (shape ``(batch, *dims)``, values ``0..L-1``) into ``[-1, 1]``.

    ``generator`` is a ``torch.Generator`` or a list with one per sample (each sample's noise then depends only
    on its own generator, as with diffusers' ``randn_tensor``).
    """
    if levels.is_floating_point() and not torch.equal(levels, levels.round()):
        raise ValueError("dequantize expects integer levels; got non-integer values")
    low, high = int(levels.min()), int(levels.max())
    if low < 0 or high >= num_levels:
        raise ValueError(f"levels must lie in [0, {num_levels - 1}] for num_levels={num_levels}; got [{low}, {high}]")
    if isinstance(generator, (list, tuple)):
        if len(generator) != levels.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {levels.shape[0]}")
        noise = torch.stack([torch.rand(levels.shape[1:], generator=g, device=levels.device) for g in generator])
    else:
        noise = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=torch.float32)
    return levels_to_model_space(levels, num_levels, noise)


def discrete_log_prob(log_prob: torch.Tensor, num_dims: int, num_levels: Optional[int]) -> torch.Tensor:
    """Lower bound on ``log P(k)`` from the model-space density of its dequantised point (nats).

    ``num_levels=None`` means continuous data: the model-space log-density is returned unchanged.
    """
    if num_levels is None:
        return log_prob
    return log_prob + num_dims * (math.log(2.0) - math.log(num_levels))


def bits_per_dim(log_prob: torch.Tensor, num_dims: int, num_levels: Optional[int] = None) -> torch.Tensor:
    """Bits per dimension ``-log P / (d ln 2)`` of a model-space log-density ``log_prob`` (nats per sample).

    With ``num_levels`` the value is on the data's grey-level scale (dequantisation offset included); without it,
    the continuous density's bits per dimension.
    """
    return -discrete_log_prob(log_prob, num_dims, num_levels) / (num_dims * math.log(2.0))
