"""Tests of f2d2_diffusers.flow_map: the joint map's step, the interpolant, model calls and the few-step loop."""

import math

import pytest
import torch
from diffusers import UNet2DModel

from analytic import GaussianFlowMap, gaussian_params
from testing_utils import tiny_unet_config
from f2d2_diffusers import F2D2MLPModel, F2D2ModelOutput, F2D2Scheduler, F2D2UNet2DModel, FlowMatchingMLPModel
from f2d2_diffusers.dequantization import standard_normal_log_prob
from f2d2_diffusers.flow_map import (
    TIMESTEP_SCALE,
    broadcast_to_sample,
    evaluate_flow_map,
    evaluate_velocity,
    flow_map_step,
    integrate_flow_map,
    interpolant,
    is_flow_map_model,
    unwrap_model,
)
from f2d2_diffusers.models import FlowMatchingModelOutput

SHAPES = [(3,), (2, 3, 3)]


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


class RecordingVelocity(torch.nn.Module):
    """Called like a ``UNet2DModel``; records the ``timestep`` it receives and returns ``-x``."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, sample, timestep, return_dict=True):
        self.calls.append(timestep)
        return FlowMatchingModelOutput(sample=-sample)


class RecordingFlowMap(torch.nn.Module):
    """A user-defined flow map (no ``is_flow_map`` marker, recognised by its ``step`` argument)."""

    def __init__(self, inner=None):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, sample, timestep, step, return_dict=True):
        self.calls.append((timestep, step))
        if self.inner is not None:
            return self.inner(sample, timestep, step, return_dict=return_dict)
        return F2D2ModelOutput(sample=2 * sample, divergence=torch.ones(sample.shape[0], dtype=sample.dtype))


# flow_map_step


@pytest.mark.parametrize("shape", SHAPES)
def test_flow_map_step_with_a_scalar_step(shape):
    x, u = torch.randn(4, *shape, generator=_generator(0)), torch.randn(4, *shape, generator=_generator(1))
    div = torch.tensor([1.0, -2.0, 0.5, 8.0])
    moved, delta = flow_map_step(x, u, div, -0.25)
    torch.testing.assert_close(moved, x - 0.25 * u)
    torch.testing.assert_close(delta, 0.25 * div)
    assert moved.shape == x.shape and delta.shape == (4,)


@pytest.mark.parametrize("shape", SHAPES)
def test_flow_map_step_with_one_step_per_sample(shape):
    x, u = torch.randn(4, *shape, generator=_generator(0)), torch.randn(4, *shape, generator=_generator(1))
    div = torch.tensor([1.0, -2.0, 0.5, 8.0])
    h = torch.tensor([-1.0, -0.25, 0.0, 0.5])
    moved, delta = flow_map_step(x, u, div, h)
    for i in range(4):
        torch.testing.assert_close(moved[i], x[i] + h[i] * u[i])
        torch.testing.assert_close(delta[i], -h[i] * div[i])
    # A zero step leaves the sample and its log-density alone.
    torch.testing.assert_close(moved[2], x[2])
    assert delta[2] == 0


def test_flow_map_step_log_density_follows_the_sample_dtype():
    x = torch.randn(2, 3, dtype=torch.float64)
    _, delta = flow_map_step(x, torch.zeros_like(x), torch.tensor([1.0, 2.0]), 0.5)
    assert delta.dtype == torch.float64
    torch.testing.assert_close(delta, torch.tensor([-0.5, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("h", [torch.zeros(3), torch.zeros(4, 1), torch.zeros(2, 2)])
def test_flow_map_step_rejects_steps_of_the_wrong_shape(h):
    x = torch.randn(4, 1, 2, 2)
    with pytest.raises(ValueError, match="one value per sample"):
        flow_map_step(x, torch.zeros_like(x), torch.zeros(4), h)


@pytest.mark.parametrize("velocity_shape, divergence_shape", [((3, 2), (3, 1)), ((3, 2), (1,)), ((3, 1), (3,))])
def test_flow_map_step_rejects_heads_of_the_wrong_shape(velocity_shape, divergence_shape):
    # A (batch, 1) divergence would otherwise broadcast the log-density change to (batch, batch).
    with pytest.raises(ValueError, match="one divergence per sample"):
        flow_map_step(torch.zeros(3, 2), torch.zeros(velocity_shape), torch.zeros(divergence_shape), 0.5)


def test_flow_map_step_composes_like_the_exact_map():
    """Two half steps of the exact Gaussian map land where one full step does, with the same log-density change."""
    flow_map = GaussianFlowMap(**gaussian_params((2, 3, 3)))
    x = torch.randn(3, 2, 3, 3, generator=_generator(0), dtype=torch.float64)
    full = evaluate_flow_map(flow_map, x, 0.8, -0.6)
    x_full, delta_full = flow_map_step(x, full.sample, full.divergence, -0.6)
    first = evaluate_flow_map(flow_map, x, 0.8, -0.3)
    x_mid, delta_1 = flow_map_step(x, first.sample, first.divergence, -0.3)
    second = evaluate_flow_map(flow_map, x_mid, 0.5, -0.3)
    x_end, delta_2 = flow_map_step(x_mid, second.sample, second.divergence, -0.3)
    torch.testing.assert_close(x_end, x_full)
    torch.testing.assert_close(delta_1 + delta_2, delta_full)


# interpolant and broadcast_to_sample


@pytest.mark.parametrize("shape", SHAPES)
def test_interpolant_endpoints_and_per_sample_sigma(shape):
    data, noise = torch.randn(3, *shape, generator=_generator(0)), torch.randn(3, *shape, generator=_generator(1))
    torch.testing.assert_close(interpolant(data, noise, 0.0), data)
    torch.testing.assert_close(interpolant(data, noise, 1.0), noise)
    mixed = interpolant(data, noise, torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(mixed[0], data[0])
    torch.testing.assert_close(mixed[1], 0.75 * data[1] + 0.25 * noise[1])
    torch.testing.assert_close(mixed[2], noise[2])
    with pytest.raises(ValueError, match="one value per sample"):
        interpolant(data, noise, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("shape", SHAPES)
def test_broadcast_to_sample_scales_each_sample(shape):
    sample = torch.randn(3, *shape)
    value = torch.tensor([1.0, -2.0, 0.0])
    scaled = broadcast_to_sample(value, sample)
    assert scaled.shape == (3, *([1] * len(shape)))
    product = scaled * sample
    for i in range(3):
        torch.testing.assert_close(product[i], value[i] * sample[i])


# Calling models


def test_evaluate_velocity_passes_float_timesteps():
    recorder = RecordingVelocity()
    x = torch.randn(3, 2)
    torch.testing.assert_close(evaluate_velocity(recorder, x, 0.0004), -x)
    (timestep,) = recorder.calls
    assert torch.is_tensor(timestep) and timestep.is_floating_point() and timestep.shape == (3,)
    torch.testing.assert_close(timestep, torch.full((3,), 0.4))
    evaluate_velocity(recorder, x, torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(recorder.calls[-1], torch.tensor([100.0, 200.0, 300.0]))


def test_evaluate_velocity_keeps_fractional_timesteps_a_unet_would_truncate():
    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config()).eval()
    x = torch.randn(2, 1, 8, 8, generator=_generator(0))
    with torch.no_grad():
        ours = evaluate_velocity(unet, x, 0.0004)  # timestep 0.4
        as_float_tensor = unet(x, torch.full((2,), 0.4)).sample
        python_float = unet(x, 0.4).sample  # UNet2DModel turns a Python float into a long: timestep 0
        at_zero = unet(x, torch.zeros(2)).sample
    torch.testing.assert_close(ours, as_float_tensor)
    torch.testing.assert_close(python_float, at_zero)
    assert not torch.allclose(ours, at_zero)


def test_evaluate_velocity_of_a_flow_map_is_its_zero_step_velocity(tiny_f2d2_mlp):
    recorder = RecordingFlowMap(inner=tiny_f2d2_mlp)
    x = torch.randn(4, 3, generator=_generator(0))
    with torch.no_grad():
        velocity = evaluate_velocity(recorder, x, 0.3)
        expected = tiny_f2d2_mlp(x, torch.full((4,), 300.0), torch.zeros(4)).sample
    torch.testing.assert_close(velocity, expected)
    timestep, step = recorder.calls[0]
    torch.testing.assert_close(timestep, torch.full((4,), 300.0))
    torch.testing.assert_close(step, torch.zeros(4))


def test_evaluate_flow_map_scales_sigma_and_step():
    recorder = RecordingFlowMap()
    x = torch.randn(2, 3)
    out = evaluate_flow_map(recorder, x, torch.tensor([0.25, 1.0]), -0.125)
    timestep, step = recorder.calls[0]
    torch.testing.assert_close(timestep, torch.tensor([250.0, 1000.0]))
    torch.testing.assert_close(step, torch.full((2,), -125.0))
    assert TIMESTEP_SCALE == 1000.0
    torch.testing.assert_close(out.sample, 2 * x)


# Recognising flow maps


class UserFlowMap(torch.nn.Module):
    def forward(self, sample, timestep, step, return_dict=True):
        return sample


class UserVelocity(torch.nn.Module):
    def forward(self, sample, timestep, return_dict=True):
        return sample


class MarkedVelocity(UserFlowMap):
    """Takes ``step`` but says it is no flow map: the class marker wins over the signature."""

    is_flow_map = False


def _models():
    torch.manual_seed(0)
    return [
        (F2D2UNet2DModel(**tiny_unet_config()), True),
        (F2D2MLPModel(sample_size=3, hidden_dim=16, num_layers=1, time_embed_dim=8), True),
        (UNet2DModel(**tiny_unet_config()), False),
        (FlowMatchingMLPModel(sample_size=3, hidden_dim=16, num_layers=1, time_embed_dim=8), False),
        (UserFlowMap(), True),
        (UserVelocity(), False),
        (MarkedVelocity(), False),
    ]


def test_is_flow_map_model_directly_through_torch_compile_and_unwrapped():
    for model, expected in _models():
        name = type(model).__name__
        assert is_flow_map_model(model) is expected, name
        # torch.compile only wraps here; nothing is compiled until the wrapper is called.
        compiled = torch.compile(model)
        assert compiled is not model and hasattr(compiled, "_orig_mod")
        assert is_flow_map_model(compiled) is expected, name
        assert unwrap_model(compiled) is model
        assert unwrap_model(model) is model


# The few-step loop


class CountingBar:
    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_steps", [1, 3])
def test_integrate_flow_map_samples_with_the_closed_form_log_density(shape, num_steps):
    flow_map = GaussianFlowMap(**gaussian_params(shape))
    scheduler = F2D2Scheduler()
    scheduler.set_timesteps(num_steps, direction="sample")
    eps = torch.randn(5, *shape, generator=_generator(0), dtype=torch.float64)
    bar = CountingBar()
    x0, delta, nfe = integrate_flow_map(flow_map, scheduler, eps, bar)
    torch.testing.assert_close(x0, flow_map.mean + flow_map.std * eps, atol=1e-6, rtol=1e-6)
    # delta = log p_data(x0) - log N(eps): the closed-form data density at the generated point.
    torch.testing.assert_close(standard_normal_log_prob(eps) + delta.double(), flow_map.log_prob(x0), atol=1e-4, rtol=0)
    assert nfe == num_steps and bar.n == num_steps


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_steps", [1, 4])
def test_integrate_flow_map_encodes_with_the_closed_form_log_density(shape, num_steps):
    flow_map = GaussianFlowMap(**gaussian_params(shape))
    scheduler = F2D2Scheduler()
    scheduler.set_timesteps(num_steps, direction="likelihood")
    x0 = flow_map.mean + flow_map.std * torch.randn(5, *shape, generator=_generator(1), dtype=torch.float64)
    latents, delta, nfe = integrate_flow_map(flow_map, scheduler, x0)
    torch.testing.assert_close(latents, (x0 - flow_map.mean) / flow_map.std, atol=1e-6, rtol=1e-6)
    # log p_data(x0) = log N(x1) - delta.
    torch.testing.assert_close(standard_normal_log_prob(latents) - delta.double(), flow_map.log_prob(x0), atol=1e-4, rtol=0)
    assert nfe == num_steps


def test_integrate_flow_map_queries_the_grid_steps_or_their_opposite():
    flow_map = GaussianFlowMap(**gaussian_params((3,)))
    x0 = torch.randn(2, 3, generator=_generator(0), dtype=torch.float64)
    scheduler = F2D2Scheduler()
    for sign in (1.0, -1.0):
        recorder = RecordingFlowMap(inner=flow_map)
        scheduler.set_timesteps(4, direction="likelihood")
        integrate_flow_map(recorder, scheduler, x0, query_step_sign=sign)
        timesteps = torch.stack([t for t, _ in recorder.calls])
        steps = torch.stack([h for _, h in recorder.calls])
        torch.testing.assert_close(timesteps, torch.tensor([0.0, 250.0, 500.0, 750.0]).unsqueeze(1).expand(4, 2))
        torch.testing.assert_close(steps, torch.full((4, 2), sign * 250.0))
    # The opposite query (the paper's backward evaluation) is only first-order: off at one step.
    scheduler.set_timesteps(1, direction="likelihood")
    _, forward, _ = integrate_flow_map(flow_map, scheduler, x0)
    scheduler.set_timesteps(1, direction="likelihood")
    _, backward, _ = integrate_flow_map(flow_map, scheduler, x0, query_step_sign=-1.0)
    assert (forward - backward).abs().min() > 1e-2
    assert math.isfinite(float(backward.sum()))
