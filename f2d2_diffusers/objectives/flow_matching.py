"""Flow-matching objective for a teacher velocity ``v(x, sigma)`` (``docs/method.md`` section 5.1)."""

from typing import Dict, Optional, Sequence, Tuple

import torch

from ..flow_map import evaluate_velocity, interpolant

#: Bands of ``sigma`` the held-out loss is reported in: memorisation shows at small and middle ``sigma``, where the
#: interpolant still identifies its training image; near ``sigma = 1`` every model sees the same noise.
SIGMA_BANDS: Tuple[Tuple[float, float], ...] = ((0.0, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.0))


def _squared_error(model, batch: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``|| v(x_sigma, sigma) - (eps - x_data) ||^2`` averaged over dimensions and batch."""
    prediction = evaluate_velocity(model, interpolant(batch, noise, sigma), sigma)
    return (prediction.float() - (noise - batch).float()).pow(2).mean()


def flow_matching_loss(model, batch: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``|| v(x_sigma, sigma) - (eps - x_data) ||^2`` averaged over dimensions and batch, ``sigma ~ U[0, 1]``.

    ``model`` is called like ``UNet2DModel`` (or is a flow-map model, trained at zero step); ``batch`` holds
    model-space data ``(batch, *dims)``.
    """
    sigma = torch.rand(batch.shape[0], generator=generator, device=batch.device, dtype=batch.dtype)
    noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
    return _squared_error(model, batch, sigma, noise)


@torch.no_grad()
def flow_matching_loss_by_band(
    model, data: torch.Tensor, bands: Sequence[Tuple[float, float]] = SIGMA_BANDS, repeats: int = 8,
    batch_size: int = 512, seed: int = 0,
) -> Dict[str, float]:
    """The flow-matching loss of ``model`` on ``data`` ``(N, *dims)`` (model space) within each band of ``sigma``.

    Each band is scored ``repeats`` times over all of ``data`` with ``sigma`` uniform in the band and fresh noise
    from ``seed``, so two data sets (training and held-out) scored with the same seed see the same draws of
    ``sigma``. Keys are ``"lo-hi"``. A held-out loss well above the training loss in the small-``sigma`` bands is a
    teacher that memorises its training data (``docs/method.md`` section 5.1).
    """
    generator = torch.Generator().manual_seed(seed)
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else data.device
    losses = {}
    for lo, hi in bands:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"each band must satisfy 0 <= lo < hi <= 1, got ({lo}, {hi})")
        total = 0.0
        for _ in range(repeats):
            for chunk in data.split(batch_size):
                sigma = lo + (hi - lo) * torch.rand(chunk.shape[0], generator=generator)
                noise = torch.randn(chunk.shape, generator=generator)
                error = _squared_error(model, chunk.to(device), sigma.to(device, chunk.dtype), noise.to(device, chunk.dtype))
                total += error.item() * chunk.shape[0]
        losses[f"{lo:g}-{hi:g}"] = total / (repeats * data.shape[0])
    return losses
