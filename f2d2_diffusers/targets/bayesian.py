"""Bayesian logistic regression on scikit-learn's breast-cancer data: a real posterior (31-D), no true ``log Z``.

Construction as in the "Beyond ELBOs" code the sampler paper uses (``shared/docs/SAMPLERS.md`` section 5): the 30
features standardised (mean 0, std 1; a zero std would be set to 1), a constant 1 prepended (the bias), weights
``w ~ N(0, I_31)``, labels ``y in {0, 1}``, ``y ~ Bernoulli(sigmoid(X w))``. ``log rho(w)`` is the full joint (prior
included), so ``Z`` is the marginal likelihood of the data. Its reference value comes from
``benchmarks/reference_log_z.py`` (importance sampling from a Student-t fitted at the posterior mode), stored in
``REFERENCE_LOG_Z`` with its standard error.
"""

import math

import torch
import torch.nn.functional as F

from .base import EnergyTarget

#: ``OMP_NUM_THREADS=1 python benchmarks/reference_log_z.py`` (74 s): 4,000,000 importance draws from a multivariate
#: Student-t (5 degrees of freedom) at the MAP with the Laplace covariance (ESS 2.3 %, ~90,000 effective draws);
#: value and standard error (delta method). 100,000 draws with 10 degrees of freedom agree (-55.2296 +- 0.0155).
REFERENCE_LOG_Z = {"breast_cancer": (-55.2258, 0.0033)}


def load_breast_cancer_design():
    """``(X, y)``: the 569 x 31 design (standardised features, bias column first) and the 0/1 labels, float32."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.as_tensor(data.data, dtype=torch.float64)
    std = x.std(0, unbiased=False)
    x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    x = torch.cat([torch.ones(x.shape[0], 1, dtype=torch.float64), x], dim=1)
    return x.float(), torch.as_tensor(data.target, dtype=torch.float32)


class BayesianLogisticRegressionTarget(EnergyTarget):
    """Posterior of a logistic regression with an ``N(0, I)`` prior; ``log_prob`` is the joint ``log p(w, y | X)``."""

    prior_scale = 1.0

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, name: str = "blr"):
        self.features, self.labels = features, labels
        self.dim = features.shape[1]
        self.name = name

    def log_prob(self, w):
        logits = w @ self.features.to(w).T
        labels = self.labels.to(w)
        log_lik = -F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (w**2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return log_lik + log_prior


class BreastCancerTarget(BayesianLogisticRegressionTarget):
    """scikit-learn's breast-cancer data (569 x 30, plus bias): 31-D; ``log_Z`` is the stored reference estimate and
    ``log_Z_error`` its standard error (no exact sampler)."""

    def __init__(self):
        features, labels = load_breast_cancer_design()
        super().__init__(features, labels, name="breast_cancer")
        self.log_Z, self.log_Z_error = REFERENCE_LOG_Z["breast_cancer"]
