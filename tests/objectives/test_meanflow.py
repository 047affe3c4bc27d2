import pytest
import torch

from analytic import GaussianFlowMap, PerturbedFlowMap
from f2d2_diffusers import meanflow_f2d2_loss
from f2d2_diffusers.objectives.meanflow import total_derivative_along_flow
from testing_utils import randomise_new_layers, tiny_unet_config


@pytest.mark.parametrize("directions", ["both", "forward"])
@pytest.mark.parametrize("step_distribution", ["dyadic", "logit_normal", "uniform"])
def test_the_exact_flow_map_is_a_fixed_point_of_meanflow_f2d2(gaussian_batch, directions, step_distribution):
    params, teacher, batch = gaussian_batch
    out = meanflow_f2d2_loss(
        GaussianFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
        directions=directions, divergence="exact", step_distribution=step_distribution,
    )
    # The Eulerian identity holds exactly for both heads, for every start and step.
    assert out.velocity_loss < 1e-10 and out.divergence_loss < 1e-10 and out.step_loss < 1e-10


def test_a_wrong_divergence_is_not_a_fixed_point(gaussian_batch):
    params, teacher, batch = gaussian_batch
    out = meanflow_f2d2_loss(
        PerturbedFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
        divergence="exact", step_fraction=0.5,
    )
    # The offset is constant in (x, s, h), so the JVP target is the exact D: error 0.5 per dimension, squared.
    assert out.tangent_loss < 1e-10
    torch.testing.assert_close(out.step_loss.double(), torch.tensor(0.25, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    wrong_velocity = GaussianFlowMap(**{**params, "data_std": [s * 1.5 for s in params["data_std"]]})
    assert meanflow_f2d2_loss(wrong_velocity, batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
                              divergence="exact").velocity_loss > 1e-3


def test_the_jvp_through_a_unet_with_attention_matches_finite_differences(tiny_f2d2_unet):
    from f2d2_diffusers import evaluate_flow_map

    model = tiny_f2d2_unet.double()
    assert any("attentions" in name for name, _ in model.named_modules())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    h = torch.tensor([-0.25, 0.2, -0.5], dtype=torch.float64)

    def central_difference(dx, ds, eps):
        plus = evaluate_flow_map(model, x + eps * dx, sigma + eps * ds, h - eps * ds)
        minus = evaluate_flow_map(model, x - eps * dx, sigma - eps * ds, h + eps * ds)
        return (plus.sample - minus.sample) / (2 * eps), (plus.divergence - minus.divergence) / (2 * eps)

    with torch.no_grad():  # a caller under no_grad must still get the forward-mode derivative
        u, _, du, dd = total_derivative_along_flow(model, x, sigma, h, v)
        fd_u, fd_d = central_difference(v, 1.0, 1e-5)
        # Along x alone everything runs in float64: tight agreement.
        (_, _), (du_x, dd_x) = torch.func.jvp(
            lambda z: tuple(evaluate_flow_map(model, z, sigma, h).values()), (x,), (v,)
        )
        fd_u_x, fd_d_x = central_difference(v, 0.0, 1e-4)
    torch.testing.assert_close(du_x, fd_u_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dd_x, fd_d_x, rtol=1e-5, atol=1e-5)
    # diffusers computes the sinusoidal time embedding in float32, which bounds finite differences in (sigma, h).
    assert (du - fd_u).abs().max() < 1e-2 * du.abs().max()
    assert (dd - fd_d).abs().max() < 1e-2 * dd.abs().max()
    torch.testing.assert_close(u, evaluate_flow_map(model, x, sigma, h).sample)


def test_meanflow_loss_on_images_with_a_teacher_trains_the_student_only():
    from diffusers import UNet2DModel

    from f2d2_diffusers import F2D2UNet2DModel

    torch.manual_seed(0)
    student = randomise_new_layers(F2D2UNet2DModel(**tiny_unet_config()))
    teacher = UNet2DModel(**tiny_unet_config()).eval()
    out = meanflow_f2d2_loss(
        student, torch.rand(4, 1, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0), teacher=teacher,
        divergence="hutchinson", step_distribution="logit_normal",
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.tangent_loss > 0 and out.step_loss > 0
    grads = {n: p.grad for n, p in student.named_parameters()}
    assert grads["divergence_out.weight"].abs().sum() > 0 and grads["step_embedding.linear_1.weight"].abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_adaptive_weight_divides_each_error(tiny_f2d2_mlp):
    batch = torch.randn(16, 3)
    plain = meanflow_f2d2_loss(tiny_f2d2_mlp, batch, generator=torch.Generator().manual_seed(0), adaptive_weight_power=0)
    weighted = meanflow_f2d2_loss(tiny_f2d2_mlp, batch, generator=torch.Generator().manual_seed(0))
    # Unweighted: the loss is the mean of velocity + divergence error; weighted (p = 1): each error e becomes
    # e / (e + 1e-3) < 1, so the weighted loss is below 1 and below the plain one when errors exceed 1e-3.
    torch.testing.assert_close(plain.loss.detach(), plain.velocity_loss + plain.divergence_loss)
    assert 0 < weighted.loss < 1 and weighted.velocity_loss == plain.velocity_loss


def test_bad_options_are_rejected(tiny_f2d2_mlp):
    batch = torch.randn(4, 3)
    for kwargs, match in [
        (dict(directions="backward"), "directions"), (dict(step_distribution="beta"), "step_distribution"),
        (dict(step_fraction=1.5), "step_fraction"), (dict(adaptive_weight_eps=0.0), "adaptive_weight"),
        (dict(divergence="approx"), "divergence"),
    ]:
        with pytest.raises(ValueError, match=match):
            meanflow_f2d2_loss(tiny_f2d2_mlp, batch, **kwargs)


def test_tangent_scale_ramps_the_targets_from_the_instantaneous_field(gaussian_batch):
    params, teacher, batch = gaussian_batch
    exact = GaussianFlowMap(**params)

    def loss(scale):
        return meanflow_f2d2_loss(exact, batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
                                  divergence="exact", step_distribution="uniform", tangent_scale=scale)

    full, none = loss(1.0), loss(0.0)
    assert full.step_loss < 1e-10
    # At 0 every step regresses on v and div v at its start, which the exact average over a step is not.
    assert none.step_loss > 1e-4
    # The h = 0 part has no d/ds term: the same at any scale.
    assert none.tangent_loss < 1e-10
    with pytest.raises(ValueError, match="tangent_scale"):
        loss(1.5)
