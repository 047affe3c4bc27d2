import json

import numpy as np
import PIL.Image
import pytest
import torch

from analytic import GaussianFlowMap, gaussian_params
from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline, F2D2PipelineOutput, F2D2Scheduler


def make_pipe(model, num_levels=17):
    pipe = F2D2Pipeline(unet=model, scheduler=F2D2Scheduler(), num_levels=num_levels)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_exact_map_gives_the_right_samples_and_closed_form_log_density(num_steps):
    flow_map = GaussianFlowMap(**gaussian_params((1, 4, 4)))
    eps = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = make_pipe(flow_map, num_levels=None)(latents=eps, num_inference_steps=num_steps, output_type="pt")
    expected = flow_map.mean + flow_map.std * eps
    torch.testing.assert_close(out.images, (expected / 2 + 0.5).clamp(0, 1).float())
    assert (out.log_prob - flow_map.log_prob(expected)).abs().max() < 1e-4
    assert out.nfe == num_steps


def test_vector_models_return_raw_samples():
    flow_map = GaussianFlowMap(**gaussian_params((5,)))
    eps = torch.randn(4, 5, dtype=torch.float64)
    out = make_pipe(flow_map, num_levels=None)(latents=eps, output_type="np")
    expected = flow_map.mean + flow_map.std * eps
    np.testing.assert_allclose(out.images, expected.numpy(), atol=1e-5)
    assert out.bits_per_dim.shape == (4,)
    with pytest.raises(ValueError, match="'np' or 'pt'"):
        make_pipe(flow_map)(latents=eps)


