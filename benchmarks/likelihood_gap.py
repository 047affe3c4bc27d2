#!/usr/bin/env python
"""Where the digits student's likelihood error lives: training digits against held-out digits (issue 9).

Scores the first 64 training digits and the first 64 test digits (dequantisation seed 0) with the F2D2 student at
1, 2, 4 and 8 steps and compares each with the teacher's dopri5 likelihood (exact divergence; the references are
``f2d2_diffusers.evaluation.digits_reference``, shared with the ablation loop and computed once). For each split and step count it
reports the mean error and MAE (bits/dim; negative = the student is too optimistic), the mean norm of the
end points (teacher: its dopri5 states at ``sigma = 1``; student: its encoding at ``sigma = 1``), and the slope of a
least-squares line through (teacher log p, student log p), within each split and over both together: 1 for a
student that follows the teacher, below 1 for one whose likelihoods span a compressed range; and the error budget
(``docs/method.md`` section 6.1: the error in log-density split into radial, spread and divergence parts, nats);
and the relative error of the student's zero-step velocity against the teacher's at the teacher's own states.

Writes ``benchmarks/results/likelihood_gap_digits.json`` and ``.png`` (the scatter, one panel per step count).

    python benchmarks/likelihood_gap.py
    python benchmarks/likelihood_gap.py --replot benchmarks/results/likelihood_gap_digits.json
"""

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch

from f2d2_diffusers.evaluation.reports import benchmark_paths, redraw_from_json, require_folders, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
STEPS = (1, 2, 4, 8)
SPLITS = ("train", "test")
#: Indices into the reference grid (sigma = k / 8) where the zero-step velocity is compared with the teacher's.
TANGENT_GRID_POINTS = (0, 1, 2, 4)


def parse_args(argv=None):
    student, teacher = PATHS.shipped["digits"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=student)
    p.add_argument("--teacher", default=teacher)
    p.add_argument("--cache_dir", default=os.path.join(PATHS.repo_root, "outputs", "cache"))
    p.add_argument("--output", default=os.path.join(PATHS.results_dir, "likelihood_gap_digits.json"))
    p.add_argument("--replot", metavar="JSON", default=None, help="only redraw the PNG beside this JSON")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


@torch.no_grad()
def main(args):
    from f2d2_diffusers.calibration import tangent_error
    from f2d2_diffusers.evaluation.digits_reference import GRID, NUM_TEST, cached_reference
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline, likelihood_error_budget, load_teacher

    if args.replot:
        print(redraw_from_json(args.replot, plot_report))
        return
    require_folders(args.student, args.teacher)
    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher).eval()
    pipe = F2D2LikelihoodPipeline.from_pipe(F2D2Pipeline.from_pretrained(args.student))
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.eval()
    report = dict(student=os.path.relpath(args.student, PATHS.repo_root),
                  teacher=os.path.relpath(args.teacher, PATHS.repo_root), num_per_split=NUM_TEST, steps=list(STEPS),
                  splits={})
    pooled = {k: ([], []) for k in STEPS}
    for split in SPLITS:
        data, reference = cached_reference(teacher, split, args.cache_dir)
        rows = score_split(pipe, data, reference)
        budget = likelihood_error_budget(pipe.unet, data, reference.states[:, -1], reference.integrals[:, -1], steps=STEPS,
                                         shift=pipe.scheduler.shift_for("likelihood"))
        for k, parts in zip(STEPS, budget.rows):
            rows[str(k)]["budget"] = {key: parts[key] for key in ("radial", "spread", "divergence", "end_point_error")}
        rows["tangent_error"] = {str(GRID[i]): tangent_error(pipe.unet, teacher, reference.states[:, i], GRID[i])
                                 for i in TANGENT_GRID_POINTS}
        for k in STEPS:
            pooled[k][0].append(np.asarray(rows["teacher_log_prob"]))
            pooled[k][1].append(np.asarray(rows[str(k)]["student_log_prob"]))
        report["splits"][split] = rows
    report["slope"] = {}
    for k in STEPS:
        x, y = np.concatenate(pooled[k][0]), np.concatenate(pooled[k][1])
        slope, intercept = np.polyfit(x, y, 1)
        report["slope"][str(k)] = dict(slope=float(slope), intercept=float(intercept))
    write_json(args.output, report)
    png = os.path.splitext(args.output)[0] + ".png"
    plot_report(report, png)
    for split in SPLITS:
        errors = ", ".join(f"{report['splits'][split][str(k)]['error_bits_per_dim']:+.3f}" for k in STEPS)
        rows = report["splits"][split]
        print(f"{split}: teacher {rows['teacher_bits_per_dim']:.3f} bits/dim, end points {rows['teacher_end_point_norm']:.2f}; "
              f"student error at {STEPS} steps: {errors} bits/dim, end points (1 step) {rows['1']['end_point_norm']:.2f}, "
              f"slope within the split " + ", ".join(f"{rows[str(k)]['slope_within_split']:.2f}" for k in STEPS))
        print("    error budget (nats of log-density; radial / spread / divergence): " + "; ".join(
            f"{k} step{'s' if k > 1 else ''} {b['radial']:+.2f} / {b['spread']:.2f} / {b['divergence']:+.2f}"
            for k, b in ((k, rows[str(k)]["budget"]) for k in STEPS)))
        print("    zero-step velocity vs the teacher's (relative L2 error) at sigma " + ", ".join(
            f"{sigma}: {value:.1%}" for sigma, value in rows["tangent_error"].items()))
    print("slope (student log p on teacher log p):", {k: round(v["slope"], 3) for k, v in report["slope"].items()})
    print(f"wrote {args.output} and {png}")


