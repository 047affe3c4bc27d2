"""The Space's two model actions, behind the UI and the ``/sample`` and ``/likelihood`` API endpoints (the Energy
sampler tab's is in ``sampler_actions``)."""

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
import numpy as np
import torch

from f2d2_diffusers import dequantize, reference_log_likelihood, resolve_divergence_method, teacher_euler_sample
from f2d2_diffusers.dequantization import NonFiniteError

from content import (
    LIKELIHOOD_STEPS, MAX_GUIDANCE_SCALE, MAX_GUIDANCE_STEPS, MAX_IMAGE_BATCH, MAX_SAMPLE_STEPS, MAX_SEED,
    MAX_TEACHER_STEPS, MAX_VECTOR_BATCH, REFERENCE_DEFAULT,
)
from errors import InputError, ModelUnavailable
from inputs import (
    load_points_file, parse_points, pick_image, prepare_image, real_number, uploaded_file_path, whole_number,
)
from registry import ModelRegistry, pipeline_sample_shape
from render import render_image_grid, render_levels, render_scatter, shared_limits

#: Hutchinson probes of the reference solve where the exact divergence is too costly.
REFERENCE_NUM_PROBES = 8
#: Reference results kept (the reference solve is the slow part; a repeated request reuses it).
REFERENCE_CACHE_SIZE = 32


