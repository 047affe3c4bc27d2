#!/usr/bin/env python
"""Calibration of an F2D2 checkpoint against its teacher's ODE, in total and segment by segment.

For each grid of K = 1, 2, 4, 8 uniform steps: the few-step likelihood (bidirectional map and the paper's
evaluation) against the teacher's dopri5 likelihood on the same dequantised test data, and, per segment, the
error of the map's divergence integral and end point when started from the teacher's own state.

Writes ``<output_dir>/calibration_<dataset>.json`` and ``calibration_<dataset>.png``.

    python benchmarks/calibration.py --student checkpoints/f2d2-digits --teacher checkpoints/fm-digits --dataset digits
"""

import argparse
import os
from pathlib import Path

import torch

from f2d2_diffusers.data import EMBEDDED_DATASETS, load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, require_folders, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
GRIDS = (1, 2, 4, 8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="F2D2 pipeline folder")
    p.add_argument("--teacher", required=True, help="teacher folder (unet/ inside)")
    p.add_argument("--dataset", required=True, choices=EMBEDDED_DATASETS)
    p.add_argument("--num_samples", type=int, default=0, help="test points to score (0: the whole test split)")
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"], help="reference divergence")
    p.add_argument("--hutchinson_probes", type=int, default=16)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise (the same for both sides)")
    p.add_argument("--output_dir", default=PATHS.results_dir, help="default: benchmarks/results")
    p.add_argument("--sampling_path_samples", type=int, default=64,
                   help="also compare the log-density F2D2Pipeline returns with its own 1/2/4-step samples against the "
                        "teacher's ODE at those samples, on this many samples (0: skip)")
    p.add_argument("--update_card", action="store_true",
                   help="also write the table into the student's model card (README.md, calibration section)")
    return p.parse_args(argv)


def main(args):
    from f2d2_diffusers import (
        F2D2LikelihoodPipeline,
        ReferenceLikelihoodOutput,
        likelihood_calibration,
        load_teacher,
        segment_calibration,
    )

    require_folders(args.student, args.teacher)
    os.makedirs(args.output_dir, exist_ok=True)
    data, num_levels = load_test_split(args.dataset, args.num_samples, args.seed)

    teacher = load_teacher(args.teacher)
    pipe = F2D2LikelihoodPipeline.from_pretrained(args.student)
    pipe.set_progress_bar_config(disable=True)
    student = pipe.unet.eval()

    sigmas = [k / max(GRIDS) for k in range(max(GRIDS) + 1)]
    calibration = likelihood_calibration(
        pipe, teacher, data, num_levels, steps=GRIDS, divergence=args.divergence, num_probes=args.hutchinson_probes,
        rtol=args.rtol, atol=args.atol, generator=torch.Generator().manual_seed(args.seed), sigmas=sigmas,
        show_progress=True,
    )
    reference, unit = calibration.reference, calibration.unit
    rows = [dict(method="teacher dopri5" if r["evaluation"] == "reference" else "F2D2", **r) for r in calibration.rows]
    reference_seconds = rows[0]["seconds"]
    segments = {}
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

    sampling_path = []
    if args.sampling_path_samples:
        from f2d2_diffusers import F2D2Pipeline
        from f2d2_diffusers.calibration import sampling_path_calibration

        sampler = F2D2Pipeline.from_pipe(pipe)
        sampler.set_progress_bar_config(disable=True)
        sampling_path = sampling_path_calibration(
            sampler, teacher, args.sampling_path_samples, steps=(1, 2, 4),
            generator=torch.Generator().manual_seed(args.seed), divergence=args.divergence,
            num_probes=args.hutchinson_probes, rtol=args.rtol, atol=args.atol)
        for r in sampling_path:
            print(f"sampling path, {r['steps']} steps: map {r['value']:.4f} vs teacher {r['reference']:.4f} "
                  f"({r['unit']}, log-density; error {r['error']:+.4f}, per-sample {r['abs_error']:.4f})")

    name = f"calibration_{args.dataset}"
    write_json(os.path.join(args.output_dir, name + ".json"),
               dict(student=args.student, teacher=args.teacher, dataset=args.dataset, num_points=len(data), unit=unit,
                    reference_divergence=args.divergence, rows=rows, segments=segments, sampling_path=sampling_path))

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
    if args.update_card:
        from f2d2_diffusers.training.model_card import calibration_markdown, update_calibration

        probes = "exact divergence" if args.divergence == "exact" else f"Hutchinson, {args.hutchinson_probes} probes"
        where = "digits test images (images 1500 on)" if args.dataset == "digits" else f"'{args.dataset}' test points"
        description = (
            f"Measured by `benchmarks/calibration.py` on {len(data)} {where}"
            + (f", one dequantisation draw (seed {args.seed}) shared by all rows. " if num_levels else ". ")
            + f"Reference: the teacher's likelihood ODE, dopri5 (rtol = {args.rtol}, atol = {args.atol}), "
            f"{probes}, {reference.nfe} network calls. Per-segment errors: `benchmarks/results/{name}.json`."
        )
        card = update_calibration(args.student, calibration_markdown(rows, unit, description))
        print(f"updated the calibration section of {card}")


if __name__ == "__main__":
    main(parse_args())
