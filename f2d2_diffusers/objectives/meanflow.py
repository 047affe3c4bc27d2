"""MeanFlow-F2D2: the Eulerian identity for both heads of the joint map (``docs/method.md`` section 5.4)."""

from dataclasses import dataclass
from typing import Optional

import torch
from diffusers.utils import BaseOutput

from ..divergence import resolve_divergence_method
from ..flow_map import broadcast_to_sample, evaluate_flow_map, interpolant
from .steps import STEP_DISTRIBUTIONS, check_directions, continuous_steps, dyadic_steps
from .tangent import velocity_targets


@dataclass
class MeanFlowF2D2LossOutput(BaseOutput):
    """
    Args:
        loss: the scalar to minimise (adaptively weighted).
        velocity_loss: unweighted mean squared error of the average velocity (per dimension), over the batch.
        divergence_loss: unweighted mean squared error of the average divergence per dimension, over the batch.
        tangent_loss: unweighted per-sample error of the ``h = 0`` part.
        step_loss: unweighted per-sample error of the ``h != 0`` part.
    """

    loss: torch.Tensor
    velocity_loss: torch.Tensor
    divergence_loss: torch.Tensor
    tangent_loss: torch.Tensor
    step_loss: torch.Tensor


def total_derivative_along_flow(model, sample, sigma, h, velocity):
    r"""``(u, D, du/ds, dD/ds)`` at ``(x, sigma, h)``, the end ``sigma + h`` held fixed, in one forward-mode JVP.

    Moving the start along the flow changes ``x`` by ``v``, ``sigma`` by 1 and ``h`` by -1, so the tangents are
    ``(v, 1, -1)``. Runs under ``torch.no_grad`` (the results are stop-gradient targets) and works for callers that
    are themselves under ``torch.no_grad``.
    """

    def heads(x, s, step):
        out = evaluate_flow_map(model, x, s, step)
        return out.sample, out.divergence

    ones = torch.ones_like(sigma)
    with torch.no_grad():
        (u, divergence), (du, d_divergence) = torch.func.jvp(heads, (sample, sigma, h), (velocity, ones, -ones))
    return u, divergence, du, d_divergence


