"""``EnergySamplerPipeline``: few-step samples from an unnormalised density, with the deterministic-flow ``log Z``.

Sign convention (``docs/method.md`` sections 4 and 7). The map runs from the prior at ``sigma = 1`` to the target at
``sigma = 0`` with steps ``h < 0``. Each step of the joint map gives ``X = x + h u`` and ``delta log p = -h D``
(``flow_map_step``), so the log-volume change of step ``k`` is ``A_k = h_k D_k = -delta log p_k`` and the pushed-forward
density is ``log q(x_K) = log p_prior(x_0) - sum_k A_k``. The importance log-weight of a sample is therefore

    log w = log rho(x_K) - log q(x_K) = log rho(x_K) - log p_prior(x_0) + sum_k A_k

and ``log Z ~= logsumexp(log w) - log N``, ``ELBO = mean(log w)``, ``ESS = (sum w)^2 / sum w^2`` (between 1 and N).
``tests/pipelines/test_pipeline_energy_sampler.py`` pins these signs on a Gaussian target whose flow is affine.
"""

import inspect
import json
import math
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..flow_map import TIMESTEP_SCALE, integrate_flow_map, is_flow_map_model, unwrap_model
from ..models.mlp_sampler import EnergySamplerMLPModel
from ..sampler_sde import VPCosineSchedule, check_prior_clip, gaussian_log_prob
from ..schedulers import F2D2Scheduler
from ..schedulers.interop import FLOW_MAP_SCHEDULERS, as_f2d2_scheduler
from ..targets import EnergyTarget, load_target
from .diffusers_loading import PackageLoadingMixin


#: ``volume=`` choices: the model's divergence method for the log-volume terms ``A_k``.
VOLUMES = ("auto", "exact", "hutchinson", "logdet")


@dataclass
class EnergySamplerPipelineOutput(BaseOutput):
    """
    Args:
        samples (`torch.Tensor` of shape `(batch, d)`): the end points ``x_K``.
        log_weights (`torch.Tensor` of shape `(batch,)`): importance log-weights ``log rho(x_K) - log q(x_K)``.
        log_Z (`float`): ``logsumexp(log_weights) - log N``.
        elbo (`float`): ``mean(log_weights)`` (for the reverse estimate: the EUBO).
        ess (`float`): effective sample size ``(sum w)^2 / sum w^2``, in ``[1, N]``.
        nfe (`int`): network calls per sample.
    """

    samples: torch.Tensor
    log_weights: torch.Tensor
    log_Z: float
    elbo: float
    ess: float
    nfe: int


def importance_summary(log_weights: torch.Tensor):
    """``(log_Z, elbo, ess)`` from importance log-weights (float64 reductions)."""
    lw = log_weights.double()
    bad = int((~torch.isfinite(lw)).sum())
    if bad:
        # A NaN or +inf weight would make log Z, ELBO and ESS NaN/inf; -inf ones are samples outside the support.
        if bool(torch.isnan(lw).any() | (lw == float("inf")).any()):
            raise ValueError(f"{bad} of {lw.numel()} importance log-weights are NaN or +inf (the map or the target "
                             "returned non-finite values); no log Z can be formed")
    n = lw.numel()
    log_z = float(torch.logsumexp(lw, 0) - math.log(n))
    ess = float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))
    return log_z, float(lw.mean()), ess


class _ScoredMap(torch.nn.Module):
    """A flow map called as ``model(sample, timestep, step, return_dict=True)`` with the target's score and the
    divergence method bound, so that the package's ``integrate_flow_map`` drives it unchanged."""

    def __init__(self, model, target, divergence: str, generator=None):
        super().__init__()
        self.model, self.target = model, target
        params = inspect.signature(unwrap_model(model).forward).parameters
        self.kwargs = {}
        if "score" in params:
            self.kwargs["score"] = target.score
        if "divergence" in params:
            self.kwargs["divergence"] = divergence
        if "generator" in params:
            self.kwargs["generator"] = generator

    def forward(self, sample, timestep, step, return_dict=True):
        return self.model(sample, timestep, step, return_dict=True, **self.kwargs)


