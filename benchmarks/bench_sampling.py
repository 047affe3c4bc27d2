#!/usr/bin/env python
"""Sample quality against network calls: the teacher's Euler sampler vs few-step F2D2, from the same noise.

Methods (every one starts from the same seeded initial noise, one draw per data set):

- teacher Euler, 1 .. 200 steps on the **uniform** grid ``sigma_k = 1 - k/N`` ending exactly at ``sigma = 0``
  (``f2d2_diffusers.teacher_euler_sample``): diffusers' ``FlowMatchEulerDiscreteScheduler`` (the teacher's saved
  one when its folder has ``scheduler/``) with these ``sigmas`` passed explicitly (its default few-step grid would
  end at ``sigma = 0.001``, not at the data), image and vector teachers alike, float timesteps.
- F2D2 (``F2D2Pipeline``), 1, 2, 4, 8 steps on its uniform grid; the log-density of each sample comes free and is
  reported as mean bits/dim (digits) or mean NLL (2-D).

Scores:

- digits: Frechet distance (``f2d2_diffusers.metrics.frechet_distance``) between the shipped digits classifier's
  64-d features (``checkpoints/digits-classifier``) of the samples (clamped to ``[-1, 1]``) and of the test split
  (297 images, dequantised once, seed 0); also against the 1500 train images. The ``data`` row scores real digits
  of the other split (train against test): the test split comes from other writers and has only 297 images, so
  ``fd_test`` has a high floor and ``fd_train`` separates the samplers more sharply.
- checkerboard: energy distance and multi-bandwidth RBF MMD^2 (biased V-statistic, bandwidths 0.1..2) against 2,000
  fresh points (``sample_toy`` with seed 2024, not used by the train/test splits); the ``data`` row scores as many
  test-split points as there are samples against the same reference.

The issue's target, "2-step F2D2 within 20% of the teacher's 100-step Euler", is stored as the ratio of the two
scores (FD on the test split; energy distance) and a boolean ``ratio <= 1.2``.

Writes ``sampling_<dataset>.json``, ``samples_<dataset>.png`` (digits: one row per method and step count, the same
16 noises in each column; 2-D: scatter panels) and ``sampling_<dataset>.png`` (score against steps) to
``--output_dir`` (default ``benchmarks/results``, the committed numbers; ``outputs/benchmarks-quick`` with ``--quick``).

    python benchmarks/bench_sampling.py            # full: digits (500 samples) and checkerboard (2000 samples)
    python benchmarks/bench_sampling.py --quick    # CI: fewer samples, teacher at 1, 2, 4, 8, 100 steps
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from f2d2_diffusers import sample_shape, teacher_euler_sample
from f2d2_diffusers.data import load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, require_folders, timed, write_json
from f2d2_diffusers.evaluation.sample_quality import (
    PRIMARY, REFERENCE_POINTS, make_scorer, teacher_scheduler,
)

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
TEACHER_STEPS = (1, 2, 4, 8, 16, 32, 64, 100, 200)
TEACHER_STEPS_QUICK = (1, 2, 4, 8, 100)
F2D2_STEPS = (1, 2, 4, 8)
#: Data sets with shipped checkpoints, in run order (digits, checkerboard).
DATASETS = tuple(PATHS.shipped)
DEFAULT_SAMPLES = {"digits": 500, "checkerboard": 2000}
QUICK_SAMPLES = {"digits": 128, "checkerboard": 500}
TARGET_RATIO = 1.2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    p.add_argument("--quick", action="store_true", help="few samples and teacher steps 1, 2, 4, 8, 100 (CI)")
    p.add_argument("--student", default=None, help="F2D2 pipeline folder (default: the shipped one; one --dataset only)")
    p.add_argument("--teacher", default=None, help="teacher folder (default: the shipped one; one --dataset only)")
    p.add_argument("--classifier", default=PATHS.digits_classifier, help="DigitsClassifier folder (digits only)")
    p.add_argument("--num_samples", type=int, default=0, help="samples per method (0: 500 digits / 2000 2-D; quick 128 / 500)")
    p.add_argument("--reference_points", type=int, default=REFERENCE_POINTS, help="fresh 2-D reference points (2,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise shared by all methods")
    p.add_argument("--output_dir", default=None,
                   help="default: benchmarks/results; with --quick outputs/benchmarks-quick (never the committed results)")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or PATHS.output_dir(args.quick)
    if args.dataset == "all" and (args.student or args.teacher):
        p.error("--student/--teacher need a single --dataset")
    if args.num_samples < 0:
        p.error("--num_samples must be >= 0")
    return args


def sampling_target(rows, names) -> dict:
    """The issue's target per score in ``names``: 2-step F2D2 / 100-step teacher Euler, met when ``<= TARGET_RATIO``."""
    by = {(r["method"], r["steps"]): r for r in rows}
    target = {}
    for name in names:
        ratio = by[("F2D2", 2)][name] / max(by[("teacher Euler", 100)][name], 1e-12)
        target[name] = dict(f2d2_2_steps=by[("F2D2", 2)][name], teacher_euler_100_steps=by[("teacher Euler", 100)][name],
                            ratio=ratio, within_20_percent=bool(ratio <= TARGET_RATIO))
    return target


