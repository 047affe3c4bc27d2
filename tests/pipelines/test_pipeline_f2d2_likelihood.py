import numpy as np
import PIL.Image
import pytest
import torch

from analytic import GaussianFlowMap, gaussian_params
from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2LikelihoodPipelineOutput, F2D2Pipeline, F2D2Scheduler


def make_pipe(model, num_levels=17):
    pipe = F2D2LikelihoodPipeline(unet=model, scheduler=F2D2Scheduler(), num_levels=num_levels)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("num_steps", [1, 2, 8])
def test_exact_map_reproduces_the_closed_form_log_density(num_steps):
    flow_map = GaussianFlowMap(**gaussian_params((2, 3, 3)))
    x0 = flow_map.mean + flow_map.std * torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = make_pipe(flow_map, num_levels=None)(x0, num_inference_steps=num_steps, dequantize=False)
    assert (out.log_prob - flow_map.log_prob(x0)).abs().max() < 1e-4
    torch.testing.assert_close(out.latents, (x0 - flow_map.mean) / flow_map.std)
    assert out.nfe == num_steps


def test_papers_evaluation_is_available_and_differs_from_the_encoding_map():
    flow_map = GaussianFlowMap(**gaussian_params((4,)))
    x0 = flow_map.mean + flow_map.std * torch.randn(8, 4, dtype=torch.float64)
    pipe = make_pipe(flow_map, num_levels=None)
    exact = flow_map.log_prob(x0)
    paper_1 = pipe(x0, num_inference_steps=1, dequantize=False, evaluation="paper").log_prob
    paper_64 = pipe(x0, num_inference_steps=64, dequantize=False, evaluation="paper").log_prob
    # Stepping the sampling map backwards is only first-order accurate: wrong at 1 step, close at 64.
    assert (paper_1 - exact).abs().mean() > 0.1
    assert (paper_64 - exact).abs().mean() < 0.1 * (paper_1 - exact).abs().mean()


def test_a_likelihood_shift_moves_the_encoding_grid_and_leaves_the_papers_evaluation_on_the_sampling_grid():
    class RecordingGaussianFlowMap(GaussianFlowMap):
        def forward(self, sample, timestep, step, return_dict=True):
            self.calls.append((float(torch.as_tensor(timestep).flatten()[0]), float(torch.as_tensor(step).flatten()[0])))
            return super().forward(sample, timestep, step, return_dict=return_dict)

    flow_map = RecordingGaussianFlowMap(**gaussian_params((4,)))
    x0 = flow_map.mean + flow_map.std * torch.randn(8, 4, dtype=torch.float64)
    pipe = F2D2LikelihoodPipeline(unet=flow_map, scheduler=F2D2Scheduler(likelihood_shift=1 / 7), num_levels=None)
    pipe.set_progress_bar_config(disable=True)
    for evaluation, expected in (("bidirectional", [(0.0, 125.0), (125.0, 875.0)]),  # the grid [0, 1/8, 1]
                                 ("paper", [(0.0, -500.0), (500.0, -500.0)])):  # the sampling grid [1, 1/2, 0] reversed
        flow_map.calls = []
        pipe(x0, num_inference_steps=2, dequantize=False, evaluation=evaluation)
        assert [(round(t, 3), round(h, 3)) for t, h in flow_map.calls] == expected, evaluation
    assert pipe.scheduler.config.likelihood_shift == pytest.approx(1 / 7)  # the pipeline's own scheduler untouched


@pytest.mark.parametrize("num_steps", [1, 3])
def test_sampling_and_likelihood_pipelines_invert_each_other(num_steps):
    """With the exact map, scoring a generated sample recovers its noise and the log-density the sampler reported."""
    flow_map = GaussianFlowMap(**gaussian_params((1, 4, 4)))
    sampler = F2D2Pipeline(unet=flow_map, scheduler=F2D2Scheduler(), num_levels=None)
    sampler.set_progress_bar_config(disable=True)
    likelihood = F2D2LikelihoodPipeline(**sampler.components, num_levels=None)
    likelihood.set_progress_bar_config(disable=True)
    eps = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampled = sampler(latents=eps, num_inference_steps=num_steps, output_type="pt")
    x0 = flow_map.mean + flow_map.std * eps  # what the sampler generated (its images are clamped to [0, 1])
    torch.testing.assert_close(sampled.images, (x0 / 2 + 0.5).clamp(0, 1).float())
    scored = likelihood(x0, num_inference_steps=num_steps, dequantize=False)
    torch.testing.assert_close(scored.latents, eps)
    torch.testing.assert_close(scored.log_prob, sampled.log_prob, atol=1e-4, rtol=0)


