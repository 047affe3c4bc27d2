"""Built-in synthetic targets: Gaussian mixtures (GMM-40, a 3x3 grid, eight Gaussians), Neal's funnel, Many-Well.

Definitions follow the "Beyond ELBOs" benchmark code that the one-step sampler paper builds on
(``shared/docs/SAMPLERS.md`` section 5). Every one has a known ``log Z`` (closed form or 1-D quadrature) and an exact
sampler, so both the evidence and the sample metrics can be measured.
"""

import math
from typing import Optional, Sequence

import torch

from .base import EnergyTarget

#: Seed of the GMM-40 means: ``torch.Generator().manual_seed(GMM40_SEED)``, then ``40 * (2 U[0,1) - 1)``, shape (40, 2).
#: (The paper's JAX code draws them with ``PRNGKey(0)``; torch's stream differs, so the means differ too.)
GMM40_SEED = 0


class GaussianTarget(EnergyTarget):
    """``N(mean, diag(std^2))`` scaled by ``exp(log_Z)``: the closed-form case (an affine flow maps a Gaussian prior
    onto it exactly). ``log_prob`` is unnormalised by ``log_Z`` on purpose, so estimators have a Z to find."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], log_Z: float = 0.0, name: str = "gaussian"):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten().expand_as(self.mean).clone()
        self.dim = self.mean.numel()
        self.log_Z = float(log_Z)
        self.name = name
        self.prior_scale = 1.0

    def log_prob(self, x):
        z = (x - self.mean.to(x)) / self.std.to(x)
        return (-0.5 * z**2 - torch.log(self.std.to(x)) - 0.5 * math.log(2 * math.pi)).sum(-1) + self.log_Z

    def sample(self, num_samples, generator=None):
        return self.mean + self.std * torch.randn(num_samples, self.dim, generator=generator)


class GaussianMixtureTarget(EnergyTarget):
    """Equal-weight mixture of ``N(mu_j, std^2 I)``; normalised, so ``log Z = 0``."""

    log_Z = 0.0

    def __init__(self, means: torch.Tensor, std: float = 1.0, name: str = "gmm", prior_scale: float = 1.0):
        self.means = torch.as_tensor(means, dtype=torch.float32)
        self.std = float(std)
        self.dim = self.means.shape[1]
        self.name = name
        self.prior_scale = prior_scale

    def log_prob(self, x):
        means = self.means.to(x)
        sq = ((x[:, None, :] - means[None]) ** 2).sum(-1) / self.std**2
        log_comp = -0.5 * sq - self.dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return torch.logsumexp(log_comp, dim=1) - math.log(means.shape[0])

    def sample(self, num_samples, generator=None):
        index = torch.randint(0, self.means.shape[0], (num_samples,), generator=generator)
        return self.means[index] + self.std * torch.randn(num_samples, self.dim, generator=generator)


class GMM40Target(GaussianMixtureTarget):
    """GMM-40: 2-D, 40 unit-variance components with means uniform in ``[-40, 40]^2`` (seed :data:`GMM40_SEED`);
    ``log Z = 0``; prior scale 40 as in the paper's configuration."""

    def __init__(self):
        generator = torch.Generator().manual_seed(GMM40_SEED)
        means = 40.0 * (2 * torch.rand(40, 2, generator=generator) - 1)
        super().__init__(means, std=1.0, name="gmm40", prior_scale=40.0)


class GMMGridTarget(GaussianMixtureTarget):
    """A 2-D toy grid mixture (after the consistency-sampler papers' "GMM grid"): 9 unit-variance components on
    ``{-5, 0, 5}^2``; ``log Z = 0``."""

    def __init__(self):
        grid = torch.tensor([-5.0, 0.0, 5.0])
        means = torch.cartesian_prod(grid, grid)
        super().__init__(means, std=1.0, name="gmm_grid", prior_scale=5.0)


class EightGaussiansTarget(GaussianMixtureTarget):
    """The 2-D toy of ``f2d2_diffusers.data`` as a density: 8 components of std 0.2 on a circle of radius 2.828."""

    def __init__(self):
        angles = torch.arange(8) * (2 * math.pi / 8)
        means = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 2.828
        super().__init__(means, std=0.2, name="eight_gaussians", prior_scale=2.0)


