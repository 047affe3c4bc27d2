"""The diffusion of the energy samplers (``docs/method.md`` section 7): a VP Ornstein-Uhlenbeck reference process with
the cosine ``beta`` schedule of the one-step sampler paper, its Euler-Maruyama kernels and the probability-flow drift.

Time is the package's ``sigma`` (``sigma = 1`` the Gaussian prior ``N(0, sigma_0^2 I)``, ``sigma = 0`` the target),
the paper's noise time ``tau``. Generation goes down in ``sigma``; a step of size ``Delta > 0`` goes from ``sigma`` to
``sigma - Delta`` (the flow map's ``h = -Delta``). Coefficients are frozen at the step's start (explicit Euler):

- SDE step: ``x' = x + Delta (g u + beta x / 2) + g sqrt(Delta) eps`` with ``g = sigma_0 sqrt(beta)``;
- forward kernel ``N(x + Delta (g u + beta x / 2), g^2 Delta I)``, EM backward kernel ``N(x' (1 - beta Delta / 2), g^2 Delta I)``;
- probability-flow ODE step: ``x' = x + Delta b`` with ``b = g u / 2 + beta x / 2``.

``u`` is the network's control (``EnergySamplerMLPModel.control``).
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
    """``log N(x; mean, std^2 I)`` per sample, shape ``(batch,)``; ``std`` a number or ``(batch,)``."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if std.ndim == 1:
        std = std[:, None]
    z = (x - mean) / std
    return (-0.5 * z**2 - torch.log(std).expand_as(z) - 0.5 * math.log(2 * math.pi)).sum(-1)



def check_prior_clip(clip) -> None:
    """A clip of 0 or below would collapse every prior draw onto one point and give a finite, wrong log Z."""
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0):
        raise ValueError(f"prior_clip must be None or a finite number > 0 (in prior standard deviations), got {clip!r}")

@dataclass
class VPCosineSchedule:
    """``beta(tau) = (beta_max - beta_min) / 2 * cos^2(pi / 2 * (1 + s - tau) / (1 + s)) + beta_min / 2`` and the
    diffusion scale ``g(tau) = prior_scale * sqrt(beta(tau))`` (the paper's ``sigma(tau)``)."""

    prior_scale: float = 1.0
    beta_min: float = 0.01
    beta_max: float = 10.0
    cosine_s: float = 0.008

    def beta(self, sigma):
        sigma = torch.as_tensor(sigma)
        phase = 0.5 * math.pi * (1 + self.cosine_s - sigma) / (1 + self.cosine_s)
        return 0.5 * (self.beta_max - self.beta_min) * torch.cos(phase) ** 2 + 0.5 * self.beta_min

    def diffusion(self, sigma):
        return self.prior_scale * torch.sqrt(self.beta(sigma))

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x; 0, prior_scale^2 I)`` per sample."""
        return gaussian_log_prob(x, torch.zeros_like(x), self.prior_scale)

    def sample_prior(self, shape, generator=None, device=None, dtype=torch.float32, clip: Optional[float] = 4.0) -> torch.Tensor:
        """Prior draws, clipped to ``+-clip * prior_scale`` as the reference code does (the prior density is then
        evaluated at the clipped point, a bias of order ``P(|eps| > clip)``); ``clip=None`` draws the exact prior."""
        from diffusers.utils.torch_utils import randn_tensor

        check_prior_clip(clip)
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype) * self.prior_scale
        return x if clip is None else x.clamp(-clip * self.prior_scale, clip * self.prior_scale)

    def _coeffs(self, sigma, x):
        beta = torch.as_tensor(self.beta(torch.as_tensor(sigma, dtype=x.dtype, device=x.device)))
        beta = beta.expand(x.shape[0]) if beta.ndim == 0 else beta
        return beta[:, None], (self.prior_scale * torch.sqrt(beta))[:, None]

    def sde_step(self, x, control, sigma, delta, noise):
        """``(x', forward mean, std)`` of one Euler-Maruyama step from ``sigma`` down to ``sigma - delta``."""
        beta, g = self._coeffs(sigma, x)
        delta = torch.as_tensor(delta, dtype=x.dtype, device=x.device)
        delta = (delta.expand(x.shape[0]) if delta.ndim == 0 else delta)[:, None]
        mean = x + delta * (g * control + 0.5 * beta * x)
        std = g * torch.sqrt(delta)
        return mean + std * noise, mean, std.squeeze(1)

    def backward_log_prob(self, x, x_next, sigma, delta):
        """``log p_bwd(x | x_next)`` of the EM backward kernel ``N(x_next (1 - beta delta / 2), g^2 delta I)``."""
        beta, g = self._coeffs(sigma, x)
        delta = torch.as_tensor(delta, dtype=x.dtype, device=x.device)
        delta = (delta.expand(x.shape[0]) if delta.ndim == 0 else delta)[:, None]
        return gaussian_log_prob(x, x_next * (1 - 0.5 * beta * delta), (g * torch.sqrt(delta)).squeeze(1))

    def ode_drift(self, x, control, sigma):
        """``b = g u / 2 + beta x / 2``: the probability-flow drift in the generative direction (``dx/d(-sigma)``)."""
        beta, g = self._coeffs(sigma, x)
        return 0.5 * g * control + 0.5 * beta * x
