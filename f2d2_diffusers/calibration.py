"""Segment-by-segment comparison of a joint flow map with its teacher's ODE.

A few-step likelihood is a sum over grid segments, so its error is the sum of per-segment errors. Starting each
segment from the teacher's own state isolates each segment's contribution: where on the grid (near the data or
the noise end), and whether the state or the divergence integral is off.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.utils import BaseOutput

from .flow_map import evaluate_flow_map, flow_map_step
from .reference_likelihood import ReferenceLikelihoodOutput


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
