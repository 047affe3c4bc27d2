"""Uniform dequantisation of discrete data and the bits-per-dimension conversion (``docs/method.md`` section 3).

With ``L`` levels, integer data ``k`` in ``{0, ..., L-1}`` maps to model space by ``y = (k + u) / L``,
``u ~ U[0, 1)^d`` and ``z = 2 y - 1`` in ``[-1, 1]``. Then
``log P(k) >= log p_z(z) + d log 2 - d log L`` and ``bits_per_dim = -log P(k) / (d ln 2)``.
"""

import math
from typing import Optional

import numpy as np
import torch


def check_num_levels(num_levels, name: str = "num_levels", allow_none: bool = True) -> Optional[int]:
    """``num_levels`` as an ``int`` >= 2, or ``None`` (continuous data) where ``allow_none``; else a ``ValueError``."""
    if num_levels is None and allow_none:
        return None
    if isinstance(num_levels, (bool, np.bool_)) or not isinstance(num_levels, (int, np.integer)) or num_levels < 2:
        raise ValueError(f"{name} must be an integer >= 2{' or None' if allow_none else ''}, got {num_levels!r}")
    return int(num_levels)


class NonFiniteError(ValueError):
    """A value that must be finite (an input, a network output, a log-density) is NaN or infinite."""


def check_finite(values: torch.Tensor, name: str, hint: str = "") -> None:
    """Raise a :class:`NonFiniteError` naming ``name`` (and the samples at fault) when ``values`` hold NaN or inf.

    ``values`` has shape ``(batch, ...)``; ``hint`` is appended to the message (what to do about it).
    """
    finite = torch.isfinite(values)
    if finite.all():
        return
    bad = (~finite).reshape(finite.shape[0], -1).any(dim=1).nonzero().flatten().tolist() if finite.ndim else []
    where = f" (sample{'s' if len(bad) > 1 else ''} {bad[:10]}{' ...' if len(bad) > 10 else ''})" if bad else ""
    raise NonFiniteError(f"{name} contains NaN or infinite values{where}{hint}")


#: Appended to the error for a non-finite log-likelihood: its usual cause and what to do.
OVERFLOW_HINT = (
    ": the input is probably far outside the range the model was trained on (images in [-1, 1], vectors of the "
    "training data's scale), where the network overflows"
)


def pixels_to_levels(pixels, num_levels: int, max_value: int = 255):
    """Pixel values ``0..max_value`` (255 for 8-bit, 65535 for 16-bit images) onto ``num_levels`` grey levels
    ``0..L-1`` (nearest level, ``rint(p * (L - 1) / max_value)``), as ``int64``.

    Accepts a numpy array or a torch tensor and returns the same kind; ``num_levels = max_value + 1`` is the identity.
    """
    if isinstance(pixels, torch.Tensor):
        return torch.from_numpy(pixels_to_levels(pixels.cpu().numpy(), num_levels, max_value))
    num_levels = check_num_levels(num_levels, allow_none=False)
    if isinstance(max_value, (bool, np.bool_)) or not isinstance(max_value, (int, np.integer)) or max_value < 1:
        raise ValueError(f"max_value must be a positive integer (255: 8-bit pixels, 65535: 16-bit), got {max_value!r}")
    array = np.asarray(pixels)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"pixels must be integers or floats, got dtype {array.dtype}")
    if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= max_value):
        raise ValueError(f"pixels must lie in [0, {max_value}], got values in [{array.min()}, {array.max()}]")
    if num_levels == max_value + 1:
        return array.astype(np.int64)
    return np.rint(array.astype(np.float64) * (num_levels - 1) / max_value).astype(np.int64)


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
    if not isinstance(levels, torch.Tensor):
        raise TypeError(f"levels must be a torch.Tensor of integer grey levels, got {type(levels).__name__}")
    if levels.dtype == torch.bool or levels.is_complex():
        raise TypeError(f"levels must hold integer grey levels, got dtype {levels.dtype}")
    num_levels = check_num_levels(num_levels, allow_none=False)
    if levels.ndim < 1 or levels.numel() == 0:
        raise ValueError(f"levels must have shape (batch, *dims) with at least one value, got {tuple(levels.shape)}")
    if levels.is_floating_point():
        if not torch.isfinite(levels).all() or not torch.equal(levels, levels.round()):
            raise ValueError("dequantize expects integer levels; got non-integer, NaN or infinite values in levels")
    elif levels.dtype != torch.int64:
        levels = levels.to(torch.int64)  # min/max have no kernels for uint16/uint32; the values are unchanged
    low, high = int(levels.min()), int(levels.max())
    if low < 0 or high >= num_levels:
        raise ValueError(f"levels must lie in [0, {num_levels - 1}] for num_levels={num_levels}; got [{low}, {high}]")
    generators = generator if isinstance(generator, (list, tuple)) else [generator]
    if not all(g is None or isinstance(g, torch.Generator) for g in generators):
        raise TypeError(f"generator must be a torch.Generator or a list of one per sample, got {generator!r}")
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
    num_levels = check_num_levels(num_levels)
    if num_levels is None:
        return log_prob
    return log_prob + num_dims * (math.log(2.0) - math.log(num_levels))


def bits_per_dim(log_prob: torch.Tensor, num_dims: int, num_levels: Optional[int] = None) -> torch.Tensor:
    """Bits per dimension ``-log P / (d ln 2)`` of a model-space log-density ``log_prob`` (nats per sample).

    With ``num_levels`` the value is on the data's grey-level scale (dequantisation offset included); without it,
    the continuous density's bits per dimension. A NaN or infinite ``log_prob`` is an error, not a number of bits.
    """
    if not isinstance(log_prob, torch.Tensor) or not log_prob.is_floating_point():
        raise TypeError(f"log_prob must be a floating-point torch.Tensor, got {getattr(log_prob, 'dtype', type(log_prob).__name__)}")
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    check_finite(log_prob, "log_prob")
    return -discrete_log_prob(log_prob, num_dims, num_levels) / (num_dims * math.log(2.0))
