"""How well a joint flow map's few-step likelihoods match its teacher's ODE: in total and segment by segment.

:func:`likelihood_calibration` scores the same (dequantised) data with the map at a few step counts and compares
each with the teacher's reference likelihood. A few-step likelihood is a sum over grid segments, so its error is
the sum of per-segment errors; :func:`segment_calibration` starts each segment from the teacher's own state to
isolate each one's contribution: where on the grid (near the data or the noise end), and whether the state or the
divergence integral is off.
"""

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from diffusers.utils import BaseOutput

from .dequantization import bits_per_dim, standard_normal_log_prob
from .flow_map import evaluate_flow_map, evaluate_velocity, flow_map_step, integrate_flow_map
from .reference_likelihood import ReferenceLikelihoodOutput, reference_log_likelihood
from .schedulers import F2D2Scheduler


def likelihood_score(log_prob: torch.Tensor, num_dims: int, num_levels: Optional[int]) -> torch.Tensor:
    """Per-sample score in a report's unit: bits/dim on the grey-level scale (discrete data), else NLL in nats."""
    return bits_per_dim(log_prob.float(), num_dims, num_levels) if num_levels else -log_prob.float()


def likelihood_score_unit(num_levels: Optional[int]) -> str:
    """The unit :func:`likelihood_score` reports in."""
    return "bits/dim" if num_levels else "nats"


@dataclass
class LikelihoodCalibration(BaseOutput):
    """
    Args:
        rows (`List[dict]`): one per method: ``evaluation`` (``"reference"``, ``"bidirectional"`` or ``"paper"``),
            ``steps``, ``nfe``, ``value`` (mean bits/dim, or mean NLL in nats for continuous data), ``error`` (mean of
            the per-sample difference to the reference), ``abs_error`` (its mean absolute value) and ``seconds``.
        unit (`str`): ``"bits/dim"`` (discrete data, on the grey-level scale) or ``"nats"`` (continuous data).
        num_points (`int`): how many data points were scored.
        reference (`ReferenceLikelihoodOutput`): the teacher's solve, reusable (e.g. for :func:`segment_calibration`).
    """

    rows: List[dict]
    unit: str
    num_points: int
    reference: ReferenceLikelihoodOutput


def likelihood_calibration(
    pipeline,
    teacher,
    sample: torch.Tensor,
    num_levels: Optional[int] = None,
    steps: Sequence[int] = (1, 2, 4, 8),
    evaluations: Sequence[str] = ("bidirectional", "paper"),
    reference: Optional[ReferenceLikelihoodOutput] = None,
    **reference_kwargs,
) -> LikelihoodCalibration:
    """Few-step likelihoods of ``pipeline`` (an ``F2D2LikelihoodPipeline``) against ``teacher``'s ODE.

    Args:
        sample: model-space data, already dequantised, shape ``(batch, *dims)``; both sides score exactly it.
        num_levels: grey levels of discrete data (errors in bits/dim); ``None`` for continuous data (nats).
        reference: a precomputed ``reference_log_likelihood(teacher, sample, ...)``; computed when omitted, with
            ``reference_kwargs`` (default dopri5, exact divergence, rtol = atol = 1e-5).
    """
    num_dims = sample[0].numel()

    def score(log_prob):
        return likelihood_score(log_prob, num_dims, num_levels)

    seconds = None
    if reference is None:
        start = time.perf_counter()
        reference = reference_log_likelihood(teacher, sample, num_levels=num_levels, **reference_kwargs)
        seconds = time.perf_counter() - start
    ref_score = score(reference.log_prob)
    rows = [dict(evaluation="reference", steps=None, nfe=reference.nfe, value=ref_score.mean().item(), error=0.0,
                 abs_error=0.0, seconds=seconds)]
    for evaluation in evaluations:
        for num_steps in steps:
            start = time.perf_counter()
            out = pipeline(sample, num_inference_steps=num_steps, dequantize=False, evaluation=evaluation)
            elapsed = time.perf_counter() - start
            diff = score(out.log_prob) - ref_score
            rows.append(dict(evaluation=evaluation, steps=num_steps, nfe=out.nfe, value=score(out.log_prob).mean().item(),
                             error=diff.mean().item(), abs_error=diff.abs().mean().item(), seconds=elapsed))
    return LikelihoodCalibration(rows=rows, unit=likelihood_score_unit(num_levels), num_points=sample.shape[0],
                                 reference=reference)


