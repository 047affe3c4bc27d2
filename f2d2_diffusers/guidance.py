"""Maximum-likelihood self-guidance: move the initial noise towards what the map finds likely (``docs/method.md`` 6)."""

import math

import torch

from .dequantization import standard_normal_log_prob
from .flow_map import broadcast_to_sample, evaluate_flow_map, flow_map_step


def one_step_log_likelihood(model, noise: torch.Tensor) -> torch.Tensor:
    """``J(eps) = log N(eps) - A(eps, 1, -1)``: the one-step map's log-density of the sample it makes from ``eps``.

    Nats, shape ``(batch,)``; differentiable in ``noise`` (one network call).
    """
    out = evaluate_flow_map(model, noise, 1.0, -1.0)
    _, delta_log_prob = flow_map_step(noise, out.sample, out.divergence, -1.0)
    return standard_normal_log_prob(noise.float()) + delta_log_prob.float()


def check_guidance(scale, num_steps) -> None:
    """Refuse a guidance scale that is not a finite number >= 0 and a step count that is not a positive integer."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"ml_guidance_scale must be a finite number >= 0, got {scale!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"ml_guidance_steps must be a positive integer, got {num_steps!r}")


def maximum_likelihood_guidance(model, noise: torch.Tensor, scale: float, num_steps: int = 1) -> torch.Tensor:
    r"""``num_steps`` normalised gradient-ascent steps on :func:`one_step_log_likelihood`, from ``noise``.

    Each step is ``eps <- eps + scale * g / rms(g)`` with ``g = grad J(eps)`` and ``rms`` its root mean square per
    sample, so ``scale`` is the per-dimension size of the step in units of the noise's standard deviation, whatever
    the sample size. Samples are independent (the gradient of the batch sum is each sample's own gradient). Costs one
    forward and one backward pass per step; the model's parameters receive no gradient.
    """
    check_guidance(scale, num_steps)
    for _ in range(num_steps):
        with torch.enable_grad():
            eps = noise.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(one_step_log_likelihood(model, eps).sum(), eps)
        rms = grad.float().reshape(grad.shape[0], -1).pow(2).mean(dim=1).sqrt()
        # A sample whose gradient vanishes stays where it is.
        direction = grad.float() / broadcast_to_sample(torch.where(rms > 0, rms, torch.ones_like(rms)), grad)
        noise = (noise.float() + scale * direction).to(noise.dtype).detach()
    return noise
