"""The tangent targets both distillation objectives regress on (``docs/method.md`` sections 5.2 and 5.4)."""

import torch

from ..divergence import velocity_and_divergence
from ..flow_map import evaluate_velocity


@torch.no_grad()
def velocity_targets(teacher, target_model, x, sigma, noise, data, divergence: str, num_probes: int, generator):
    """``(v, div v)`` at ``x = x_sigma``, stop-gradient.

    With a teacher: its velocity and its divergence (``divergence``: ``"exact"`` or ``"hutchinson"``). Without one
    (self-distillation): the conditional velocity ``noise - data`` and the divergence of ``target_model``'s own
    ``u(., sigma, 0)``.
    """
    if teacher is not None:
        return velocity_and_divergence(lambda z: evaluate_velocity(teacher, z, sigma), x, divergence, num_probes, generator)
    _, velocity_divergence = velocity_and_divergence(
        lambda z: evaluate_velocity(target_model, z, sigma), x, divergence, num_probes, generator
    )
    return noise - data, velocity_divergence
