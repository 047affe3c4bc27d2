"""The joint flow map: one step of the sampling path and of the log-density along it.

Time convention (diffusers' flow matching, ``docs/method.md`` section 1): ``sigma = 0`` is data, ``sigma = 1`` is
noise, ``x_sigma = (1 - sigma) * x_data + sigma * eps`` and models receive ``timestep = 1000 * sigma``. A flow-map
model is also conditioned on a signed step ``h = sigma_end - sigma`` (``h < 0`` samples, ``h > 0`` encodes),
received as ``step = 1000 * h``, and returns the average velocity ``u`` and the average divergence ``D`` over
``[sigma, sigma + h]`` (``docs/method.md`` section 4). Every pipeline, scheduler and objective goes through the
functions below.
"""

import inspect
import math
import numbers
from typing import Optional, Union

import torch

#: diffusers' flow-matching scale: ``timestep = TIMESTEP_SCALE * sigma`` (and ``step = TIMESTEP_SCALE * h``).
TIMESTEP_SCALE = 1000.0


def _per_sample(value: Union[float, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(batch,)`` tensor as a ``(batch,)`` tensor on ``sample``'s device and dtype."""
    value = torch.as_tensor(value, device=sample.device, dtype=sample.dtype)
    if value.ndim == 0:
        value = value.expand(sample.shape[0])
    if value.shape != (sample.shape[0],):
        raise ValueError(f"expected a scalar or one value per sample ({sample.shape[0]}), got shape {tuple(value.shape)}")
    return value


def broadcast_to_sample(value: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """A ``(batch,)`` tensor reshaped to ``(batch, 1, ..., 1)`` so it scales ``sample`` per sample."""
    return value.reshape(value.shape[0], *([1] * (sample.ndim - 1)))


def flow_map_step(sample: torch.Tensor, velocity: torch.Tensor, divergence: torch.Tensor, h) -> tuple:
    """Apply the joint map over a signed step ``h`` (``docs/method.md`` section 4).

    Args:
        sample: ``x`` at ``sigma``, shape ``(batch, *dims)``.
        velocity: average velocity ``u(x, sigma, h)``, same shape as ``sample``.
        divergence: average divergence ``D(x, sigma, h)``, shape ``(batch,)``, full scale (not per dimension).
        h: signed step ``sigma_end - sigma``, a scalar or ``(batch,)``.

    Returns:
        ``(X, delta_log_prob)`` with ``X = x + h * u`` and ``delta_log_prob = log p_{sigma+h}(X) - log p_sigma(x)
        = -h * D`` in nats, shape ``(batch,)``.
    """
    h = _per_sample(h, sample)
    if velocity.shape != sample.shape or divergence.shape != (sample.shape[0],):
        # A (batch, 1) divergence would silently broadcast the log-density change to (batch, batch).
        raise ValueError(
            f"expected a velocity of the sample's shape {tuple(sample.shape)} and one divergence per sample "
            f"({sample.shape[0]},); got {tuple(velocity.shape)} and {tuple(divergence.shape)}"
        )
    next_sample = sample + broadcast_to_sample(h, sample) * velocity
    delta_log_prob = -h * divergence.to(h.dtype)
    return next_sample, delta_log_prob


def unwrap_model(model):
    """The module inside ``torch.compile`` (``_orig_mod``) and DDP/FSDP-style (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_flow_map_model(model) -> bool:
    """True for joint flow maps (models called as ``forward(sample, timestep, step)``).

    The package's models say so with a class attribute ``is_flow_map``; other models are recognised by a ``step``
    argument of their ``forward``. Wrappers (``torch.compile``, DDP) are looked through.
    """
    model = unwrap_model(model)
    marker = getattr(model, "is_flow_map", None)
    if marker is not None:
        return bool(marker)
    return "step" in inspect.signature(model.forward).parameters


def evaluate_flow_map(model, sample: torch.Tensor, sigma, h):
    """Call a flow-map model at noise level ``sigma`` over signed step ``h`` (both in [0, 1] units).

    Returns the model's output (``.sample`` = average velocity, ``.divergence`` = average divergence, full scale).
    """
    sigma = _per_sample(sigma, sample)
    h = _per_sample(h, sample)
    return model(sample, sigma * TIMESTEP_SCALE, h * TIMESTEP_SCALE, return_dict=True)


def evaluate_velocity(model, sample: torch.Tensor, sigma) -> torch.Tensor:
    """Instantaneous velocity ``v(x, sigma) = dx/dsigma``.

    Works for teachers called like a ``UNet2DModel`` (``model(sample, timestep).sample``) and for flow-map models,
    whose zero-step average velocity is the instantaneous one. Timesteps are always passed as float tensors:
    ``UNet2DModel`` would silently truncate a Python float to an integer.
    """
    if is_flow_map_model(model):
        return evaluate_flow_map(model, sample, sigma, 0.0).sample
    sigma = _per_sample(sigma, sample)
    return model(sample, sigma * TIMESTEP_SCALE, return_dict=True).sample


def integrate_flow_map(model, scheduler, sample: torch.Tensor, progress_bar=None, query_step_sign: float = 1.0):
    """Follow ``scheduler``'s grid with the joint map, one network call per step (``docs/method.md`` section 6).

    Args:
        model: a flow-map model (``forward(sample, timestep, step)``).
        scheduler: an ``F2D2Scheduler`` after ``set_timesteps``.
        sample: the start, shape ``(batch, *dims)``.
        progress_bar: optional tqdm-like object, updated once per step.
        query_step_sign: ``1`` queries the map over each grid step itself; ``-1`` queries the opposite step from
            the same point and moves along it the other way (the F2D2 paper's likelihood evaluation, which steps a
            sampling-only map backwards from the data end with Euler).

    Returns:
        ``(end_sample, delta_log_prob, nfe)`` with ``delta_log_prob = log p_end(end_sample) - log p_start(sample)``.
    """
    batch = sample.shape[0]
    delta_log_prob = torch.zeros(batch, device=sample.device, dtype=torch.float32)
    for timestep, step_size in zip(scheduler.timesteps, scheduler.step_sizes):
        t = timestep.to(device=sample.device, dtype=torch.float32).expand(batch)
        h = (query_step_sign * step_size).to(device=sample.device, dtype=torch.float32).expand(batch)
        output = model(sample, t, h, return_dict=True)
        step_output = scheduler.step(output, timestep, sample)
        sample = step_output.prev_sample
        delta_log_prob = delta_log_prob + step_output.delta_log_prob.float()
        if progress_bar is not None:
            progress_bar.update()
    return sample, delta_log_prob, len(scheduler.timesteps)


def interpolant(data: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_sigma = (1 - sigma) * data + sigma * noise`` (``docs/method.md`` section 1).

    ``sigma`` is a scalar or one value per sample, shape ``(batch,)``.
    """
    sigma = broadcast_to_sample(_per_sample(sigma, data), data)
    return (1.0 - sigma) * data + sigma * noise


def check_shift(value, name: str = "shift", allow_none: bool = False) -> Optional[float]:
    """``value`` as a float if it is a positive finite real number (a grid shift, :func:`shift_sigmas`), else a
    ``ValueError`` naming ``name``; ``None`` passes through where ``allow_none`` (an unset optional shift)."""
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def shift_sigmas(sigmas: torch.Tensor, shift: Union[float, torch.Tensor]) -> torch.Tensor:
    """The grid warp ``sigma -> shift * sigma / (1 + (shift - 1) * sigma)`` (diffusers' flow-matching ``shift``).

    It keeps 0 and 1 in place and is monotone; ``shift < 1`` packs points toward the data end. The scheduler applies
    it to its grids and the shortcut objective to the dyadic steps it trains, so both visit the same points
    (``docs/method.md`` section 5.7). ``shift`` may be a tensor broadcastable to ``sigmas`` (one shift per point).
    """
    if not torch.is_tensor(shift) and shift == 1.0:
        return sigmas
    # Written as c s / (c s + 1 - s), not c s / (1 + (c - 1) s): exact at 0 and 1, where the other form can land a
    # rounding error above 1, outside the range a scheduler accepts.
    return shift * sigmas / (shift * sigmas + (1 - sigmas))
