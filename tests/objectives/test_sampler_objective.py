"""energy_sampler_loss: the EM rollout's KL, self-distillation and volume consistency."""

import copy

import pytest
import torch

from f2d2_diffusers import EnergySamplerMLPModel, energy_sampler_loss
from f2d2_diffusers.objectives.sampler import rollout_kl, self_distillation_loss
from f2d2_diffusers.targets import load_target


def tiny(target):
    torch.manual_seed(0)
    return EnergySamplerMLPModel(sample_size=target.dim, hidden_dim=16, num_fourier=8, prior_scale=target.prior_scale)


def test_rollout_kl_is_the_negative_em_elbo_and_every_term_trains():
    target = load_target("funnel")
    model = tiny(target)
    out = energy_sampler_loss(model, target, 16, teacher=copy.deepcopy(model), num_steps=8,
                              generator=torch.Generator().manual_seed(0))
    assert out.path.shape == (9, 16, 10) and not out.path.requires_grad
    assert torch.isfinite(out.loss) and float(out.elbo) == pytest.approx(-float(out.kl_loss))
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_kl_matches_the_pipelines_em_weights():
    from f2d2_diffusers import EnergySamplerPipeline, F2D2Scheduler

    target = load_target("gmm_grid")
    model = tiny(target)
    with torch.no_grad():
        kl, _ = rollout_kl(model, target, 4000, 4, generator=torch.Generator().manual_seed(0))
    pipe = EnergySamplerPipeline(model=model, scheduler=F2D2Scheduler(), target=target)
    pipe.set_progress_bar_config(disable=True)
    em = pipe.euler_maruyama(batch_size=4000, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert float(-kl.mean()) == pytest.approx(em.elbo, abs=1e-3)


def test_distillation_of_a_map_against_itself_at_start():
    # the volume and state errors are finite and non-negative; with a zero weight only the KL remains
    target = load_target("gmm_grid")
    model = tiny(target)
    path = rollout_kl(model, target, 8, 16, generator=torch.Generator().manual_seed(0))[1]
    state, volume, jac = self_distillation_loss(model, model, target, path, generator=torch.Generator().manual_seed(1))
    assert all(float(v.detach()) >= 0 for v in (state, volume, jac))
    out = energy_sampler_loss(model, target, 8, num_steps=4, distill_weight=0.0)
    assert float(out.loss.detach()) == pytest.approx(float(out.kl_loss)) and float(out.state_loss) == 0.0
    with pytest.raises(ValueError, match="power of 2"):
        energy_sampler_loss(model, target, 8, num_steps=6)