def test_output_types_agree_and_dict_equals_tuple(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet)
    outs = {t: pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type=t) for t in ("pil", "np", "pt")}
    assert isinstance(outs["pil"].images[0], PIL.Image.Image) and outs["pil"].images[0].mode == "L"
    np.testing.assert_allclose(outs["np"].images, outs["pt"].images.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = np.stack([np.asarray(i) for i in outs["pil"].images])[..., None] / 255.0
    np.testing.assert_allclose(pil, outs["np"].images, atol=1 / 255 + 1e-6)
    torch.testing.assert_close(outs["np"].log_prob, outs["pt"].log_prob)
    as_tuple = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np", return_dict=False)
    np.testing.assert_allclose(as_tuple[0], outs["np"].images)
    torch.testing.assert_close(as_tuple[1], outs["np"].log_prob)
    assert as_tuple[3] == outs["np"].nfe == 2


def test_per_sample_generators_and_batch_composition(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet)
    batch = pipe(batch_size=3, generator=[torch.Generator().manual_seed(i) for i in range(3)], output_type="pt", num_inference_steps=2)
    single = pipe(batch_size=1, generator=[torch.Generator().manual_seed(1)], output_type="pt", num_inference_steps=2)
    torch.testing.assert_close(batch.images[1:2], single.images, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.log_prob[1:2], single.log_prob, atol=1e-4, rtol=1e-5)


def test_log_prob_is_accumulated_along_the_path(tiny_f2d2_unet):
    """log p(x_gen) = log N(eps) + sum_k (-h_k D_k), recomputed here from the model's own outputs."""
    pipe = make_pipe(tiny_f2d2_unet)
    eps = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = pipe(latents=eps, num_inference_steps=2, output_type="pt")
    x, total = eps, -0.5 * (eps**2).sum(dim=(1, 2, 3)) - 32 * np.log(2 * np.pi)
    with torch.no_grad():
        for sigma in (1.0, 0.5):
            o = tiny_f2d2_unet(x, torch.full((2,), 1000 * sigma), torch.full((2,), -500.0))
            x, total = x - 0.5 * o.sample, total + 0.5 * o.divergence
    torch.testing.assert_close(out.log_prob, total, atol=1e-4, rtol=1e-5)
    expected_bpd = -(total + 64 * np.log(2) - 64 * np.log(17)) / (64 * np.log(2))
    torch.testing.assert_close(out.bits_per_dim, expected_bpd, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_and_model_index(tiny_f2d2_unet, tmp_path):
    pipe = make_pipe(tiny_f2d2_unet, num_levels=17)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "F2D2Pipeline" and index["num_levels"] == 17
    assert index["unet"] == ["f2d2_diffusers.models.unet_f2d2", "F2D2UNet2DModel"]
    assert index["scheduler"] == ["f2d2_diffusers.schedulers.scheduling_f2d2", "F2D2Scheduler"]
    loaded = F2D2Pipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.num_levels == 17
    kwargs = dict(batch_size=2, num_inference_steps=2, output_type="pt")
    a = pipe(generator=torch.Generator().manual_seed(0), **kwargs)
    b = loaded(generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(a.images, b.images)
    torch.testing.assert_close(a.bits_per_dim, b.bits_per_dim)
    likelihood = F2D2LikelihoodPipeline.from_pretrained(tmp_path)
    assert likelihood.config.num_levels == 17 and isinstance(likelihood.unet, type(tiny_f2d2_unet))


def test_vector_pipeline_saves_without_grey_levels(tiny_f2d2_mlp, tmp_path):
    pipe = make_pipe(tiny_f2d2_mlp, num_levels=None)
    pipe.save_pretrained(tmp_path)
    loaded = F2D2Pipeline.from_pretrained(tmp_path)
    assert loaded.config.num_levels is None
    loaded.set_progress_bar_config(disable=True)
    out = loaded(batch_size=4, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (4, 3) and torch.isfinite(out.log_prob).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, generator=[torch.Generator()]), "generators"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps="2"), "num_inference_steps"),
        (dict(output_type="jpeg"), "output_type"),
        (dict(latents=torch.full((1, 1, 8, 8), float("nan"))), "NaN"),
        (dict(latents=torch.zeros(2, 1, 8, 8), batch_size=3), "does not match"),
        (dict(latents=torch.zeros(1, 1, 8, 8, dtype=torch.long)), "floating-point"),
        (dict(latents=torch.zeros(1, 3, 8, 8)), "shape"),
        (dict(num_levels=1), "num_levels"),
        (dict(log_prob_steps=0), "log_prob_steps"),
        (dict(log_prob_steps=True), "log_prob_steps"),
    ],
)
def test_bad_arguments_are_rejected(tiny_f2d2_unet, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pipe(tiny_f2d2_unet)(**kwargs)


def test_returns_documented_output_class(tiny_f2d2_mlp):
    out = make_pipe(tiny_f2d2_mlp, num_levels=None)(output_type="pt")
    assert isinstance(out, F2D2PipelineOutput) and out.images.shape == (1, 3)


def test_latent_output_is_the_unclipped_model_space_sample_log_prob_refers_to(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet)
    latent = pipe(output_type="latent", batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    pt = pipe(output_type="pt", batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert latent.images.shape == (2, 1, 8, 8)
    torch.testing.assert_close(pt.images, (latent.images / 2 + 0.5).clamp(0, 1))
    torch.testing.assert_close(latent.log_prob, pt.log_prob)


@pytest.mark.parametrize("scheduler, sigmas", [(F2D2Scheduler(), None),
                                               (F2D2Scheduler(shift=3.0, likelihood_shift=1 / 7), [1.0, 0.3])])
def test_log_prob_steps_scores_the_returned_sample(tiny_f2d2_unet, scheduler, sigmas):
    # The re-scored log-density is the likelihood pipeline's on the latent sample, on the scheduler's likelihood
    # grid whatever grid sampling took; nfe counts both passes.
    pipe = F2D2Pipeline(unet=tiny_f2d2_unet, scheduler=scheduler, num_levels=17)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="latent", sigmas=sigmas,
                  num_inference_steps=None if sigmas else 2)
    free = pipe(**kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    rescored = pipe(log_prob_steps=3, **kwargs)
    torch.testing.assert_close(rescored.images, free.images)
    assert rescored.nfe == free.nfe + 3 and not torch.allclose(rescored.log_prob, free.log_prob)
    scorer = F2D2LikelihoodPipeline.from_pipe(pipe)
    expected = scorer(free.images, num_inference_steps=3, dequantize=False)
    torch.testing.assert_close(rescored.log_prob, expected.log_prob)
    torch.testing.assert_close(rescored.bits_per_dim, expected.bits_per_dim)
    # A scorer on the other grid gives another value: the grid is what this checks.
    other = F2D2LikelihoodPipeline(unet=tiny_f2d2_unet, scheduler=F2D2Scheduler(shift=2.0), num_levels=17)
    other.set_progress_bar_config(disable=True)
    assert not torch.allclose(other(free.images, num_inference_steps=3, dequantize=False).log_prob, rescored.log_prob)


def test_exact_map_rescored_log_density_equals_the_closed_form():
    flow_map = GaussianFlowMap(**gaussian_params((1, 4, 4)))
    eps = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = make_pipe(flow_map, num_levels=None)(latents=eps, num_inference_steps=1, output_type="latent",
                                               log_prob_steps=2)
    assert (out.log_prob - flow_map.log_prob(out.images)).abs().max() < 1e-4 and out.nfe == 3