def test_from_pipe_shares_the_components_and_grey_levels(tiny_f2d2_unet):
    sampler = F2D2Pipeline(unet=tiny_f2d2_unet, scheduler=F2D2Scheduler(), num_levels=17)
    likelihood = F2D2LikelihoodPipeline.from_pipe(sampler)
    assert likelihood.unet is tiny_f2d2_unet and likelihood.config.num_levels == 17


def test_bits_per_dim_and_dequantisation_terms(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet)
    levels = torch.randint(0, 17, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    out = pipe(levels, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    expected = -(out.log_prob + 64 * np.log(2) - 64 * np.log(17)) / (64 * np.log(2))
    torch.testing.assert_close(out.bits_per_dim, expected.float())
    # The same dequantisation noise by hand, then scoring the float input without dequantising again.
    noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(1))
    z = 2 * (levels + noise) / 17 - 1
    again = pipe(z, num_inference_steps=2, dequantize=False)
    torch.testing.assert_close(again.log_prob, out.log_prob, atol=1e-4, rtol=1e-5)


def test_pil_numpy_and_tensor_inputs_agree(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet, num_levels=256)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    images = [PIL.Image.fromarray(p[..., 0], mode="L") for p in pixels]
    results = [
        pipe(x, generator=torch.Generator().manual_seed(0)).log_prob
        for x in (images, pixels, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), list(torch.from_numpy(pixels).permute(0, 3, 1, 2)))
    ]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0])
    # Floats on the 256-level grid count as the same discrete data.
    floats = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(pipe(floats, generator=torch.Generator().manual_seed(0)).log_prob, results[0])


def test_pil_images_are_mapped_onto_the_models_grey_levels(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet, num_levels=17)
    levels = np.random.default_rng(1).integers(0, 17, (8, 8))
    image = PIL.Image.fromarray((levels * 255 // 16).astype(np.uint8), mode="L")
    a = pipe(image, generator=torch.Generator().manual_seed(0)).log_prob
    b = pipe(levels, generator=torch.Generator().manual_seed(0)).log_prob
    torch.testing.assert_close(a, b)


def test_batch_composition_and_per_sample_generators(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet)
    levels = torch.randint(0, 17, (4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    batch = pipe(levels, num_inference_steps=2, generator=[torch.Generator().manual_seed(i) for i in range(4)])
    single = pipe(levels[2:3], num_inference_steps=2, generator=[torch.Generator().manual_seed(2)])
    torch.testing.assert_close(batch.log_prob[2:3], single.log_prob, atol=1e-4, rtol=1e-5)


def test_dict_and_tuple_outputs(tiny_f2d2_mlp):
    pipe = make_pipe(tiny_f2d2_mlp, num_levels=None)
    x = torch.randn(3, 3)
    out = pipe(x, num_inference_steps=2, dequantize=False)
    assert isinstance(out, F2D2LikelihoodPipelineOutput)
    log_prob, bpd, nfe, latents = pipe(x, num_inference_steps=2, dequantize=False, return_dict=False)
    torch.testing.assert_close(log_prob, out.log_prob)
    torch.testing.assert_close(bpd, out.bits_per_dim)
    assert nfe == 2 and latents.shape == x.shape


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.zeros(2, 3, 8, 8), {}, r"shape \(batch, 1, 8, 8\)"),
        (np.zeros((2, 4, 4, 1), dtype=np.uint8), {}, "numpy images must have shape"),
        (torch.full((1, 1, 8, 8), 17), {}, r"levels in \[0, 16\]"),
        (torch.full((1, 1, 8, 8), -1), {}, r"levels in \[0, 16\]"),
        (torch.full((1, 1, 8, 8), float("nan")), {"dequantize": False}, "NaN"),
        (torch.full((1, 1, 8, 8), 0.123), {}, "17-level grid"),
        (PIL.Image.new("L", (16, 16)), {}, "resize"),
        ("digit.png", {}, "unsupported input type"),
        ([], {}, "no input"),
        (torch.zeros(0, 1, 8, 8), {}, "empty"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.bool), {}, "dtype"),
        (torch.zeros(1, 1, 8, 8), {"evaluation": "euler"}, "evaluation"),
        (torch.zeros(1, 1, 8, 8), {"num_inference_steps": -1}, "num_inference_steps"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.long), {"generator": [torch.Generator()]}, "generators"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_f2d2_unet, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pipe(tiny_f2d2_unet)(images, **kwargs)
