"""Where distillation starts: the data batch, widened beyond the training points (``docs/method.md`` section 5.5).

The distillation losses start their states from a batch of data (and its interpolants with noise). A map trained
only there is queried elsewhere: on held-out data, on its own samples, on out-of-distribution inputs. The teacher
defines its targets everywhere, so part of each batch may start from wider points instead:

- ``"gaussian"``: a training point plus ``N(0, noise_std^2 I)`` (model space);
- ``"mixup"``: ``lam * x_i + (1 - lam) * x_j`` of two batch points, ``lam ~ U(0, 1)``;
- ``"teacher"``: draws from a pool of the teacher's own samples (:func:`teacher_sample_pool`); with a prior
  ``temperature`` above 1 the pool reaches past the teacher's typical set, where held-out data lie (their ODE end
  points are longer than the training data's: digits 9.1 against 7.9 in 64 dimensions);
- ``"shift"`` (images): a training image moved by one pixel up, down, left or right, the uncovered edge filled with
  the background value ``-1`` (novel images of the kind a held-out writer gives).
"""

from typing import Optional

import torch

from ..sampling import teacher_euler_sample

#: ``kind=`` choices of :func:`widen_starts`.
START_WIDENINGS = ("none", "gaussian", "mixup", "teacher", "shift")


@torch.no_grad()
def teacher_sample_pool(teacher, shape, num_samples: int, num_steps: int = 64, batch_size: int = 256,
                        generator: Optional[torch.Generator] = None, scheduler=None,
                        temperature: float = 1.0) -> torch.Tensor:
    """``(num_samples, *shape)`` samples of ``teacher`` by Euler with ``num_steps`` calls, made ``batch_size`` at a
    time from noise drawn with ``generator`` (so a seed fixes the pool) and scaled by ``temperature`` (the prior
    ``N(0, temperature^2 I)``; 1 samples the teacher's own distribution)."""
    if not temperature > 0:
        raise ValueError(f"the pool's prior temperature must be positive, got {temperature}")
    parameter = next(teacher.parameters())
    chunks = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        noise = temperature * torch.randn((n, *shape), generator=generator).to(parameter.device, parameter.dtype)
        chunks.append(teacher_euler_sample(teacher, noise, num_steps, scheduler=scheduler).float().cpu())
    return torch.cat(chunks)


def widen_starts(batch: torch.Tensor, fraction: float, kind: str = "none", generator: Optional[torch.Generator] = None,
                 noise_std: float = 0.2, pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``batch`` with its last ``round(fraction * batch_size)`` points replaced by widened starts (module docstring).

    Args:
        batch: model-space data, ``(batch, *dims)``.
        fraction: share of the batch to replace, in ``[0, 1]``.
        kind: one of :data:`START_WIDENINGS`.
        noise_std: the ``"gaussian"`` widening's standard deviation, in model-space units (data in ``[-1, 1]``).
        pool: the ``"teacher"`` widening's samples, ``(pool_size, *dims)`` (on any device).
    """
    if kind not in START_WIDENINGS:
        raise ValueError(f"start widening must be one of {START_WIDENINGS}, got {kind!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the widened fraction must lie in [0, 1], got {fraction}")
    n = int(round(batch.shape[0] * fraction))
    if kind == "none" or n == 0:
        return batch
    device = batch.device
    # Random draws on the generator's device (the CPU for a CPU generator), then moved: works for any batch device.
    draw_device = generator.device if generator is not None else device
    head, tail = batch[: batch.shape[0] - n], batch[batch.shape[0] - n:]
    if kind == "gaussian":
        noise = torch.randn(tail.shape, generator=generator, device=draw_device, dtype=batch.dtype).to(device)
        tail = tail + noise_std * noise
    elif kind == "mixup":
        partner = batch[torch.randint(0, batch.shape[0], (n,), generator=generator, device=draw_device).to(device)]
        lam = torch.rand((n,) + (1,) * (batch.ndim - 1), generator=generator, device=draw_device, dtype=batch.dtype)
        lam = lam.to(device)
        tail = lam * tail + (1 - lam) * partner
    elif kind == "shift":
        if batch.ndim != 4:
            raise ValueError(f"the 'shift' widening moves images (batch, C, H, W); got a batch of shape {tuple(batch.shape)}")
        direction = torch.randint(0, 4, (n,), generator=generator, device=draw_device).to(device)
        padded = torch.nn.functional.pad(tail, (1, 1, 1, 1), value=-1.0)
        h, w = tail.shape[-2:]
        # (row, column) offsets of the crop: 0 and 2 move the image by one pixel, 1 keeps it.
        offsets = torch.tensor([[0, 1], [2, 1], [1, 0], [1, 2]], device=device)[direction]
        tail = torch.stack([padded[i, :, r:r + h, c:c + w] for i, (r, c) in enumerate(offsets.tolist())])
    else:
        if pool is None or pool.shape[1:] != batch.shape[1:]:
            got = None if pool is None else tuple(pool.shape)
            raise ValueError(f"the 'teacher' widening needs a pool of samples shaped (N, {tuple(batch.shape[1:])}), got {got}")
        index = torch.randint(0, pool.shape[0], (n,), generator=generator, device=draw_device).cpu()
        tail = pool[index].to(device, batch.dtype)
    return torch.cat([head, tail])