def score_split(pipe, data: torch.Tensor, reference, steps=STEPS) -> dict:
    """One split's row of the report: the teacher's log p (``reference``: cached dopri5 trajectories of ``data``) and,
    per step count, the student's (``pipe``: an ``F2D2LikelihoodPipeline``) with its errors, end-point norm and the
    slope of student on teacher log p. ``error_bits_per_dim`` is student minus teacher bits/dim (negative = the
    student is too optimistic); ``log_prob_excess_nats`` is student minus teacher log p (positive = too optimistic)."""
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS
    from f2d2_diffusers.dequantization import bits_per_dim

    teacher_log_p = reference.log_prob.double()
    num_dims = data[0].numel()
    teacher_bpd = bits_per_dim(teacher_log_p, num_dims, DIGITS_NUM_LEVELS)
    rows = {"teacher_log_prob": teacher_log_p.tolist(), "teacher_bits_per_dim": float(teacher_bpd.mean()),
            "teacher_end_point_norm": float(reference.states[:, -1].flatten(1).norm(dim=1).mean())}
    for k in steps:
        out = pipe(data, num_inference_steps=k, dequantize=False)
        log_p = out.log_prob.double()
        error = bits_per_dim(log_p, num_dims, DIGITS_NUM_LEVELS) - teacher_bpd
        slope, _ = np.polyfit(teacher_log_p.numpy(), log_p.numpy(), 1)
        rows[str(k)] = dict(student_log_prob=log_p.tolist(), error_bits_per_dim=float(error.mean()),
                            abs_error_bits_per_dim=float(error.abs().mean()),
                            log_prob_excess_nats=float((log_p - teacher_log_p).mean()),
                            end_point_norm=float(out.latents.flatten(1).norm(dim=1).mean()),
                            slope_within_split=float(slope))
    return rows


def plot_report(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 4.4), sharex=True, sharey=True)
    colours = {"train": "tab:blue", "test": "tab:orange"}
    for ax, k in zip(axes, steps):
        lo, hi = math.inf, -math.inf
        for split in SPLITS:
            rows = report["splits"][split]
            x, y = np.asarray(rows["teacher_log_prob"]), np.asarray(rows[str(k)]["student_log_prob"])
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
            within = rows[str(k)].get("slope_within_split")
            ax.scatter(x, y, s=10, alpha=0.7, color=colours[split],
                       label=f"{split} digits: error {rows[str(k)]['error_bits_per_dim']:+.3f} bits/dim"
                       + (f", slope {within:.2f}" if within is not None else ""))
        line = np.array([lo, hi])
        fit = report["slope"][str(k)]
        ax.plot(line, line, color="black", lw=1, label="student = teacher")
        ax.plot(line, fit["slope"] * line + fit["intercept"], color="tab:red", lw=1, ls="--",
                label=f"least squares over both, slope {fit['slope']:.2f}")
        ax.set_title(f"{k} step{'s' if k > 1 else ''}")
        ax.set_xlabel("teacher log p, dopri5 (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("F2D2 student log p (nats)")
    fig.suptitle(f"Digits: student vs teacher log-likelihood on {report['num_per_split']} training and "
                 f"{report['num_per_split']} held-out digits ({report['student']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main(parse_args())
