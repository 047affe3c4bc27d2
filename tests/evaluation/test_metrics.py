import numpy as np
import pytest
import torch

from f2d2_diffusers.evaluation.metrics import auroc, energy_distance, frechet_distance, mmd_rbf


def test_frechet_distance_of_identical_sets_is_zero():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_sets_is_the_squared_mean_shift():
    # Equal covariances (the same points shifted): FD = |mu_a - mu_b|^2 exactly.
    x = np.random.default_rng(0).normal(size=(300, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)


def test_frechet_distance_of_scaled_gaussians_matches_the_closed_form():
    # N(0, I) vs N(0, 4 I) fits in 1-D: (1 - 2)^2 = 1 per dimension, from the sample covariances.
    x = np.random.default_rng(1).normal(size=(5000, 3))
    ca, cb = np.cov(x, rowvar=False), np.cov(2 * x, rowvar=False)
    assert np.allclose(cb, 4 * ca)
    mean = x.mean(0)  # the fits' means differ by mean(x): |mu_a - mu_b|^2 = |mean(x)|^2
    expected = (mean**2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(2 * ca)  # (C_a C_b)^{1/2} = 2 C_a
    assert frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-6)


def test_energy_distance_hand_computed():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    # E|X-Y| = (3 + 2)/2, E|X-X'| over all 4 ordered pairs = 2/4, E|Y-Y'| = 0.
    assert energy_distance(x, y) == pytest.approx(2 * 2.5 - 0.5 - 0.0)
    assert energy_distance(x, x) == 0.0


def test_mmd_identical_zero_and_separated_sets_positive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 2, generator=g)
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    far = torch.tensor([[0.0, 0.0]]), torch.tensor([[100.0, 0.0]])
    assert mmd_rbf(*far) == pytest.approx(2.0)  # k = 1 on self-pairs, 0 across
    y = torch.randn(100, 2, generator=g)
    assert abs(mmd_rbf(x, y, unbiased=True)) < mmd_rbf(x, x + 1.0, unbiased=True)


def test_mmd_single_bandwidth_hand_computed():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # biased: k(x,x) + k(y,y) - 2 k(x,y) = 2 - 2 exp(-1/2) with s = 1.
    assert mmd_rbf(x, y, bandwidths=(1.0,)) == pytest.approx(2 - 2 * np.exp(-0.5))


def test_auroc_separated_identical_and_ties():
    assert auroc([0.0, 1.0, 2.0], [5.0, 6.0]) == 1.0
    assert auroc([5.0, 6.0], [0.0, 1.0, 2.0]) == 0.0
    s = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert auroc(s, s) == pytest.approx(0.5)
    assert auroc([1.0, 2.0], [2.0, 3.0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        energy_distance(torch.tensor([[float("nan")]]), torch.zeros(1, 1))
