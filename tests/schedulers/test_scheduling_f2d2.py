import pytest
import torch

from f2d2_diffusers import F2D2ModelOutput, F2D2Scheduler


def test_uniform_grids_in_both_directions():
    s = F2D2Scheduler()
    s.set_timesteps(4)
    torch.testing.assert_close(s.sigmas, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    torch.testing.assert_close(s.timesteps, torch.tensor([1000.0, 750.0, 500.0, 250.0], dtype=torch.float64))
    torch.testing.assert_close(s.step_sizes, torch.full((4,), -250.0, dtype=torch.float64))
    s.set_timesteps(2, direction="likelihood")
    torch.testing.assert_close(s.sigmas, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s.step_sizes, torch.full((2,), 500.0, dtype=torch.float64))
    assert s.num_inference_steps == 2 and s.direction == "likelihood"


def test_step_moves_by_h_u_and_returns_minus_h_D():
    s = F2D2Scheduler()
    s.set_timesteps(4)
    x = torch.randn(3, 1, 2, 2)
    u = torch.randn(3, 1, 2, 2)
    div = torch.tensor([1.0, -2.0, 4.0])
    out = s.step(F2D2ModelOutput(sample=u, divergence=div), s.timesteps[1], x)
    torch.testing.assert_close(out.prev_sample, x - 0.25 * u)
    torch.testing.assert_close(out.delta_log_prob, 0.25 * div)
    assert s.step_index == 2
    s.set_timesteps(4, direction="likelihood")
    prev, delta = s.step(u, s.timesteps[0], x, divergence=div, return_dict=False)
    torch.testing.assert_close(prev, x + 0.25 * u)
    torch.testing.assert_close(delta, -0.25 * div)


def test_zero_step_is_the_identity_and_any_step_reaches_the_end():
    s = F2D2Scheduler()
    s.set_timesteps(4)
    x, u, div = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2)
    out = s.step(u, s.timesteps[2], x, divergence=div, r_timestep=s.timesteps[2])
    torch.testing.assert_close(out.prev_sample, x)
    torch.testing.assert_close(out.delta_log_prob, torch.zeros(2))
    out = s.step(u, 1000.0, x, divergence=div, r_timestep=0.0)
    torch.testing.assert_close(out.prev_sample, x - u)


def test_custom_sigmas_shift_and_end_point():
    s = F2D2Scheduler()
    s.set_timesteps(sigmas=[1.0, 0.3])
    torch.testing.assert_close(s.sigmas, torch.tensor([1.0, 0.3, 0.0], dtype=torch.float64))
    s.set_timesteps(sigmas=[0.0, 0.1, 0.4, 1.0], direction="likelihood")
    assert s.num_inference_steps == 3
    shifted = F2D2Scheduler(shift=0.5)
    shifted.set_timesteps(2, direction="likelihood")
    torch.testing.assert_close(shifted.sigmas, torch.tensor([0.0, 0.25 / 0.75, 1.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_inference_steps=0), "positive integer"),
        (dict(num_inference_steps=2.5), "positive integer"),
        (dict(num_inference_steps=None), "positive integer"),
        (dict(sigmas=[1.0, 0.5, 0.7]), "strictly decreasing"),
        (dict(sigmas=[0.0, 0.5], direction="sample"), "strictly decreasing"),
        (dict(sigmas=[0.5, 0.2], direction="likelihood"), "strictly increasing"),
        (dict(sigmas=[1.5, 0.5]), r"\[0, 1\]"),
        (dict(sigmas=[1.0, float("nan")]), "finite"),
        (dict(num_inference_steps=3, sigmas=[1.0, 0.5]), "does not match"),
        (dict(num_inference_steps=2, direction="up"), "direction"),
    ],
)
def test_bad_grids_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F2D2Scheduler().set_timesteps(**kwargs)


def test_step_rejects_bad_calls():
    s = F2D2Scheduler()
    s.set_timesteps(2)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="divergence"):
        s.step(torch.randn(2, 3), s.timesteps[0], x)
    with pytest.raises(ValueError, match="shape"):
        s.step(torch.randn(2, 4), s.timesteps[0], x, divergence=torch.zeros(2))
    with pytest.raises(ValueError, match="not on the grid"):
        s.step(torch.randn(2, 3), 123.0, x, divergence=torch.zeros(2))
    with pytest.raises(ValueError, match="shift"):
        F2D2Scheduler(shift=0)


def test_save_load_round_trip(tmp_path):
    s = F2D2Scheduler(shift=0.7)
    s.save_pretrained(tmp_path)
    loaded = F2D2Scheduler.from_pretrained(tmp_path)
    assert loaded.config.shift == 0.7
    s.set_timesteps(3)
    loaded.set_timesteps(3)
    torch.testing.assert_close(s.sigmas, loaded.sigmas)


def test_public_api_and_scale_noise():
    s = F2D2Scheduler()
    assert s.init_noise_sigma == 1.0 and s.order == 1
    x = torch.randn(2, 3)
    assert s.scale_model_input(x) is x
    noise = torch.randn(2, 3)
    torch.testing.assert_close(s.scale_noise(x, torch.tensor([0.0, 1000.0]), noise), torch.stack([x[0], noise[1]]))


