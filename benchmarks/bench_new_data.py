#!/usr/bin/env python
"""Calibration on data nobody tuned for: the training scripts' defaults on distributions generated here.

For each data set (a 2-D pinwheel and a warped 5-D mixture, both defined only in this file) the script writes
train and test ``.npy`` files, trains a flow-matching teacher with ``train_teacher.py`` and an F2D2 student with
``train_f2d2.py`` through ``accelerate launch``, both with the README's generic recipe and **no F2D2 flags**
(whatever the defaults are), then scores the test points with the student at 1, 2, 4 and 8 steps against the
teacher's dopri5 likelihood (exact divergence). The target (issue 9): |mean error| <= 0.05 nats at 1 and 2 steps.

Writes ``<output_dir>/new_data.json`` and ``new_data.png``; ``--quick`` (tiny runs, for the tests) writes under
``outputs/benchmarks-quick`` unless ``--output_dir`` says otherwise.

    python benchmarks/bench_new_data.py                # about 30 min on 2 CPU cores
"""

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from f2d2_diffusers.evaluation.reports import benchmark_paths, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
REPO_ROOT = PATHS.repo_root
DATASETS = ("pinwheel", "warped_mixture_5d")
GRIDS = (1, 2, 4, 8)
TARGET_NATS = 0.05


def sample_pinwheel(n: int, generator: torch.Generator) -> torch.Tensor:
    """Five curved arms (the classic pinwheel), shape ``(n, 2)``."""
    arm = torch.randint(0, 5, (n,), generator=generator)
    radial = 1.0 + 0.3 * torch.randn(n, generator=generator)
    tangential = 0.08 * torch.randn(n, generator=generator)
    angle = arm * (2 * math.pi / 5) + 0.25 * torch.exp(radial)
    x = radial * torch.cos(angle) - tangential * torch.sin(angle)
    y = radial * torch.sin(angle) + tangential * torch.cos(angle)
    return torch.stack([x, y], dim=1) * 1.5


def sample_warped_mixture_5d(n: int, generator: torch.Generator) -> torch.Tensor:
    """A 4-component anisotropic Gaussian mixture in 5-D, bent by a fixed smooth map, shape ``(n, 5)``."""
    g = torch.Generator().manual_seed(1234)  # the mixture's parameters: fixed, independent of the split
    means = torch.randn(4, 5, generator=g) * 1.5
    scales = 0.15 + 0.6 * torch.rand(4, 5, generator=g)
    component = torch.randint(0, 4, (n,), generator=generator)
    z = means[component] + scales[component] * torch.randn(n, 5, generator=generator)
    warped = z.clone()
    warped[:, 1] = z[:, 1] + 0.5 * torch.sin(1.5 * z[:, 0])
    warped[:, 3] = z[:, 3] + 0.3 * z[:, 2] ** 2 - 0.5
    return warped


SAMPLERS = {"pinwheel": sample_pinwheel, "warped_mixture_5d": sample_warped_mixture_5d}
SPLIT_SEEDS = {"train": 10, "test": 11}


