#!/usr/bin/env python
"""Which few-step grid to spend network calls on: uniform against geometric likelihood grids on digits (issue 9).

Scores the first 64 held-out and the first 64 training digits (dequantisation seed 0; the teacher's dopri5
references of ``f2d2_diffusers.evaluation.digits_reference``, computed once and cached) with each student on

- the uniform grids ``k/N``, ``N = 1, 2, 4, 8`` (the pipelines' default);
- the geometric grids ``[0, 2^-(N-1), ..., 1/4, 1/2, 1]``, ``N = 2..6`` calls: short steps next to the data.

Every step of both families is a step a dyadic student was trained on (a multiple of its size away from 0), so no
grid asks the map for something it never learned. A student saved with a shifted likelihood grid
(``train_f2d2.py --grid_shift`` / ``--likelihood_grid_shift``) gets the same grids warped by that shift, as
``F2D2LikelihoodPipeline(sigmas=...)`` does.

Writes ``benchmarks/results/likelihood_grids_digits.json`` and ``.png`` (mean error against network calls).

    python benchmarks/likelihood_grids.py
    python benchmarks/likelihood_grids.py --students checkpoints/f2d2-digits checkpoints/candidates/f2d2-digits-deep2
    python benchmarks/likelihood_grids.py --replot benchmarks/results/likelihood_grids_digits.json
"""

import argparse
import math
import os
from pathlib import Path

import torch

from f2d2_diffusers.evaluation.reports import benchmark_paths, redraw_from_json, require_folders, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
SPLITS = ("test", "train")
UNIFORM_CALLS = (1, 2, 4, 8)
GEOMETRIC_CALLS = (2, 3, 4, 5, 6)


def uniform_grid(calls: int) -> list:
    return [k / calls for k in range(calls + 1)]


def geometric_grid(calls: int) -> list:
    """``[0, 2^-(calls-1), ..., 1/2, 1]``: each step doubles the last, so every step starts a multiple of its size
    from 0, as dyadic students are trained (``anchor_starts_to_grid``)."""
    return [0.0] + [2.0 ** -(calls - 1 - k) for k in range(calls)]


def parse_args(argv=None):
    student, teacher = PATHS.shipped["digits"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", nargs="+", default=[student], help="F2D2 pipeline folders (default: the shipped one)")
    p.add_argument("--teacher", default=teacher)
    p.add_argument("--cache_dir", default=os.path.join(PATHS.repo_root, "outputs", "cache"))
    p.add_argument("--output", default=os.path.join(PATHS.results_dir, "likelihood_grids_digits.json"))
    p.add_argument("--replot", metavar="JSON", default=None, help="only redraw the PNG beside this JSON")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


@torch.no_grad()
def score(pipe, data, reference, sigmas) -> dict:
    """Mean error and MAE in bits/dim (student minus teacher; negative = too optimistic) on one grid."""
    from f2d2_diffusers import F2D2Scheduler

    out = pipe(data, sigmas=sigmas, dequantize=False)
    # Both log-densities are of the same dequantised points, so the dequantisation terms cancel.
    error = -(out.log_prob.double() - reference.log_prob.double()) / (data[0].numel() * math.log(2))
    visited = F2D2Scheduler.from_config(pipe.scheduler.config)  # the grid the call stepped, after the student's shift
    visited.set_timesteps(sigmas=sigmas, direction="likelihood")
    return dict(sigmas=[round(float(s), 6) for s in visited.sigmas], calls=int(out.nfe),
                mean_error=round(float(error.mean()), 4), mae=round(float(error.abs().mean()), 4))


def main(args):
    if args.replot:
        print(f"wrote {redraw_from_json(args.replot, plot)}")
        return
    from f2d2_diffusers import F2D2LikelihoodPipeline, load_teacher
    from f2d2_diffusers.evaluation.digits_reference import cached_reference

    require_folders(*args.students, args.teacher)
    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher).eval()
    references = {split: cached_reference(teacher, split, args.cache_dir) for split in SPLITS}
    report = dict(teacher=os.path.relpath(args.teacher, PATHS.repo_root), splits=list(SPLITS), students={})
    for path in args.students:
        pipe = F2D2LikelihoodPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.eval()
        name = os.path.relpath(path, PATHS.repo_root)
        rows = dict(shift=pipe.scheduler.shift_for("likelihood"))
        for split, (data, reference) in references.items():
            rows[split] = dict(
                uniform={str(n): score(pipe, data, reference, uniform_grid(n)) for n in UNIFORM_CALLS},
                geometric={str(n): score(pipe, data, reference, geometric_grid(n)) for n in GEOMETRIC_CALLS},
            )
            for family in ("uniform", "geometric"):
                cells = ", ".join(f"{n}: {r['mean_error']:+.3f}" for n, r in rows[split][family].items())
                print(f"{name} [{split}] {family}: {cells}", flush=True)
        report["students"][name] = rows
    write_json(args.output, report)
    print(f"wrote {args.output} and {plot(report, os.path.splitext(args.output)[0] + '.png')}")


def plot(report: dict, png_path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["splits"]), figsize=(5.2 * len(report["splits"]), 4), sharey=True)
    for ax, split in zip(axes, report["splits"]):
        for k, (name, rows) in enumerate(report["students"].items()):
            colour = f"C{k}"
            for family, style in (("uniform", "o-"), ("geometric", "s--")):
                cells = rows[split][family].values()
                ax.plot([c["calls"] for c in cells], [c["mean_error"] for c in cells], style, color=colour,
                        label=f"{Path(name).name}, {family}")
        ax.axhline(0, color="k", lw=0.8)
        for target in (-0.02, 0.02):
            ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{'held-out' if split == 'test' else 'training'} digits (64)")
        ax.set_xlabel("network calls")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean error vs teacher dopri5 (bits/dim)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Few-step likelihood error: uniform grids k/N against geometric grids [0, 2^-(N-1), ..., 1/2, 1]")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


if __name__ == "__main__":
    main(parse_args())
