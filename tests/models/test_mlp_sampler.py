"""EnergySamplerMLPModel: the flow-map contract, the score input and its own divergence (trace, Hutchinson, logdet)."""

import pytest
import torch

from f2d2_diffusers import EnergySamplerMLPModel
from f2d2_diffusers.flow_map import is_flow_map_model
from f2d2_diffusers.targets import load_target


def randomised(d=3, prior_scale=1.0):
    torch.manual_seed(0)
    model = EnergySamplerMLPModel(sample_size=d, hidden_dim=16, num_fourier=8, prior_scale=prior_scale)
    with torch.no_grad():  # move the near-zero output layers off their initial values
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def velocity_fn(model, target, sigma, h):
    def fn(z):
        s = torch.full((z.shape[0],), sigma)
        return model.velocity(z, s, torch.full_like(s, abs(h)), target.score(z))
    return fn


def test_contract_and_initial_control_is_the_langevin_input():
    target = load_target("funnel")
    model = EnergySamplerMLPModel(sample_size=10)
    assert is_flow_map_model(model)
    x = torch.randn(4, 10)
    out = model(x, 500.0, -250.0, score=target.score)
    assert out.sample.shape == (4, 10) and out.divergence.shape == (4,)
    # at initialisation the control is the clipped Langevin input g ((1 - s) grad log rho - s x / sigma_0^2)
    sigma = torch.full((4,), 0.5)
    g = model.noise_schedule.diffusion(sigma)[:, None]
    lgv = (g * (0.5 * target.score(x) - 0.5 * x)).clamp(-100, 100)
    torch.testing.assert_close(model.control(x, sigma, sigma / 2, target.score(x)), lgv, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["funnel", "gmm40"])
def test_exact_divergence_is_the_trace_of_the_full_jacobian_including_the_score(name):
    target = load_target(name)
    model = randomised(target.dim, target.prior_scale)
    x = torch.randn(3, target.dim) * target.prior_scale
    out = model(x, 600.0, -300.0, score=target.score, divergence="exact")
    fn = velocity_fn(model, target, 0.6, -0.3)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda z: fn(z[None])[0], x[i])
        assert out.divergence[i] == pytest.approx(float(torch.trace(jac)), rel=1e-4, abs=1e-4)
        logdet = model(x[i:i + 1], 600.0, -300.0, score=target.score, divergence="logdet").divergence
        expected = torch.linalg.slogdet(torch.eye(target.dim) - 0.3 * jac)[1] / -0.3
        assert float(logdet) == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
    # a stop-gradient score (a tensor) would drop the Hessian: refused for divergences
    with pytest.raises(ValueError, match="callable"):
        model(x, 600.0, -300.0, score=target.score(x), divergence="exact")
    with pytest.raises(ValueError, match="needs the target's score"):
        model(x, 600.0, -300.0)


def test_hutchinson_is_unbiased_and_differentiable_on_request():
    target = load_target("funnel")
    model = randomised(10)
    x = torch.randn(2, 10).repeat(2000, 1)
    exact = model(x[:2], 400.0, -200.0, score=target.score, divergence="exact").divergence
    est = model(x, 400.0, -200.0, score=target.score, divergence="hutchinson",
                generator=torch.Generator().manual_seed(0)).divergence.reshape(2000, 2).mean(0)
    torch.testing.assert_close(est, exact, atol=0.15 * float(exact.abs().max()) + 0.5, rtol=0)
    out = model(x[:2], 400.0, -200.0, score=target.score, divergence="hutchinson", create_graph=True)
    assert out.divergence.requires_grad and out.jacobian_sq.shape == (2,)
    (grad,) = torch.autograd.grad(out.divergence.sum(), model.phase)
    assert torch.isfinite(grad).all()
    with torch.no_grad():
        assert not model(x[:2], 400.0, -200.0, score=target.score).divergence.requires_grad


def test_save_and_load(tmp_path):
    model = randomised(4, prior_scale=2.0)
    model.save_pretrained(tmp_path)
    loaded = EnergySamplerMLPModel.from_pretrained(tmp_path)
    target = load_target("many_well_554")
    target_score = lambda z: -4 * z * (z**2 - 4)  # noqa: E731  (a 4-D double well's score, any callable works)
    x = torch.randn(5, 4)
    a = model(x, 1000.0, -1000.0, score=target_score)
    b = loaded(x, 1000.0, -1000.0, score=target_score)
    torch.testing.assert_close(a.sample, b.sample)
    assert loaded.config.prior_scale == 2.0 and target.dim == 5
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(2, 3), 1000.0, -1000.0, score=target_score)
