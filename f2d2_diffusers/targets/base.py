"""``EnergyTarget``: an unnormalised density ``rho(x) = Z p(x)`` on ``R^d``, and the checks a target must pass.

A target knows its dimension, its unnormalised log-density (batched, differentiable torch), optionally its true
``log Z`` and exact samples, and a suggested prior scale for a sampler. Samplers (``docs/method.md`` section 7) only
ever call :meth:`EnergyTarget.log_prob` and :meth:`EnergyTarget.score`.
"""

import math
from typing import Optional

import torch


class EnergyTarget:
    r"""
    Base class of the sampler targets. Subclass it and implement :meth:`log_prob`; set :attr:`dim` (and, where
    known, :attr:`log_Z`; where exact sampling is possible, override :meth:`sample`).

    Attributes:
        name (`str`): the registry name (``"gmm40"``), or ``"file.py:Class"`` for a user file.
        dim (`int`): dimension ``d`` of one sample.
        log_Z (`float` or `None`): ``log`` of the normaliser ``Z = int rho``, when known (closed form, quadrature or,
            with :attr:`log_Z_error` set, a long-run reference estimate).
        log_Z_error (`float` or `None`): the reference estimate's standard error; ``None`` for exact values.
        prior_scale (`float`): suggested standard deviation ``sigma_0`` of the sampler's Gaussian prior.
    """

    name: str = "energy"
    dim: int = 0
    log_Z: Optional[float] = None
    log_Z_error: Optional[float] = None
    prior_scale: float = 1.0

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-density ``log rho(x)``: ``x`` of shape ``(batch, dim)`` -> ``(batch,)``, differentiable."""
        raise NotImplementedError

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Exact samples ``(num_samples, dim)`` from ``p = rho / Z``; targets without an exact sampler raise
        ``NotImplementedError`` (see :attr:`has_samples`)."""
        raise NotImplementedError(f"target {self.name!r} has no exact sampler")

    @property
    def has_samples(self) -> bool:
        """Whether :meth:`sample` is implemented (overridden)."""
        return type(self).sample is not EnergyTarget.sample

    def score(self, x: torch.Tensor, clip: Optional[float] = None, create_graph: Optional[bool] = None) -> torch.Tensor:
        """``grad_x log rho(x)``, shape ``(batch, dim)``, optionally clipped to ``[-clip, clip]``.

        When ``x`` requires grad (and grad mode is on; ``create_graph=None``, the default, decides so), the result
        stays in ``x``'s autograd graph, so that a Jacobian taken later with respect to ``x`` includes the Hessian of
        ``log rho`` (the sampler's divergence). Otherwise, or with ``create_graph=False``, it is detached
        (stop-gradient).
        """
        if create_graph is None:
            create_graph = x.requires_grad and torch.is_grad_enabled()
        with torch.enable_grad():
            connected = bool(create_graph and x.requires_grad)
            x_in = x if connected else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(x_in).sum(), x_in, create_graph=connected)
        if not connected:
            grad = grad.detach()
        if clip is not None:
            grad = grad.clamp(-clip, clip)
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, log_Z={self.log_Z})"


def validate_target(target, num_points: int = 8, scale: Optional[float] = None) -> None:
    """Check ``target`` before training: a ``ValueError`` that says what is wrong, else nothing.

    Checked on ``num_points`` Gaussian points of standard deviation ``scale`` (default: ``target.prior_scale``):
    ``dim`` is a positive integer; ``log_prob`` returns a floating tensor of shape ``(batch,)``, finite at those points
    (a NaN or ``+inf`` anywhere, or ``-inf`` everywhere, is refused); it is differentiable with a finite gradient; and
    ``sample`` (when implemented) returns ``(n, dim)`` finite points.
    """
    name = getattr(target, "name", type(target).__name__)
    dim = getattr(target, "dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"target {name!r}: `dim` must be a positive integer, got {dim!r}")
    if not callable(getattr(target, "log_prob", None)):
        raise ValueError(f"target {name!r} has no log_prob(x) method")
    scale = float(scale if scale is not None else getattr(target, "prior_scale", 1.0))
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(num_points, dim, generator=generator) * scale).requires_grad_(True)
    try:
        log_prob = target.log_prob(x)
    except NotImplementedError:
        raise ValueError(f"target {name!r} does not implement log_prob(x)") from None
    except Exception as err:  # noqa: BLE001  (a user's target can fail in any way; say where)
        raise ValueError(f"target {name!r}: log_prob failed on a batch of shape {tuple(x.shape)}: "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(log_prob, torch.Tensor) or not log_prob.is_floating_point():
        raise ValueError(f"target {name!r}: log_prob must return a floating-point torch.Tensor, got "
                         f"{getattr(log_prob, 'dtype', type(log_prob).__name__)}")
    if log_prob.shape != (num_points,):
        raise ValueError(f"target {name!r}: log_prob must map a batch of shape (batch, {dim}) to (batch,), got "
                         f"{tuple(log_prob.shape)} for input {tuple(x.shape)}")
    if torch.isnan(log_prob).any() or (log_prob == math.inf).any():
        raise ValueError(f"target {name!r}: log_prob returned NaN or +inf at ordinary points "
                         f"(N(0, {scale:g}^2 I) draws): {log_prob.detach().tolist()}")
    if not torch.isfinite(log_prob).any():
        raise ValueError(f"target {name!r}: log_prob is -inf at every test point (N(0, {scale:g}^2 I) draws); the "
                         "sampler cannot start from a prior that sees no mass")
    if not log_prob.requires_grad:
        raise ValueError(f"target {name!r}: log_prob is not differentiable (its output has no autograd graph: "
                         "compute it with torch operations on x, not numpy or .detach())")
    (grad,) = torch.autograd.grad(log_prob[torch.isfinite(log_prob)].sum(), x, allow_unused=True)
    if grad is None:
        raise ValueError(f"target {name!r}: log_prob does not depend on x through autograd (no gradient)")
    if not torch.isfinite(grad).all():
        raise ValueError(f"target {name!r}: the gradient of log_prob is NaN or infinite at ordinary points")
    has_samples = getattr(target, "has_samples", False)
    if has_samples:
        samples = target.sample(4, generator=torch.Generator().manual_seed(0))
        if not isinstance(samples, torch.Tensor) or samples.shape != (4, dim):
            raise ValueError(f"target {name!r}: sample(4) must return a tensor of shape (4, {dim}), got "
                             f"{tuple(getattr(samples, 'shape', ())) or type(samples).__name__}")
        if not torch.isfinite(samples).all():
            raise ValueError(f"target {name!r}: sample() returned NaN or infinite points")
