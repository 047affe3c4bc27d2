#!/usr/bin/env python
"""Out-of-distribution detection with likelihoods: few-step F2D2 against the teacher's reference ODE.

Score = bits/dim (digits, 17 levels) or NLL in nats (2-D); a higher score means more anomalous, and
``f2d2_diffusers.metrics.auroc`` gives the area under the ROC curve of each OOD set against the in-distribution set
(1 = perfectly separated, 0.5 = chance, below 0.5 = the OOD set looks *more* likely than the real data).

Digits: in-distribution = the test split (images 1500 on, 297 images, 17 levels). OOD sets made from it:
``inverted`` (16 - k), ``rotated`` (90 degrees), ``uniform_noise`` (i.i.d. uniform levels 0..16) and ``blurred``
(3x3 box blur, rounded back to integer levels). Every set is dequantised once (seeded), and the same model-space
points go to every method. Checkerboard: in = the checkerboard test split (2,000 points); OOD = the
``eight_gaussians`` and ``two_moons`` test splits.

Methods: F2D2 likelihood (``F2D2LikelihoodPipeline``, bidirectional map) with 1 and 2 steps on every point, and the
teacher's reference likelihood (``f2d2_diffusers.reference_log_likelihood``, dopri5). 2-D: exact divergence on every
point, rtol = atol = 1e-5. Digits: exact divergence costs 64 backward passes per ODE call, so by default the
reference runs on the first 50 points of each set with a Hutchinson estimate (8 Rademacher probes, drawn once per
solve) and rtol = atol = 1e-3 (on 2 shared CPU cores that is already ~10 minutes); the JSON records the settings, and F2D2's AUROCs are also given on that subset.

Checkpoint ranking (digits): the shipped final student and an early one are ranked by mean test bits/dim with the
1-step (and 2-step) map and by the reference ODE of each student's own zero-step velocity ``u(x, sigma, 0)`` on
the same subset, the same probes for both (a paired comparison). An early student comes from a short
distillation run, e.g. (about 10 minutes on one CPU thread)::

    accelerate launch --num_processes 1 --mixed_precision no training/train_f2d2.py \\
        --teacher_model_name_or_path checkpoints/fm-digits --dataset digits --output_dir /tmp/f2d2-early \\
        --train_batch_size 64 --max_train_steps 300 --learning_rate 3e-4 --lr_warmup_steps 50 \\
        --bootstrap_fraction 0.5 --anchor_starts_to_grid --teacher_finest_level --seed 0

Without ``--early_student`` the ranking is skipped with a note in the JSON.

Writes ``ood_<dataset>.json`` and ``ood_<dataset>.png`` (AUROC bars; score histograms of the 1-step map) to
``--output_dir`` (default ``benchmarks/results``, the committed numbers; ``outputs/benchmarks-quick`` with ``--quick``).

    python benchmarks/bench_ood.py --early_student /tmp/f2d2-early     # full
    python benchmarks/bench_ood.py --quick          # CI: small subsets, few probes, rtol = atol = 1e-3
    python benchmarks/bench_ood.py --replot benchmarks/results/ood_*.json    # redraw the PNGs from the JSON only
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from f2d2_diffusers.calibration import likelihood_score
from f2d2_diffusers.data import load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, redraw_from_json, require_folders, timed, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
#: Data sets with shipped checkpoints, in run order (digits, checkerboard).
DATASETS = tuple(PATHS.shipped)
F2D2_STEPS = (1, 2)
#: The method whose per-point scores the figure's histograms show (stored in the JSON as ``histogram_scores``).
HISTOGRAM_METHOD = "F2D2 1-step"
TOY_OOD = ("eight_gaussians", "two_moons")
EARLY_STUDENT_COMMAND = (
    "accelerate launch --num_processes 1 --mixed_precision no training/train_f2d2.py --teacher_model_name_or_path "
    "checkpoints/fm-digits --dataset digits --output_dir <tmp> --train_batch_size 64 --max_train_steps 300 "
    "--learning_rate 3e-4 --lr_warmup_steps 50 --bootstrap_fraction 0.5 --anchor_starts_to_grid --teacher_finest_level --seed 0"
)
#: Reference-solver defaults per kind of data: (divergence, probes, rtol/atol, points per set; 0 = all).
REFERENCE_DEFAULTS = {"digits": ("hutchinson", 8, 1e-3, 50), "toy": ("exact", 1, 1e-5, 0)}
QUICK = {"digits": dict(points=24, probes=4, subset=8, rtol=1e-3), "toy": dict(points=400, probes=1, subset=0, rtol=1e-3)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="all", choices=("all",) + DATASETS)
    p.add_argument("--quick", action="store_true", help="CI: few points per set, few probes, small reference subsets")
    p.add_argument("--student", default=None, help="F2D2 pipeline folder (default: the shipped one; one --dataset only)")
    p.add_argument("--teacher", default=None, help="teacher folder (default: the shipped one; one --dataset only)")
    p.add_argument("--early_student", default=None, help="an early F2D2 digits checkpoint to rank against --student")
    p.add_argument("--num_points", type=int, default=0, help="points per set (0: all; quick: 24 digits / 400 2-D)")
    p.add_argument("--reference_subset", type=int, default=None,
                   help="points per set for the reference solver (0: all; default 50 digits, all 2-D; quick 8 / all)")
    p.add_argument("--reference_divergence", default=None, choices=["exact", "hutchinson"],
                   help="default: hutchinson on digits, exact on 2-D")
    p.add_argument("--hutchinson_probes", type=int, default=None, help="default 8 (quick 4)")
    p.add_argument("--rtol", type=float, default=None, help="reference solver rtol = atol (default 1e-3 digits, 1e-5 2-D)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise, the noise set and the probes")
    p.add_argument("--output_dir", default=None,
                   help="default: benchmarks/results; with --quick outputs/benchmarks-quick (never the committed results)")
    p.add_argument("--replot", nargs="+", metavar="JSON", default=None,
                   help="only redraw the PNG next to each given ood_<dataset>.json (no reference solve is run)")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or PATHS.output_dir(args.quick)
    if args.dataset == "all" and (args.student or args.teacher):
        p.error("--student/--teacher need a single --dataset")
    return args


def digits_sets(num_points: int, seed: int):
    """Integer-level sets ``{name: (N, 1, 8, 8)}``: the test split and the OOD sets made from it."""
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels

    top = DIGITS_NUM_LEVELS - 1
    test = load_digits_levels("test").long()
    test = test[:num_points] if num_points else test
    blurred = F.avg_pool2d(test.float(), 3, stride=1, padding=1, count_include_pad=False).round().clamp(0, top).long()
    noise = torch.randint(0, DIGITS_NUM_LEVELS, test.shape, generator=torch.Generator().manual_seed(seed + 1))
    sets = {"in (test digits)": test, "inverted": top - test, "rotated": torch.rot90(test, 1, dims=(-2, -1)),
            "uniform_noise": noise, "blurred": blurred}
    descriptions = {"in (test digits)": "scikit-learn digits 1500 on, 17 levels", "inverted": "16 - k",
                    "rotated": "rotated by 90 degrees", "uniform_noise": f"i.i.d. uniform levels 0..16 (seed {seed + 1})",
                    "blurred": "3x3 box blur (edge-normalised), rounded to integer levels"}
    return sets, descriptions


def model_space_sets(dataset: str, num_points: int, seed: int):
    """``({name: model-space tensor}, {name: description}, num_levels)``; the first set is in-distribution."""
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_toy

    if dataset == "digits":
        levels, descriptions = digits_sets(num_points, seed)
        sets = {name: dequantize(v, DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(seed))
                for name, v in levels.items()}
        return sets, descriptions, DIGITS_NUM_LEVELS
    test, _ = load_test_split(dataset, num_points)
    sets = {f"in ({dataset} test)": test}
    descriptions = {f"in ({dataset} test)": f"load_toy({dataset!r}, 'test', {len(test)})"}
    for name in TOY_OOD:
        sets[name] = load_toy(name, "test", len(test))
        descriptions[name] = f"load_toy({name!r}, 'test', {len(test)})"
    return sets, descriptions, None


def f2d2_scores(pipe, data: torch.Tensor, steps: int, num_levels):
    out = pipe(data, num_inference_steps=steps, dequantize=False)
    return likelihood_score(out.log_prob, data[0].numel(), num_levels), out.nfe


def reference_scores(model, data: torch.Tensor, settings: dict, num_levels, seed: int):
    from f2d2_diffusers import reference_log_likelihood

    out = reference_log_likelihood(
        model, data, divergence=settings["divergence"], num_probes=settings["probes"], rtol=settings["rtol"],
        atol=settings["rtol"], num_levels=num_levels, generator=torch.Generator().manual_seed(seed), show_progress=True,
    )
    return likelihood_score(out.log_prob, data[0].numel(), num_levels), out.nfe


def split_by_set(scores: torch.Tensor, sizes):
    return dict(zip(sizes, scores.split(list(sizes.values()))))


def aurocs(per_set: dict, limit: int = 0):
    from f2d2_diffusers.evaluation.metrics import auroc

    names = list(per_set)
    s_in = per_set[names[0]][:limit or None]
    return {name: auroc(s_in, per_set[name][:limit or None]) for name in names[1:]}


def run_dataset(dataset: str, args) -> dict:
    from f2d2_diffusers import F2D2LikelihoodPipeline, load_teacher

    kind = "digits" if dataset == "digits" else "toy"
    student_path = args.student or PATHS.shipped[dataset][0]
    teacher_path = args.teacher or PATHS.shipped[dataset][1]
    require_folders(student_path, teacher_path)
    quick = QUICK[kind] if args.quick else {}
    divergence, probes, rtol, subset = REFERENCE_DEFAULTS[kind]
    settings = dict(
        method="dopri5", divergence=args.reference_divergence or divergence,
        probes=args.hutchinson_probes or quick.get("probes", probes), rtol=args.rtol or quick.get("rtol", rtol),
    )
    if settings["divergence"] == "exact":
        settings["probes"] = None
    subset = args.reference_subset if args.reference_subset is not None else quick.get("subset", subset)
    num_points = args.num_points or quick.get("points", 0)

    sets, descriptions, num_levels = model_space_sets(dataset, num_points, args.seed)
    sizes = {name: len(v) for name, v in sets.items()}
    everything = torch.cat(list(sets.values()))
    subset = min(subset or max(sizes.values()), *sizes.values())
    settings["points_per_set"] = subset
    sub_sizes = {name: subset for name in sets}
    sub_data = torch.cat([v[:subset] for v in sets.values()])
    unit = "bits/dim (17 levels)" if num_levels else "NLL (nats)"

    teacher = load_teacher(teacher_path)
    pipe = F2D2LikelihoodPipeline.from_pretrained(student_path)
    pipe.set_progress_bar_config(disable=True)

    methods, per_set_scores = [], {}
    for steps in tqdm(F2D2_STEPS, desc=f"{dataset}: F2D2 likelihood"):
        (scores, nfe), seconds = timed(lambda: f2d2_scores(pipe, everything, steps, num_levels))
        per_set = split_by_set(scores, sizes)
        per_set_scores[f"F2D2 {steps}-step"] = per_set
        methods.append(dict(method="F2D2", steps=steps, nfe=nfe, seconds=seconds, points_per_set=sizes,
                            mean_score={k: v.mean().item() for k, v in per_set.items()},
                            auroc=aurocs(per_set), auroc_on_reference_subset=aurocs(per_set, subset)))
    print(f"{dataset}: teacher reference likelihood on {subset} points per set ({len(sub_data)} in one solve)")
    (scores, nfe), seconds = timed(lambda: reference_scores(teacher, sub_data, settings, num_levels, args.seed))
    per_set = split_by_set(scores, sub_sizes)
    per_set_scores["teacher reference"] = per_set
    methods.append(dict(method="teacher reference (dopri5)", steps=None, nfe=nfe, seconds=seconds, points_per_set=sub_sizes,
                        mean_score={k: v.mean().item() for k, v in per_set.items()},
                        auroc=aurocs(per_set), auroc_on_reference_subset=aurocs(per_set)))

    in_name = next(iter(sets))
    ranking = rank_checkpoints(dataset, args, student_path, sets[in_name], subset, settings, num_levels,
                               teacher_reference=per_set[in_name])
    report = dict(
        dataset=dataset, quick=args.quick, student=student_path, teacher=teacher_path, score=unit,
        convention="higher score = more anomalous; AUROC = P(score_ood > score_in) + ties/2, OOD positive",
        in_distribution=in_name, sets=descriptions, dequantisation_seed=args.seed if num_levels else None,
        reference_settings=settings, methods=methods, ranking=ranking,
        histogram_scores={HISTOGRAM_METHOD: {k: [round(x, 5) for x in v.tolist()]
                                             for k, v in per_set_scores[HISTOGRAM_METHOD].items()}},
    )
    write_json(os.path.join(args.output_dir, f"ood_{dataset}.json"), report)
    plot_report(report, os.path.join(args.output_dir, f"ood_{dataset}.png"))

    print(f"\n{dataset}: score = {unit}; AUROC per OOD set (higher score = more anomalous)")
    names = list(sets)[1:]
    print(f"{'method':<30}{'nfe':>6}{'seconds':>9}{'in mean':>10}" + "".join(f"{n[:14]:>16}" for n in names))
    for m in methods:
        label = f"{m['method']} {m['steps']}-step" if m["steps"] else m["method"]
        print(f"{label:<30}{m['nfe']:>6}{m['seconds']:>9.2f}{m['mean_score'][in_name]:>10.4f}"
              + "".join(f"{m['auroc'][n]:>16.3f}" for n in names))
    if "agree" in ranking:
        print(f"ranking by mean test {unit}: 1-step {ranking['order_1_step']}, reference {ranking['order_reference']} -> "
              f"{'agree' if ranking['agree'] else 'disagree'}")
    else:
        print(f"ranking: {ranking.get('skipped')}")
    return report


def rank_checkpoints(dataset, args, student_path, in_data, subset, settings, num_levels, teacher_reference):
    """Rank the final and the early student by mean test score with 1 / 2 steps and with each one's reference ODE."""
    from f2d2_diffusers import F2D2LikelihoodPipeline

    if dataset != "digits":
        return dict(skipped="checkpoint ranking runs on digits only")
    if not args.early_student:
        return dict(skipped="no --early_student given; make one with: " + EARLY_STUDENT_COMMAND)
    require_folders(args.early_student)
    candidates = {"final": student_path, "early": args.early_student}
    rows = {}
    for name, path in tqdm(candidates.items(), desc="ranking checkpoints"):
        pipe = F2D2LikelihoodPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        row = dict(path=path)
        for steps in F2D2_STEPS:
            (scores, nfe), seconds = timed(lambda: f2d2_scores(pipe, in_data, steps, num_levels))
            row[f"{steps}_step"] = dict(mean=scores.mean().item(), mean_on_subset=scores[:subset].mean().item(),
                                        nfe=nfe, seconds=seconds, points=len(in_data))
        # The student's own instantaneous velocity u(x, sigma, 0), same probes (seed) for both: a paired comparison.
        (scores, nfe), seconds = timed(lambda: reference_scores(pipe.unet, in_data[:subset], settings, num_levels, args.seed))
        row["reference"] = dict(mean=scores.mean().item(), nfe=nfe, seconds=seconds, points=subset)
        row["_reference_scores"] = scores
        rows[name] = row
    diff = rows["final"].pop("_reference_scores") - rows["early"].pop("_reference_scores")

    def order(key, field="mean"):
        return sorted(rows, key=lambda n: rows[n][key][field])

    result = dict(
        criterion="mean test score (lower = better); reference = dopri5 ODE of each student's zero-step velocity",
        checkpoints=rows, teacher_reference_mean=teacher_reference.mean().item(),
        reference_paired_difference=dict(final_minus_early=diff.mean().item(),
                                         standard_error=(diff.std() / max(len(diff), 1) ** 0.5).item() if len(diff) > 1 else None),
        order_1_step=order("1_step"), order_1_step_on_subset=order("1_step", "mean_on_subset"),
        order_2_step=order("2_step"), order_reference=order("reference"),
    )
    result["agree"] = result["order_1_step"] == result["order_reference"]
    result["agree_2_step"] = result["order_2_step"] == result["order_reference"]
    return result


