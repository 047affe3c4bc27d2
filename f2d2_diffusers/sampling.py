"""The teacher's baseline sampler: Euler on its velocity, through diffusers' ``FlowMatchEulerDiscreteScheduler``.

Benchmarks and the Space compare few-step F2D2 samples with this; a teacher is a plain velocity model
(``UNet2DModel`` or ``FlowMatchingMLPModel``) in diffusers' flow-matching convention, so diffusers' own scheduler
steps it.
"""

from typing import Optional

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .flow_map import TIMESTEP_SCALE, evaluate_velocity


@torch.no_grad()
def teacher_euler_sample(
    teacher, noise: torch.Tensor, num_steps: int, scheduler: Optional[FlowMatchEulerDiscreteScheduler] = None
) -> torch.Tensor:
    """Euler from ``sigma = 1`` to ``0`` on the uniform grid ``sigma_k = 1 - k / num_steps`` (``num_steps`` calls).

    Args:
        teacher: a velocity model ``v(x, sigma) = dx/dsigma`` called like ``UNet2DModel``.
        noise: the start at ``sigma = 1``, shape ``(batch, *dims)``.
        scheduler: the teacher's saved scheduler (its ``shift`` is honoured); default a fresh one.

    Returns:
        The samples at ``sigma = 0``, same shape as ``noise``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config) if scheduler is not None else (
        FlowMatchEulerDiscreteScheduler()
    )
    # Explicit sigmas: the scheduler appends the terminal sigma = 0 (its default grid stops short of 0).
    scheduler.set_timesteps(sigmas=list(np.linspace(1.0, 0.0, num_steps + 1)[:-1]), device=noise.device)
    sample = noise
    for timestep in scheduler.timesteps:
        velocity = evaluate_velocity(teacher, sample, float(timestep) / TIMESTEP_SCALE)
        sample = scheduler.step(velocity, timestep, sample).prev_sample
    return sample
