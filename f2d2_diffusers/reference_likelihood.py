"""Reference log-likelihood of a velocity model: the augmented ODE data -> noise, solved with torchdiffeq.

``log p_data(x0) = log N(x1; 0, I) + integral_0^1 div v(x_sigma, sigma) dsigma`` (``docs/method.md`` section 2).
This is the yardstick that few-step F2D2 likelihoods are measured against.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.utils import BaseOutput
from torchdiffeq import odeint
from tqdm.auto import tqdm

from .dequantization import OVERFLOW_HINT, bits_per_dim, check_finite, check_num_levels, standard_normal_log_prob
from .divergence import exact_divergence, hutchinson_divergence, hutchinson_probes
from .flow_map import evaluate_velocity

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams", "heun3")


@dataclass
class ReferenceLikelihoodOutput(BaseOutput):
    """
    Args:
        log_prob (`torch.Tensor` of shape `(batch,)`): model-space log-density of the input (nats per sample).
        bits_per_dim (`torch.Tensor` of shape `(batch,)`): see :func:`~f2d2_diffusers.dequantization.bits_per_dim`.
        latents (`torch.Tensor`): the input carried to ``sigma = 1``.
        nfe (`int`): velocity-network calls (each call's divergence costs ``d`` or ``num_probes`` backward passes).
        trajectory (`torch.Tensor`, *optional*): with ``sigmas``, the states at those noise levels,
            shape ``(len(sigmas), batch, *dims)``.
        divergence_integrals (`torch.Tensor`, *optional*): with ``sigmas``, ``integral_0^sigma div v``
            along the path at each of them, shape ``(len(sigmas), batch)``.
    """

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    latents: torch.Tensor
    nfe: int
    trajectory: Optional[torch.Tensor] = None
    divergence_integrals: Optional[torch.Tensor] = None


def reference_log_likelihood(
    model,
    sample: torch.Tensor,
    method: str = "dopri5",
    divergence: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_steps: Optional[int] = None,
    num_levels: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    sigmas: Optional[Sequence[float]] = None,
    show_progress: bool = False,
) -> ReferenceLikelihoodOutput:
    """Solve the augmented ODE from ``sigma = 0`` (data) to ``sigma = 1`` (noise).

    Args:
        model: a velocity model called like ``UNet2DModel`` (``model(x, timestep).sample``) or a flow-map model
            (its zero-step velocity is used).
        sample: model-space data ``x0``, shape ``(batch, *dims)`` (dequantise discrete data first).
        method: a torchdiffeq method; adaptive ones use ``rtol``/``atol``, fixed-step ones need ``num_steps``.
        divergence: ``"exact"`` (``d`` backward passes per call) or ``"hutchinson"`` with ``num_probes`` probes of
            kind ``probe``, drawn once per solve with ``generator`` so the ODE stays deterministic.
        num_levels: grey levels of the data for ``bits_per_dim`` (``None``: continuous data).
        sigmas: increasing noise levels from 0 to 1 at which to also return the states and the divergence
            integral so far (e.g. a few-step grid, to measure a flow map segment by segment).
        show_progress: a tqdm counter of network calls and the current ``sigma``.

    ``sample`` is moved to the model's device and dtype (a float64 input to a float32 model is solved in float32; call
    ``model.double()`` for a float64 solve). Integer, empty or non-finite inputs raise a ``TypeError``/``ValueError``,
    and so does a solve that breaks down (NaN or infinite velocity, or a step size underflow), which happens on inputs
    far outside the model's range.
    """
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"sample must be a torch.Tensor, got {type(sample).__name__}")
    if not sample.is_floating_point():
        raise TypeError(
            f"sample must be floating-point model-space data, got dtype {sample.dtype}; dequantise integer levels first "
            "(f2d2_diffusers.dequantize(levels, num_levels))"
        )
    if sample.ndim < 2 or sample.shape[0] == 0 or sample[0].numel() == 0:
        raise ValueError(f"sample must have shape (batch, *dims) with at least one sample and one value, got {tuple(sample.shape)}")
    check_num_levels(num_levels)
    weight = next((p for p in model.parameters() if p.is_floating_point()), None) if isinstance(model, torch.nn.Module) else None
    if weight is not None:
        # As the pipelines do: the model's weights fix the precision and device of the solve.
        sample = sample.to(device=weight.device, dtype=weight.dtype)
    check_finite(sample, "sample")
    options = None
    if sigmas is not None:
        try:
            grid = torch.as_tensor(sigmas, dtype=sample.dtype, device=sample.device).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"sigmas must be a list of numbers, got {sigmas!r}") from None
        if grid.numel() < 2 or grid[0] != 0 or grid[-1] != 1 or not (grid.diff() > 0).all():
            raise ValueError(f"sigmas must increase strictly from 0 to 1, got {list(map(float, grid))}")
    else:
        grid = torch.tensor([0.0, 1.0], dtype=sample.dtype, device=sample.device)
    if method in FIXED_STEP_METHODS:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"fixed-step method {method!r} needs num_steps >= 1, got {num_steps!r}")
        options = {"step_size": 1.0 / num_steps}
    elif method in ADAPTIVE_METHODS:
        if num_steps is not None:
            raise ValueError(f"num_steps applies to fixed-step methods only, not {method!r}")
    else:
        raise ValueError(f"unknown method {method!r}; choose from {ADAPTIVE_METHODS + FIXED_STEP_METHODS}")
    if divergence == "hutchinson":
        probe_noise = hutchinson_probes(sample, num_probes, probe, generator)
    elif divergence != "exact":
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")

    nfe = 0
    progress = tqdm(desc=f"reference likelihood ({method})", unit="call", disable=not show_progress)

    def augmented_dynamics(sigma, state):
        nonlocal nfe
        x, _ = state
        nfe += 1
        progress.update()
        progress.set_postfix(sigma=f"{float(sigma):.4f}")

        def velocity(z):
            return evaluate_velocity(model, z, sigma)

        if divergence == "exact":
            v, div = exact_divergence(velocity, x)
        else:
            v, div = hutchinson_divergence(velocity, x, noise=probe_noise)
        # Stop at the first NaN or infinity: an adaptive solver would otherwise shrink its step until it underflows.
        check_finite(v, f"the velocity at sigma={float(sigma):.4g} (from sample)", OVERFLOW_HINT)
        check_finite(div, f"the divergence at sigma={float(sigma):.4g} (from sample)", OVERFLOW_HINT)
        return v, div.to(x.dtype)

    start = (sample, torch.zeros(sample.shape[0], dtype=sample.dtype, device=sample.device))
    try:
        with torch.no_grad():
            xs, integrals = odeint(augmented_dynamics, start, grid, method=method, rtol=rtol, atol=atol, options=options)
    except AssertionError as err:  # torchdiffeq's "underflow in dt": the adaptive step shrank to nothing
        raise ValueError(f"the ODE solve from sample broke down ({err}){OVERFLOW_HINT}") from None
    finally:
        progress.close()
    latents, integral = xs[-1], integrals[-1]
    log_prob = standard_normal_log_prob(latents) + integral
    check_finite(torch.cat([latents.reshape(latents.shape[0], -1), log_prob[:, None]], dim=1),
                 "the log-likelihood computed from sample", OVERFLOW_HINT)
    return ReferenceLikelihoodOutput(
        log_prob=log_prob,
        bits_per_dim=bits_per_dim(log_prob, sample[0].numel(), num_levels),
        latents=latents,
        nfe=nfe,
        trajectory=xs if sigmas is not None else None,
        divergence_integrals=integrals if sigmas is not None else None,
    )

