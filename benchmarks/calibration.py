#!/usr/bin/env python
"""Calibration of an F2D2 checkpoint against its teacher's ODE, in total and segment by segment.

For each grid of K = 1, 2, 4, 8 uniform steps: the few-step likelihood (bidirectional map and the paper's
evaluation) against the teacher's dopri5 likelihood on the same dequantised test data, and, per segment, the
error of the map's divergence integral and end point when started from the teacher's own state.

Writes ``<output_dir>/calibration_<dataset>.json`` and ``calibration_<dataset>.png``.

    python benchmarks/calibration.py --student checkpoints/f2d2-digits --teacher checkpoints/fm-digits --dataset digits
"""

import argparse
import json
import os
import time

import torch

GRIDS = (1, 2, 4, 8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="F2D2 pipeline folder")
    p.add_argument("--teacher", required=True, help="teacher folder (unet/ inside)")
    p.add_argument("--dataset", required=True, choices=["digits", "checkerboard", "eight_gaussians", "two_moons", "rings"])
    p.add_argument("--num_samples", type=int, default=0, help="test points to score (0: the whole test split)")
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"], help="reference divergence")
    p.add_argument("--hutchinson_probes", type=int, default=16)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise (the same for both sides)")
    p.add_argument("--output_dir", default="benchmarks/results")
    return p.parse_args(argv)


def load_test_data(dataset, num_samples, seed):
    """Model-space test data and its grey levels (None for continuous data)."""
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels, load_toy

    if dataset == "digits":
        levels = load_digits_levels("test")
        levels = levels[:num_samples] if num_samples else levels
        return dequantize(levels, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(seed)), DIGITS_NUM_LEVELS
    return load_toy(dataset, "test", num_samples or 2000), None


def load_teacher(path):
    from diffusers import UNet2DModel

    from f2d2_diffusers import FlowMatchingMLPModel

    with open(os.path.join(path, "unet", "config.json")) as f:
        class_name = json.load(f).get("_class_name")
    cls = {"UNet2DModel": UNet2DModel, "FlowMatchingMLPModel": FlowMatchingMLPModel}.get(class_name)
    if cls is None:
        raise SystemExit(f"error: {path}/unet holds a {class_name}, not a UNet2DModel or FlowMatchingMLPModel teacher")
    return cls.from_pretrained(path, subfolder="unet").eval()


