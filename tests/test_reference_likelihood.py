import math

import pytest
import torch

from analytic import GaussianFlowMap, GaussianVelocity, RotatedGaussianVelocity, gaussian_params
from f2d2_diffusers.reference_likelihood import reference_log_likelihood


@pytest.fixture
def gaussian():
    params = gaussian_params((2, 3, 3))
    teacher = GaussianVelocity(**params)
    x0 = teacher.mean + teacher.std * torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return teacher, x0


def test_dopri5_with_exact_divergence_matches_the_closed_form(gaussian):
    teacher, x0 = gaussian
    out = reference_log_likelihood(teacher, x0, method="dopri5", divergence="exact")
    assert (out.log_prob - teacher.log_prob(x0)).abs().max() < 1e-3
    assert out.nfe > 6
    # The latents are where the flow carries x0: x1 = (x0 - mean) / std for this Gaussian.
    torch.testing.assert_close(out.latents, (x0 - teacher.mean) / teacher.std, atol=1e-3, rtol=0)


@pytest.fixture
def rotated():
    teacher = RotatedGaussianVelocity(**gaussian_params((2, 3, 3)), rotation_seed=1)
    return teacher, teacher.sample_data(5, generator=torch.Generator().manual_seed(0))


def test_rotated_gaussian_has_a_non_diagonal_jacobian_and_its_closed_form_is_right(rotated):
    teacher, x0 = rotated
    x = x0[:1].requires_grad_(True)
    jacobian = torch.autograd.functional.jacobian(lambda z: teacher(z, torch.tensor([400.0])).sample, x).reshape(18, 18)
    off_diagonal = jacobian - torch.diag(torch.diagonal(jacobian))
    assert off_diagonal.abs().max() > 0.05
    out = reference_log_likelihood(teacher, x0, method="dopri5", divergence="exact")
    assert (out.log_prob - teacher.log_prob(x0)).abs().max() < 1e-3


def test_hutchinson_reference_is_unbiased_on_a_non_diagonal_jacobian(rotated):
    teacher, x0 = rotated
    solve = dict(method="rk4", num_steps=8)
    exact = reference_log_likelihood(teacher, x0, divergence="exact", **solve)
    num_draws = 64
    singles = torch.stack([
        reference_log_likelihood(
            teacher, x0, divergence="hutchinson", num_probes=1, generator=torch.Generator().manual_seed(i), **solve
        ).log_prob
        for i in range(num_draws)
    ])
    # One Rademacher probe per solve is not exact here: the estimates really vary from draw to draw...
    spread = singles.std(dim=0)
    assert (spread > 0.1).all()
    # ...and their mean converges to the exact-divergence solve on the same grid (four standard errors).
    error = singles.mean(dim=0) - exact.log_prob
    assert (error.abs() < 4 * spread / num_draws**0.5).all()
    # The probes change only the divergence integral, never the path.
    torch.testing.assert_close(exact.latents, reference_log_likelihood(
        teacher, x0, divergence="hutchinson", generator=torch.Generator().manual_seed(0), **solve
    ).latents)
    # Averaging 256 probes inside one solve shrinks the error like 1/sqrt(256).
    many = reference_log_likelihood(
        teacher, x0, divergence="hutchinson", num_probes=256, generator=torch.Generator().manual_seed(123), **solve
    )
    assert ((many.log_prob - exact.log_prob).abs() < 4 * spread / 256**0.5).all()


def test_fixed_step_methods_converge_with_more_steps(gaussian):
    teacher, x0 = gaussian
    exact = teacher.log_prob(x0)
    errors = [
        (reference_log_likelihood(teacher, x0, method="euler", num_steps=n).log_prob - exact).abs().mean()
        for n in (4, 16, 64)
    ]
    assert errors[0] > errors[1] > errors[2]
    out = reference_log_likelihood(teacher, x0, method="midpoint", num_steps=8)
    assert out.nfe == 16


def test_a_flow_map_model_is_evaluated_through_its_tangent(gaussian):
    teacher, x0 = gaussian
    flow_map = GaussianFlowMap(**teacher.config)
    out = reference_log_likelihood(flow_map, x0)
    assert (out.log_prob - teacher.log_prob(x0)).abs().max() < 1e-3


def test_bits_per_dim_uses_num_levels(gaussian):
    teacher, x0 = gaussian
    a = reference_log_likelihood(teacher, x0, method="euler", num_steps=2)
    b = reference_log_likelihood(teacher, x0, method="euler", num_steps=2, num_levels=256)
    # log P = log p + d log 2 - d log 256, so bits/dim rise by log2(256) - log2(2) = 7 whatever d is.
    torch.testing.assert_close(b.bits_per_dim - a.bits_per_dim, torch.full_like(a.bits_per_dim, 7.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.bits_per_dim, -a.log_prob / (x0[0].numel() * math.log(2)))


def test_bad_arguments(gaussian):
    teacher, x0 = gaussian
    with pytest.raises(ValueError, match="num_steps"):
        reference_log_likelihood(teacher, x0, method="euler")
    with pytest.raises(ValueError, match="unknown method"):
        reference_log_likelihood(teacher, x0, method="leapfrog")
    with pytest.raises(ValueError, match="divergence"):
        reference_log_likelihood(teacher, x0, divergence="guess")
    with pytest.raises(ValueError, match="NaN"):
        reference_log_likelihood(teacher, x0 * float("nan"))


def test_trajectory_at_requested_noise_levels(gaussian):
    teacher, x0 = gaussian
    out = reference_log_likelihood(teacher, x0, sigmas=[0.0, 0.25, 0.5, 1.0])
    assert out.trajectory.shape == (4, *x0.shape) and out.divergence_integrals.shape == (4, 5)
    m, a = teacher.marginal(torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(out.trajectory[2], m + a / teacher.std * (x0 - teacher.mean), atol=1e-4, rtol=0)
    expected = torch.log(a / teacher.std).expand_as(x0).reshape(5, -1).sum(1)
    torch.testing.assert_close(out.divergence_integrals[2], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.trajectory[-1], out.latents)
    with pytest.raises(ValueError, match="sigmas"):
        reference_log_likelihood(teacher, x0, sigmas=[0.0, 0.5])


def test_inputs_users_sent_get_a_correct_answer_or_a_clear_error():
    """int64, float64, empty and huge inputs used to end in bare tracebacks (or the solver's "underflow in dt")."""
    from f2d2_diffusers import FlowMatchingMLPModel

    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=3, hidden_dim=16, num_layers=1, time_embed_dim=8).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"sample must be floating-point model-space data, got dtype torch\.int64; dequantise"):
        reference_log_likelihood(teacher, torch.zeros(2, 3, dtype=torch.long))
    # float64 data on a float32 model: solved in the model's precision, the same answer as float32 data.
    as_float64 = reference_log_likelihood(teacher, x.double())
    torch.testing.assert_close(as_float64.log_prob, reference_log_likelihood(teacher, x).log_prob)
    assert as_float64.log_prob.dtype == torch.float32
    with pytest.raises(ValueError, match=r"at least one sample.*got \(0, 3\)"):
        reference_log_likelihood(teacher, torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"the velocity at sigma=0 \(from sample\) contains NaN or infinite values.*far outside"):
        reference_log_likelihood(teacher, torch.full((2, 3), 1e30))
    with pytest.raises(ValueError, match="sigmas must be a list of numbers"):
        reference_log_likelihood(teacher, x, sigmas=["zero", "one"])
    with pytest.raises(ValueError, match="num_levels must be an integer >= 2"):
        reference_log_likelihood(teacher, x, num_levels=1)
