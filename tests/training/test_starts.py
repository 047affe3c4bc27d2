"""Widened distillation starts (``f2d2_diffusers.training.starts``)."""

import pytest
import torch
from diffusers import UNet2DModel

from f2d2_diffusers.training.starts import START_WIDENINGS, teacher_sample_pool, widen_starts
from testing_utils import tiny_unet_config


def images(n=6, seed=0):
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("kind", ["gaussian", "mixup", "shift"])
def test_only_the_widened_share_of_the_batch_changes(kind):
    batch = images()
    out = widen_starts(batch, 0.5, kind, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert torch.equal(out[:3], batch[:3])
    assert not torch.equal(out[3:], batch[3:])


def test_none_and_zero_fraction_return_the_batch():
    batch = images()
    assert widen_starts(batch, 0.5, "none") is batch
    assert widen_starts(batch, 0.0, "gaussian") is batch


def test_gaussian_noise_has_the_requested_scale():
    batch = torch.zeros((4000, 1, 8, 8))
    out = widen_starts(batch, 1.0, "gaussian", torch.Generator().manual_seed(0), noise_std=0.3)
    assert out.std().item() == pytest.approx(0.3, rel=0.02)


def test_mixup_stays_between_two_batch_points():
    batch = torch.stack([torch.full((1, 8, 8), -1.0), torch.full((1, 8, 8), 1.0)]).repeat(50, 1, 1, 1)
    out = widen_starts(batch, 1.0, "mixup", torch.Generator().manual_seed(0))
    assert out.min() >= -1 and out.max() <= 1
    # Each widened image is one convex combination: constant over its pixels.
    assert torch.allclose(out.amax(dim=(1, 2, 3)), out.amin(dim=(1, 2, 3)))
    assert out.flatten(1)[:, 0].unique().numel() > 10


def test_shift_moves_an_image_by_one_pixel_and_fills_the_edge_with_background():
    batch = images(200)
    out = widen_starts(batch, 1.0, "shift", torch.Generator().manual_seed(0))
    seen = set()
    for x, y in zip(batch, out):
        for name, (moved, edge) in {
            "down": (torch.equal(y[:, 1:], x[:, :-1]), y[:, 0]),
            "up": (torch.equal(y[:, :-1], x[:, 1:]), y[:, -1]),
            "right": (torch.equal(y[:, :, 1:], x[:, :, :-1]), y[:, :, 0]),
            "left": (torch.equal(y[:, :, :-1], x[:, :, 1:]), y[:, :, -1]),
        }.items():
            if moved:
                assert torch.all(edge == -1)
                seen.add(name)
                break
        else:
            pytest.fail("an image was not moved by one pixel")
    assert seen == {"down", "up", "right", "left"}


def test_teacher_pool_draws_come_from_the_pool():
    batch = images(8)
    pool = torch.stack([torch.full((1, 8, 8), float(v)) for v in range(5)])
    out = widen_starts(batch, 0.5, "teacher", torch.Generator().manual_seed(0), pool=pool)
    assert all(x.unique().numel() == 1 and x.unique().item() in range(5) for x in out[4:])


def test_bad_arguments_are_named():
    batch = images()
    with pytest.raises(ValueError, match="start widening must be one of"):
        widen_starts(batch, 0.5, "rotate")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        widen_starts(batch, 1.5, "gaussian")
    with pytest.raises(ValueError, match="needs a pool"):
        widen_starts(batch, 0.5, "teacher")
    with pytest.raises(ValueError, match="needs a pool"):
        widen_starts(batch, 0.5, "teacher", pool=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="moves images"):
        widen_starts(torch.zeros(4, 2), 0.5, "shift")
    assert set(START_WIDENINGS) == {"none", "gaussian", "mixup", "teacher", "shift"}


def test_teacher_sample_pool_is_fixed_by_its_generator():
    teacher = UNet2DModel(**tiny_unet_config()).eval()
    a = teacher_sample_pool(teacher, (1, 8, 8), 5, num_steps=2, batch_size=2, generator=torch.Generator().manual_seed(3))
    b = teacher_sample_pool(teacher, (1, 8, 8), 5, num_steps=2, batch_size=4, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-6)


def test_teacher_sample_pool_temperature_scales_the_prior():
    teacher = UNet2DModel(**tiny_unet_config()).eval()
    torch.nn.init.zeros_(teacher.conv_out.weight)
    torch.nn.init.zeros_(teacher.conv_out.bias)  # v = 0: each sample is its own prior draw
    cold = teacher_sample_pool(teacher, (1, 8, 8), 4, num_steps=2, generator=torch.Generator().manual_seed(3))
    hot = teacher_sample_pool(teacher, (1, 8, 8), 4, num_steps=2, generator=torch.Generator().manual_seed(3),
                              temperature=1.5)
    assert torch.allclose(hot, 1.5 * cold, atol=1e-6)
    with pytest.raises(ValueError, match="temperature must be positive"):
        teacher_sample_pool(teacher, (1, 8, 8), 4, temperature=0.0)