def _method_label(m) -> str:
    return (f"{m['method']} {m['steps']}-step" if m["steps"] else m["method"]) + f" ({m['nfe']} NFE)"


def figure_title(report) -> str:
    """What the figure compares: the F2D2 model and its teacher's reference, on which sets of data."""
    student = Path(str(report["student"])).name
    teacher = Path(str(report["teacher"])).name
    sub = report.get("reference_settings", {}).get("points_per_set")
    every = report["methods"][0]["points_per_set"][report["in_distribution"]]
    ref = f"teacher {teacher}'s dopri5 reference" + (f" (first {sub} of {every} points per set)" if sub and sub < every else "")
    return (f"{report['dataset']}: likelihood-based OOD detection, F2D2 model {student} (1 and 2 steps) vs {ref};\n"
            f"in-distribution: {report['in_distribution']}, score: {report['score']} (higher = more anomalous)")


def histogram_scores(report) -> dict:
    """``{set name: scores}`` of the 1-step map, from the report, or recomputed from its student (a second at most).

    Reports written before the scores were stored in the JSON have only their means; the 1-step map is cheap and
    deterministic (the same sets, dequantisation seed and checkpoint), so it is run again; the reference is not.
    ``None`` when that fails (no checkpoint, or one that does not load): the figure then shows the mean scores.
    """
    stored = report.get("histogram_scores", {}).get(HISTOGRAM_METHOD)
    if stored:
        return {name: np.asarray(v, dtype=np.float64) for name, v in stored.items()}
    try:
        return _recompute_histogram_scores(report)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the figure still shows everything the JSON holds
        print(f"NOTE: the 1-step scores could not be recomputed ({type(err).__name__}: {err}); "
              "the right panel shows the mean scores of the JSON instead")
        return None


