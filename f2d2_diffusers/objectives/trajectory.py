"""Direct supervision of the joint map on cached teacher trajectories (``docs/method.md`` section 5.3).

The semigroup loss reaches a large step only through a recursion of half steps, so its errors compound over the
levels. Here the segments that few-step grids use are regressed directly on the teacher's ODE solution: for grid
points ``a < b`` of one path, with states ``x_a, x_b`` and cumulative divergence integrals ``I_a, I_b``,

    encoding  (h = sigma_b - sigma_a > 0, from x_a):  u* = (x_b - x_a) / h,  D* = (I_b - I_a) / h
    sampling  (h = sigma_a - sigma_b < 0, from x_b):  the same u* and D* (the path and its integral are shared).
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.utils import BaseOutput

from ..flow_map import broadcast_to_sample, evaluate_flow_map
from .steps import check_directions


@dataclass
class TrajectoryF2D2LossOutput(BaseOutput):
    """
    Args:
        loss: the scalar to minimise (per-dimension velocity MSE plus weighted per-dimension divergence MSE).
        velocity_loss: mean squared error of the average velocity, per dimension.
        divergence_loss: mean squared error of the average divergence per dimension.
    """

    loss: torch.Tensor
    velocity_loss: torch.Tensor
    divergence_loss: torch.Tensor


def trajectory_segments(sigmas: torch.Tensor, grids: Sequence[int]) -> torch.Tensor:
    """Index pairs ``(a, b)`` into ``sigmas`` of every segment of the uniform ``K``-step grids, ``K`` in ``grids``.

    Raises ``ValueError`` when a grid point ``k / K`` is not one of ``sigmas``.
    """
    pairs = []
    for num_steps in grids:
        points = []
        for k in range(num_steps + 1):
            match = torch.nonzero((sigmas - k / num_steps).abs() < 1e-6).flatten()
            if match.numel() != 1:
                raise ValueError(f"the trajectories have no state at sigma = {k}/{num_steps} (grid {sigmas.tolist()})")
            points.append(int(match))
        pairs.extend(zip(points[:-1], points[1:]))
    return torch.tensor(pairs, dtype=torch.long)


def trajectory_f2d2_loss(
    model,
    states: torch.Tensor,
    integrals: torch.Tensor,
    sigmas: torch.Tensor,
    grids: Sequence[int] = (1, 2, 4, 8),
    directions: str = "both",
    generator: Optional[torch.Generator] = None,
    divergence_weight: float = 1.0,
) -> TrajectoryF2D2LossOutput:
    """Regress ``u`` and ``D`` on one random grid segment of each teacher path.

    Args:
        states: the teacher's states, ``(batch, K + 1, *dims)``, at ``sigmas`` (``(K + 1,)``, increasing 0 to 1).
        integrals: ``int_0^sigma div v`` along each path, ``(batch, K + 1)``, nats.
        grids: the uniform step counts whose segments are trained (the grids inference will use).
        directions: ``"both"`` trains each segment as an encoding or a sampling step at random, ``"forward"`` only
            sampling steps.
    """
    check_directions(directions)
    if states.ndim < 3 or integrals.shape != states.shape[:2] or sigmas.shape != states.shape[1:2]:
        raise ValueError(f"states (batch, K+1, *dims), integrals (batch, K+1) and sigmas (K+1,) do not match: "
                         f"{tuple(states.shape)}, {tuple(integrals.shape)}, {tuple(sigmas.shape)}")
    batch_size, num_dims = states.shape[0], states[0, 0].numel()
    device = states.device
    sigmas = sigmas.to(device=device, dtype=states.dtype)
    segments = trajectory_segments(sigmas.cpu(), grids).to(device)
    choice = segments[torch.randint(0, segments.shape[0], (batch_size,), generator=generator).to(device)]
    rows = torch.arange(batch_size, device=device)
    a, b = choice[:, 0], choice[:, 1]
    x_a, x_b = states[rows, a], states[rows, b]
    size = sigmas[b] - sigmas[a]
    u_target = (x_b - x_a) / broadcast_to_sample(size, x_a)
    div_target = (integrals[rows, b] - integrals[rows, a]) / size
    if directions == "both":
        encode = torch.randint(0, 2, (batch_size,), generator=generator).bool().to(device)
    else:
        encode = torch.zeros(batch_size, dtype=torch.bool, device=device)
    start = torch.where(broadcast_to_sample(encode, x_a), x_a, x_b)
    sigma = torch.where(encode, sigmas[a], sigmas[b])
    h = torch.where(encode, size, -size)
    prediction = evaluate_flow_map(model, start, sigma, h)
    velocity_error = (prediction.sample.float() - u_target.float()).pow(2).reshape(batch_size, -1).mean(dim=1)
    divergence_error = ((prediction.divergence.float() - div_target.float()) / num_dims).pow(2)
    return TrajectoryF2D2LossOutput(
        loss=(velocity_error + divergence_weight * divergence_error).mean(),
        velocity_loss=velocity_error.mean().detach(),
        divergence_loss=divergence_error.mean().detach(),
    )
