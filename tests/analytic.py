"""Closed-form flows of a Gaussian data distribution, for tests.

Data ``x0 ~ N(mean, diag(std^2))`` (per element). Under ``x_sigma = (1 - sigma) x0 + sigma eps`` the marginal is
``N(m(sigma), a(sigma)^2)`` with ``m = (1 - sigma) mean`` and ``a = sqrt((1 - sigma)^2 std^2 + sigma^2)``, and the
flow-matching velocity moves every point affinely: ``X(x, s, h) = m(s+h) + a(s+h)/a(s) (x - m(s))``. Its
divergence integral is ``sum log(a(s+h)/a(s))``, so average velocity and divergence are known exactly.
"""

import math

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from f2d2_diffusers.models import F2D2ModelOutput, FlowMatchingModelOutput


class _GaussianFlow(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, data_mean=(0.0,), data_std=(1.0,), shape=(1,)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(data_mean, dtype=torch.float64).reshape(shape))
        self.register_buffer("std", torch.tensor(data_std, dtype=torch.float64).reshape(shape))

    def _sigma(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device) / 1000.0
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return t.reshape(-1, *([1] * (x.ndim - 1)))

    def marginal(self, s):
        return (1 - s) * self.mean, torch.sqrt((1 - s) ** 2 * self.std**2 + s**2)

    def velocity(self, x, s):
        m, a = self.marginal(s)
        a_prime = ((s - 1) * self.std**2 + s) / a
        return -self.mean + a_prime / a * (x - m), (a_prime / a).expand_as(x).reshape(x.shape[0], -1).sum(1)

    def log_prob(self, x0):
        z = (x0 - self.mean) / self.std
        per_element = -0.5 * z**2 - torch.log(self.std) - 0.5 * math.log(2 * math.pi)
        return per_element.reshape(x0.shape[0], -1).sum(1)


class GaussianVelocity(_GaussianFlow):
    """Teacher: ``forward(sample, timestep)`` like a ``UNet2DModel``."""

    def forward(self, sample, timestep, return_dict=True):
        v, _ = self.velocity(sample, self._sigma(timestep, sample))
        return FlowMatchingModelOutput(sample=v) if return_dict else (v,)


class GaussianFlowMap(_GaussianFlow):
    """Exact joint flow map: ``forward(sample, timestep, step)`` returns the true average velocity and divergence."""

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        s, h = self._sigma(timestep, sample), self._sigma(step, sample)
        v, div = self.velocity(sample, s)
        m0, a0 = self.marginal(s)
        m1, a1 = self.marginal(s + h)
        safe_h = torch.where(h == 0, torch.ones_like(h), h)
        u = torch.where(h == 0, v, (m1 + a1 / a0 * (sample - m0) - sample) / safe_h)
        integral = torch.log(a1 / a0).expand_as(sample).reshape(sample.shape[0], -1).sum(1)
        h_flat = h.reshape(-1)
        d = torch.where(h_flat == 0, div, integral / torch.where(h_flat == 0, torch.ones_like(h_flat), h_flat))
        return F2D2ModelOutput(sample=u, divergence=d) if return_dict else (u, d)


class PerturbedFlowMap(GaussianFlowMap):
    """The exact map with its average divergence off by 0.5 per dimension wherever ``h != 0``."""

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        out = super().forward(sample, timestep, step)
        step = torch.as_tensor(step, dtype=sample.dtype).expand(sample.shape[0])
        out.divergence = out.divergence + 0.5 * sample.shape[1] * (step != 0)
        return out


def gaussian_params(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    mean = (torch.rand(n, generator=g) - 0.5).tolist()
    std = (0.2 + 0.6 * torch.rand(n, generator=g)).tolist()
    return dict(data_mean=mean, data_std=std, shape=tuple(shape))


class RotatedGaussianVelocity(GaussianVelocity):
    """Teacher for rotated Gaussian data ``x0 = Q y0``, with ``y0`` as in :class:`GaussianVelocity` and ``Q`` a fixed
    random rotation of the flattened sample.

    The flow is the unrotated one conjugated by ``Q``, ``v(x) = Q v_y(Q^T x)``: the divergence and the log-density
    (``log p(x0) = log p_y(Q^T x0)``) are unchanged, but the Jacobian ``Q J_y Q^T`` is no longer diagonal, so a single
    Rademacher probe does not give its trace exactly.
    """

    @register_to_config
    def __init__(self, data_mean=(0.0,), data_std=(1.0,), shape=(1,), rotation_seed=0):
        super().__init__(data_mean=data_mean, data_std=data_std, shape=shape)
        n = math.prod(shape)
        q, r = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(rotation_seed), dtype=torch.float64))
        self.register_buffer("rotation", q * torch.sign(torch.diagonal(r)))

    def _rotate(self, x, inverse=False):
        flat = x.reshape(x.shape[0], -1)
        # Rows are samples: x Q^T applies Q to each sample, x Q applies Q^T.
        return (flat @ (self.rotation if inverse else self.rotation.T)).reshape(x.shape)

    def forward(self, sample, timestep, return_dict=True):
        y = self._rotate(sample, inverse=True)
        v_y, _ = self.velocity(y, self._sigma(timestep, y))
        v = self._rotate(v_y)
        return FlowMatchingModelOutput(sample=v) if return_dict else (v,)

    def sample_data(self, batch_size, generator=None):
        y0 = self.mean + self.std * torch.randn(batch_size, *self.mean.shape, generator=generator, dtype=torch.float64)
        return self._rotate(y0)

    def log_prob(self, x0):
        return super().log_prob(self._rotate(x0, inverse=True))