def _recompute_histogram_scores(report) -> dict:
    from f2d2_diffusers import F2D2LikelihoodPipeline

    require_folders(report["student"])
    first = report["methods"][0]
    in_name = report["in_distribution"]
    num_points = first["points_per_set"][in_name]
    seed = report.get("dequantisation_seed") or 0
    sets, _, num_levels = model_space_sets(report["dataset"], num_points, seed)
    pipe = F2D2LikelihoodPipeline.from_pretrained(report["student"])
    pipe.set_progress_bar_config(disable=True)
    sizes = {name: len(v) for name, v in sets.items()}
    scores, _ = f2d2_scores(pipe, torch.cat(list(sets.values())), 1, num_levels)
    return {name: v.numpy().astype(np.float64) for name, v in split_by_set(scores, sizes).items()}


def plot_report(report, path, scores=None) -> str:
    """Draw ``ood_<dataset>.png`` from a report: AUROC bars per OOD set and method (legend under the axes, never
    on the bars), and histograms of the 1-step map's scores per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, unit = report["methods"], report["score"]
    scores = histogram_scores(report) if scores is None else scores
    names = list(methods[0]["auroc"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
        values = [m["auroc"][n] for n in names]
        axes[0].bar(xs, values, width, label=_method_label(m) + (
            f", {m['points_per_set'][report['in_distribution']]} points per set"))
        for x, v in zip(xs, values):
            axes[0].annotate(f"{v:.2f}", (x, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=6)
    axes[0].axhline(0.5, color="gray", ls=":", lw=1, label="chance (AUROC 0.5)")
    axes[0].set_xticks(np.arange(len(names)))
    axes[0].set_xticklabels(names, fontsize=8)
    axes[0].set_ylim(0, 1.08)
    axes[0].set_ylabel("AUROC (OOD set vs in-distribution)")
    axes[0].set_title("AUROC per OOD set", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
    if scores:
        for name, values in scores.items():
            axes[1].hist(values, bins=40, histtype="step", density=True, label=name)
        axes[1].set_xlabel(f"{unit}, F2D2 1 step")
        axes[1].set_ylabel("density")
        axes[1].set_title(f"Scores of the 1-step map ({len(next(iter(scores.values())))} points per set)", fontsize=9)
        axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    else:  # per-point scores unavailable: the mean score of every set and method
        sets = list(methods[0]["mean_score"])
        for i, m in enumerate(methods):
            axes[1].plot([m["mean_score"][n] for n in sets], np.arange(len(sets)) + (i - 1) * 0.15, "o",
                         label=_method_label(m))
        axes[1].set_yticks(np.arange(len(sets)), sets, fontsize=8)
        axes[1].set_xlabel(f"mean {unit}")
        axes[1].set_title("Mean score per set", fontsize=9)
        axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(figure_title(report), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_from_json(json_path, png_path=None) -> str:
    """Redraw the figure of a written ``ood_<dataset>.json`` (default: the ``.png`` beside it)."""
    return redraw_from_json(json_path, plot_report, png_path)


def main(args):
    if args.replot:
        for path in args.replot:
            print(f"wrote {plot_from_json(path)}")
        return {}
    os.makedirs(args.output_dir, exist_ok=True)
    datasets = DATASETS if args.dataset == "all" else (args.dataset,)
    reports = {d: run_dataset(d, args) for d in datasets}
    print(f"wrote {args.output_dir}/ood_<dataset>.json and .png")
    return reports


if __name__ == "__main__":
    main(parse_args())
