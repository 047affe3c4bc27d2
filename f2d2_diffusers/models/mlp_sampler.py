"""``EnergySamplerMLPModel``: a step-conditioned flow map from a Gaussian prior to an unnormalised target, with the
target's score as an input (``docs/method.md`` section 7).

The network is the one-step sampler paper's "PIS-grad" control net with a step input (``shared/docs/SAMPLERS.md``
section 2.1): Fourier features of ``sigma`` and of the step size ``Delta = |h|`` (shared learnable phase), a
time-state branch, a state network ``(x, branch) -> R^d`` and a gradient-scale branch, so that the control is
``c = state_out + scale_out * lgv`` with the "Langevin" input
``lgv = g(sigma) * ((1 - sigma) grad log rho(x) + sigma grad log N(x; 0, sigma_0^2 I))``, clipped to
``+-score_clip``. At initialisation ``c ~= lgv``.

The flow-map contract (``f2d2_diffusers.flow_map``): ``forward(sample, timestep=1000 sigma, step=1000 h)`` returns the
average velocity ``u`` with ``X = x + h u`` (here the probability-flow Euler step of the VP process frozen at the
start, ``u = -(g c / 2 + beta x / 2)``, ``f2d2_diffusers.sampler_sde``) and the average divergence ``D``, so that
``delta log p = -h D``. ``D`` is not a separate head: it is the model's own log-volume change, the divergence of its
``u`` with respect to ``x`` taken through autograd (exact trace, Hutchinson, or the exact ``log|det(I + h du/dx)| / h``
of the step), and it is what volume consistency trains.

Score input. The model holds no target. ``score=`` is either a callable ``x -> grad log rho(x)`` (e.g. a target's
``score`` method), called on the model's own input so that the divergence includes the score's dependence on ``x``
(the Hessian of ``log rho``: the change of variables of the map that is actually run), or a tensor of shape
``(batch, d)`` evaluated at ``sample`` beforehand, which is allowed only with ``divergence="none"`` (the training
rollout, where the paper treats the score as stop-gradient).
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
from diffusers import ModelMixin  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import ConfigMixin, register_to_config

from ..divergence import hutchinson_probes
from ..flow_map import TIMESTEP_SCALE
from ..sampler_sde import VPCosineSchedule
from .modeling_outputs import F2D2ModelOutput
from .utils import timesteps_per_sample

#: ``divergence=`` choices of :meth:`EnergySamplerMLPModel.forward`.
SAMPLER_DIVERGENCES = ("auto", "exact", "hutchinson", "logdet", "none")
#: Up to this many dimensions ``"auto"`` takes the exact trace (``d`` backward passes), above it Hutchinson.
EXACT_TRACE_MAX_DIMS = 64


@dataclass
class EnergySamplerModelOutput(F2D2ModelOutput):
    """An ``F2D2ModelOutput`` (``sample`` = average velocity ``u``, ``divergence`` = ``D``) plus, for Hutchinson
    divergences, ``jacobian_sq``: ``|v^T du/dx|^2 / d`` per sample (an unbiased Frobenius-norm estimate)."""

    jacobian_sq: Optional[torch.Tensor] = None


def _small_init(layer: nn.Linear, bias: float = 0.0, scale: float = 1e-8) -> nn.Linear:
    nn.init.uniform_(layer.weight, -scale, scale)
    nn.init.constant_(layer.bias, bias)
    return layer


class EnergySamplerMLPModel(ModelMixin, ConfigMixin):
    r"""
    Step-conditioned flow map ``N(0, prior_scale^2 I) -> rho / Z`` on vectors of length ``sample_size``.

    ``forward(sample, timestep, step, score=...)`` with ``timestep = 1000 * sigma`` (``sigma = 1`` prior,
    ``sigma = 0`` target) and ``step = 1000 * h`` (``h < 0`` samples). See the module docstring for ``score``.

    Parameters:
        sample_size (`int`): dimension ``d``.
        hidden_dim (`int`, defaults to 64): width of every hidden layer (the paper's 64).
        num_fourier (`int`, defaults to 64): frequencies ``linspace(0.1, 100, num_fourier)`` for ``sigma`` and ``Delta``.
        prior_scale (`float`): ``sigma_0``, the prior's standard deviation (GMM-40: 40).
        beta_min, beta_max, cosine_s: the cosine ``beta`` schedule (``f2d2_diffusers.sampler_sde.VPCosineSchedule``).
        score_clip (`float`, defaults to 100): clip of the ``lgv`` input.
        output_clip (`float`, defaults to 1e4): clip of the state network's output.
    """

    is_flow_map = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 2,
        hidden_dim: int = 64,
        num_fourier: int = 64,
        prior_scale: float = 1.0,
        beta_min: float = 0.01,
        beta_max: float = 10.0,
        cosine_s: float = 0.008,
        score_clip: float = 100.0,
        output_clip: float = 1e4,
    ):
        super().__init__()
        self.register_buffer("frequencies", torch.linspace(0.1, 100.0, num_fourier), persistent=False)
        self.phase = nn.Parameter(torch.zeros(num_fourier))
        emb = 4 * num_fourier
        self.time_branch = nn.Sequential(nn.Linear(emb, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
        self.state_net = nn.Sequential(
            nn.Linear(sample_size + hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            _small_init(nn.Linear(hidden_dim, sample_size)),
        )
        self.scale_net = nn.Sequential(
            nn.Linear(emb, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), _small_init(nn.Linear(hidden_dim, sample_size), bias=1.0),
        )

    @property
    def noise_schedule(self) -> VPCosineSchedule:
        """The VP process this map was built for (``f2d2_diffusers.sampler_sde``)."""
        c = self.config
        return VPCosineSchedule(prior_scale=c.prior_scale, beta_min=c.beta_min, beta_max=c.beta_max, cosine_s=c.cosine_s)

    def _fourier(self, value: torch.Tensor) -> torch.Tensor:
        angle = value[:, None] * self.frequencies[None] + self.phase[None]
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)

    def control(self, x: torch.Tensor, sigma: torch.Tensor, delta: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The paper's control ``c(x, sigma, Delta)`` given the target score at ``x``; ``sigma``, ``Delta`` ``(batch,)``."""
        c = self.config
        schedule = self.noise_schedule
        emb = torch.cat([self._fourier(sigma), self._fourier(delta)], dim=1).to(x.dtype)
        g = schedule.diffusion(sigma).to(x.dtype)[:, None]
        s = sigma.to(x.dtype)[:, None]
        lgv = (g * ((1 - s) * score - s * x / c.prior_scale**2)).clamp(-c.score_clip, c.score_clip)
        state = self.state_net(torch.cat([x, self.time_branch(emb)], dim=1)).clamp(-c.output_clip, c.output_clip)
        return state + self.scale_net(emb) * lgv

    def velocity(self, x, sigma, delta, score) -> torch.Tensor:
        """Average velocity ``u = -(g c / 2 + beta x / 2)`` (``dx/dsigma``; the Euler step is ``X = x + h u``)."""
        return -self.noise_schedule.ode_drift(x, self.control(x, sigma, delta, score), sigma)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float],
        step: Union[torch.Tensor, float] = 0.0,
        score: Union[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, None] = None,
        return_dict: bool = True,
        divergence: str = "auto",
        probe: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        create_graph: bool = False,
    ) -> Union[EnergySamplerModelOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            sample: ``x``, shape ``(batch, sample_size)``.
            timestep, step: ``1000 * sigma`` and ``1000 * h`` (numbers or one per sample). The map is trained for
                ``h <= 0``; ``h > 0`` is answered with the same field queried at ``|h|``.
            score: the target's score: a callable ``x -> grad log rho(x)`` (needed for a divergence) or a tensor at
                ``sample`` (only with ``divergence="none"``). Required.
            divergence: ``"exact"`` trace of ``du/dx`` (``d`` backward passes), ``"hutchinson"`` (one probe: ``probe``
                of the sample's shape, else Rademacher from ``generator``), ``"logdet"`` (``log|det(I + h du/dx)| / h``,
                the exact log-volume change of the Euler step; the trace at ``h = 0``), ``"auto"`` (exact up to
                ``EXACT_TRACE_MAX_DIMS`` dimensions, else Hutchinson) or ``"none"`` (``D = 0``, velocity only).
            create_graph: keep the divergence differentiable in the parameters (training); else it is detached.

        Returns:
            ``EnergySamplerModelOutput(sample=u, divergence=D)`` or ``(u, D)``.
        """
        if sample.ndim != 2 or sample.shape[1] != self.config.sample_size:
            raise ValueError(f"expected a sample of shape (batch, {self.config.sample_size}), got {tuple(sample.shape)}")
        if divergence not in SAMPLER_DIVERGENCES:
            raise ValueError(f"divergence must be one of {SAMPLER_DIVERGENCES}, got {divergence!r}")
        if score is None:
            raise ValueError("EnergySamplerMLPModel needs the target's score: pass score=target.score (a callable) or "
                             "a tensor of grad log rho at `sample` (with divergence='none')")
        if isinstance(score, torch.Tensor) and divergence != "none":
            raise ValueError("a score tensor is fixed, so the divergence would miss its dependence on x: pass the score "
                             "as a callable (score=target.score), or use divergence='none'")
        sigma = timesteps_per_sample(timestep, sample, "timestep").to(sample.dtype) / TIMESTEP_SCALE
        h = timesteps_per_sample(step, sample, "step").to(sample.dtype) / TIMESTEP_SCALE
        delta = h.abs()
        d = sample.shape[1]
        if divergence == "auto":
            divergence = "exact" if d <= EXACT_TRACE_MAX_DIMS else "hutchinson"
        outer_grad = torch.is_grad_enabled()
        jacobian_sq = None
        if divergence == "none":
            s = score(sample) if callable(score) else score
            u = self.velocity(sample, sigma, delta, s)
            D = torch.zeros(sample.shape[0], device=sample.device, dtype=sample.dtype)
        else:
            with torch.enable_grad():
                x = sample if sample.requires_grad else sample.detach().requires_grad_(True)
                u = self.velocity(x, sigma, delta, score(x))
                keep = create_graph and outer_grad
                if divergence == "hutchinson":
                    v = probe if probe is not None else hutchinson_probes(x, 1, generator=generator)[0]
                    (g,) = torch.autograd.grad(u, x, grad_outputs=v, create_graph=keep, retain_graph=True)
                    D = (g * v).sum(1)
                    jacobian_sq = (g**2).mean(1)
                else:
                    rows = []
                    for i in range(d):
                        e = torch.zeros_like(x)
                        e[:, i] = 1.0
                        (g,) = torch.autograd.grad(u, x, grad_outputs=e, create_graph=keep, retain_graph=True)
                        rows.append(g)
                    jac = torch.stack(rows, dim=1)  # (batch, i, j) = du_i / dx_j
                    trace = jac.diagonal(dim1=1, dim2=2).sum(-1)
                    if divergence == "exact":
                        D = trace
                    else:
                        eye = torch.eye(d, device=x.device, dtype=x.dtype)
                        _, logabsdet = torch.linalg.slogdet(eye + h[:, None, None] * jac)
                        safe_h = torch.where(h == 0, torch.ones_like(h), h)
                        D = torch.where(h == 0, trace, logabsdet / safe_h)
            if not keep:
                D = D.detach()
                jacobian_sq = None if jacobian_sq is None else jacobian_sq.detach()
                if not outer_grad:
                    u = u.detach()
        if not return_dict:
            return (u, D)
        return EnergySamplerModelOutput(sample=u, divergence=D, jacobian_sq=jacobian_sq)
