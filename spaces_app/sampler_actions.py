"""The Energy sampler tab's action, behind the UI and the ``/energy_sampler`` API endpoint."""

import math
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from f2d2_diffusers.models.mlp_sampler import EXACT_TRACE_MAX_DIMS

from content import MAX_SAMPLER_SAMPLES, MAX_SAMPLER_STEPS, MAX_SEED
from errors import InputError, ModelUnavailable
from inputs import whole_number
from render import DENSITY_RANGE, render_energy_samples
from sampler_registry import SamplerRegistry


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    """``value`` rounded, for the JSON; ``None`` and non-finite values (no JSON number) as ``None``."""
    return float(round(float(value), digits)) if value is not None and math.isfinite(value) else None


def true_log_z(target) -> Tuple[Optional[float], Optional[float], str]:
    """``(log Z, its standard error, what it is)`` of a target: ``"exact"`` (closed form or quadrature),
    ``"reference estimate"`` (a long-run estimate with its standard error) or ``"unknown"`` (``log Z`` None)."""
    log_z = getattr(target, "log_Z", None)
    if log_z is None:
        return None, None, "unknown"
    error = getattr(target, "log_Z_error", None)
    return float(log_z), (float(error) if error is not None else None), ("reference estimate" if error is not None else "exact")


class SamplerActions:
    """The handler behind the Energy sampler tab, bound to one :class:`sampler_registry.SamplerRegistry`.

    Returns plain values (a PIL image, markdown, a JSON-able dict) and raises :class:`errors.InputError` /
    :class:`errors.ModelUnavailable` for the user to read.
    """

    def __init__(self, registry: SamplerRegistry):
        self.registry = registry

    def energy_sampler(self, sampler: str, num_steps: int = 1, num_samples: int = 2000, seed: int = 0):
        """``num_samples`` samples of ``sampler``'s target in ``num_steps`` network calls each, and the log Z estimate
        from their importance weights.

        Returns:
            ``(figure, summary, details)``: the samples over the target's density (2-D targets) or the first two
            coordinates beside exact target samples (higher-D targets), markdown, and a JSON-able dict.
        """
        num_steps = whole_number(num_steps, "Sampling steps", 1, MAX_SAMPLER_STEPS)
        num_samples = whole_number(num_samples, "Number of samples", 1, MAX_SAMPLER_SAMPLES)
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        name = self.registry.spec(sampler).name
        pipe = self.registry.pipeline(name)
        target = pipe.target
        if target.dim < 2:
            raise ModelUnavailable(f"The sampler {name!r} samples a {target.dim}-D target; the tab plots 2 or more dimensions.")

        start = time.perf_counter()
        try:
            out = pipe(batch_size=num_samples, num_inference_steps=num_steps, generator=torch.Generator().manual_seed(seed))
        except ValueError as err:  # e.g. NaN importance weights: no log Z can be formed
            raise InputError(f"The sampler gave no usable estimate with these settings ({err}); try other steps or seed.") from None
        seconds = time.perf_counter() - start
        samples = out.samples.float().cpu().numpy()

        exact = None  # 2-D: only sets the axes, to show the whole target
        if target.has_samples:
            exact = target.sample(num_samples, generator=torch.Generator().manual_seed(seed)).float().cpu().numpy()
        def target_log_density(points: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return target.log_prob(torch.from_numpy(points).float()).double().numpy()

        log_density = target_log_density if target.dim == 2 else None
        steps = f"{num_steps} step{'s' if num_steps > 1 else ''}"
        title = f"{name}\n{num_samples} samples in {steps}"
        figure = render_energy_samples(samples, title, log_density=log_density, exact=exact)

        # The pipeline's volume="auto": the exact trace (d backward passes) up to 64 dimensions, else Hutchinson.
        exact_trace = target.dim <= EXACT_TRACE_MAX_DIMS
        divergence = f"exact trace: {target.dim} backward passes" if exact_trace else "a Hutchinson estimate"
        log_z_true, log_z_error, kind = true_log_z(target)
        error = abs(out.log_Z - log_z_true) if log_z_true is not None and math.isfinite(out.log_Z) else None
        summary = [
            f"**{num_samples} sample(s)** from `{name}` (target `{target.name}`, {target.dim}-D) in "
            f"**{out.nfe} network call(s)** per sample, {seconds:.2f} s in all.",
            _log_z_line(out.log_Z, log_z_true, log_z_error, kind, error),
            f"Effective sample size **{out.ess:.1f}** of {num_samples} ({100 * out.ess / num_samples:.1f} %); "
            f"ELBO (mean log-weight) **{out.elbo:.3f}** nats.",
            f"Each call also takes the map's divergence ({divergence}), which gives each sample its importance "
            "weight; with this first-order volume term the weights are approximate, so neither number is a strict "
            "bound on log Z.",
            f"The figure shows the samples over the target's log-density (colours span the {DENSITY_RANGE:g} nats "
            "below its maximum)." if log_density is not None else
            "The figure shows the first two coordinates of the samples"
            + (", beside exact samples of the target." if exact is not None else
               "; this target has no exact sampler to compare with."),
        ]
        details: Dict[str, Any] = {
            "sampler": name,
            "target": target.name,
            "dimensions": int(target.dim),
            "num_steps": num_steps,
            "num_samples": num_samples,
            "seed": seed,
            "nfe": int(out.nfe),
            "seconds": _round(seconds),
            "log_Z": _round(out.log_Z),
            "true_log_Z": _round(log_z_true),
            "true_log_Z_kind": kind,
            "true_log_Z_standard_error": _round(log_z_error),
            "abs_error": _round(error),
            "elbo": _round(out.elbo),
            "ess": _round(out.ess, 2),
            "ess_fraction": _round(out.ess / num_samples),
            "plot": "log-density" if log_density is not None else "first two coordinates",
            "exact_samples_shown": exact is not None and log_density is None,
        }
        return figure, "\n\n".join(summary), details


def _log_z_line(log_z: float, true: Optional[float], standard_error: Optional[float], kind: str,
                error: Optional[float]) -> str:
    """The summary's log Z sentence: the estimate, the true (or reference) value and the absolute error."""
    line = f"log Z estimate **{log_z:.3f}**"
    if true is None:
        return line + "; the target's true log Z is not known, so no error is shown."
    if kind == "reference estimate":
        line += f"; reference log Z {true:.4f} ± {standard_error:.4f} (a long-run estimate, not exact)"
    else:
        line += f"; true log Z {true:.4f}"
    return line + (f": error **{error:.3f}**." if error is not None else ".")
