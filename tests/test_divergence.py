import pytest
import torch

from f2d2_diffusers.divergence import divergence, exact_divergence, hutchinson_divergence


def linear_weight(shape, seed=0):
    d = torch.Size(shape).numel()
    return torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def linear_field(shape, seed=0):
    """x -> W x on the flattened sample: its divergence is trace(W) for every sample."""
    weight = linear_weight(shape, seed)
    return (lambda x: (x.reshape(x.shape[0], -1) @ weight.T).reshape(x.shape)), torch.trace(weight)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_exact_divergence_is_the_trace_for_vectors_and_images(shape):
    fn, trace = linear_field(shape)
    x = torch.randn(4, *shape, dtype=torch.float64)
    out, div = exact_divergence(fn, x)
    torch.testing.assert_close(out, fn(x))
    torch.testing.assert_close(div, trace.expand(4))


def test_exact_divergence_of_a_nonlinear_image_field_matches_the_jacobian():
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)

    def fn(z):
        return torch.tanh(z) * z.roll(1, dims=-1) + z.mean(dim=(1, 2, 3), keepdim=True)

    _, div = exact_divergence(fn, x)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda z: fn(z[None])[0].reshape(-1), x[i])
        torch.testing.assert_close(div[i], jac.reshape(18, 18).trace())


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_agrees_with_exact_in_expectation(probe):
    fn, trace = linear_field((2, 4, 4), seed=1)
    weight = linear_weight((2, 4, 4), seed=1)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    num_probes = 4000
    _, estimate = hutchinson_divergence(
        fn, x, num_probes=num_probes, probe=probe, generator=torch.Generator().manual_seed(0)
    )
    # One Gaussian probe has variance 2 ||(W + W^T)/2||_F^2 (Rademacher less): allow four standard errors.
    std_error = (2 * ((weight + weight.T) / 2).pow(2).sum() / num_probes).sqrt()
    assert ((estimate - trace).abs() < 4 * std_error).all()
    assert ((estimate - trace).abs() > 0).any()


def test_divergence_runs_under_no_grad_and_returns_detached_values():
    fn, trace = linear_field((4,))
    x = torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        out, div = divergence(fn, x, method="hutchinson", num_probes=2, generator=torch.Generator().manual_seed(0))
        _, exact = divergence(fn, x, method="exact")
    assert not out.requires_grad and not div.requires_grad
    torch.testing.assert_close(exact, trace.expand(2))
    # With autograd on and an input that requires grad, the results are still stop-gradient values.
    out, div = divergence(fn, x.clone().requires_grad_(True), method="exact")
    assert not out.requires_grad and not div.requires_grad


def test_fixed_probes_are_used_as_given_and_the_generator_is_ignored():
    fn, trace = linear_field((4,))
    weight = linear_weight((4,))
    x = torch.randn(2, 4, dtype=torch.float64)
    # Two probes per sample, different for each sample: the estimate is the mean of e^T W e over them.
    noise = torch.tensor(
        [[[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0]], [[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, 1.0]]],
        dtype=torch.float64,
    )
    expected = torch.stack([(noise[:, i] @ weight * noise[:, i]).sum(dim=1).mean() for i in range(2)])
    _, a = hutchinson_divergence(fn, x, noise=noise, generator=torch.Generator().manual_seed(0))
    _, b = hutchinson_divergence(fn, x, noise=noise, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(b, expected)
    # These probes are not exact for this W, so the estimate is not simply the trace.
    assert ((a - trace).abs() > 1e-3).all()
    with pytest.raises(ValueError, match="noise must have shape"):
        hutchinson_divergence(fn, x, noise=noise[:, :1])


def test_bad_arguments_are_rejected():
    fn, _ = linear_field((4,))
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_divergence(fn, x, num_probes=0)
    with pytest.raises(ValueError, match="probe"):
        hutchinson_divergence(fn, x, probe="sphere")
    with pytest.raises(ValueError, match="method"):
        divergence(fn, x, method="magic")
    with pytest.raises(ValueError, match="shape"):
        exact_divergence(lambda z: z.sum(dim=1), x)
