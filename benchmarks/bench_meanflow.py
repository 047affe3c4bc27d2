#!/usr/bin/env python
"""MeanFlow-F2D2 beside Shortcut-F2D2 and the teacher: calibration, sample quality, self-guidance, training cost.

For each data set (digits, checkerboard), with the shipped ``checkpoints/f2d2-meanflow-<data>``,
``checkpoints/f2d2-<data>`` (Shortcut-F2D2) and the teacher ``checkpoints/fm-<data>``:

1. **Calibration**: 1/2/4/8-step likelihoods of both students against one teacher dopri5 reference on the same
   test points (digits: the first ``--calibration_samples`` test digits, exact divergence, one dequantisation draw,
   bits/dim; checkerboard: 2,000 test points, nats).
2. **Guidance sweep** on a separate noise draw (seed + 1): MeanFlow-F2D2 at 2 steps, ``ml_guidance_scale`` over
   ``SCALES``: sample score and mean log-likelihood; then 1, 2, 4 guidance steps at the best scale, with the
   samples' mean pairwise distance as a collapse check (the data's own is the ``data`` row).
3. **Sample quality** on the main noise draw: the teacher's Euler sampler at 1 .. 1024 steps, Shortcut-F2D2 and
   MeanFlow-F2D2 at 1, 2, 4 steps, MeanFlow-F2D2 with one guidance step at the sweep's best scale. Scores as in
   ``bench_sampling.py`` (digits: classifier Frechet distance to the test and train splits; 2-D: energy distance
   and MMD). Target: 2-step guided MeanFlow-F2D2 at or below the teacher's 1024-step Euler.
4. **Training cost**: seconds per optimisation step (loss, backward) of each objective on the training batch
   shapes of the shipped recipes, one thread.

Writes ``meanflow_<dataset>.json`` and ``meanflow_<dataset>.png`` to ``--output_dir`` (default
``benchmarks/results``; ``--quick``: ``outputs/benchmarks-quick`` with fewer samples and steps).

    python benchmarks/bench_meanflow.py             # both data sets
    python benchmarks/bench_meanflow.py --quick     # CI-sized
"""

import argparse
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from f2d2_diffusers import sample_shape, teacher_euler_sample
from f2d2_diffusers.data import load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, require_folders, timed, write_json
from f2d2_diffusers.evaluation.sample_quality import PRIMARY, make_scorer, teacher_scheduler