def sampling_path_calibration(
    pipeline,
    teacher,
    num_samples: int,
    steps: Sequence[int] = (1, 2, 4),
    generator: Optional[torch.Generator] = None,
    continuous_bits: bool = True,
    sample_shape: Optional[Sequence[int]] = None,
    **reference_kwargs,
) -> List[dict]:
    """The log-density an ``F2D2Pipeline`` returns with its own samples against ``teacher``'s ODE at those samples.

    For each step count, ``num_samples`` samples are drawn (the same noise for every count; ``sample_shape`` defaults
    to the model config's) and their "free"
    ``log_prob`` (model space, continuous) is compared with ``reference_log_likelihood(teacher, samples)``.

    Returns one row per step count: ``steps``, ``nfe``, ``value`` (mean of the map's score), ``reference`` (mean of
    the teacher's), ``error`` (mean per-sample difference, positive = the map finds its samples likelier than the
    teacher does), ``abs_error``, ``unit`` (continuous bits/dim for images with ``continuous_bits``, else nats).

    The same samples are also re-scored as the pipeline does with ``log_prob_steps`` equal to the step count (the
    returned sample encoded in as many more calls): ``rescored_value``, ``rescored_error``, ``rescored_abs_error``
    and ``rescored_nfe`` (the calls of the re-scoring alone). The free log-density follows the divergence along the
    path the map was trained to take from the noise, so it belongs to the teacher's sample from that noise; the
    re-scored one is measured at the sample the map actually returned (``docs/method.md`` 6.2).
    """
    shape = sample_shape if sample_shape is not None else pipeline._model_sample_shape()
    if shape is None:
        raise ValueError("the model's config has no sample_size; pass `sample_shape`")
    noise = torch.randn(num_samples, *shape, generator=generator).to(pipeline.device, pipeline.unet.dtype)
    rows = []
    for num_steps in steps:
        out = pipeline(latents=noise, num_inference_steps=num_steps, output_type="latent")
        samples = out.images
        reference = reference_log_likelihood(teacher, samples, **reference_kwargs)
        num_dims = samples[0].numel()
        as_bits = continuous_bits and samples.ndim == 4

        def score(log_prob):
            # Scores here are log-densities (higher = likelier), so the sign reads as "too optimistic" when > 0.
            return -bits_per_dim(log_prob.float(), num_dims, None) if as_bits else log_prob.float()

        diff = score(out.log_prob) - score(reference.log_prob)
        rescored = pipeline(latents=noise, num_inference_steps=num_steps, output_type="latent",
                            log_prob_steps=num_steps)
        if not torch.equal(rescored.images, samples):
            raise RuntimeError("the pipeline's samples changed between two calls with the same noise")
        rescored_diff = score(rescored.log_prob) - score(reference.log_prob)
        rows.append(dict(steps=num_steps, nfe=out.nfe, value=score(out.log_prob).mean().item(),
                         reference=score(reference.log_prob).mean().item(), error=diff.mean().item(),
                         abs_error=diff.abs().mean().item(), unit="bits/dim (continuous)" if as_bits else "nats",
                         reference_nfe=reference.nfe, rescored_value=score(rescored.log_prob).mean().item(),
                         rescored_error=rescored_diff.mean().item(), rescored_abs_error=rescored_diff.abs().mean().item(),
                         rescored_nfe=rescored.nfe - out.nfe))
    return rows


@dataclass
class SegmentCalibration(BaseOutput):
    """
    Per segment ``[sigmas[k], sigmas[k+1]]`` (index ``k``), averaged over the batch:

    Args:
        sigmas (`torch.Tensor`): the grid, increasing from 0 to 1.
        teacher_integral (`torch.Tensor`): mean of the teacher's ``integral div v`` over the segment (nats).
        integral_error (`torch.Tensor`): mean of (map's ``h * D`` minus the teacher's integral) (nats).
        integral_abs_error (`torch.Tensor`): mean absolute value of the same difference (nats).
        state_error (`torch.Tensor`): mean L2 distance between the map's end point and the teacher's.
        direction (`str`): ``"likelihood"`` (segments started at their data-side end, ``h > 0``) or ``"sample"``
            (started at their noise-side end, ``h < 0``, compared with the teacher's path run backwards).
    """

    sigmas: torch.Tensor
    teacher_integral: torch.Tensor
    integral_error: torch.Tensor
    integral_abs_error: torch.Tensor
    state_error: torch.Tensor
    direction: str