def main(args):
    from f2d2_diffusers import (
        F2D2LikelihoodPipeline,
        ReferenceLikelihoodOutput,
        bits_per_dim,
        reference_log_likelihood,
        segment_calibration,
    )

    for path in (args.student, args.teacher):
        if not os.path.isdir(path):
            raise SystemExit(f"error: no checkpoint folder at {path}")
    os.makedirs(args.output_dir, exist_ok=True)
    data, num_levels = load_test_data(args.dataset, args.num_samples, args.seed)
    num_dims = data[0].numel()
    # Errors in bits/dim for discrete data, in nats per sample for continuous data.
    unit = "bits/dim" if num_levels else "nats"

    teacher = load_teacher(args.teacher)
    pipe = F2D2LikelihoodPipeline.from_pretrained(args.student)
    pipe.set_progress_bar_config(disable=True)
    student = pipe.unet.eval()

    sigmas = [k / max(GRIDS) for k in range(max(GRIDS) + 1)]
    start = time.perf_counter()
    reference = reference_log_likelihood(
        teacher, data, divergence=args.divergence, num_probes=args.hutchinson_probes, rtol=args.rtol, atol=args.atol,
        num_levels=num_levels, generator=torch.Generator().manual_seed(args.seed), sigmas=sigmas, show_progress=True,
    )
    reference_seconds = time.perf_counter() - start

    def score(log_prob):
        """Per-sample score in the report's unit: bits/dim on the grey-level scale, or NLL in nats."""
        return bits_per_dim(log_prob, num_dims, num_levels) if num_levels else -log_prob

    ref_score = score(reference.log_prob.float())
    rows = [dict(method="teacher dopri5", evaluation="reference", steps=None, nfe=reference.nfe,
                 value=ref_score.mean().item(), error=0.0, abs_error=0.0, seconds=reference_seconds)]
    segments = {}
    for evaluation in ("bidirectional", "paper"):
        for steps in GRIDS:
            start = time.perf_counter()
            out = pipe(data, num_inference_steps=steps, dequantize=False, evaluation=evaluation)
            seconds = time.perf_counter() - start
            diff = score(out.log_prob.float()) - ref_score
            rows.append(dict(method="F2D2", evaluation=evaluation, steps=steps, nfe=out.nfe,
                             value=score(out.log_prob.float()).mean().item(), error=diff.mean().item(),
                             abs_error=diff.abs().mean().item(), seconds=seconds))
    for steps in GRIDS:
        idx = [round(k * max(GRIDS) / steps) for k in range(steps + 1)]
        sub = ReferenceLikelihoodOutput(log_prob=reference.log_prob, bits_per_dim=reference.bits_per_dim,
                                        latents=reference.latents, nfe=reference.nfe,
                                        trajectory=reference.trajectory[idx],
                                        divergence_integrals=reference.divergence_integrals[idx])
        for direction in ("likelihood", "sample"):
            cal = segment_calibration(student, sub, [sigmas[i] for i in idx], direction=direction)
            segments[f"{steps}-{direction}"] = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in cal.items()}

    print(f"\n{args.dataset}: {len(data)} test points, reference {args.divergence} divergence, {reference.nfe} NFE, "
          f"{reference_seconds:.1f} s; errors in {unit}")
    print(f"{'method':<16}{'eval':<15}{'steps':>6}{'value':>10}{'error':>10}{'|error|':>10}{'seconds':>9}")
    for r in rows:
        print(f"{r['method']:<16}{r['evaluation']:<15}{r['steps'] or '-':>6}{r['value']:>10.4f}{r['error']:>+10.4f}"
              f"{r['abs_error']:>10.4f}{r['seconds']:>9.2f}")
    for key in ("8-likelihood", "8-sample"):
        s = segments[key]
        print(f"per segment ({key}): teacher integral {[round(v, 2) for v in s['teacher_integral']]}")
        print(f"    integral error (nats) {[round(v, 2) for v in s['integral_error']]}")
        print(f"    state error (L2)      {[round(v, 3) for v in s['state_error']]}")

    name = f"calibration_{args.dataset}"
    with open(os.path.join(args.output_dir, name + ".json"), "w") as f:
        json.dump(dict(student=args.student, teacher=args.teacher, dataset=args.dataset, num_points=len(data),
                       unit=unit, reference_divergence=args.divergence, rows=rows, segments=segments), f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for evaluation, marker in (("bidirectional", "o"), ("paper", "s")):
        rs = [r for r in rows if r["evaluation"] == evaluation]
        axes[0].plot([r["steps"] for r in rs], [abs(r["error"]) for r in rs], marker=marker, label=f"|mean error| {evaluation}")
        axes[0].plot([r["steps"] for r in rs], [r["abs_error"] for r in rs], marker=marker, ls=":", label=f"per-sample MAE {evaluation}")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("steps")
    axes[0].set_ylabel(f"error vs teacher ({unit})")
    axes[0].legend(fontsize=7)
    s = segments["8-likelihood"]
    centres = [(a + b) / 2 for a, b in zip(s["sigmas"][:-1], s["sigmas"][1:])]
    axes[1].bar(centres, s["integral_error"], width=0.1, label="map minus teacher")
    axes[1].plot(centres, s["teacher_integral"], "k.", label="teacher integral")
    axes[1].set_xlabel("segment centre (sigma), 8-step likelihood grid")
    axes[1].set_ylabel("divergence integral (nats)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output_dir, name + ".png"), dpi=110)
    print(f"wrote {args.output_dir}/{name}.json and .png")


if __name__ == "__main__":
    main(parse_args())