class EnergySamplerPipeline(PackageLoadingMixin, DiffusionPipeline):
    r"""
    Few-step sampler for an unnormalised target ``rho``, with importance weights from the deterministic flow.

    Components: ``model``, a joint flow map ``forward(sample, timestep, step, score=...)`` (an
    [`EnergySamplerMLPModel`]), and ``scheduler``, an [`F2D2Scheduler`] (its uniform sampling grid). ``target`` (saved
    in ``model_index.json``) is a built-in name (``"gmm40"``) or ``"path/to/file.py:ClassName"``; an
    ``EnergyTarget`` instance is accepted too and recorded by its ``name``. ``from_pretrained(folder, target=...)``
    overrides the recorded one (e.g. a user file that moved).
    """

    model_cpu_offload_seq = "model"

    def __init__(self, model: Union[EnergySamplerMLPModel, ModelMixin], scheduler: Union[FLOW_MAP_SCHEDULERS],
                 target: Union[str, EnergyTarget, None] = None):
        super().__init__()
        if not isinstance(model, torch.nn.Module) or not is_flow_map_model(model):
            raise TypeError(f"model must be a joint flow map (forward(sample, timestep, step)), got {type(model).__name__}")
        if target is None:
            raise ValueError("EnergySamplerPipeline needs a target: a built-in name (e.g. 'gmm40'), "
                             "'path/to/file.py:ClassName' or an EnergyTarget")
        target_obj = load_target(target)
        size = (getattr(model, "config", None) or {}).get("sample_size")
        if size is not None and size != target_obj.dim:
            raise ValueError(f"the model samples {size}-D vectors but target {target_obj.name!r} is {target_obj.dim}-D")
        self.target = target_obj
        self.register_modules(model=model, scheduler=scheduler)
        self.register_to_config(target=target_obj.name if isinstance(target, EnergyTarget) else target)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """``DiffusionPipeline.from_pretrained``; a recorded ``"file.py:Class"`` target whose path is relative is looked
        for inside the folder first (``train_sampler.py`` copies a user's target file to ``target/``)."""
        folder = os.fspath(pretrained_model_name_or_path)
        index_path = os.path.join(folder, "model_index.json")
        if "target" not in kwargs and os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                spec = json.load(f).get("target")
            if isinstance(spec, str) and ".py:" in spec:
                path, _, class_name = spec.rpartition(":")
                inside = os.path.join(folder, path)
                if not os.path.isabs(path) and os.path.isfile(inside):
                    kwargs["target"] = f"{inside}:{class_name}"
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # --- pieces ------------------------------------------------------------------------------------------------

    @property
    def noise_schedule(self) -> VPCosineSchedule:
        """The model's VP process (prior scale and ``beta``); a model without one gets ``N(0, I)`` and the defaults."""
        schedule = getattr(unwrap_model(self.model), "noise_schedule", None)
        return schedule if schedule is not None else VPCosineSchedule()

    def _prior(self, batch_size, generator, prior_clip):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return self.noise_schedule.sample_prior((batch_size, self.target.dim), generator=generator,
                                                device=self._execution_device, dtype=self.model.dtype, clip=prior_clip)

    def _latents(self, latents, batch_size):
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise ValueError(f"latents must be a floating-point torch.Tensor, got {getattr(latents, 'dtype', type(latents).__name__)}")
        if latents.ndim != 2 or latents.shape[1] != self.target.dim or latents.shape[0] < 1:
            raise ValueError(f"latents must have shape (batch, {self.target.dim}), got {tuple(latents.shape)}")
        if batch_size not in (1, latents.shape[0]):
            raise ValueError(f"batch_size={batch_size} does not match latents with batch {latents.shape[0]}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values")
        return latents.to(self._execution_device, self.model.dtype)

    def _scheduler(self, num_inference_steps, direction="sample") -> F2D2Scheduler:
        scheduler = as_f2d2_scheduler(self.scheduler)
        scheduler.set_timesteps(num_inference_steps, device=self._execution_device, direction=direction)
        return scheduler

    @staticmethod
    def _check_volume(volume):
        if volume not in VOLUMES:
            raise ValueError(f"volume must be one of {VOLUMES}, got {volume!r}")

    def _output(self, samples, log_weights, nfe, return_dict):
        log_z, elbo, ess = importance_summary(log_weights)
        if not return_dict:
            return (samples, log_weights, log_z, elbo, ess, nfe)
        return EnergySamplerPipelineOutput(samples=samples, log_weights=log_weights, log_Z=log_z, elbo=elbo, ess=ess,
                                           nfe=nfe)

    # --- the deterministic flow ----------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 1,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        volume: str = "auto",
        latents: Optional[torch.Tensor] = None,
        prior_clip: Optional[float] = 4.0,
    ) -> Union[EnergySamplerPipelineOutput, tuple]:
        r"""
        Sample with ``num_inference_steps`` steps of the map and weight each sample by the deterministic flow.

        Args:
            batch_size: number of samples ``N``.
            num_inference_steps: network calls ``K`` on the uniform grid ``sigma_k = 1 - k / K``.
            generator: for the prior draws (and Hutchinson probes).
            volume: how the model computes ``D`` for ``A_k = h D``: ``"auto"`` (exact trace up to 64 dimensions, else
                Hutchinson: the paper's first-order deterministic-flow weight), ``"exact"``, ``"hutchinson"``, or
                ``"logdet"`` (``log|det(I + h du/dx)|``, the exact change of variables of each Euler step).
            latents: prior draws ``x_0`` to use instead of fresh ones, shape ``(batch, d)``.
            prior_clip: prior draws are clipped to ``+-prior_clip * sigma_0`` (the reference code's 4; ``None``: off).

        Returns:
            [`EnergySamplerPipelineOutput`] or ``(samples, log_weights, log_Z, elbo, ess, nfe)``.
        """
        self._check_volume(volume)
        check_prior_clip(prior_clip)
        x0 = self._prior(batch_size, generator, prior_clip) if latents is None else self._latents(latents, batch_size)
        scheduler = self._scheduler(num_inference_steps)
        scored = _ScoredMap(self.model, self.target, volume, generator)
        with self.progress_bar(total=scheduler.num_inference_steps) as progress_bar:
            samples, delta_log_prob, nfe = integrate_flow_map(scored, scheduler, x0, progress_bar)
        # log q(x_K) = log p_prior(x_0) + sum(-h D); log w = log rho(x_K) - log q(x_K)
        log_q = self.noise_schedule.prior_log_prob(x0.float()) + delta_log_prob
        log_weights = self.target.log_prob(samples.float()) - log_q
        return self._output(samples, log_weights, nfe, return_dict)

    # --- Euler-Maruyama path-space weights (for comparison) ----------------------------------------------------

    @torch.no_grad()
    def euler_maruyama(
        self, batch_size: int = 1, num_inference_steps: int = 1, generator: Optional[torch.Generator] = None,
        return_dict: bool = True, prior_clip: Optional[float] = 4.0,
    ) -> Union[EnergySamplerPipelineOutput, tuple]:
        r"""The usual path-space estimate: the SDE with ``num_inference_steps`` Euler-Maruyama steps and
        ``log w = log rho(x_K) - log p_prior(x_0) + sum_k [log p_bwd(x_k | x_k+1) - log p_fwd(x_k+1 | x_k)]``
        with the EM backward kernel of the VP reference process (``f2d2_diffusers.sampler_sde``). It degrades at few
        steps, where the EM kernels are far from the true transitions; the deterministic flow (``__call__``) does not.
        Needs a model with a ``noise_schedule``."""
        schedule = self.noise_schedule
        x = self._prior(batch_size, generator, prior_clip)
        log_w = -schedule.prior_log_prob(x.float())
        scheduler = self._scheduler(num_inference_steps)
        scored = _ScoredMap(self.model, self.target, "none")
        with self.progress_bar(total=scheduler.num_inference_steps) as progress_bar:
            for timestep, step_size in zip(scheduler.timesteps, scheduler.step_sizes):
                sigma = (timestep / TIMESTEP_SCALE).to(x.dtype).expand(x.shape[0])
                delta = float(-step_size / TIMESTEP_SCALE)
                u = scored(x, sigma * TIMESTEP_SCALE, torch.full_like(sigma, -delta * TIMESTEP_SCALE)).sample
                beta, g = schedule.beta(sigma)[:, None], schedule.diffusion(sigma)[:, None]
                control = (-2 * u - beta * x) / g
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x_next, mean, std = schedule.sde_step(x, control, sigma, delta, noise)
                log_w = log_w + schedule.backward_log_prob(x, x_next, sigma, delta) - gaussian_log_prob(x_next, mean, std)
                x = x_next
                progress_bar.update()
        log_w = log_w + self.target.log_prob(x.float())
        return self._output(x, log_w.float(), len(scheduler.timesteps), return_dict)

    # --- reverse estimate from exact target samples -------------------------------------------------------------

    @torch.no_grad()
    def reverse_estimate(
        self, samples: Optional[torch.Tensor] = None, batch_size: int = 1, num_inference_steps: int = 1,
        generator: Optional[torch.Generator] = None, return_dict: bool = True, volume: str = "auto",
    ) -> Union[EnergySamplerPipelineOutput, tuple]:
        r"""Weights of exact target samples under the map run backwards (the EUBO side).

        From ``x_K ~ p`` (``samples``, or ``batch_size`` draws of ``target.sample``) the inverse Euler steps
        ``x_k = x_k+1 - h u(x_k+1, sigma_k, h)`` go back to the prior (the step is queried at the point it leaves,
        the paper's approximate inverse), with the same ``A_k`` terms; ``log w = log rho(x_K) - log p_prior(x_0) +
        sum_k A_k``. Returns ``elbo`` = the EUBO (``mean log w``) and ``log_Z = -(logsumexp(-log w) - log N)``;
        ``samples`` are the prior-side end points."""
        self._check_volume(volume)
        if samples is None:
            if not self.target.has_samples:
                raise ValueError(f"target {self.target.name!r} has no exact sampler; pass `samples`")
            samples = self.target.sample(batch_size, generator=generator)
        x = samples.to(self._execution_device, self.model.dtype)
        x_end = x
        scheduler = self._scheduler(num_inference_steps)
        scored = _ScoredMap(self.model, self.target, volume, generator)
        volume_sum = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
        timesteps = list(zip(scheduler.timesteps, scheduler.step_sizes))
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for timestep, step_size in reversed(timesteps):
                # queried at the forward step's start code (the grid point the sampler visits), from the point x
                out = scored(x, timestep.to(x.dtype).expand(x.shape[0]), step_size.to(x.dtype).expand(x.shape[0]))
                h = float(step_size / TIMESTEP_SCALE)
                x = x - h * out.sample
                volume_sum = volume_sum + (h * out.divergence).float()
                progress_bar.update()
        log_w = self.target.log_prob(x_end.float()) - self.noise_schedule.prior_log_prob(x.float()) + volume_sum
        lw = log_w.double()
        n = lw.numel()
        log_z = float(-(torch.logsumexp(-lw, 0) - math.log(n)))
        ess = float(torch.exp(2 * torch.logsumexp(-lw, 0) - torch.logsumexp(-2 * lw, 0)))
        if not return_dict:
            return (x, log_w, log_z, float(lw.mean()), ess, len(timesteps))
        return EnergySamplerPipelineOutput(samples=x, log_weights=log_w, log_Z=log_z, elbo=float(lw.mean()), ess=ess,
                                           nfe=len(timesteps))
