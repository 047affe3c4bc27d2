"""Shortcut-F2D2: semigroup (self-consistency) distillation of the joint map (``docs/method.md`` section 5.2)."""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.utils import BaseOutput

from ..divergence import resolve_divergence_method, velocity_and_divergence
from ..flow_map import (
    broadcast_to_sample, check_shift, evaluate_flow_map, evaluate_velocity, flow_map_step, interpolant, shift_sigmas,
)
from .steps import check_directions, dyadic_steps
from .tangent import velocity_targets


@dataclass
class ShortcutF2D2LossOutput(BaseOutput):
    """
    Args:
        loss: the scalar to minimise.
        velocity_loss: mean squared error of the average velocity (per dimension), over the whole batch.
        divergence_loss: mean squared error of the average divergence per dimension, over the whole batch.
        diagonal_loss: the zero-step (tangent) part of ``loss``, per sample of that part.
        bootstrap_loss: the two-half-steps part of ``loss``, per sample of that part.
    """

    loss: torch.Tensor
    velocity_loss: torch.Tensor
    divergence_loss: torch.Tensor
    diagonal_loss: torch.Tensor
    bootstrap_loss: torch.Tensor


def _teacher_midpoint_step(teacher, x, sigma, h, method, num_probes, generator):
    """Average velocity and divergence over ``[sigma, sigma + h]`` by the teacher's explicit midpoint rule.

    Second-order accurate, and it needs the divergence at the midpoint only.
    """
    v_start = evaluate_velocity(teacher, x, sigma)
    x_mid = x + broadcast_to_sample(h / 2, x) * v_start
    return velocity_and_divergence(
        lambda z: evaluate_velocity(teacher, z, sigma + h / 2), x_mid, method, num_probes, generator
    )


