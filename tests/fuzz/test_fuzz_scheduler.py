"""``F2D2Scheduler.set_timesteps`` and ``step`` on random grids, shapes and values."""

import pytest

pytest.importorskip("hypothesis")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fuzz_helpers import ANY_FLOAT, FUZZ, STEP_COUNTS, assert_finite, grids, numeric_arrays, run_case  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from f2d2_diffusers import F2D2ModelOutput, F2D2Scheduler  # noqa: E402

DIRECTIONS = st.one_of(st.sampled_from(["sample", "likelihood"]), st.sampled_from(["sample", "likelihood", "up", None]))


@st.composite
def grid_calls(draw):
    direction = draw(DIRECTIONS)
    start, end = (0.0, 1.0) if direction == "likelihood" else (1.0, 0.0)
    return dict(num_inference_steps=draw(STEP_COUNTS), sigmas=draw(grids(start, end)), direction=direction)


@FUZZ
@given(kwargs=grid_calls(), shift=st.sampled_from([1.0, 0.5, 3.0]))
def test_set_timesteps(kwargs, shift):
    scheduler = F2D2Scheduler(shift=shift)

    def check(_):
        start, end = (1.0, 0.0) if kwargs["direction"] == "sample" else (0.0, 1.0)
        sigmas = scheduler.sigmas
        assert_finite(sigmas, "sigmas")
        assert float(sigmas[0]) == start and float(sigmas[-1]) == end
        steps = sigmas.diff() * (1 if kwargs["direction"] == "likelihood" else -1)
        assert (steps > 0).all()
        assert len(scheduler.timesteps) == len(scheduler.step_sizes) == scheduler.num_inference_steps == len(sigmas) - 1
        if kwargs["num_inference_steps"] is not None:
            assert scheduler.num_inference_steps == kwargs["num_inference_steps"]

    run_case("scheduler.set_timesteps", lambda: scheduler.set_timesteps(**kwargs), list(kwargs), check)


@st.composite
def step_calls(draw):
    batch = draw(st.integers(0, 3))
    dims = draw(st.sampled_from([(3,), (1, 2, 2)]))
    shape = (batch, *dims)
    tensors = {}
    for name, arg_shape in (("sample", shape), ("model_output", shape), ("divergence", (batch,))):
        if draw(st.integers(0, 9)) == 0:  # now and then a wrong shape
            arg_shape = draw(st.sampled_from([(batch + 1, *dims), (), (batch, 5)]))
        array = draw(numeric_arrays(arg_shape, dtypes=(np.float32, np.float64)))
        tensors[name] = torch.from_numpy(array)
    grid_point = st.sampled_from([1000.0, 750.0, 500.0, 250.0])
    on_scale = st.floats(0.0, 1000.0)
    odd = st.sampled_from(["now", torch.tensor([]), torch.full((batch + 2,), 500.0), torch.full((batch,), 750.0)])
    timestep = draw(st.one_of(grid_point, grid_point, on_scale, ANY_FLOAT, odd))
    r_timestep = draw(st.one_of(st.none(), st.none(), grid_point, on_scale, ANY_FLOAT))
    as_output = draw(st.booleans())
    return tensors, timestep, r_timestep, as_output


@FUZZ
@given(call=step_calls(), direction=st.sampled_from(["sample", "likelihood"]))
def test_step(call, direction):
    tensors, timestep, r_timestep, as_output = call
    scheduler = F2D2Scheduler()
    scheduler.set_timesteps(4, direction=direction)
    sample = tensors["sample"]
    if as_output:
        args = (F2D2ModelOutput(sample=tensors["model_output"], divergence=tensors["divergence"]), timestep, sample)
        kwargs = dict(r_timestep=r_timestep)
    else:
        args = (tensors["model_output"], timestep, sample)
        kwargs = dict(divergence=tensors["divergence"], r_timestep=r_timestep)

    def check(out):
        assert_finite(out.prev_sample, "prev_sample", sample.shape)
        assert_finite(out.delta_log_prob, "delta_log_prob", (sample.shape[0],))

    names = ["model_output", "timestep", "sample", "divergence", "r_timestep"]
    run_case("scheduler.step", lambda: scheduler.step(*args, **kwargs), names, check)
