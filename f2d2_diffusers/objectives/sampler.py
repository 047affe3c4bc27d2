"""Training objective of the one-step energy samplers (``docs/method.md`` section 7; ``shared/docs/SAMPLERS.md`` 2).

Three terms, on a batch that starts from the prior:

1. **Path-space reverse KL** (:func:`rollout_kl`): a fine Euler-Maruyama rollout of ``num_steps`` steps
   (``Delta = 1 / num_steps``, the map conditioned on that step), pathwise gradients through the states and the
   reparameterised noise, ``KL = E[sum_n (log p_fwd - log p_bwd) + log p_0(x_0) - log rho(x_T)] = -ELBO_EM``.
2. **State-space self-distillation** (:func:`self_distillation_loss`): from states of that rollout (stop-gradient),
   a dyadic step ``Delta = 2^j / num_steps`` (``j = 1..log2 num_steps``) started on the grid the ``num_steps / 2^j``-step
   sampler visits; the student's single probability-flow Euler step must land where two half steps of the teacher (an
   EMA copy, no gradient) land: ``|x_tgt - x_hat|^2 / (d sigma_0^2)`` (the paper has no ``sigma_0^2``; here the
   two terms share one optimiser step, so the state error is measured in prior units).
3. **Volume consistency**: the student's log-volume change over the step, ``A = h D`` (the flow map's ``A``), must
   equal the teacher's two half steps' sum, ``(A_1 + A_2 - A)^2``, each a one-probe Hutchinson trace (the same probe
   for the teacher's first half step and the student).

Plus a small Jacobian penalty ``|v^T du/dx|^2 / d``. ``loss = kl + distill_weight * (state + volume_weight * volume +
jacobian_weight * jacobian)``; the paper takes two optimiser steps per iteration (KL, then the rest scaled by
``0.25 min(1, it / 2500)``), this package one step on the weighted sum (the training script ramps ``distill_weight``).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch
from diffusers.utils import BaseOutput

from ..divergence import hutchinson_probes
from ..flow_map import TIMESTEP_SCALE, unwrap_model
from ..sampler_sde import gaussian_log_prob


@dataclass
class EnergySamplerLossOutput(BaseOutput):
    """
    Args:
        loss: the scalar to minimise.
        kl_loss: the rollout's reverse KL (per sample, batch mean), ``= -elbo``.
        state_loss: self-distillation error of the end states, per dimension.
        volume_loss: squared log-volume mismatch (nats^2).
        jacobian_loss: the Jacobian penalty.
        elbo: the rollout's Euler-Maruyama ELBO (detached).
        path: the rollout's states ``(num_steps + 1, batch, d)``, prior end first, detached.
    """

    loss: torch.Tensor
    kl_loss: torch.Tensor
    state_loss: torch.Tensor
    volume_loss: torch.Tensor
    jacobian_loss: torch.Tensor
    elbo: torch.Tensor
    path: torch.Tensor


def _rademacher(shape, generator, device, dtype):
    return hutchinson_probes(torch.empty(shape, device=device, dtype=dtype), 1, generator=generator)[0]


def rollout_kl(model, target, batch_size: int, num_steps: int = 128, generator: Optional[torch.Generator] = None,
               prior_clip: float = 4.0, device=None, dtype=torch.float32):
    """``(kl per sample (batch,), path (num_steps + 1, batch, d))`` of a differentiable EM rollout from the prior.

    The map's velocity ``u`` gives the paper's control (``g c = -2 u - beta x``); the score input is stop-gradient.
    """
    schedule = unwrap_model(model).noise_schedule
    d = unwrap_model(model).config.sample_size
    x = schedule.sample_prior((batch_size, d), generator=generator, device=device, dtype=dtype, clip=prior_clip)
    log_w = -schedule.prior_log_prob(x)
    delta = 1.0 / num_steps
    path = [x.detach()]
    for n in range(num_steps):
        sigma = torch.full((batch_size,), 1.0 - n * delta, device=x.device, dtype=dtype)
        score = target.score(x.detach())
        u = model(x, sigma * TIMESTEP_SCALE, torch.full_like(sigma, -delta * TIMESTEP_SCALE), score=score,
                  divergence="none").sample
        beta = schedule.beta(sigma)[:, None]
        g = schedule.diffusion(sigma)[:, None]
        control = (-2 * u - beta * x) / g
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype)
        x_next, mean, std = schedule.sde_step(x, control, sigma, delta, noise)
        log_fwd = gaussian_log_prob(x_next, mean, std)
        log_bwd = schedule.backward_log_prob(x, x_next, sigma, delta)
        log_w = log_w + log_bwd - log_fwd
        x = x_next
        path.append(x.detach())
    log_w = log_w + target.log_prob(x)
    return -log_w, torch.stack(path)


def self_distillation_loss(model, teacher, target, path: torch.Tensor, generator: Optional[torch.Generator] = None,
                           jacobian: bool = True):
    """``(state, volume, jacobian)`` losses from start states on ``path`` (``(T + 1, batch, d)``, ``T`` a power of 2).

    ``teacher`` computes the two half steps without gradient (an EMA copy, or ``model`` itself as stop-gradient).
    """
    num_steps = path.shape[0] - 1
    levels = int(round(math.log2(num_steps)))
    if 2**levels != num_steps or levels < 1:
        raise ValueError(f"the rollout must have a power-of-2 number of steps >= 2, got {num_steps}")
    batch, d = path.shape[1], path.shape[2]
    device, dtype = path.device, path.dtype
    j = torch.randint(1, levels + 1, (batch,), generator=generator, device=device)
    codes = 2**j  # step in grid codes
    m = (torch.rand(batch, generator=generator, device=device) * (num_steps // codes)).floor().long()
    index = m * codes
    x = path[index, torch.arange(batch, device=device)]
    sigma = (num_steps - index).to(dtype) / num_steps
    delta = codes.to(dtype) / num_steps
    half = delta / 2
    probe = _rademacher(x.shape, generator, device, dtype)
    probe2 = _rademacher(x.shape, generator, device, dtype)
    with torch.no_grad():
        out1 = teacher(x, sigma * TIMESTEP_SCALE, -half * TIMESTEP_SCALE, score=target.score, divergence="hutchinson",
                       probe=probe)
        x_mid = x - half[:, None] * out1.sample
        out2 = teacher(x_mid, (sigma - half) * TIMESTEP_SCALE, -half * TIMESTEP_SCALE, score=target.score,
                       divergence="hutchinson", probe=probe2)
        x_target = x_mid - half[:, None] * out2.sample
        volume_target = -half * out1.divergence - half * out2.divergence
    student = model(x, sigma * TIMESTEP_SCALE, -delta * TIMESTEP_SCALE, score=target.score, divergence="hutchinson",
                    probe=probe, create_graph=True)
    x_hat = x - delta[:, None] * student.sample
    # In units of the prior's scale: the same loss for GMM-40 (sigma_0 = 40) as for unit-scale targets.
    state = (((x_target - x_hat) / unwrap_model(model).noise_schedule.prior_scale) ** 2).mean(1)
    volume = (volume_target - (-delta * student.divergence)) ** 2
    jac = student.jacobian_sq if (jacobian and student.jacobian_sq is not None) else torch.zeros_like(state)
    return state.mean(), volume.mean(), jac.mean()


def energy_sampler_loss(
    model,
    target,
    batch_size: int,
    teacher=None,
    num_steps: int = 128,
    distill_weight: float = 0.25,
    volume_weight: float = 0.25,
    jacobian_weight: float = 1e-4,
    generator: Optional[torch.Generator] = None,
    prior_clip: float = 4.0,
    device=None,
) -> EnergySamplerLossOutput:
    r"""
    The sampler objective on ``batch_size`` fresh prior draws (module docstring).

    Args:
        model: an ``EnergySamplerMLPModel`` (or any map with its ``forward(..., score=, divergence=, probe=,
            create_graph=)`` and ``noise_schedule``).
        target: an ``EnergyTarget``.
        teacher: the half-step model (an EMA copy); ``None`` uses ``model`` without gradient.
        num_steps: fine rollout steps ``T`` (a power of 2; the paper's 128).
        distill_weight: weight of the self-distillation terms (``0`` skips them: KL only).
        volume_weight, jacobian_weight: the paper's 0.25 and 1e-4, inside the distillation term.
    """
    if num_steps < 2 or num_steps & (num_steps - 1):
        raise ValueError(f"num_steps must be a power of 2 >= 2, got {num_steps}")
    kl, path = rollout_kl(model, target, batch_size, num_steps, generator=generator, prior_clip=prior_clip, device=device)
    kl_loss = kl.mean()
    zero = kl_loss.new_zeros(())
    state = volume = jac = zero
    loss = kl_loss
    if distill_weight > 0:
        state, volume, jac = self_distillation_loss(model, teacher if teacher is not None else model, target, path,
                                                    generator=generator, jacobian=jacobian_weight > 0)
        loss = loss + distill_weight * (state + volume_weight * volume + jacobian_weight * jac)
    return EnergySamplerLossOutput(loss=loss, kl_loss=kl_loss.detach(), state_loss=state.detach(),
                                   volume_loss=volume.detach(), jacobian_loss=jac.detach(), elbo=-kl_loss.detach(),
                                   path=path)
