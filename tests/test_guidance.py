import pytest
import torch

from analytic import GaussianFlowMap, gaussian_params
from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler
from f2d2_diffusers.guidance import maximum_likelihood_guidance, one_step_log_likelihood


def make_pipe(model, num_levels=None):
    pipe = F2D2Pipeline(unet=model, scheduler=F2D2Scheduler(), num_levels=num_levels)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_one_step_log_likelihood_of_the_exact_map_is_the_data_log_density():
    flow_map = GaussianFlowMap(**gaussian_params((6,)))
    eps = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = flow_map.log_prob(flow_map.mean + flow_map.std * eps)
    torch.testing.assert_close(one_step_log_likelihood(flow_map, eps).double(), expected, rtol=1e-5, atol=1e-4)


def test_one_guidance_step_on_a_gaussian_moves_along_the_closed_form_gradient():
    # For Gaussian data J(eps) = log N(eps) + const, so grad J = -eps and one step is eps (1 - scale / rms(eps)).
    flow_map = GaussianFlowMap(**gaussian_params((6,)))
    eps = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    guided = maximum_likelihood_guidance(flow_map, eps, 0.3)
    rms = eps.pow(2).mean(dim=1, keepdim=True).sqrt()
    torch.testing.assert_close(guided, eps * (1 - 0.3 / rms), rtol=1e-5, atol=1e-5)
    # The step's per-dimension size is the scale, and the log-likelihood rises for every sample.
    torch.testing.assert_close((guided - eps).pow(2).mean(dim=1).sqrt(), torch.full((5,), 0.3, dtype=torch.float64))
    assert (one_step_log_likelihood(flow_map, guided) > one_step_log_likelihood(flow_map, eps)).all()


def test_guided_sampling_counts_its_passes_and_reports_the_density_of_what_it_returns():
    flow_map = GaussianFlowMap(**gaussian_params((4,)))
    eps = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pipe = make_pipe(flow_map)
    plain = pipe(latents=eps, num_inference_steps=2, output_type="pt")
    guided = pipe(latents=eps, num_inference_steps=2, output_type="pt", ml_guidance_scale=0.2, ml_guidance_steps=3)
    assert plain.nfe == 2 and guided.nfe == 2 + 2 * 3
    assert (guided.log_prob > plain.log_prob).all()
    # log_prob is the exact map's density of the returned sample, not of the unguided one.
    torch.testing.assert_close(guided.log_prob.double(), flow_map.log_prob(guided.images.double()), rtol=1e-5, atol=1e-4)
    off = pipe(latents=eps, num_inference_steps=2, output_type="pt", ml_guidance_scale=0.0, ml_guidance_steps=5)
    torch.testing.assert_close(off.images, plain.images)
    assert off.nfe == 2


def test_guidance_keeps_per_sample_generators_and_batch_invariance(tiny_f2d2_unet):
    pipe = make_pipe(tiny_f2d2_unet, num_levels=17)
    kwargs = dict(num_inference_steps=2, output_type="pt", ml_guidance_scale=0.5, ml_guidance_steps=2)
    batch = pipe(batch_size=3, generator=[torch.Generator().manual_seed(i) for i in range(3)], **kwargs)
    single = pipe(batch_size=1, generator=[torch.Generator().manual_seed(2)], **kwargs)
    torch.testing.assert_close(batch.images[2:3], single.images, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.log_prob[2:3], single.log_prob, atol=1e-3, rtol=1e-5)
    unguided = pipe(batch_size=1, generator=[torch.Generator().manual_seed(2)], num_inference_steps=2, output_type="pt")
    assert not torch.allclose(single.images, unguided.images)
    # No gradient is left on the model's parameters.
    assert all(p.grad is None for p in tiny_f2d2_unet.parameters())


@pytest.mark.parametrize("kwargs, match", [
    (dict(ml_guidance_scale=-0.1), "ml_guidance_scale"), (dict(ml_guidance_scale=float("nan")), "ml_guidance_scale"),
    (dict(ml_guidance_scale=True), "ml_guidance_scale"), (dict(ml_guidance_steps=0), "ml_guidance_steps"),
    (dict(ml_guidance_steps=1.5), "ml_guidance_steps"),
])
def test_bad_guidance_settings_are_refused(kwargs, match):
    pipe = make_pipe(GaussianFlowMap(**gaussian_params((2,))))
    with pytest.raises(ValueError, match=match):
        pipe(latents=torch.zeros(1, 2, dtype=torch.float64), output_type="pt", **kwargs)
