import json

import pytest
import torch
from diffusers import UNet2DModel

from testing_utils import randomise_new_layers, tiny_unet_config
from f2d2_diffusers import F2D2ModelOutput, F2D2UNet2DModel
from f2d2_diffusers.models.utils import copy_teacher_weights


def test_from_teacher_starts_equal_to_the_teacher_at_every_step():
    torch.manual_seed(0)
    teacher = UNet2DModel(**tiny_unet_config()).eval()
    student = F2D2UNet2DModel.from_teacher(teacher).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10.0, 500.0, 990.0])
    with torch.no_grad():
        expected = teacher(x, t).sample
        for step in (0.0, -250.0, 1000.0):
            out = student(x, t, step)
            torch.testing.assert_close(out.sample, expected)
            torch.testing.assert_close(out.divergence, torch.zeros(3))
    assert not any(p.is_meta for p in student.parameters())


def test_outputs_shapes_and_divergence_scale(tiny_f2d2_unet):
    x = torch.randn(2, 1, 8, 8)
    out = tiny_f2d2_unet(x, torch.tensor([100.0, 900.0]), torch.tensor([-100.0, 50.0]))
    assert isinstance(out, F2D2ModelOutput)
    assert out.sample.shape == x.shape and out.divergence.shape == (2,)
    velocity, divergence = tiny_f2d2_unet(x, 100.0, -100.0, return_dict=False)
    assert divergence.shape == (2,)


def test_fractional_timesteps_and_steps_matter(tiny_f2d2_unet):
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        a = tiny_f2d2_unet(x, 0.4, 0.0).sample
        b = tiny_f2d2_unet(x, 0.0, 0.0).sample
        c = tiny_f2d2_unet(x, 0.4, -0.6).divergence
        d = tiny_f2d2_unet(x, 0.4, 0.6).divergence
    assert not torch.allclose(a, b)
    assert not torch.allclose(c, d)


def test_save_load_round_trip_keeps_config_and_outputs(tiny_f2d2_unet, tmp_path):
    tiny_f2d2_unet.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "F2D2UNet2DModel"
    assert config["divergence_head_resolution"] == 8 and config["block_out_channels"] == [8, 16]
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = F2D2UNet2DModel.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        a, b = tiny_f2d2_unet(x, 300.0, -300.0), loaded(x, 300.0, -300.0)
    torch.testing.assert_close(a.sample, b.sample)
    torch.testing.assert_close(a.divergence, b.divergence)


def test_bad_inputs_and_configs_are_rejected(tiny_f2d2_unet):
    with pytest.raises(ValueError, match="shape"):
        tiny_f2d2_unet(torch.randn(2, 3, 8, 8), 1.0, 0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        tiny_f2d2_unet(torch.randn(2, 1, 8, 8), torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="positional"):
        F2D2UNet2DModel(**tiny_unet_config(time_embedding_type="fourier"))
    with pytest.raises(ValueError, match="teacher and student"):
        copy_teacher_weights(F2D2UNet2DModel(**tiny_unet_config()), torch.nn.Linear(2, 2), ("step_embedding.",))


def test_jvp_through_a_unet_without_attention_matches_finite_differences():
    torch.manual_seed(0)
    config = tiny_unet_config(
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False
    )
    model = randomise_new_layers(F2D2UNet2DModel(**config)).double().eval()
    x, tangent = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([200.0, 700.0], dtype=torch.float64)

    def u(z, s):
        return model(z, s, -100.0).sample

    # diffusers' sinusoidal projection runs in float32, so the time direction needs a larger difference step.
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for (dx, dt), eps, tol in [((tangent, zeros), 1e-6, 1e-6), ((0 * tangent, ones), 0.05, 1e-3)]:
        _, jvp = torch.func.jvp(u, (x, t), (dx, dt))
        fd = (u(x + eps * dx, t + eps * dt) - u(x - eps * dx, t - eps * dt)) / (2 * eps)
        torch.testing.assert_close(jvp, fd, rtol=tol, atol=tol)


def test_from_teacher_ignores_extra_saved_config_entries(tmp_path):
    """An EMA-saved teacher's config carries EMA state (decay, ...); the student takes only model arguments."""
    torch.manual_seed(0)
    teacher = UNet2DModel(**tiny_unet_config())
    teacher.register_to_config(decay=0.999, optimization_step=10)
    student = F2D2UNet2DModel.from_teacher(teacher)
    assert "decay" not in student.config and student.config.block_out_channels == (8, 16)