def _round(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


def _means(out, seconds: float) -> Dict[str, Any]:
    """Network calls, mean bits/dim and log p (nats) of a likelihood output, and the seconds it took."""
    return {
        "nfe": int(out.nfe),
        "bits_per_dim": _round(out.bits_per_dim.float().mean()),
        "log_prob": _round(out.log_prob.float().mean()),
        "seconds": _round(seconds),
    }


def _per_input(out) -> Dict[str, List[float]]:
    """Bits/dim and log p (nats) of every input of a likelihood output."""
    return {
        "per_input_bits_per_dim": [_round(v) for v in out.bits_per_dim.float().cpu()],
        "per_input_log_prob": [_round(v) for v in out.log_prob.float().cpu()],
    }


class DemoActions:
    """The handlers behind the UI and the API, bound to one registry.

    Both return plain values (PIL images, ``{"headers", "data"}`` tables, markdown, JSON-able dicts) and raise
    :class:`errors.InputError` / :class:`errors.ModelUnavailable` for the user to read.
    """

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._reference_cache: "OrderedDict[str, Any]" = OrderedDict()
        self._reference_lock = threading.Lock()

    # -- sampling ---------------------------------------------------------------------------------------------

    def sample(
        self, model: str, num_steps: int = 1, seed: int = 0, batch_size: int = 16, teacher_steps: int = 0,
        ml_guidance_scale: float = 0.0, ml_guidance_steps: int = 1, log_prob_steps: int = 0,
    ):
        """Few-step samples with the log-likelihood of each, optionally beside the teacher's Euler samples.

        ``log_prob_steps`` > 0 scores each returned sample by encoding it in that many likelihood steps (as many more
        network calls; ``F2D2Pipeline(log_prob_steps=...)``); 0 keeps the free log-density of the sampling calls.

        ``ml_guidance_scale > 0`` first moves the noise by ``ml_guidance_steps`` maximum-likelihood self-guidance
        steps (noise standard deviations per step; one forward and one backward pass each); the teacher, if any,
        starts from the unguided noise.

        Returns:
            ``(grid, table, summary, details, teacher_image)``: the samples as a captioned grid (images) or a
            scatter plot (vectors), one table row per sample, markdown, a JSON-able dict, and the teacher's samples
            from the same noise (``None`` without a comparison).
        """
        num_steps = whole_number(num_steps, "Sampling steps", 1, MAX_SAMPLE_STEPS)
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        batch_size = whole_number(batch_size, "Batch size", 1, MAX_VECTOR_BATCH)
        teacher_steps = whole_number(teacher_steps, "Teacher steps", 0, MAX_TEACHER_STEPS)
        guidance = real_number(ml_guidance_scale, "Self-guidance scale", 0.0, MAX_GUIDANCE_SCALE)
        guidance_steps = whole_number(ml_guidance_steps, "Guidance steps", 1, MAX_GUIDANCE_STEPS)
        log_prob_steps = whole_number(log_prob_steps, "Re-scoring steps", 0, MAX_SAMPLE_STEPS)
        pipe = self.registry.pipeline(model)
        shape = pipeline_sample_shape(pipe)
        is_image = len(shape) == 3
        if is_image and batch_size > MAX_IMAGE_BATCH:
            raise InputError(f"Batch size {batch_size} is too large for images: at most {MAX_IMAGE_BATCH} per request.")
        teacher, teacher_note = None, ""
        if teacher_steps > 0:
            try:
                teacher = self.registry.teacher(model)
            except ModelUnavailable as err:
                teacher_note = f"Teacher comparison skipped: {err}"
                gr.Warning(teacher_note)

        noise = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        noise = noise.to(device=pipe.device, dtype=pipe.unet.dtype)
        start = time.perf_counter()
        out = pipe(latents=noise, num_inference_steps=num_steps, output_type="np", ml_guidance_scale=guidance,
                   ml_guidance_steps=guidance_steps, log_prob_steps=log_prob_steps or None)
        seconds = time.perf_counter() - start
        log_prob = out.log_prob.float().cpu().numpy()
        bpd = out.bits_per_dim.float().cpu().numpy()
        num_levels = pipe.config.num_levels

        teacher_image, teacher_info, limits = None, None, None
        if teacher is not None:
            start = time.perf_counter()
            teacher_noise = noise.to(dtype=next(teacher.parameters()).dtype)
            teacher_samples = teacher_euler_sample(teacher, teacher_noise, teacher_steps)
            teacher_seconds = time.perf_counter() - start
            teacher_info = {"euler_steps": teacher_steps, "nfe": teacher_steps, "seconds": _round(teacher_seconds)}
            teacher_samples = teacher_samples.float().cpu().numpy()
            if is_image:
                teacher_image = render_image_grid(
                    np.clip((teacher_samples.transpose(0, 2, 3, 1) + 1) / 2, 0, 1), [f"#{i}" for i in range(batch_size)]
                )
            else:
                # Both plots on the same axes, so that the two sets of points can be compared by eye.
                limits = shared_limits(np.asarray(out.images), teacher_samples)
                title = f"Teacher, {teacher_steps} Euler steps (same noise)"
                teacher_image = render_scatter(teacher_samples, None, title, limits=limits)

        if is_image:
            grid = render_image_grid(out.images, [f"#{i}: {lp:.1f}" for i, lp in enumerate(log_prob)])
            table = [[i, _round(lp, 2), _round(b, 3)] for i, (lp, b) in enumerate(zip(log_prob, bpd))]
            headers = ["sample", "log p (nats)", "bits/dim"]
        else:
            points = np.asarray(out.images)
            guided = f", self-guidance {guidance:g} x {guidance_steps}" if guidance else ""
            grid = render_scatter(points, log_prob, f"F2D2, {num_steps} step(s){guided}: {batch_size} samples", limits=limits)
            table = [
                [i, *[_round(v, 3) for v in points[i][:2]], _round(lp, 3), _round(b, 3)]
                for i, (lp, b) in enumerate(zip(log_prob, bpd))
            ]
            headers = ["sample", *["x1", "x2"][: min(2, points.shape[1])], "log p (nats)", "bits/dim"]

        scale = f"on the {num_levels}-level scale" if num_levels else "of the continuous density"
        extra_calls = ([f"{2 * guidance_steps} for {guidance_steps} self-guidance step(s) of scale {guidance:g} (a "
                        "forward and a backward pass each)"] if guidance else [])
        extra_calls += [f"{log_prob_steps} to re-score the samples"] if log_prob_steps else []
        summary = [
            f"**{batch_size} sample(s)** from `{model}` in **{out.nfe} network call(s)**, {seconds:.2f} s."
            + (f" That is {num_steps} sampling call(s)" + "".join(f" plus {c}" for c in extra_calls) + "."
               if extra_calls else ""),
            f"Mean log-likelihood **{log_prob.mean():.2f} nats** per sample ({bpd.mean():.3f} bits/dim {scale}), "
            + (f"from encoding each returned sample in {log_prob_steps} likelihood step(s)." if log_prob_steps else
               "computed along the way by the same calls (free: it belongs to the path the model was trained to "
               "follow, and was measured too optimistic on the shipped digits and checkerboard models; re-scoring "
               "steps measure it at the sample returned)."),
            "Each tile is captioned with its sample number and log p (nats)." if is_image
            else "Points are coloured by their log p (nats).",
        ]
        if teacher_info:
            summary.append(
                f"Teacher: **{teacher_steps} Euler steps = {teacher_steps} network calls**, {teacher_info['seconds']:.2f} s, "
                "from the same noise (no likelihood: that needs the ODE solve in the Likelihood tab)."
                + (" The teacher starts from the noise before self-guidance." if guidance else "")
            )
        elif teacher_note:
            summary.append(teacher_note)
        details = {
            "model": model,
            "num_steps": num_steps,
            "seed": seed,
            "batch_size": batch_size,
            "nfe": int(out.nfe),
            "ml_guidance_scale": guidance,
            "ml_guidance_steps": guidance_steps if guidance else 0,
            "log_prob_steps": log_prob_steps,
            "seconds": _round(seconds),
            "num_levels": num_levels,
            "mean_log_prob": _round(log_prob.mean()),
            "mean_bits_per_dim": _round(bpd.mean()),
            "log_prob": [_round(v) for v in log_prob],
            "bits_per_dim": [_round(v) for v in bpd],
            "teacher": teacher_info,
        }
        return grid, {"headers": headers, "data": table}, "\n\n".join(summary), details, teacher_image

    # -- likelihood -------------------------------------------------------------------------------------------

    def likelihood(
        self,
        model: str,
        image=None,
        sketch=None,
        points: str = "",
        points_file=None,
        reference: bool = REFERENCE_DEFAULT,
        seed: int = 0,
    ):
        """Bits/dim of an input at 1, 2, 4 and 8 steps, and (``reference=True``, slow) the teacher's dopri5 reference.

        Image models score ``image``, else the drawing in ``sketch``; 2-D models ``points_file``, else ``points``.

        Returns:
            ``(table, summary, preview, details)``: one row per method, markdown, the input as the model saw it
            (the converted image, or the points coloured by log p), and a JSON-able dict.
        """
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        pipe = self.registry.likelihood_pipeline(model)
        shape = pipeline_sample_shape(pipe)
        is_image = len(shape) == 3
        num_levels = pipe.config.num_levels
        if is_image:
            if num_levels is None:
                raise ModelUnavailable(f"The model {model!r} is an image model without num_levels in its config.")
            x, notes, preview = self._image_input(image, sketch, shape, num_levels, seed)
        else:
            array, notes = self._points_input(points, points_file, shape[0])
            x = torch.from_numpy(array)
        x = x.to(device=pipe.device, dtype=pipe.unet.dtype)
        dims = int(np.prod(shape))

        results = []
        for steps in LIKELIHOOD_STEPS:
            start = time.perf_counter()
            try:
                out = pipe(x, num_inference_steps=steps, dequantize=False, num_levels=num_levels)
            except NonFiniteError:  # e.g. points at 1e30: say so rather than show a null log-likelihood
                raise InputError(
                    "Cannot score this input: the network's output is NaN or infinite on it, so it lies far outside "
                    "the range the model was trained on."
                ) from None
            except ValueError as err:
                raise InputError(f"Cannot score this input: {err}.") from None
            seconds = time.perf_counter() - start
            method = f"F2D2, {steps} step{'s' if steps > 1 else ''}"
            results.append({"method": method, "steps": steps, **_means(out, seconds), **_per_input(out)})
        if not is_image:
            title = f"{len(array)} point(s), coloured by log p (F2D2, {LIKELIHOOD_STEPS[-1]} steps)"
            preview = render_scatter(array, out.log_prob.float().cpu().numpy(), title)

        ref_info, ref_note = None, ""
        if reference:
            try:
                teacher = self.registry.teacher(model)
            except ModelUnavailable as err:
                ref_note = f"Reference skipped: {err}"
                gr.Warning(ref_note)
            else:
                try:
                    ref_info = self._reference_entry(model, teacher, x, num_levels, dims)
                except ValueError as err:
                    raise InputError(f"The teacher's reference solve cannot score this input: {err}.") from None

        rows = []
        for entry in results + ([ref_info] if ref_info else []):
            delta = ""
            if ref_info is not None and entry is not ref_info:
                # A difference of two values already rounded to 4 digits: drop the float noise before rounding to 3.
                delta = _round(_round(entry["bits_per_dim"] - ref_info["bits_per_dim"]), 3)
            rows.append(
                [entry["method"], entry["nfe"], _round(entry["bits_per_dim"], 3), _round(entry["log_prob"], 2),
                 _round(entry["seconds"], 3), delta]
            )
        headers = ["method", "network calls", "bits/dim", "log p (nats)", "seconds", "Δ bits/dim vs reference"]

        count = x.shape[0]
        scale = f"{num_levels}-level grey scale, {dims} dimensions" if num_levels else f"continuous density, {dims} dimensions"
        summary = ["**What was done to the input**"] + [f"- {n}" for n in notes] + [""]
        best = results[-1]
        line = f"**Result** ({scale}{'; means over ' + str(count) + ' points' if count > 1 else ''}): "
        line += f"F2D2 gives **{best['bits_per_dim']:.3f} bits/dim in {best['nfe']} network calls**"
        if ref_info:
            line += (
                f"; the teacher's ODE gives **{ref_info['bits_per_dim']:.3f} bits/dim in {ref_info['nfe']} network calls**"
                f" ({ref_info['seconds']:.2f} s{', cached' if ref_info['cached'] else ''})."
            )
        else:
            line += "."
        summary.append(line)
        if not reference:
            summary.append(
                "The teacher's exact number is not computed by default (it is the slow part, minutes on a small CPU): "
                "tick *Also run the teacher's reference ODE* to add it and the Δ column."
            )
        if ref_note:
            summary.append(ref_note)
        details = {
            "model": model,
            "input_notes": notes,
            "num_levels": num_levels,
            "dimensions": dims,
            "num_inputs": int(count),
            "seed": seed,
            "results": results,
            "reference": ref_info,
        }
        return {"headers": headers, "data": rows}, "\n".join(summary), preview, details

    @staticmethod
    def _image_input(image, sketch, shape, num_levels: int, seed: int):
        """``(x, notes, preview)``: the chosen image dequantised to model space ``(1, C, H, W)`` with ``seed``."""
        source, pil = pick_image(image, sketch)
        levels, notes = prepare_image(pil, shape, num_levels)
        notes.insert(0, f"Input: the {source}.")
        data = torch.from_numpy(levels).permute(2, 0, 1)[None]
        x = dequantize(data, num_levels, torch.Generator().manual_seed(seed))
        notes.append(f"Dequantised with uniform noise (seed {seed}); every method scores the same point.")
        return x, notes, render_levels(levels, num_levels)

    @staticmethod
    def _points_input(points: str, points_file, dim: int) -> Tuple[np.ndarray, List[str]]:
        """``(points, notes)``: the uploaded file's points, else the pasted ones, ``float32`` ``(N, dim)``."""
        if points_file:
            array, notes = load_points_file(uploaded_file_path(points_file), dim)
        elif points and str(points).strip():
            array, notes = parse_points(str(points), dim)
        else:
            raise InputError(
                f"No points: this is a {dim}-D model; paste points as CSV (one per line, e.g. `0.5, -1.2`) "
                "or upload a .csv/.npy file."
            )
        return array, notes

    def _reference_entry(self, model: str, teacher, x: torch.Tensor, num_levels: Optional[int], dims: int):
        """The teacher's reference likelihood of ``x`` as a row of ``details`` (cached per input and options)."""
        options: Dict[str, Any] = {"method": "dopri5"}
        if resolve_divergence_method("auto", dims) == "hutchinson":
            options.update(divergence="hutchinson", num_probes=REFERENCE_NUM_PROBES)
        options.update(self.registry.spec(model).reference_options)
        # The options key the cache and are reported in the JSON, so they must be JSON-able: a generator is not.
        options.pop("generator", None)
        start = time.perf_counter()
        ref, cached = self._reference(model, teacher, x, num_levels, options)
        seconds = time.perf_counter() - start
        return {
            "method": f"Teacher ODE, {options.get('method', 'dopri5')} (reference)",
            "divergence": options.get("divergence", "exact"),
            "steps": None,
            **_means(ref, seconds),
            "cached": cached,
            "solver_options": options,
            **_per_input(ref),
        }

    def _reference(self, model: str, teacher, x: torch.Tensor, num_levels: Optional[int], options: Dict[str, Any]):
        """``(reference_log_likelihood output, cached)``, from an LRU cache keyed by model, input and options."""
        key = hashlib.sha256(
            model.encode() + x.detach().cpu().numpy().tobytes() + json.dumps(options, sort_keys=True).encode()
        ).hexdigest()
        with self._reference_lock:
            if key in self._reference_cache:
                self._reference_cache.move_to_end(key)
                return self._reference_cache[key], True
        result = reference_log_likelihood(teacher, x.to(next(teacher.parameters()).dtype), num_levels=num_levels, **options)
        with self._reference_lock:
            self._reference_cache[key] = result
            while len(self._reference_cache) > REFERENCE_CACHE_SIZE:
                self._reference_cache.popitem(last=False)
        return result, False
