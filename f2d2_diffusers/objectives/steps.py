"""Where the distillation objectives train the map: start ``sigma`` and signed step ``h`` (``docs/method.md`` 5.2, 5.4).

Every draw keeps the whole step inside ``[0, 1]``: starts in ``[|h|, 1]`` when sampling (``h < 0``), in
``[0, 1 - |h|]`` when encoding (``h > 0``).
"""

from typing import Optional, Sequence

import torch

DIRECTIONS = ("both", "forward")
#: Distributions of ``(sigma, h)`` for MeanFlow-F2D2 (``docs/method.md`` 5.4).
STEP_DISTRIBUTIONS = ("dyadic", "logit_normal", "uniform")


def check_directions(directions: str) -> None:
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")


def step_signs(n: int, directions: str, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """``+-1`` per draw: both signs with equal odds for ``"both"``, ``-1`` (sampling) only for ``"forward"``."""
    check_directions(directions)
    if directions == "forward":
        return -torch.ones(n, device=device, dtype=dtype)
    return torch.randint(0, 2, (n,), generator=generator, device=device).to(dtype) * 2 - 1


def check_level_weights(level_weights: Sequence[float], max_level: int) -> torch.Tensor:
    """``level_weights`` as a float tensor, or a ``ValueError`` naming what is wrong with them."""
    weights = torch.as_tensor([float(w) for w in level_weights], dtype=torch.float64)
    if weights.numel() != max_level + 1:
        raise ValueError(f"level_weights needs one weight per level 0..{max_level} ({max_level + 1}), got {weights.numel()}")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"level_weights must be finite, non-negative and not all zero, got {level_weights}")
    return weights


def dyadic_steps(
    n: int,
    max_level: int,
    directions: str,
    anchor_starts_to_grid: bool = False,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype=torch.float32,
    level_weights: Optional[Sequence[float]] = None,
):
    """``(sigma, h, level)``: ``|h| = 2^-level`` with ``level`` in ``0..max_level``, uniform or drawn with
    ``level_weights`` (``max_level + 1`` non-negative weights, level 0 first: the 1-step map).

    ``anchor_starts_to_grid`` puts starts on multiples of ``|h|``, the points the uniform few-step grids visit.
    The shortcut objective's ``grid_shift`` reads these values as warped time ``tau`` and maps them to ``sigma``
    (``docs/method.md`` 5.7), so the starts are then the points of the shifted grids.
    """
    if level_weights is None:
        levels = torch.randint(0, max_level + 1, (n,), generator=generator, device=device)
    else:
        weights = check_level_weights(level_weights, max_level)
        draw_device = generator.device if generator is not None else device
        levels = torch.multinomial(weights.to(draw_device), n, replacement=True, generator=generator).to(device)
    size = torch.pow(2.0, -levels.to(dtype))
    sign = step_signs(n, directions, generator, device, dtype)
    low = torch.where(sign < 0, size, torch.zeros_like(size))
    uniform = torch.rand(n, generator=generator, device=device, dtype=dtype)
    if anchor_starts_to_grid:
        segments = torch.round(1.0 / size)
        sigma = low + size * torch.floor(uniform * segments).clamp(max=segments - 1)
    else:
        sigma = low + uniform * (1.0 - size)
    return sigma, sign * size, levels


def continuous_steps(
    n: int,
    distribution: str,
    directions: str,
    logit_normal_mean: float = -0.4,
    logit_normal_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype=torch.float32,
):
    """``(sigma, h)`` from two independent times ``a, b`` (logit-normal, MeanFlow's choice, or uniform).

    Sampling steps run from ``max(a, b)`` down to ``min(a, b)``; encoding steps the other way.
    """
    if distribution == "logit_normal":
        shape = (2, n)
        times = torch.sigmoid(
            logit_normal_mean + logit_normal_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)
        )
    elif distribution == "uniform":
        times = torch.rand((2, n), generator=generator, device=device, dtype=dtype)
    else:
        raise ValueError(f"continuous step distribution must be 'logit_normal' or 'uniform', got {distribution!r}")
    low, high = times.min(dim=0).values, times.max(dim=0).values
    sign = step_signs(n, directions, generator, device, dtype)
    sigma = torch.where(sign < 0, high, low)
    return sigma, sign * (high - low)