def shortcut_f2d2_loss(
    model,
    batch: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    teacher=None,
    target_model=None,
    directions: str = "both",
    divergence: str = "auto",
    num_probes: int = 1,
    bootstrap_fraction: float = 0.25,
    max_level: int = 6,
    divergence_weight: float = 1.0,
    anchor_starts_to_grid: bool = False,
    teacher_finest_level: bool = False,
    level_weights: Optional[Sequence[float]] = None,
    grid_shift: float = 1.0,
    likelihood_grid_shift: Optional[float] = None,
) -> ShortcutF2D2LossOutput:
    r"""
    Shortcut-F2D2 loss on a batch of model-space data.

    The first ``1 - bootstrap_fraction`` of the batch trains the tangent (``h = 0``): ``u(x, s, 0)`` on the
    teacher's velocity (or ``eps - x_data`` without a teacher) and ``D(x, s, 0)`` on its divergence (the
    teacher's, or without a teacher the model's own ``u(., s, 0)``'s, stop-gradient). The rest trains dyadic
    steps ``|h| = 2^-k``, ``k = 0..max_level``, on the average of two half steps of the target model.

    Args:
        model: the joint flow map being trained.
        teacher: a frozen velocity model (``UNet2DModel``-like); ``None`` self-distils.
        target_model: the map that computes the half-step targets (e.g. an EMA copy); defaults to ``model``.
        directions: ``"both"`` trains ``h < 0`` (sampling) and ``h > 0`` (likelihood); ``"forward"`` only ``h < 0``,
            the paper's variant.
        divergence: ``"exact"``, ``"hutchinson"`` (``num_probes`` Rademacher probes) or ``"auto"`` (exact for
            ``d <= EXACT_DIVERGENCE_MAX_DIMS``, see :mod:`f2d2_diffusers.divergence`).
        anchor_starts_to_grid: draw bootstrap starts on multiples of ``|h|``, the points few-step grids visit.
        teacher_finest_level: at the finest level (``|h| = 2^-max_level``) take the targets from one explicit
            midpoint step of the teacher (velocity and divergence at the midpoint) instead of the map's own ``h/2``
            steps, which are never trained directly; this anchors the recursion of the coarser levels to the
            teacher, also at ``sigma = 0`` where the tangent is never sampled.
        level_weights: relative odds of the levels ``k = 0..max_level`` (``|h| = 2^-k``) in the bootstrap part;
            uniform when ``None``.
        grid_shift: draw the dyadic steps on the grid warped by ``shift_sigmas(., grid_shift)``, the grids of
            ``F2D2Scheduler(shift=grid_shift)``; ``< 1`` puts the short steps next to the data (``docs/method.md``
            section 5.7). A step's two halves are then unequal in ``sigma`` and its targets their length-weighted
            averages. 1 (default) trains the uniform dyadic grids.
        likelihood_grid_shift: the shift of the encoding steps (``h > 0``) alone, the grids of
            ``F2D2Scheduler(shift=grid_shift, likelihood_shift=likelihood_grid_shift)``: short likelihood steps next
            to the data while the sampling steps (``h < 0``) keep ``grid_shift``. ``None`` (default): ``grid_shift``.
    """
    if teacher_finest_level and teacher is None:
        raise ValueError("teacher_finest_level needs a teacher")
    check_directions(directions)
    grid_shift = check_shift(grid_shift, "grid_shift")
    likelihood_grid_shift = check_shift(likelihood_grid_shift, "likelihood_grid_shift", allow_none=True)
    if likelihood_grid_shift is None:
        likelihood_grid_shift = grid_shift
    uniform_grid = grid_shift == 1.0 and likelihood_grid_shift == 1.0
    if not 0.0 <= bootstrap_fraction < 1.0:
        raise ValueError(f"bootstrap_fraction must lie in [0, 1), got {bootstrap_fraction}")
    target_model = model if target_model is None else target_model
    batch_size, num_dims = batch.shape[0], batch[0].numel()
    divergence = resolve_divergence_method(divergence, num_dims)
    num_bootstrap = int(round(batch_size * bootstrap_fraction))
    if bootstrap_fraction > 0 and batch_size > 1:
        num_bootstrap = min(max(num_bootstrap, 1), batch_size - 1)
    num_diagonal = batch_size - num_bootstrap
    device, dtype = batch.device, batch.dtype

    def uniform(n):
        return torch.rand(n, generator=generator, device=device, dtype=dtype)

    noise = torch.randn(batch.shape, generator=generator, device=device, dtype=dtype)

    # Tangent part: h = 0.
    data_d, noise_d = batch[:num_diagonal], noise[:num_diagonal]
    sigma_d = uniform(num_diagonal)
    x_d = interpolant(data_d, noise_d, sigma_d)
    u_target_d, div_target_d = velocity_targets(
        teacher, target_model, x_d, sigma_d, noise_d, data_d, divergence, num_probes, generator
    )

    # Bootstrap part: dyadic steps, targets from two half steps.
    tau_b, step_b, levels = dyadic_steps(
        num_bootstrap, max_level, directions, anchor_starts_to_grid, generator=generator, device=device, dtype=dtype,
        level_weights=level_weights,
    )
    # The dyadic grid lives in tau; the map is trained on the sigmas the shifted scheduler visits, each direction on
    # its own grid (encoding steps h > 0 on the likelihood grids).
    if uniform_grid:  # kept exact: the halves of a dyadic step are representable
        sigma_b, h_b = tau_b, step_b
        h_first = h_second = h_b / 2
        sigma_mid = sigma_b + h_first
    else:
        shift = torch.where(step_b > 0, tau_b.new_tensor(likelihood_grid_shift), tau_b.new_tensor(grid_shift))
        sigma_b, sigma_mid = shift_sigmas(tau_b, shift), shift_sigmas(tau_b + step_b / 2, shift)
        h_b = shift_sigmas(tau_b + step_b, shift) - sigma_b
        h_first, h_second = sigma_mid - sigma_b, sigma_b + h_b - sigma_mid
    data_b, noise_b = batch[num_diagonal:], noise[num_diagonal:]
    x_b = interpolant(data_b, noise_b, sigma_b)
    u_target_b, div_target_b = torch.zeros_like(x_b), x_b.new_zeros(num_bootstrap)
    # bootstrap_fraction = 0 trains the tangent alone: no (empty) half-step target calls.
    with torch.no_grad():
        if num_bootstrap > 0:
            first = evaluate_flow_map(target_model, x_b, sigma_b, h_first)
            x_mid, _ = flow_map_step(x_b, first.sample, first.divergence, h_first)
            second = evaluate_flow_map(target_model, x_mid, sigma_mid, h_second)
            if uniform_grid:  # equal halves: the plain mean
                u_target_b = (first.sample + second.sample) / 2
                div_target_b = (first.divergence + second.divergence) / 2
            else:
                w_first = h_first / h_b
                u_target_b = torch.lerp(first.sample, second.sample, broadcast_to_sample(1 - w_first, x_b))
                div_target_b = torch.lerp(first.divergence, second.divergence, 1 - w_first)
            finest = levels == max_level
            if teacher_finest_level and finest.any():
                u_target_b[finest], div_target_b[finest] = _teacher_midpoint_step(
                    teacher, x_b[finest], sigma_b[finest], h_b[finest], divergence, num_probes, generator
                )

    # One forward pass of the student over both parts.
    prediction = evaluate_flow_map(
        model,
        torch.cat([x_d, x_b]),
        torch.cat([sigma_d, sigma_b]),
        torch.cat([torch.zeros_like(sigma_d), h_b]),
    )
    u_target = torch.cat([u_target_d, u_target_b]).float()
    div_target = torch.cat([div_target_d, div_target_b]).float()
    velocity_error = (prediction.sample.float() - u_target).pow(2).reshape(batch_size, -1).mean(dim=1)
    # Per-dimension divergence keeps this term O(1) whatever the sample size.
    divergence_error = ((prediction.divergence.float() - div_target) / num_dims).pow(2)
    per_sample = velocity_error + divergence_weight * divergence_error

    def part_mean(values):
        return values.mean() if values.numel() else values.new_zeros(())

    return ShortcutF2D2LossOutput(
        loss=per_sample.mean(),
        velocity_loss=velocity_error.mean().detach(),
        divergence_loss=divergence_error.mean().detach(),
        diagonal_loss=part_mean(per_sample[:num_diagonal]).detach(),
        bootstrap_loss=part_mean(per_sample[num_diagonal:]).detach(),
    )
