"""``F2D2Scheduler`` and diffusers' ``FlowMapEulerDiscreteScheduler``: one config, one grid, one ``step`` signature;
the pipelines take either and give the same samples (``tests/analytic.py``'s exact joint map of a Gaussian)."""

import inspect

import pytest
import torch

from analytic import GaussianFlowMap, gaussian_params
from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline, F2D2Scheduler

diffusers = pytest.importorskip("diffusers")
FlowMapEulerDiscreteScheduler = getattr(diffusers, "FlowMapEulerDiscreteScheduler", None)
pytestmark = pytest.mark.skipif(FlowMapEulerDiscreteScheduler is None, reason="diffusers has no FlowMapEulerDiscreteScheduler")


def test_f2d2_scheduler_is_a_flow_map_euler_scheduler_with_its_step_signature(tmp_path):
    assert issubclass(F2D2Scheduler, FlowMapEulerDiscreteScheduler)
    ours = list(inspect.signature(F2D2Scheduler.step).parameters.values())
    theirs = list(inspect.signature(FlowMapEulerDiscreteScheduler.step).parameters.values())
    positional = [p.name for p in ours if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == [p.name for p in theirs]  # self, model_output, timestep, sample, r_timestep, return_dict
    assert [p.name for p in ours if p.kind == p.KEYWORD_ONLY] == ["divergence"]
    # Configs load across the two classes.
    F2D2Scheduler(shift=0.5).save_pretrained(tmp_path / "f2d2")
    theirs = FlowMapEulerDiscreteScheduler.from_pretrained(tmp_path / "f2d2")
    assert theirs.config.shift == 0.5
    FlowMapEulerDiscreteScheduler(shift=2.0).save_pretrained(tmp_path / "flow_map")
    assert F2D2Scheduler.from_pretrained(tmp_path / "flow_map").config.shift == 2.0
    assert FlowMapEulerDiscreteScheduler in F2D2Scheduler().compatibles


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_same_sampling_grid_and_same_step(shift, num_steps):
    ours, theirs = F2D2Scheduler(shift=shift), FlowMapEulerDiscreteScheduler(shift=shift)
    ours.set_timesteps(num_steps)
    theirs.set_timesteps(num_steps)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps)
    flow_map = GaussianFlowMap(**gaussian_params((3,)))
    x_ours = x_theirs = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t, h in zip(ours.timesteps, ours.step_sizes):
        out = flow_map(x_ours, t, h)
        # The same positional call for both: (model_output, timestep, sample, r_timestep)
        x_ours = ours.step(out, t, x_ours, None).prev_sample
        x_theirs = theirs.step(flow_map(x_theirs, t, h).sample, t, x_theirs, None).prev_sample
        torch.testing.assert_close(x_ours, x_theirs)
    # Any-step use, as diffusers documents it: from noise straight to data in one call.
    ours.set_timesteps(num_steps)
    theirs.set_timesteps(num_steps)
    x = torch.randn(4, 3, dtype=torch.float64)
    one = flow_map(x, 1000.0, -1000.0)
    torch.testing.assert_close(ours.step(one, 1000.0, x, r_timestep=0.0).prev_sample,
                               theirs.step(one.sample, 1000.0, x, r_timestep=0.0).prev_sample)


@pytest.mark.parametrize("num_steps", [1, 3])
def test_pipelines_sample_the_same_with_either_scheduler(num_steps):
    flow_map = GaussianFlowMap(**gaussian_params((2, 2, 2)))
    eps = torch.randn(5, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    outs = {}
    for scheduler in (F2D2Scheduler(), FlowMapEulerDiscreteScheduler()):
        pipe = F2D2Pipeline(unet=flow_map, scheduler=scheduler, num_levels=None)
        pipe.set_progress_bar_config(disable=True)
        outs[type(scheduler).__name__] = pipe(latents=eps, num_inference_steps=num_steps, output_type="pt")
    a, b = outs["F2D2Scheduler"], outs["FlowMapEulerDiscreteScheduler"]
    torch.testing.assert_close(a.images, b.images)
    # diffusers' scheduler has no log-density: the pipeline takes it from the model's divergence, as always.
    torch.testing.assert_close(a.log_prob, b.log_prob)
    expected = flow_map.mean + flow_map.std * eps
    assert (b.log_prob - flow_map.log_prob(expected)).abs().max() < 1e-4  # the exact map's exact log-density
    assert a.nfe == b.nfe == num_steps


def test_likelihood_pipeline_with_flow_map_scheduler_runs_the_data_to_noise_grid():
    flow_map = GaussianFlowMap(**gaussian_params((4,)))
    x0 = flow_map.mean + flow_map.std * torch.randn(6, 4, dtype=torch.float64)
    logs = []
    for scheduler in (F2D2Scheduler(), FlowMapEulerDiscreteScheduler()):
        pipe = F2D2LikelihoodPipeline(unet=flow_map, scheduler=scheduler, num_levels=None)
        pipe.set_progress_bar_config(disable=True)
        logs.append(pipe(x0, num_inference_steps=2, dequantize=False).log_prob)
    torch.testing.assert_close(logs[0], logs[1])
    assert (logs[1] - flow_map.log_prob(x0).float()).abs().max() < 1e-4
    # The pipeline keeps the scheduler it was given; each call works on an F2D2Scheduler built from its config.
    assert type(pipe.scheduler) is FlowMapEulerDiscreteScheduler


def test_from_pretrained_and_from_pipe_take_the_diffusers_scheduler(tiny_f2d2_mlp, tmp_path, caplog):
    F2D2Pipeline(unet=tiny_f2d2_mlp, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(tmp_path)
    theirs = FlowMapEulerDiscreteScheduler()
    with caplog.at_level("WARNING"):
        pipe = F2D2Pipeline.from_pretrained(tmp_path, scheduler=theirs)
    assert pipe.scheduler is theirs and "Expected types" not in caplog.text
    likelihood = F2D2LikelihoodPipeline.from_pipe(pipe)
    assert likelihood.scheduler is theirs and likelihood.unet is pipe.unet
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ours = F2D2Pipeline.from_pretrained(tmp_path)
    for p in (pipe, ours):
        p.set_progress_bar_config(disable=True)
    a = ours(batch_size=3, num_inference_steps=2, generator=generator(), output_type="pt")
    b = pipe(batch_size=3, num_inference_steps=2, generator=generator(), output_type="pt")
    torch.testing.assert_close(a.images, b.images)
    torch.testing.assert_close(a.log_prob, b.log_prob)
    # A scheduler of instantaneous velocities is refused with what to use instead.
    other = F2D2Pipeline(unet=tiny_f2d2_mlp, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), num_levels=None)
    with pytest.raises(TypeError, match="F2D2Scheduler or FlowMapEulerDiscreteScheduler"):
        other(batch_size=1, output_type="pt")


def test_a_likelihood_shift_survives_loading_into_the_diffusers_scheduler(tmp_path):
    from f2d2_diffusers.schedulers.interop import as_f2d2_scheduler

    F2D2Scheduler(likelihood_shift=0.25).save_pretrained(tmp_path)
    theirs = FlowMapEulerDiscreteScheduler.from_pretrained(tmp_path)
    ours = as_f2d2_scheduler(theirs)
    assert ours.shift_for("likelihood") == 0.25 and ours.shift_for("sample") == 1.0
    ours.set_timesteps(2, direction="likelihood")
    torch.testing.assert_close(ours.sigmas, torch.tensor([0.0, 0.2, 1.0], dtype=ours.sigmas.dtype))
