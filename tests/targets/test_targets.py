"""Energy targets: normalisers against quadrature and closed forms, exact samplers, the registry, user files and
``validate_target``'s errors."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from f2d2_diffusers.targets import (
    TARGETS, BreastCancerTarget, EnergyTarget, FunnelTarget, GaussianTarget, GMM40Target, ManyWell32Target,
    ManyWellTarget, load_target, validate_target,
)


def test_every_builtin_loads_by_name_and_passes_validation():
    for name in TARGETS:
        target = load_target(name.replace("_", "-"))  # hyphens work too
        validate_target(target)
        assert target.name == name and target.log_Z is not None


def log_quad_2d(target, limit, step=0.05):
    grid = torch.arange(-limit, limit + step / 2, step, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    lp = target.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1))
    return float(torch.logsumexp(lp, 0) + 2 * math.log(step))


def test_gmm40_is_normalised_and_its_means_come_from_the_documented_seed():
    target = GMM40Target()
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(target.means, 40.0 * (2 * torch.rand(40, 2, generator=generator) - 1))
    assert target.means.abs().max() <= 40 and target.prior_scale == 40.0
    assert abs(log_quad_2d(target, 50.0, 0.1) - target.log_Z) < 1e-3
    assert abs(log_quad_2d(load_target("gmm_grid"), 12.0) - 0.0) < 1e-4


def test_funnel_is_normalised_conditionally():
    target = FunnelTarget()
    # integrate x_2 out for a fixed x_1 (the other 8 are the same Gaussian), then x_1 with x_2..x_10 at 0 corrected
    x1 = 0.7
    cond = integrate.quad(lambda t: math.exp(float(target.log_prob(torch.tensor([[x1, t] + [0.0] * 8],
                          dtype=torch.float64))) - float(target.log_prob(torch.tensor([[x1] + [0.0] * 9],
                          dtype=torch.float64)))), -20, 20)[0]
    gauss0 = 1 / math.sqrt(2 * math.pi * math.exp(x1))  # density of one conditional at 0
    assert cond * gauss0 == pytest.approx(1.0, rel=1e-6)
    x = target.sample(4000, torch.Generator().manual_seed(0))
    assert abs(float(x[:, 0].std()) - 3.0) < 0.15


def test_many_well_32_log_z_matches_the_published_value_and_quadrature():
    target = ManyWell32Target()
    assert target.log_Z == pytest.approx(164.69568, abs=1e-4)
    one = integrate.quad(lambda t: math.exp(-(-0.5 * t - 6 * t**2 + t**4)), -np.inf, np.inf)[0]
    assert target.log_Z == pytest.approx(16 * (math.log(one) + 0.5 * math.log(2 * math.pi)), abs=1e-6)
    x = target.sample(20000, torch.Generator().manual_seed(0))
    second = integrate.quad(lambda t: t**2 * math.exp(-(-0.5 * t - 6 * t**2 + t**4)), -np.inf, np.inf)[0] / one
    assert abs(float((x[:, 0::2] ** 2).mean()) - second) < 0.02
    assert abs(float((x[:, 1::2] ** 2).mean()) - 1.0) < 0.02


def test_many_well_554_log_z_by_quadrature():
    target = ManyWellTarget(5, 5, 4.0)
    one = integrate.quad(lambda t: math.exp(-((t**2 - 4) ** 2)), -np.inf, np.inf)[0]
    assert target.log_Z == pytest.approx(5 * math.log(one), abs=1e-8)
    mixed = ManyWellTarget(8, 3, 2.0)
    one = integrate.quad(lambda t: math.exp(-((t**2 - 2) ** 2)), -np.inf, np.inf)[0]
    assert mixed.log_Z == pytest.approx(3 * math.log(one) + 2.5 * math.log(2 * math.pi), abs=1e-8)


def test_gaussian_target_closed_form():
    target = GaussianTarget([1.0, -1.0], [0.5, 2.0], log_Z=1.5)
    x = target.sample(5, torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(target.mean, target.std).log_prob(x).sum(1) + 1.5
    torch.testing.assert_close(target.log_prob(x), expected)


def test_breast_cancer_posterior():
    target = BreastCancerTarget()
    assert target.dim == 31 and not target.has_samples
    assert target.log_Z_error is not None and target.log_Z_error < 0.05
    # at w = 0 every likelihood term is log(1/2)
    value = float(target.log_prob(torch.zeros(1, 31)))
    assert value == pytest.approx(-569 * math.log(2) - 15.5 * math.log(2 * math.pi), rel=1e-6)
    assert torch.allclose(target.features[:, 0], torch.ones(569)) and abs(float(target.features[:, 1:].mean())) < 1e-5


def test_score_is_the_gradient_and_can_stay_in_the_graph():
    target = load_target("funnel")
    x = torch.randn(3, 10, requires_grad=True)
    score = target.score(x)
    assert score.requires_grad  # x requires grad: connected, so a Jacobian sees the Hessian
    hess_trace = sum(torch.autograd.grad(score[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(10))
    assert torch.isfinite(hess_trace).all()
    detached = target.score(x.detach(), clip=0.5)
    assert not detached.requires_grad and detached.abs().max() <= 0.5


USER_FILE = '''
import torch
from f2d2_diffusers.targets import EnergyTarget

class Banana(EnergyTarget):
    dim = 2
    log_Z = 0.0

    def log_prob(self, x):
        return -0.5 * x[:, 0] ** 2 - 0.5 * (x[:, 1] - x[:, 0] ** 2) ** 2 - torch.log(torch.tensor(2 * 3.141592653589793))

class NotATarget:
    pass
'''


def test_user_file_targets_load_by_path_and_class(tmp_path):
    path = tmp_path / "my_target.py"
    path.write_text(USER_FILE)
    target = load_target(f"{path}:Banana")
    assert isinstance(target, EnergyTarget) and target.dim == 2 and target.name == f"{path}:Banana"
    validate_target(target)
    with pytest.raises(ValueError, match="not a subclass"):
        load_target(f"{path}:NotATarget")
    with pytest.raises(ValueError, match="defines no 'Missing'"):
        load_target(f"{path}:Missing")
    with pytest.raises(ValueError, match="does not exist"):
        load_target(f"{tmp_path}/nope.py:Banana")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="boom"):
        load_target(f"{tmp_path}/broken.py:Banana")
    with pytest.raises(ValueError, match="unknown target 'nope'.*gmm40"):
        load_target("nope")


class _Bad(EnergyTarget):
    dim = 3

    def __init__(self, fn):
        self.fn, self.name = fn, "bad"

    def log_prob(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn, message", [
    (lambda x: -(x**2), r"map a batch of shape \(batch, 3\) to \(batch,\)"),
    (lambda x: -(x**2).sum(-1, keepdim=True), r"to \(batch,\)"),
    (lambda x: (x**2).sum(-1) * float("nan"), "NaN"),
    (lambda x: torch.full((x.shape[0],), float("-inf")) + 0 * x.sum(-1), "-inf at every test point"),
    (lambda x: torch.as_tensor(-(x.detach().numpy() ** 2).sum(-1)), "not differentiable"),
    (lambda x: (-(x**2).sum(-1)).long(), "floating-point"),
    (lambda x: torch.sqrt(x[:, 0] * 0) - 1.0, "gradient of log_prob is NaN or infinite"),
    (lambda x: [0.0] * x.shape[0], "floating-point torch.Tensor"),
])
def test_validate_target_names_the_problem(fn, message):
    with pytest.raises(ValueError, match=message):
        validate_target(_Bad(fn))


def test_validate_target_checks_dim_and_samples():
    class NoDim(EnergyTarget):
        def log_prob(self, x):
            return -(x**2).sum(-1)

    with pytest.raises(ValueError, match="positive integer"):
        validate_target(NoDim())

    class WrongSamples(EnergyTarget):
        dim = 2

        def log_prob(self, x):
            return -(x**2).sum(-1)

        def sample(self, n, generator=None):
            return torch.zeros(n, 3)

    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        validate_target(WrongSamples())

    class NotImplemented_(EnergyTarget):
        dim = 2

    with pytest.raises(ValueError, match="does not implement log_prob"):
        validate_target(NotImplemented_())


def test_reference_log_z_script_agrees_with_the_stored_value():
    from benchmarks import reference_log_z

    result = reference_log_z.main(["--num_draws", "50000", "--seed", "3"])
    stored, _ = BreastCancerTarget().log_Z, BreastCancerTarget().log_Z_error
    assert abs(result["log_Z"] - stored) < 5 * result["stderr"] + 0.01
