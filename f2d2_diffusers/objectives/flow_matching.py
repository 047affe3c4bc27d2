"""Flow-matching objective for a teacher velocity ``v(x, sigma)`` (``docs/method.md`` section 5.1)."""

from typing import Optional

import torch

from ..flow_map import evaluate_velocity, interpolant


def flow_matching_loss(model, batch: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``|| v(x_sigma, sigma) - (eps - x_data) ||^2`` averaged over dimensions and batch, ``sigma ~ U[0, 1]``.

    ``model`` is called like ``UNet2DModel`` (or is a flow-map model, trained at zero step); ``batch`` holds
    model-space data ``(batch, *dims)``.
    """
    sigma = torch.rand(batch.shape[0], generator=generator, device=batch.device, dtype=batch.dtype)
    noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
    prediction = evaluate_velocity(model, interpolant(batch, noise, sigma), sigma)
    return (prediction.float() - (noise - batch).float()).pow(2).mean()