ROOT = Path(__file__).resolve().parents[1]
PATHS = benchmark_paths(ROOT)
DATASETS = ("digits", "checkerboard")
TEACHER_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TEACHER_STEPS_QUICK = (1, 2, 4, 100)
STUDENT_STEPS = (1, 2, 4)
SCALES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
GUIDANCE_STEPS = (1, 2, 4)
SAMPLES = {"digits": 500, "checkerboard": 2000}
SAMPLES_QUICK = {"digits": 64, "checkerboard": 300}
CALIBRATION = {"digits": 64, "checkerboard": 2000}
#: Training batch shapes of the shipped recipes (cost per step is measured on these).
TRAIN_BATCH = {"digits": 64, "checkerboard": 512}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--meanflow", default=None, help="MeanFlow-F2D2 folder (default: checkpoints/f2d2-meanflow-<data>)")
    p.add_argument("--calibration_samples", type=int, default=0, help="0: 64 digits / 2000 2-D points (quick: 16 / 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default=None)
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or PATHS.output_dir(args.quick)
    if args.meanflow and args.dataset == "all":
        p.error("--meanflow needs a single --dataset")
    return args


def model_space(out, is_image):
    return out.images.float() * 2 - 1 if is_image else out.images.float()


def mean_pairwise_distance(x: torch.Tensor, max_points: int = 500) -> float:
    flat = x[:max_points].reshape(min(len(x), max_points), -1).double()
    return torch.pdist(flat).mean().item()


def calibration(dataset, pipes, teacher, num_points):
    from f2d2_diffusers import F2D2LikelihoodPipeline, likelihood_calibration, reference_log_likelihood

    test, num_levels = load_test_split(dataset, num_points, seed=0)
    reference, seconds = timed(lambda: reference_log_likelihood(
        teacher, test, num_levels=num_levels, divergence="exact", rtol=1e-5, atol=1e-5))
    rows = {}
    for name, pipe in pipes.items():
        likelihood = F2D2LikelihoodPipeline.from_pipe(pipe)
        likelihood.set_progress_bar_config(disable=True)
        result = likelihood_calibration(likelihood, None, test, num_levels, evaluations=("bidirectional",),
                                        reference=reference)
        rows[name] = [dict(r, seconds=seconds if r["evaluation"] == "reference" else r["seconds"]) for r in result.rows]
        unit = result.unit
    return dict(num_points=len(test), unit=unit, reference="teacher dopri5, exact divergence, rtol = atol = 1e-5",
                rows=rows)


def guidance_sweep(pipe, noise, score, key, is_image):
    rows = []
    for scale in tqdm(SCALES, desc="guidance scales"):
        out = pipe(latents=noise, num_inference_steps=2, output_type="pt", ml_guidance_scale=scale)
        x = model_space(out, is_image)
        rows.append(dict(scale=scale, guidance_steps=1 if scale else 0, nfe=out.nfe, **score(x),
                         mean_log_prob=out.log_prob.mean().item(), mean_pairwise_distance=mean_pairwise_distance(x)))
    best = min(rows, key=lambda r: r[key])["scale"]
    for steps in GUIDANCE_STEPS[1:]:
        if best == 0:
            break
        out = pipe(latents=noise, num_inference_steps=2, output_type="pt", ml_guidance_scale=best,
                   ml_guidance_steps=steps)
        x = model_space(out, is_image)
        rows.append(dict(scale=best, guidance_steps=steps, nfe=out.nfe, **score(x),
                         mean_log_prob=out.log_prob.mean().item(), mean_pairwise_distance=mean_pairwise_distance(x)))
    return rows, best


def training_cost(dataset, teacher, student, repeats):
    """Seconds per step (loss + backward) of each objective on the shipped recipe's batch shape, one thread."""
    from f2d2_diffusers import meanflow_f2d2_loss, shortcut_f2d2_loss

    shape = sample_shape(teacher.config)
    batch = torch.rand(TRAIN_BATCH[dataset], *shape) * 2 - 1
    divergence = "hutchinson" if len(shape) == 3 else "exact"
    losses = {
        "shortcut": lambda g: shortcut_f2d2_loss(student, batch, generator=g, teacher=teacher, divergence=divergence,
                                                 bootstrap_fraction=0.5, anchor_starts_to_grid=True,
                                                 teacher_finest_level=True),
        "meanflow": lambda g: meanflow_f2d2_loss(student, batch, generator=g, teacher=teacher, divergence=divergence),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = {}
    try:
        for name, loss in losses.items():
            g = torch.Generator().manual_seed(0)
            loss(g).loss.backward()  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                student.zero_grad(set_to_none=True)
                loss(g).loss.backward()
            result[name] = (time.perf_counter() - start) / repeats
    finally:
        torch.set_num_threads(threads)
        student.zero_grad(set_to_none=True)
    result["meanflow_over_shortcut"] = result["meanflow"] / result["shortcut"]
    result.update(batch_size=TRAIN_BATCH[dataset], threads=1, divergence=divergence)
    return result


def run_dataset(dataset, args) -> dict:
    from f2d2_diffusers import F2D2Pipeline, load_teacher

    shortcut_path, teacher_path = PATHS.shipped[dataset]
    meanflow_path = args.meanflow or os.path.join(ROOT, "checkpoints", f"f2d2-meanflow-{dataset}")
    require_folders(shortcut_path, teacher_path, meanflow_path, *([PATHS.digits_classifier] if dataset == "digits" else []))
    num_samples = (SAMPLES_QUICK if args.quick else SAMPLES)[dataset]
    num_calibration = args.calibration_samples or ({"digits": 16, "checkerboard": 300} if args.quick else CALIBRATION)[dataset]
    teacher = load_teacher(teacher_path)
    pipes = {"Shortcut-F2D2": F2D2Pipeline.from_pretrained(shortcut_path),
             "MeanFlow-F2D2": F2D2Pipeline.from_pretrained(meanflow_path)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    meanflow = pipes["MeanFlow-F2D2"]
    shape = sample_shape(teacher.config)
    is_image = len(shape) == 3
    key = PRIMARY[dataset]

    print(f"{dataset}: calibration on {num_calibration} test points ...", flush=True)
    calib = calibration(dataset, pipes, teacher, num_calibration)

    score, floor, reference = make_scorer(dataset, PATHS.digits_classifier, num_samples)
    real, _ = load_test_split(dataset, 0 if is_image else num_samples)
    sweep_noise = torch.randn((num_samples, *shape), generator=torch.Generator().manual_seed(args.seed + 1))
    sweep, best_scale = guidance_sweep(meanflow, sweep_noise, score, key, is_image)

    noise = torch.randn((num_samples, *shape), generator=torch.Generator().manual_seed(args.seed))
    data_row = dict(method="data", steps=None, nfe=0, seconds=0.0, mean_pairwise_distance=mean_pairwise_distance(real),
                    **floor)
    rows = [data_row]
    scheduler = teacher_scheduler(teacher_path)
    jobs = [("teacher Euler", k, 0.0) for k in (TEACHER_STEPS_QUICK if args.quick else TEACHER_STEPS)]
    jobs += [(name, k, 0.0) for name in pipes for k in STUDENT_STEPS]
    jobs += [("MeanFlow-F2D2 + guidance", k, best_scale) for k in STUDENT_STEPS if best_scale > 0]
    for method, steps, scale in tqdm(jobs, desc=f"{dataset}: sampling"):
        extra = {}
        if method == "teacher Euler":
            x, seconds = timed(lambda: teacher_euler_sample(teacher, noise, steps, scheduler))
            x, nfe = (x.clamp(-1, 1) if is_image else x), steps
        else:
            pipe = pipes[method.replace(" + guidance", "")]
            out, seconds = timed(lambda: pipe(latents=noise, num_inference_steps=steps, output_type="pt",
                                              ml_guidance_scale=scale))
            x, nfe = model_space(out, is_image), out.nfe
            extra = dict(mean_log_prob=out.log_prob.mean().item(), guidance_scale=scale)
        rows.append(dict(method=method, steps=steps, nfe=nfe, seconds=seconds, **score(x),
                         mean_pairwise_distance=mean_pairwise_distance(x), **extra))

    by = {(r["method"], r["steps"]): r for r in rows}
    longest = max(k for m, k in by if m == "teacher Euler")
    guided = by.get(("MeanFlow-F2D2 + guidance", 2), by[("MeanFlow-F2D2", 2)])
    target = dict(description=f"2-step MeanFlow-F2D2 with guidance ({key}) at or below the teacher's {longest}-step Euler",
                  meanflow_2_steps_guided=guided[key], teacher_euler=by[("teacher Euler", longest)][key],
                  met=bool(guided[key] <= by[("teacher Euler", longest)][key]))
    cost = training_cost(dataset, teacher, pipes["MeanFlow-F2D2"].unet.train(), 3 if args.quick else 20)
    pipes["MeanFlow-F2D2"].unet.eval()
    report = dict(dataset=dataset, quick=args.quick, meanflow=meanflow_path, shortcut=shortcut_path, teacher=teacher_path,
                  num_samples=num_samples, score_reference=reference, primary_score=key, calibration=calib,
                  guidance_sweep=dict(noise_seed=args.seed + 1, steps=2, rows=sweep, best_scale=best_scale),
                  sampling=dict(noise_seed=args.seed, rows=rows), target=target, training_cost_seconds_per_step=cost)
    write_json(os.path.join(args.output_dir, f"meanflow_{dataset}.json"), report)
    plot(dataset, report, args.output_dir)
    return report


def plot(dataset, report, output_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = report["primary_score"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    for name, rows in report["calibration"]["rows"].items():
        pts = [(r["steps"], r["error"]) for r in rows if r["steps"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("steps")
    ax.set_ylabel(f"mean error ({report['calibration']['unit']})")
    ax.set_title(f"Calibration vs teacher dopri5 ({report['calibration']['num_points']} test points)")
    ax.legend(fontsize=8)

    ax = axes[1]
    rows = report["sampling"]["rows"]
    for method, style in (("teacher Euler", "k.-"), ("Shortcut-F2D2", "s-"), ("MeanFlow-F2D2", "o-"),
                          ("MeanFlow-F2D2 + guidance", "^-")):
        pts = sorted((r["nfe"], r[key]) for r in rows if r["method"] == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
    ax.axhline(rows[0][key], color="grey", ls=":", label="data (other split)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("network passes (guidance: forward + backward)")
    ax.set_ylabel(key)
    ax.set_title(f"{dataset}: sample quality ({report['num_samples']} samples)")
    ax.legend(fontsize=8)

    ax = axes[2]
    sweep = [r for r in report["guidance_sweep"]["rows"] if r["guidance_steps"] <= 1]
    ax.plot([r["scale"] for r in sweep], [r[key] for r in sweep], "o-", color="C0")
    ax.set_xscale("symlog", linthresh=0.02)
    ax.set_xlabel("ml_guidance_scale (2 steps, 1 guidance step)")
    ax.set_ylabel(key, color="C0")
    twin = ax.twinx()
    twin.plot([r["scale"] for r in sweep], [r["mean_log_prob"] for r in sweep], "s--", color="C3")
    twin.set_ylabel("mean log-density of the samples (nats)", color="C3")
    ax.set_title(f"Guidance sweep (best scale {report['guidance_sweep']['best_scale']})")
    fig.suptitle(f"MeanFlow-F2D2 vs Shortcut-F2D2 vs teacher Euler: {dataset}")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, f"meanflow_{dataset}.png"), dpi=110)
    plt.close(fig)


def main(args):
    os.makedirs(args.output_dir, exist_ok=True)
    reports = [run_dataset(d, args) for d in (DATASETS if args.dataset == "all" else (args.dataset,))]
    for r in reports:
        print(f"{r['dataset']}: target {r['target']}")
        print(f"  training cost: {r['training_cost_seconds_per_step']}")
    return reports


if __name__ == "__main__":
    main(parse_args())