@pytest.mark.parametrize(
    "sigmas, direction",
    [([0.5, 0.0], "sample"), ([0.9, 0.5], "sample"), ([0.5, 1.0], "likelihood"), ([0.2, 0.6], "likelihood")],
)
def test_custom_grids_must_start_where_the_prior_holds(sigmas, direction):
    """A grid that stops short of sigma = 1 scored the end point with the N(0, I) prior where it does not hold."""
    start = "1" if direction == "sample" else "0"
    with pytest.raises(ValueError, match=f"direction='{direction}' must start at {start}.*prior holds at sigma = 1"):
        F2D2Scheduler().set_timesteps(sigmas=sigmas, direction=direction)


@pytest.mark.parametrize("sigmas", [["a", "b"], [[1.0, 0.5], [0.5, 0.0]], []])
def test_malformed_sigmas_are_named(sigmas):
    with pytest.raises(ValueError, match="sigmas must be"):
        F2D2Scheduler().set_timesteps(sigmas=sigmas)


def test_step_rejects_non_finite_values_and_timesteps_off_the_scale():
    s = F2D2Scheduler()
    s.set_timesteps(2)
    x, u, div = torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2)
    for kwargs, match in [
        (dict(model_output=u * float("nan")), r"model_output \(average velocity\) contains NaN"),
        (dict(divergence=torch.tensor([0.0, float("inf")])), r"divergence contains NaN or infinite values \(sample \[1\]\)"),
        (dict(sample=x * float("inf")), "sample contains NaN"),
        (dict(sample=torch.full((2, 3), 3e38), model_output=torch.full((2, 3), -3e38)), "prev_sample .*overflowed"),
        (dict(timestep=float("nan")), "timestep must be finite"),
        (dict(timestep=1500.0), r"timestep must lie in \[0, 1000\]"),
        (dict(r_timestep=-1.0), r"r_timestep must lie in \[0, 1000\]"),
        (dict(timestep="soon"), "timestep must be a number"),
        (dict(timestep=torch.tensor([1000.0, 500.0, 0.0])), "one number or one per sample"),
    ]:
        args = dict(model_output=u, timestep=s.timesteps[0], sample=x, divergence=div) | kwargs
        with pytest.raises(ValueError, match=match):
            s.step(**args)
    with pytest.raises(TypeError, match="model_output must be an F2D2ModelOutput"):
        s.step((u, div), s.timesteps[0], x)
    with pytest.raises(TypeError, match="sample must be a floating-point"):
        s.step(u, s.timesteps[0], torch.zeros(2, 3, dtype=torch.long), divergence=div)


def test_per_sample_timesteps_off_the_grid_still_step_each_sample():
    s = F2D2Scheduler()
    s.set_timesteps(2)
    x, u, div = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([1.0, 2.0])
    out = s.step(u, torch.tensor([1000.0, 500.0]), x, divergence=div, r_timestep=torch.tensor([0.0, 250.0]))
    torch.testing.assert_close(out.prev_sample, x + torch.tensor([[-1.0], [-0.25]]) * u)
    torch.testing.assert_close(out.delta_log_prob, torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="not on the grid"):
        s.step(u, torch.tensor([1000.0, 500.0]), x, divergence=div)


@pytest.mark.parametrize("shift", [1 / 7, 1 / 15, 0.0666667, 0.1, 0.2, 1 / 3, 3.0])
def test_shifted_grids_end_exactly_at_data_and_noise_and_step_in_both_directions(shift, tiny_f2d2_mlp):
    from f2d2_diffusers.flow_map import shift_sigmas

    # The warp keeps both ends exactly (a rounding error above 1 would put the first timestep outside [0, 1000]).
    ends = shift_sigmas(torch.tensor([0.0, 1.0], dtype=torch.float64), shift)
    assert ends.tolist() == [0.0, 1.0]
    assert shift_sigmas(torch.tensor([0.0, 1.0]), shift).tolist() == [0.0, 1.0]
    s = F2D2Scheduler(shift=shift)
    for direction in ("sample", "likelihood"):
        s.set_timesteps(2, direction=direction)
        assert s.sigmas.tolist()[:: 2 if direction == "sample" else -2] == [1.0, 0.0]
        torch.testing.assert_close(s.sigmas[1].item(), shift / (1 + shift))  # the 2-step grid's midpoint
        x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
        for t, h in zip(s.timesteps, s.step_sizes):
            x = s.step(tiny_f2d2_mlp(x, t.float(), h.float()), t, x).prev_sample
        assert torch.isfinite(x).all()


def test_likelihood_shift_warps_the_likelihood_grids_alone_and_survives_save_load(tmp_path):
    s = F2D2Scheduler(shift=1.0, likelihood_shift=1 / 7)
    assert s.shift_for("sample") == 1.0 and s.shift_for("likelihood") == pytest.approx(1 / 7)
    s.set_timesteps(2, direction="sample")
    assert s.sigmas.tolist() == [1.0, 0.5, 0.0]
    s.set_timesteps(2, direction="likelihood")
    torch.testing.assert_close(s.sigmas, torch.tensor([0.0, 0.125, 1.0], dtype=s.sigmas.dtype))
    s.save_pretrained(tmp_path)
    loaded = F2D2Scheduler.from_pretrained(tmp_path)
    assert loaded.shift_for("likelihood") == pytest.approx(1 / 7) and loaded.shift_for("sample") == 1.0
    # Without it, both directions use `shift` (checkpoints saved before it existed load the same way).
    assert F2D2Scheduler(shift=0.5).shift_for("likelihood") == 0.5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="likelihood_shift must be a positive finite number"):
            F2D2Scheduler(likelihood_shift=bad)
    with pytest.raises(ValueError, match="direction must be one of"):
        s.shift_for("encode")
