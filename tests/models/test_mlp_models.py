import pytest
import torch

from f2d2_diffusers import F2D2MLPModel, FlowMatchingMLPModel


def test_student_starts_equal_to_its_teacher():
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=3, hidden_dim=32, num_layers=2, time_embed_dim=16)
    student = F2D2MLPModel.from_teacher(teacher)
    x, t = torch.randn(4, 3), torch.rand(4) * 1000
    with torch.no_grad():
        out = student(x, t, torch.full((4,), -500.0))
        torch.testing.assert_close(out.sample, teacher(x, t).sample)
        torch.testing.assert_close(out.divergence, torch.zeros(4))


def test_save_load_and_tuple_output(tiny_f2d2_mlp, tmp_path):
    tiny_f2d2_mlp.save_pretrained(tmp_path)
    loaded = F2D2MLPModel.from_pretrained(tmp_path)
    x = torch.randn(5, 3)
    with torch.no_grad():
        a = tiny_f2d2_mlp(x, 250.0, 125.0)
        velocity, divergence = loaded(x, 250.0, 125.0, return_dict=False)
    torch.testing.assert_close(a.sample, velocity)
    torch.testing.assert_close(a.divergence, divergence)
    assert divergence.shape == (5,)


def test_teacher_takes_float_timesteps_and_rejects_bad_shapes():
    model = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    x = torch.randn(3, 2)
    with torch.no_grad():
        assert not torch.allclose(model(x, 0.3).sample, model(x, 0.0).sample)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        model(torch.randn(3, 5), 1.0)


def test_jvp_in_the_start_time_matches_finite_differences(tiny_f2d2_mlp):
    model = tiny_f2d2_mlp.double()
    x, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.full((4,), 400.0, dtype=torch.float64)

    def fn(z, s):
        out = model(z, s, -200.0)
        return out.sample, out.divergence

    # diffusers' sinusoidal projection runs in float32, so the time direction needs a larger difference step.
    for tangents, eps, tol in [((v, torch.zeros(4, dtype=torch.float64)), 1e-6, 1e-6), ((0 * v, torch.ones(4, dtype=torch.float64)), 0.05, 1e-3)]:
        _, (du, dd) = torch.func.jvp(fn, (x, t), tangents)
        plus = fn(x + eps * tangents[0], t + eps * tangents[1])
        minus = fn(x - eps * tangents[0], t - eps * tangents[1])
        torch.testing.assert_close(du, (plus[0] - minus[0]) / (2 * eps), rtol=tol, atol=tol)
        torch.testing.assert_close(dd, (plus[1] - minus[1]) / (2 * eps), rtol=tol, atol=tol)


def test_step_embedding_scale_rescales_the_step_input_and_survives_save_load(tiny_f2d2_mlp, tmp_path):
    from testing_utils import randomise_new_layers

    base = randomise_new_layers(tiny_f2d2_mlp).eval()
    scaled = F2D2MLPModel(**{**base.config, "step_embedding_scale": 0.1}).eval()
    scaled.load_state_dict(base.state_dict())
    x = torch.randn(4, base.config.sample_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = scaled(x, 300.0, -500.0)
        b = base(x, 300.0, -50.0)
        torch.testing.assert_close(a.sample, b.sample)
        torch.testing.assert_close(a.divergence, b.divergence)
        assert not torch.allclose(base(x, 300.0, -500.0).sample, b.sample)
    scaled.save_pretrained(tmp_path)
    assert F2D2MLPModel.from_pretrained(tmp_path).config.step_embedding_scale == 0.1


def test_step_embedding_scale_must_be_positive():
    with pytest.raises(ValueError, match="step_embedding_scale must be > 0"):
        F2D2MLPModel(sample_size=2, step_embedding_scale=0.0)