def make_split(name: str, split: str, n: int) -> torch.Tensor:
    return SAMPLERS[name](n, torch.Generator().manual_seed(SPLIT_SEEDS[split])).float()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--teacher_steps", type=int, default=6000)
    p.add_argument("--student_steps", type=int, default=6000)
    p.add_argument("--num_train", type=int, default=100000)
    p.add_argument("--num_test", type=int, default=1000)
    p.add_argument("--work_dir", default=os.path.join(REPO_ROOT, "outputs", "new_data"),
                   help="where the data files and the trained folders go")
    p.add_argument("--output_dir", default=None, help="default: benchmarks/results (outputs/benchmarks-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny runs (a smoke test of the whole path)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    p.add_argument("--student_flags", default="",
                   help="extra train_f2d2.py flags, e.g. the old defaults for an ablation (the report records them)")
    p.add_argument("--reuse_teacher", action="store_true", help="keep a teacher already trained in --work_dir")
    p.add_argument("--tag", default="", help="suffix of the report's file names (new_data<tag>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.teacher_steps, args.student_steps, args.num_train, args.num_test = 30, 20, 2000, 64
    if args.output_dir is None:
        args.output_dir = PATHS.output_dir(args.quick)
    return args


def launch(script: str, flags: list, threads: int) -> float:
    """Run ``accelerate launch training/<script> flags`` (single process); wall seconds."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(REPO_ROOT, "training", script)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    print("+", " ".join(command[3:] + [str(f) for f in flags]), flush=True)
    subprocess.run(command + [str(f) for f in flags], check=True, env=env, cwd=REPO_ROOT)
    return time.perf_counter() - start


def run_dataset(name: str, args) -> dict:
    from f2d2_diffusers import F2D2LikelihoodPipeline, likelihood_calibration, load_teacher

    folder = os.path.join(args.work_dir, name)
    os.makedirs(folder, exist_ok=True)
    train_file = os.path.join(folder, "train.npy")
    np.save(train_file, make_split(name, "train", args.num_train).numpy())
    test = make_split(name, "test", args.num_test)
    teacher_dir, student_dir = os.path.join(folder, "teacher"), os.path.join(folder, "f2d2")
    common = ["--train_data_file", train_file, "--train_batch_size", 512, "--lr_warmup_steps", 200, "--use_ema",
              "--ema_max_decay", 0.999, "--checkpointing_steps", 0, "--seed", 0]
    teacher_seconds = None
    if not (args.reuse_teacher and os.path.isfile(os.path.join(teacher_dir, "unet", "config.json"))):
        teacher_seconds = launch("train_teacher.py", common + [
            "--output_dir", teacher_dir, "--max_train_steps", args.teacher_steps, "--learning_rate", 1e-3,
            "--model_config_name_or_path", os.path.join(REPO_ROOT, "configs", "toy_mlp.json")], args.threads)
    student_dir += args.tag
    student_seconds = launch("train_f2d2.py", common + [
        "--teacher_model_name_or_path", teacher_dir, "--output_dir", student_dir, "--max_train_steps", args.student_steps,
        "--learning_rate", 3e-4, "--calibration_samples", 0] + args.student_flags.split(), args.threads)

    teacher = load_teacher(teacher_dir)
    pipe = F2D2LikelihoodPipeline.from_pretrained(student_dir)
    pipe.set_progress_bar_config(disable=True)
    torch.set_num_threads(max(1, args.threads))
    calibration = likelihood_calibration(pipe, teacher, test, None, steps=GRIDS, evaluations=("bidirectional",),
                                         divergence="exact", rtol=1e-5, atol=1e-5)
    rows = calibration.rows
    met = all(abs(r["error"]) <= TARGET_NATS for r in rows if r["steps"] in (1, 2))
    print(f"{name}: " + ", ".join(f"{r['steps'] or 'ref'}: {r['value']:.4f} ({r['error']:+.4f})" for r in rows), flush=True)
    # The grids the flags (or the defaults) gave the student, as its saved scheduler records them.
    grids = {direction: pipe.scheduler.shift_for(direction) for direction in ("sample", "likelihood")}
    return dict(dataset=name, student_flags=args.student_flags, grid_shifts=grids, dims=int(test.shape[1]), num_test=len(test), teacher_steps=args.teacher_steps,
                student_steps=args.student_steps, teacher_seconds=teacher_seconds, student_seconds=student_seconds,
                reference_nfe=calibration.reference.nfe, rows=rows, target_met=met)


def plot(results: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for color, res in zip(("C0", "C1", "C2", "C3"), results):
        rs = [r for r in res["rows"] if r["steps"]]
        ax.plot([r["steps"] for r in rs], [abs(r["error"]) for r in rs], "o-", color=color,
                label=f"{res['dataset']} |mean error|")
        ax.plot([r["steps"] for r in rs], [r["abs_error"] for r in rs], "s:", color=color,
                label=f"{res['dataset']} per-sample MAE")
    ax.axhline(TARGET_NATS, color="k", lw=0.8, ls="--", label=f"target {TARGET_NATS} nats")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("steps (network calls)")
    ax.set_ylabel("NLL error vs teacher dopri5 (nats)")
    flags = results[0].get("student_flags") if results else ""
    ax.set_title(f"train_f2d2.py {'with ' + flags if flags else 'defaults'}\non data generated for this check",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    results = [run_dataset(name, args) for name in args.datasets]
    payload = dict(description=__doc__.strip().splitlines()[0], quick=args.quick, target_nats=TARGET_NATS,
                   results=results)
    path = os.path.join(args.output_dir, f"new_data{args.tag}.json")
    write_json(path, payload)
    plot(results, os.path.join(args.output_dir, f"new_data{args.tag}.png"))
    print(f"wrote {path} and new_data{args.tag}.png")


if __name__ == "__main__":
    main(parse_args())