@torch.no_grad()
def segment_calibration(
    flow_map, reference: ReferenceLikelihoodOutput, sigmas: Sequence[float], direction: str = "likelihood"
) -> SegmentCalibration:
    """Compare ``flow_map`` with a teacher path ``reference`` computed with the same ``sigmas``.

    ``reference`` comes from :func:`~f2d2_diffusers.reference_likelihood.reference_log_likelihood` called with
    ``sigmas=sigmas``, so it holds the teacher's states and cumulative divergence integrals at each grid point.
    """
    if reference.trajectory is None or reference.trajectory.shape[0] != len(sigmas):
        raise ValueError("reference must be computed with the same `sigmas` (it holds no matching trajectory)")
    if direction not in ("likelihood", "sample"):
        raise ValueError(f"direction must be 'likelihood' or 'sample', got {direction!r}")
    grid = [float(s) for s in sigmas]
    states, integrals = reference.trajectory, reference.divergence_integrals
    rows = {"teacher": [], "error": [], "abs_error": [], "state": []}
    for k in range(len(grid) - 1):
        teacher_integral = (integrals[k + 1] - integrals[k]).float()
        if direction == "likelihood":
            start, target, sigma, h = states[k], states[k + 1], grid[k], grid[k + 1] - grid[k]
        else:
            start, target, sigma, h = states[k + 1], states[k], grid[k + 1], grid[k] - grid[k + 1]
        dtype = flow_map.dtype
        output = evaluate_flow_map(flow_map, start.to(dtype), sigma, h)
        end, delta_log_prob = flow_map_step(start.to(dtype), output.sample, output.divergence, h)
        # Along a segment log p changes by -integral when encoding and by +integral when sampling.
        integral = -delta_log_prob.float() if direction == "likelihood" else delta_log_prob.float()
        error = integral - teacher_integral
        rows["teacher"].append(teacher_integral.mean())
        rows["error"].append(error.mean())
        rows["abs_error"].append(error.abs().mean())
        rows["state"].append((end.float() - target.float()).reshape(end.shape[0], -1).norm(dim=1).mean())
    return SegmentCalibration(
        sigmas=torch.tensor(grid),
        teacher_integral=torch.stack(rows["teacher"]),
        integral_error=torch.stack(rows["error"]),
        integral_abs_error=torch.stack(rows["abs_error"]),
        state_error=torch.stack(rows["state"]),
        direction=direction,
    )


@dataclass
class LikelihoodErrorBudget(BaseOutput):
    """
    One row per step count of the few-step likelihood's error against the teacher's ODE, split exactly into its
    parts (``docs/method.md`` section 6.1), each a per-sample mean in nats of log-density (positive = the map is too
    optimistic). With ``T`` the teacher's end point, ``x_K`` the map's and ``eps = T - x_K``:
    ``error = radial + spread + divergence``, ``radial = x_K . eps``, ``spread = |eps|^2 / 2``,
    ``divergence = sum_k h_k D_k - integral div v``.

    Args:
        rows (`List[dict]`): ``steps``, ``error``, ``radial``, ``spread``, ``divergence`` (nats), ``end_point_error``
            (mean L2 norm ``|eps|`` over the whole sample), ``end_point_norm`` (mean ``|x_K|``) and, when asked for, ``map_log_det`` (mean
            ``log|det d x_K / d x_0|`` of the map's own end point) and ``self_consistent_error`` (the error of
            ``log N(x_K) + map_log_det``, the density the map's state update alone defines).
        teacher_end_point_norm (`float`): mean ``|T|``.
    """

    rows: List[dict]
    teacher_end_point_norm: float