class FunnelTarget(EnergyTarget):
    """Neal's funnel, 10-D: ``x_1 ~ N(0, 3^2)``, ``x_2..x_10 | x_1 ~ N(0, exp(x_1) I)``; normalised, ``log Z = 0``."""

    log_Z = 0.0

    def __init__(self, dim: int = 10, scale: float = 3.0):
        self.dim, self.scale, self.name, self.prior_scale = dim, scale, "funnel", 1.0

    def log_prob(self, x):
        x1, rest = x[:, 0], x[:, 1:]
        log_p1 = -0.5 * (x1 / self.scale) ** 2 - math.log(self.scale) - 0.5 * math.log(2 * math.pi)
        var = torch.exp(x1)[:, None]
        log_rest = (-0.5 * rest**2 / var - 0.5 * torch.log(var) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_p1 + log_rest

    def sample(self, num_samples, generator=None):
        x1 = self.scale * torch.randn(num_samples, 1, generator=generator)
        rest = torch.exp(x1 / 2) * torch.randn(num_samples, self.dim - 1, generator=generator)
        return torch.cat([x1, rest], dim=1)


def _log_trapezoid(log_f: torch.Tensor, grid: torch.Tensor) -> float:
    """``log int f`` by the trapezoid rule on a uniform ``grid``, from ``log f`` (float64)."""
    dx = float(grid[1] - grid[0])
    weights = torch.full_like(grid, dx)
    weights[0] = weights[-1] = dx / 2
    return float(torch.logsumexp(log_f + torch.log(weights), dim=0))


class _OneDimensional:
    """A 1-D density ``exp(log_f)`` on ``[-limit, limit]``: ``log`` of its integral (trapezoid rule on ``points``
    nodes, float64; the integrands here are smooth and negligible at the ends, so it is accurate to ~1e-12) and exact
    sampling up to grid error by the inverse CDF, linearly interpolated."""

    def __init__(self, log_f, limit: float, points: int = 200_001):
        self.grid = torch.linspace(-limit, limit, points, dtype=torch.float64)
        values = log_f(self.grid)
        self.log_integral = _log_trapezoid(values, self.grid)
        pdf = torch.exp(values - values.max())
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((pdf[1:] + pdf[:-1]) / 2, 0)])
        self.cdf = cdf / cdf[-1]

    def sample(self, shape, generator=None) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, dtype=torch.float64).flatten()
        idx = torch.searchsorted(self.cdf, u).clamp(1, self.grid.numel() - 1)
        c0, c1 = self.cdf[idx - 1], self.cdf[idx]
        g0, g1 = self.grid[idx - 1], self.grid[idx]
        frac = torch.where(c1 > c0, (u - c0) / (c1 - c0), torch.zeros_like(u))
        return (g0 + frac * (g1 - g0)).reshape(shape).float()


class ManyWell32Target(EnergyTarget):
    """Many-Well 32 (FAB): 16 independent 2-D double wells on ``(x_{2i}, x_{2i+1})``,
    ``log rho = -(a x_1 + b x_1^2 + c x_1^4) - x_2^2 / 2`` with ``a = -0.5, b = -6, c = 1``; ``2^16`` modes.
    ``log Z = 16 (log 11784.50927 + log(2 pi) / 2) = 164.69568``; sampled exactly per coordinate (inverse CDF)."""

    LOG_Z = 164.69568
    a, b, c = -0.5, -6.0, 1.0

    def __init__(self, dim: int = 32):
        if dim % 2:
            raise ValueError("Many-Well needs an even dimension")
        self.dim, self.name, self.prior_scale = dim, "many_well_32" if dim == 32 else f"many_well_{dim}", 1.0
        self._well = _OneDimensional(self._log_well, limit=6.0)
        self.log_Z = (dim // 2) * (self._well.log_integral + 0.5 * math.log(2 * math.pi))

    def _log_well(self, x):
        return -(self.a * x + self.b * x**2 + self.c * x**4)

    def log_prob(self, x):
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return (self._log_well(x1) - 0.5 * x2**2).sum(-1)

    def sample(self, num_samples, generator=None):
        half = self.dim // 2
        x1 = self._well.sample((num_samples, half), generator)
        x2 = torch.randn(num_samples, half, generator=generator)
        return torch.stack([x1, x2], dim=2).reshape(num_samples, self.dim)


class ManyWellTarget(EnergyTarget):
    """Many-Well ``(d, m, delta)``: ``log rho = -sum_{i<=m} (x_i^2 - delta)^2 - sum_{i>m} x_i^2 / 2``; ``2^m`` modes.

    ``log Z = m log I + (d - m) log(2 pi) / 2`` with ``I = int exp(-(x^2 - delta)^2) dx``, computed by the trapezoid
    rule on 200,001 nodes of ``[-limit, limit]`` (float64; the integrand is below ``1e-100`` at the ends). The default
    ``(5, 5, 4)`` is SCDS's "MW54"."""

    def __init__(self, dim: int = 5, num_wells: int = 5, delta: float = 4.0):
        self.dim, self.m, self.delta = dim, num_wells, float(delta)
        self.name = f"many_well_{dim}{num_wells}{int(delta) if float(delta).is_integer() else delta}"
        self.prior_scale = 1.0
        limit = math.sqrt(self.delta) + 16.0
        self._well = _OneDimensional(lambda x: -(x**2 - self.delta) ** 2, limit=limit)
        self.log_Z = num_wells * self._well.log_integral + (dim - num_wells) * 0.5 * math.log(2 * math.pi)

    def log_prob(self, x):
        wells = -((x[:, : self.m] ** 2 - self.delta) ** 2).sum(-1)
        return wells - 0.5 * (x[:, self.m:] ** 2).sum(-1)

    def sample(self, num_samples, generator=None):
        wells = self._well.sample((num_samples, self.m), generator)
        rest = torch.randn(num_samples, self.dim - self.m, generator=generator)
        return torch.cat([wells, rest], dim=1)