def run_dataset(dataset: str, args) -> dict:
    from f2d2_diffusers import F2D2Pipeline, load_teacher

    student_path = args.student or PATHS.shipped[dataset][0]
    teacher_path = args.teacher or PATHS.shipped[dataset][1]
    require_folders(student_path, teacher_path, *([args.classifier] if dataset == "digits" else []))
    num_samples = args.num_samples or (QUICK_SAMPLES if args.quick else DEFAULT_SAMPLES)[dataset]
    teacher_steps = TEACHER_STEPS_QUICK if args.quick else TEACHER_STEPS

    teacher = load_teacher(teacher_path)
    scheduler = teacher_scheduler(teacher_path)
    pipe = F2D2Pipeline.from_pretrained(student_path)
    pipe.set_progress_bar_config(disable=True)
    score, floor, reference = make_scorer(dataset, args.classifier, num_samples, args.reference_points)
    shape = sample_shape(teacher.config)
    is_image = len(shape) == 3
    real, _ = load_test_split(dataset, 0 if is_image else num_samples)
    noise = torch.randn((num_samples, *shape), generator=torch.Generator().manual_seed(args.seed))

    rows, samples = [dict(method="data", steps=None, nfe=0, seconds=0.0, **floor)], {("data", "test"): real}
    jobs = [("teacher Euler", k) for k in teacher_steps] + [("F2D2", k) for k in F2D2_STEPS]
    for method, steps in tqdm(jobs, desc=f"{dataset}: sampling"):
        extra = {}
        if method == "F2D2":
            out, seconds = timed(lambda: pipe(latents=noise, num_inference_steps=steps, output_type="pt"))
            x = out.images.float() * 2 - 1 if is_image else out.images.float()  # model space
            extra = {"sample_bits_per_dim" if is_image else "sample_nll": (out.bits_per_dim if is_image else -out.log_prob).mean().item()}
            nfe = out.nfe
        else:
            x, seconds = timed(lambda: teacher_euler_sample(teacher, noise, steps, scheduler))
            x = x.clamp(-1, 1) if is_image else x
            nfe = steps
        if not torch.isfinite(x).all():
            raise SystemExit(f"error: {method} with {steps} steps produced non-finite samples")
        samples[(method, steps)] = x
        rows.append(dict(method=method, steps=steps, nfe=nfe, seconds=seconds, **score(x), **extra))

    key = PRIMARY[dataset]
    target = sampling_target(rows, [key, "fd_train"] if dataset == "digits" else [key, "mmd"])
    report = dict(
        dataset=dataset, quick=args.quick, student=student_path, teacher=teacher_path, num_samples=num_samples,
        noise=f"torch.randn with torch.Generator().manual_seed({args.seed}), shape {list(noise.shape)}, shared by every method",
        teacher_sampler="diffusers FlowMatchEulerDiscreteScheduler with explicit uniform sigmas 1 - k/N (terminal 0)",
        reference=reference, primary_score=key,
        target=dict(description="2-step F2D2 score / teacher 100-step Euler score; met when <= 1.2 (lower is better). "
                                f"The issue's score is {key}; the second one is given for context.",
                    **target),
        rows=rows,
    )
    write_json(os.path.join(args.output_dir, f"sampling_{dataset}.json"), report)
    plot_samples(dataset, samples, rows, args.output_dir)
    plot_curve(dataset, rows, args.output_dir)
    print(f"\n{dataset}: {num_samples} samples per method, scores vs {reference}")
    names = list(dict.fromkeys(n for r in rows for n in r if n not in ("method", "steps", "nfe", "seconds")))
    print(f"{'method':<15}{'steps':>6}{'nfe':>5}{'seconds':>9}" + "".join(f"{n:>21}" for n in names))
    for r in rows:
        print(f"{r['method']:<15}{r['steps'] or '-':>6}{r['nfe']:>5}{r['seconds']:>9.2f}"
              + "".join(f"{r[n]:>21.5f}" if n in r else f"{'-':>21}" for n in names))
    for name, t in target.items():
        print(f"target ({name}): F2D2 2 steps / teacher 100 steps = {t['ratio']:.3f} -> "
              f"{'met' if t['within_20_percent'] else 'not met'}")
    return report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(dataset, samples, rows, output_dir, per_row: int = 16):
    plt = _pyplot()
    keys = list(samples)
    if samples[keys[0]].ndim == 4:
        n = min(per_row, samples[keys[0]].shape[0])
        fig, axes = plt.subplots(len(keys), 1, figsize=(n * 0.55 + 1.6, len(keys) * 0.62 + 0.3))
        for ax, key in zip(np.atleast_1d(axes), keys):
            x = samples[key][:n, 0].clamp(-1, 1)
            ax.imshow(torch.cat(list(x), dim=1).numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            label = "test\ndigits" if key[0] == "data" else f"{key[0].replace('teacher ', '')}\n{key[1]} st."
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        fig.suptitle(f"{dataset}: real test digits (top), then each sampler from the same noise in each column", fontsize=9)
    else:
        cols = 5
        nrow = -(-len(keys) // cols)
        fig, axes = plt.subplots(nrow, cols, figsize=(cols * 2.4, nrow * 2.4))
        for ax in np.ravel(axes)[len(keys):]:
            ax.axis("off")
        for ax, key in zip(np.ravel(axes), keys):
            x = samples[key].numpy()
            ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.5)
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("test points" if key[0] == "data" else f"{key[0]} {key[1]} st.", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, f"samples_{dataset}.png"), dpi=110)
    plt.close(fig)


def plot_curve(dataset, rows, output_dir):
    plt = _pyplot()
    names = ("fd_test", "fd_train") if dataset == "digits" else ("energy_distance", "mmd")
    labels = {"fd_test": "Frechet distance (test split)", "fd_train": "Frechet distance (train split)",
              "energy_distance": "energy distance", "mmd": "MMD^2 (RBF)"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, names):
        for method, marker in (("teacher Euler", "o"), ("F2D2", "s")):
            rs = [r for r in rows if r["method"] == method]
            ax.plot([r["nfe"] for r in rs], [r[name] for r in rs], marker=marker, label=method)
        floor = rows[0][name]
        if floor > 0:
            ax.axhline(floor, color="gray", ls=":", label="real data (other split)" if dataset == "digits" else "real test points")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("network calls (steps)")
        ax.set_ylabel(labels[name])
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: sample quality vs steps (lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, f"sampling_{dataset}.png"), dpi=110)
    plt.close(fig)


def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    reports = {d: run_dataset(d, args) for d in datasets}
    print(f"wrote {args.output_dir}/sampling_<dataset>.json, samples_<dataset>.png, sampling_<dataset>.png")
    return reports


if __name__ == "__main__":
    main(parse_args())