def meanflow_f2d2_loss(
    model,
    batch: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    teacher=None,
    target_model=None,
    directions: str = "both",
    divergence: str = "auto",
    num_probes: int = 1,
    step_fraction: float = 0.5,
    step_distribution: str = "logit_normal",
    max_level: int = 6,
    anchor_starts_to_grid: bool = True,
    logit_normal_mean: float = -0.4,
    logit_normal_std: float = 1.0,
    divergence_weight: float = 1.0,
    adaptive_weight_power: float = 1.0,
    adaptive_weight_eps: float = 1e-3,
    tangent_scale: float = 1.0,
) -> MeanFlowF2D2LossOutput:
    r"""
    MeanFlow-F2D2 loss on a batch of model-space data (same call shape as :func:`shortcut_f2d2_loss`).

    Regresses ``u(x, s, h)`` on ``sg(v + h du/ds)`` and ``D(x, s, h)`` on ``sg(div v + h dD/ds)``, the total
    derivatives taken with the end ``s + h`` fixed (:func:`total_derivative_along_flow`). ``v`` and ``div v`` are the
    teacher's (exact or Hutchinson divergence); without a teacher ``v = eps - x_data`` and ``div v`` is the Hutchinson
    divergence (exact or Hutchinson) of the model's own ``u(., s, 0)``. Each sample's error is divided by ``sg(error + eps)^p`` (MeanFlow's
    adaptive weight, here on the per-dimension error, so ``eps`` means the same at any resolution;
    ``adaptive_weight_power = 0`` switches it off).

    Args:
        model: the joint flow map being trained (may be wrapped by DDP; it gets one ordinary forward pass).
        teacher: a frozen velocity model; ``None`` self-distils.
        target_model: the map the JVP targets are taken from (unwrapped, so no DDP hooks run); defaults to ``model``.
        directions: ``"both"`` (``h < 0`` and ``h > 0``) or ``"forward"`` (sampling steps only).
        step_fraction: share of the batch with ``h != 0``; the rest trains the tangent ``h = 0``.
        step_distribution: ``"dyadic"`` (``|h| = 2^-k``, ``k = 0..max_level``, starts on the grid when
            ``anchor_starts_to_grid``), ``"logit_normal"`` or ``"uniform"`` (two independent times, see
            :func:`f2d2_diffusers.objectives.steps.continuous_steps`).
        tangent_scale: multiplies the ``h d/ds`` terms of the targets (1: the Eulerian identity; a training script
            ramps it up from 0 over ``--tangent_warmup_steps``, starting from the instantaneous targets ``v`` and
            ``div v``).
    """
    check_directions(directions)
    if not 0.0 <= tangent_scale <= 1.0:
        raise ValueError(f"tangent_scale must lie in [0, 1], got {tangent_scale}")
    if step_distribution not in STEP_DISTRIBUTIONS:
        raise ValueError(f"step_distribution must be one of {STEP_DISTRIBUTIONS}, got {step_distribution!r}")
    if not 0.0 <= step_fraction <= 1.0:
        raise ValueError(f"step_fraction must lie in [0, 1], got {step_fraction}")
    if adaptive_weight_power < 0 or adaptive_weight_eps <= 0:
        raise ValueError("adaptive_weight_power must be >= 0 and adaptive_weight_eps > 0")
    target_model = model if target_model is None else target_model
    batch_size, num_dims = batch.shape[0], batch[0].numel()
    divergence = resolve_divergence_method(divergence, num_dims)
    num_steps = int(round(batch_size * step_fraction))
    if 0 < step_fraction < 1 and batch_size > 1:
        num_steps = min(max(num_steps, 1), batch_size - 1)  # both parts present, as in shortcut_f2d2_loss
    num_tangent = batch_size - num_steps
    device, dtype = batch.device, batch.dtype

    noise = torch.randn(batch.shape, generator=generator, device=device, dtype=dtype)
    sigma_t = torch.rand(num_tangent, generator=generator, device=device, dtype=dtype)
    if step_distribution == "dyadic":
        sigma_s, h_s, _ = dyadic_steps(
            num_steps, max_level, directions, anchor_starts_to_grid, generator=generator, device=device, dtype=dtype
        )
    else:
        sigma_s, h_s = continuous_steps(
            num_steps, step_distribution, directions, logit_normal_mean, logit_normal_std,
            generator=generator, device=device, dtype=dtype,
        )
    sigma = torch.cat([sigma_t, sigma_s])
    h = torch.cat([torch.zeros_like(sigma_t), h_s])
    x = interpolant(batch, noise, sigma)

    velocity, velocity_divergence = velocity_targets(
        teacher, target_model, x, sigma, noise, batch, divergence, num_probes, generator
    )
    with torch.no_grad():
        # Under autocast the teacher may answer in a lower precision than the primal the tangent belongs to.
        _, _, du, d_divergence = total_derivative_along_flow(target_model, x, sigma, h, velocity.to(x.dtype))
        u_target = (velocity + broadcast_to_sample(tangent_scale * h, x) * du).float()
        divergence_target = (velocity_divergence + tangent_scale * h * d_divergence).float()

    prediction = evaluate_flow_map(model, x, sigma, h)
    velocity_error = (prediction.sample.float() - u_target).pow(2).reshape(batch_size, -1).mean(dim=1)
    # Per-dimension divergence keeps this term O(1) whatever the sample size.
    divergence_error = ((prediction.divergence.float() - divergence_target) / num_dims).pow(2)
    per_sample = velocity_error + divergence_weight * divergence_error
    weight = (per_sample.detach() + adaptive_weight_eps).pow(-adaptive_weight_power)

    def part_mean(values):
        return values.mean().detach() if values.numel() else values.new_zeros(())

    return MeanFlowF2D2LossOutput(
        loss=(weight * per_sample).mean(),
        velocity_loss=velocity_error.mean().detach(),
        divergence_loss=divergence_error.mean().detach(),
        tangent_loss=part_mean(per_sample[:num_tangent]),
        step_loss=part_mean(per_sample[num_tangent:]),
    )