def likelihood_error_budget(
    flow_map,
    sample: torch.Tensor,
    teacher_end: torch.Tensor,
    teacher_integral: torch.Tensor,
    steps: Sequence[int] = (1, 2, 4, 8),
    map_log_det: bool = False,
    shift: float = 1.0,
) -> LikelihoodErrorBudget:
    """Split ``flow_map``'s few-step likelihood error on ``sample`` into the prior term's radial and spread parts and
    the divergence part (see :class:`LikelihoodErrorBudget`).

    Args:
        sample: model-space data (dequantised), ``(batch, *dims)``; the encoding runs on the grid of
            ``F2D2Scheduler(shift=shift)`` (uniform ``k/K`` for the default 1; give a map its scheduler's
            ``shift_for("likelihood")``).
        teacher_end: the teacher's ODE state at ``sigma = 1`` for each sample, same shape.
        teacher_integral: ``integral_0^1 div v`` along the teacher's path, ``(batch,)`` nats.
        map_log_det: also compute the exact log-determinant of the K-step map's Jacobian (``d`` backward passes per
            step count; refused above 1,024 dimensions). ``flow_map`` must be in eval mode with samples that do not
            interact (no batch statistics), as the package's models are.
    """
    sample = sample.to(device=flow_map.device, dtype=flow_map.dtype)
    num_dims = sample[0].numel()
    if teacher_end.shape != sample.shape or teacher_integral.shape != (sample.shape[0],):
        raise ValueError(
            f"teacher_end must match sample's shape {tuple(sample.shape)} and teacher_integral be one value per sample; "
            f"got {tuple(teacher_end.shape)} and {tuple(teacher_integral.shape)}"
        )
    if map_log_det and num_dims > 1024:
        raise ValueError(f"map_log_det needs d backward passes; {num_dims} dimensions is too many (limit 1024)")
    teacher_end = teacher_end.reshape(sample.shape[0], -1).to(sample.device).double()
    teacher_integral = teacher_integral.to(sample.device).double()
    teacher_log_prob = standard_normal_log_prob(teacher_end) + teacher_integral

    def encode(x, num_steps):
        """The map's end point and ``sum_k h_k D_k`` along the likelihood grid, as the pipelines step it."""
        scheduler = F2D2Scheduler(shift=shift)
        scheduler.set_timesteps(num_steps, device=x.device, direction="likelihood")
        end, delta_log_prob, _ = integrate_flow_map(flow_map, scheduler, x)
        return end, -delta_log_prob.double()

    rows = []
    for num_steps in steps:
        with torch.no_grad():
            end, integral = encode(sample, num_steps)
        end = end.reshape(sample.shape[0], -1).double()
        eps = teacher_end - end
        radial, spread = (end * eps).sum(dim=1), eps.pow(2).sum(dim=1) / 2
        divergence = integral - teacher_integral
        row = dict(steps=num_steps, error=(radial + spread + divergence).mean().item(), radial=radial.mean().item(),
                   spread=spread.mean().item(), divergence=divergence.mean().item(),
                   end_point_error=eps.norm(dim=1).mean().item(), end_point_norm=end.norm(dim=1).mean().item())
        if map_log_det:
            log_det = _map_log_det(lambda x: encode(x, num_steps)[0], sample)
            row["map_log_det"] = log_det.mean().item()
            row["self_consistent_error"] = (standard_normal_log_prob(end) + log_det - teacher_log_prob).mean().item()
        rows.append(row)
    return LikelihoodErrorBudget(rows=rows, teacher_end_point_norm=teacher_end.norm(dim=1).mean().item())


def _map_log_det(encode, sample: torch.Tensor) -> torch.Tensor:
    """``log|det J|`` per sample of a per-sample map (``(batch, *dims) -> (batch, *dims)``), by ``d`` vectorised
    backward passes over the batch (samples do not interact in an eval-mode network)."""
    batch, num_dims = sample.shape[0], sample[0].numel()
    jacobian = torch.autograd.functional.jacobian(lambda x: encode(x).sum(dim=0), sample, vectorize=True)
    jacobian = jacobian.reshape(num_dims, batch, num_dims).transpose(0, 1)
    return torch.linalg.slogdet(jacobian.double())[1]


@torch.no_grad()
def tangent_error(flow_map, teacher, states: torch.Tensor, sigma: float) -> float:
    """Mean relative L2 error ``|u(x, sigma, 0) - v(x, sigma)| / |v(x, sigma)|`` of the map's zero-step velocity
    against the teacher's velocity at ``states`` (``(batch, *dims)``, e.g. the teacher's own ODE states at ``sigma``).
    The map's steps are built on this tangent, so its error bounds how well any small step can fit."""
    states = states.to(device=flow_map.device, dtype=flow_map.dtype)
    teacher_velocity = evaluate_velocity(teacher, states.to(teacher.dtype), sigma).to(states.dtype).flatten(1)
    map_velocity = evaluate_flow_map(flow_map, states, sigma, 0.0).sample.flatten(1)
    return ((map_velocity - teacher_velocity).norm(dim=1) / teacher_velocity.norm(dim=1)).mean().item()
