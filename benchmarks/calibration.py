#!/usr/bin/env python
"""Calibration of an F2D2 checkpoint against its teacher's ODE, in total and segment by segment.

For each grid of K = 1, 2, 4, 8 steps (uniform, or the student's shifted grid, ``docs/method.md`` 5.7): the
few-step likelihood (bidirectional map and the paper's evaluation) against the teacher's dopri5 likelihood on the
same dequantised test data, and, per segment, the error of the map's divergence integral and end point when
started from the teacher's own state; and the error budget (``docs/method.md`` section 6.1: the error in
log-density split into the prior term's radial and spread parts and the divergence part, with the map's own
Jacobian log-determinant where ``d <= 64``).

Writes ``<output_dir>/calibration_<dataset>.json`` and ``calibration_<dataset>.png``.

    python benchmarks/calibration.py --student checkpoints/f2d2-digits --teacher checkpoints/fm-digits --dataset digits \
        --rtol 1e-4 --atol 1e-4   # the tolerance of the committed digits figures
    python benchmarks/calibration.py --replot benchmarks/results/calibration_*.json   # redraw the PNGs only
"""

import argparse
import json
import os
from pathlib import Path

import torch

from f2d2_diffusers.data import EMBEDDED_DATASETS, load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, redraw_from_json, require_folders, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
GRIDS = (1, 2, 4, 8)
MEASUREMENT_DEFAULTS = dict(rtol=1e-5, atol=1e-5, seed=0, hutchinson_probes=16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", help="F2D2 pipeline folder (required unless --replot)")
    p.add_argument("--teacher", help="teacher folder (unet/ inside; required unless --replot)")
    p.add_argument("--dataset", choices=EMBEDDED_DATASETS, help="required unless --replot")
    p.add_argument("--replot", nargs="+", metavar="JSON", default=None,
                   help="only redraw the PNG next to each given calibration_<dataset>.json (no model is run)")
    p.add_argument("--num_samples", type=int, default=0, help="test points to score (0: the whole test split)")
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"], help="reference divergence")
    # Defaults are filled in after parsing: with --replot --update_card, only values given on the command line may
    # stand in for settings an older report did not record.
    p.add_argument("--hutchinson_probes", type=int, default=None, help="default 16")
    p.add_argument("--rtol", type=float, default=None, help="default 1e-5")
    p.add_argument("--atol", type=float, default=None, help="default 1e-5")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the dequantisation noise (the same for both sides); default 0")
    p.add_argument("--output_dir", default=PATHS.results_dir, help="default: benchmarks/results")
    p.add_argument("--sampling_path_samples", type=int, default=64,
                   help="also compare the log-density F2D2Pipeline returns with its own 1/2/4-step samples against the "
                        "teacher's ODE at those samples, on this many samples (0: skip)")
    p.add_argument("--sampling_path_only", action="store_true",
                   help="measure only the sampling path and write it into the existing calibration_<dataset>.json in "
                        "--output_dir (same student, teacher and settings; the test-split rows are kept)")
    p.add_argument("--update_card", action="store_true",
                   help="also write the table into the student's model card (README.md, calibration section); with "
                        "--replot, from the rows recorded in each JSON (into the card of the student it names)")
    args = p.parse_args(argv)
    if not args.replot:
        missing = [f"--{k}" for k in ("student", "teacher", "dataset") if getattr(args, k) is None]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)} (or --replot JSON)")
        for name, value in MEASUREMENT_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    return args


def main(args):
    if args.replot:
        for path in args.replot:
            print(f"wrote {plot_from_json(path)}")
            if args.update_card:
                print(f"updated the calibration section of {update_card(path, args)}")
        return
    from f2d2_diffusers import (
        F2D2LikelihoodPipeline,
        ReferenceLikelihoodOutput,
        likelihood_calibration,
        likelihood_error_budget,
        load_teacher,
        segment_calibration,
    )
    from f2d2_diffusers.flow_map import shift_sigmas

    require_folders(args.student, args.teacher)
    if args.sampling_path_only:
        return refresh_sampling_path(args)
    os.makedirs(args.output_dir, exist_ok=True)
    data, num_levels = load_test_split(args.dataset, args.num_samples, args.seed)

    teacher = load_teacher(args.teacher)
    pipe = F2D2LikelihoodPipeline.from_pretrained(args.student)
    pipe.set_progress_bar_config(disable=True)
    student = pipe.unet.eval()

    # The reference is recorded on the student's own 8-step likelihood grid (its scheduler's shift for that
    # direction), so every segment below is a step the map was trained on. A student whose sampling grid differs
    # (likelihood_shift) gets no sampling segments: the reference holds no points of that grid.
    shift = pipe.scheduler.shift_for("likelihood")
    directions = ("likelihood", "sample") if pipe.scheduler.shift_for("sample") == shift else ("likelihood",)
    sigmas = shift_sigmas(torch.arange(max(GRIDS) + 1, dtype=torch.float64) / max(GRIDS), shift).tolist()
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
        for direction in directions:
            cal = segment_calibration(student, sub, [sigmas[i] for i in idx], direction=direction)
            segments[f"{steps}-{direction}"] = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in cal.items()}

    # The map's own Jacobian costs d backward passes per step count: images up to 8x8 and vector data only.
    budget = likelihood_error_budget(student, data, reference.trajectory[-1], reference.divergence_integrals[-1],
                                     steps=GRIDS, map_log_det=data[0].numel() <= 64, shift=shift)
    error_budget = dict(rows=budget.rows, teacher_end_point_norm=budget.teacher_end_point_norm)

    print(f"\n{args.dataset}: {len(data)} test points, reference {args.divergence} divergence, {reference.nfe} NFE, "
          f"{reference_seconds:.1f} s; errors in {unit}")
    print(f"{'method':<16}{'eval':<15}{'steps':>6}{'value':>10}{'error':>10}{'|error|':>10}{'seconds':>9}")
    for r in rows:
        print(f"{r['method']:<16}{r['evaluation']:<15}{r['steps'] or '-':>6}{r['value']:>10.4f}{r['error']:>+10.4f}"
              f"{r['abs_error']:>10.4f}{r['seconds']:>9.2f}")
    for key in [f"8-{direction}" for direction in directions]:
        s = segments[key]
        print(f"per segment ({key}): teacher integral {[round(v, 2) for v in s['teacher_integral']]}")
        print(f"    integral error (nats) {[round(v, 2) for v in s['integral_error']]}")
        print(f"    state error (L2)      {[round(v, 3) for v in s['state_error']]}")

    print("error budget (nats of log-density, positive = too optimistic; docs/method.md section 6.1):")
    for b in budget.rows:
        jacobian = (f"; map's own log-det {b['map_log_det']:.2f} (self-consistent error {b['self_consistent_error']:+.2f})"
                    if "map_log_det" in b else "")
        print(f"    {b['steps']} steps: radial {b['radial']:+.3f} + spread {b['spread']:.3f} + divergence "
              f"{b['divergence']:+.3f} = {b['error']:+.3f}; end-point error {b['end_point_error']:.3f}{jacobian}")

    sampling_path = measure_sampling_path(pipe, teacher, args) if args.sampling_path_samples else []

    name = f"calibration_{args.dataset}"
    write_json(os.path.join(args.output_dir, name + ".json"),
               dict(student=args.student, teacher=args.teacher, dataset=args.dataset, num_points=len(data), unit=unit,
                    reference_divergence=args.divergence, hutchinson_probes=args.hutchinson_probes, rtol=args.rtol,
                    atol=args.atol, seed=args.seed, grid_shift=shift,
                    sample_grid_shift=pipe.scheduler.shift_for("sample"), rows=rows, segments=segments,
                    sampling_path=sampling_path,
                    error_budget=error_budget))

    plot_from_json(os.path.join(args.output_dir, name + ".json"))  # the figure is drawn from the JSON it shows
    print(f"wrote {args.output_dir}/{name}.json and .png")
    if args.update_card:
        print(f"updated the calibration section of {update_card(os.path.join(args.output_dir, name + '.json'), args)}")


def measure_sampling_path(pipe, teacher, args) -> list:
    """The log-density ``F2D2Pipeline`` returns with its own 1/2/4-step samples, free and re-scored, against the
    teacher's ODE at those samples (``f2d2_diffusers.calibration.sampling_path_calibration``)."""
    from f2d2_diffusers import F2D2Pipeline
    from f2d2_diffusers.calibration import sampling_path_calibration

    sampler = F2D2Pipeline.from_pipe(pipe)
    sampler.set_progress_bar_config(disable=True)
    rows = sampling_path_calibration(
        sampler, teacher, args.sampling_path_samples, steps=(1, 2, 4),
        generator=torch.Generator().manual_seed(args.seed), divergence=args.divergence,
        num_probes=args.hutchinson_probes, rtol=args.rtol, atol=args.atol)
    for r in rows:
        print(f"sampling path, {r['steps']} steps: map {r['value']:.4f} vs teacher {r['reference']:.4f} "
              f"({r['unit']}, log-density; error {r['error']:+.4f}, per-sample {r['abs_error']:.4f}); re-scored "
              f"in {r['rescored_nfe']} more calls: error {r['rescored_error']:+.4f}, per-sample "
              f"{r['rescored_abs_error']:.4f}")
    return rows


def refresh_sampling_path(args) -> str:
    """``--sampling_path_only``: re-measure the sampling path of an existing report, which must name the same
    student and teacher and record the same settings (where it records them); its other rows are kept."""
    from f2d2_diffusers import F2D2LikelihoodPipeline, load_teacher

    if not args.sampling_path_samples:
        raise SystemExit("--sampling_path_only needs --sampling_path_samples > 0")
    if args.update_card:
        raise SystemExit("--sampling_path_only does not change the card's table: drop --update_card")
    path = Path(args.output_dir) / f"calibration_{args.dataset}.json"
    if not path.is_file():
        raise SystemExit(f"--sampling_path_only updates an existing report, and {path} does not exist")
    report = json.loads(path.read_text())
    pipe = F2D2LikelihoodPipeline.from_pretrained(args.student)
    same = dict(student=args.student, teacher=args.teacher, dataset=args.dataset, reference_divergence=args.divergence,
                grid_shift=pipe.scheduler.shift_for("likelihood"), sample_grid_shift=pipe.scheduler.shift_for("sample"),
                **{k: getattr(args, k) for k in MEASUREMENT_DEFAULTS})
    if args.divergence != "hutchinson":
        del same["hutchinson_probes"]  # exact divergence draws no probes
    clashes = [f"{k}: {v!r} here, {r!r} in the report" for k, v, r in differing_settings(report, same)]
    if clashes:
        raise SystemExit(f"{path} was measured with other settings ({'; '.join(clashes)})")
    report["sampling_path"] = measure_sampling_path(pipe, load_teacher(args.teacher), args)
    # Reports from before the settings were recorded keep None at the top level: these say what the rows used.
    report["sampling_path_settings"] = dict(samples=args.sampling_path_samples, rtol=args.rtol, atol=args.atol,
                                            seed=args.seed, divergence=args.divergence)
    write_json(path, report)
    print(f"wrote the sampling path into {path}")
    return str(path)


def differing_settings(report: dict, values: dict) -> list:
    """``(name, value, recorded)`` for each of ``values`` that ``report`` records otherwise. A setting the report
    does not record (older reports) or that is not given (``None``) is not compared; paths compare as paths."""

    def same(value, recorded):
        if isinstance(value, str) and isinstance(recorded, str):
            return os.path.normpath(value) == os.path.normpath(recorded)
        return value == recorded

    return [(k, v, report[k]) for k, v in values.items()
            if v is not None and report.get(k) is not None and not same(v, report[k])]


def update_card(json_path, args) -> str:
    """Write the calibration table of a written ``calibration_<dataset>.json`` into the model card of the student it
    names. The tolerance, seed and probes come from the report (a different value on the command line is an error);
    reports written before they were recorded take them from the command line."""
    from f2d2_diffusers.training.model_card import calibration_markdown, portable_path, update_calibration

    report = json.loads(Path(json_path).read_text())
    images, exact = report["dataset"] == "digits", report["reference_divergence"] == "exact"
    clashes = [f"--{k} {v} (the report says {r})"
               for k, v, r in differing_settings(report, {k: getattr(args, k) for k in MEASUREMENT_DEFAULTS})]
    if clashes:
        raise SystemExit(f"{json_path} was measured with other settings: {', '.join(clashes)}")
    settings = {k: report.get(k, getattr(args, k)) for k in MEASUREMENT_DEFAULTS}
    needed = ["rtol", "atol"] + ["seed"] * images + ["hutchinson_probes"] * (not exact)  # the ones the card states
    unknown = [f"--{k}" for k in needed if settings[k] is None]
    if unknown:
        raise SystemExit(f"{json_path} does not record {', '.join(unknown)}: give the values it was measured with")
    probes = "exact divergence" if exact else f"Hutchinson, {settings['hutchinson_probes']} probes"
    where = "digits test images (images 1500 on)" if images else f"'{report['dataset']}' test points"
    description = (
        f"Measured by `benchmarks/calibration.py` on {report['num_points']} {where}"
        + (f", one dequantisation draw (seed {settings['seed']}) shared by all rows. " if images else ". ")
        + f"Reference: the teacher's likelihood ODE, dopri5 (rtol = {settings['rtol']}, atol = {settings['atol']}), "
        f"{probes}, {report['rows'][0]['nfe']} network calls. "
        f"Per-segment errors: `{portable_path(os.fspath(json_path))}`."
    )
    return update_calibration(report["student"], calibration_markdown(report["rows"], report["unit"], description))


def figure_title(report) -> str:
    """What the figure compares: the F2D2 model, the data and the reference it is measured against."""
    student = Path(str(report["student"])).name or str(report["student"])
    teacher = Path(str(report["teacher"])).name or str(report["teacher"])
    return (f"Calibration: F2D2 model {student} against the reference likelihood of its teacher {teacher} "
            f"(dopri5 ODE, {report.get('reference_divergence', 'exact')} divergence)\n"
            f"on {report['num_points']} {report['dataset']} test points; errors = F2D2 minus reference")


def plot_report(report, path) -> str:
    """Draw the calibration figure of one report (the dict written as ``calibration_<dataset>.json``) into ``path``.

    Three panels: the total error against the number of steps; the teacher's divergence integral per segment of
    the 8-step likelihood grid; and the map's per-segment error on its own scale (it is ~100x smaller than the
    integrals), with each value written under its bar. Reports with an ``error_budget`` get a fourth panel, its
    parts stacked per step count.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, unit, segments = report["rows"], report["unit"], report["segments"]
    budget = report.get("error_budget")  # reports written before the budget existed have three panels
    ratios = [1.05, 1, 1.15] + ([1.05] if budget else [])
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * len(ratios), 5.2), gridspec_kw=dict(width_ratios=ratios))
    for evaluation, marker in (("bidirectional", "o"), ("paper", "s")):
        rs = sorted((r for r in rows if r["evaluation"] == evaluation), key=lambda r: r["steps"])
        if not rs:
            continue
        axes[0].plot([r["steps"] for r in rs], [max(abs(r["error"]), 1e-6) for r in rs], marker=marker,
                     label=f"|mean error|, {evaluation}")
        axes[0].plot([r["steps"] for r in rs], [max(r["abs_error"], 1e-6) for r in rs], marker=marker, ls=":",
                     label=f"per-sample MAE, {evaluation}")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xticks(list(GRIDS), [str(k) for k in GRIDS])
    axes[0].set_xlabel("steps (network calls)")
    axes[0].set_ylabel(f"error vs reference ({unit})")
    axes[0].set_title("Likelihood error vs steps", fontsize=10)
    axes[0].grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: no line hidden

    s = segments["8-likelihood"]
    sigmas = s["sigmas"]
    centres = [(a + b) / 2 for a, b in zip(sigmas[:-1], sigmas[1:])]
    width = 0.8 * min(b - a for a, b in zip(sigmas[:-1], sigmas[1:]))
    labels = [str(k) for k in range(1, len(centres) + 1)]
    n = len(centres)
    if all(abs(v - k / n) < 1e-9 for k, v in enumerate(sigmas)):
        segment_axis = f"segment k of the {n}-step likelihood grid (sigma from (k-1)/{n} to k/{n})"
    else:  # a student trained on a shifted grid (docs/method.md 5.7): its own, non-uniform segments, drawn evenly
        # spaced (at their sigma the short ones next to the data would crowd their labels into one another)
        centres, width = list(range(1, n + 1)), 0.8
        segment_axis = (f"segment k of the student's {n}-step likelihood grid, evenly spaced\n"
                        f"(sigma {', '.join(f'{v:.3g}' for v in sigmas)})")
    axes[1].bar(centres, s["teacher_integral"], width=width, color="0.55")
    axes[1].axhline(0, color="k", lw=0.6)
    axes[1].set_xticks(centres, labels, fontsize=8)
    axes[1].set_xlabel(segment_axis, fontsize=8)
    axes[1].set_ylabel("divergence integral per sample (nats)")
    axes[1].set_title("Teacher: divergence integral per segment", fontsize=10)
    axes[1].grid(alpha=0.3, axis="y")

    ax = axes[2]
    ax.bar(centres, s["integral_error"], width=width, color="C3", label="mean error (map minus teacher)")
    if "integral_abs_error" in s:
        ax.plot(centres, s["integral_abs_error"], "D", color="k", mfc="none", ms=5, label="per-sample mean |error|")
    ax.axhline(0, color="k", lw=0.6)
    values = list(s["integral_error"]) + list(s.get("integral_abs_error", []))
    low, high = min(0.0, *values), max(0.0, *values)
    pad = 0.08 * max(high - low, 1e-12)
    ax.set_ylim(low - pad, high + 3 * pad)  # headroom for the legend
    # Each segment's mean error is written under its bar, in the tick label: always readable, never on a marker.
    ax.set_xticks(centres, [f"{label}\n{value:+.2g}" for label, value in zip(labels, s["integral_error"])], fontsize=7)
    ax.set_xlabel(segment_axis + ";\nunder each segment number: its mean error (nats)", fontsize=8)
    ax.set_ylabel("divergence integral error (nats, own scale)")
    ax.set_title("F2D2: per-segment error (map started on the teacher's path)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper right")

    if budget:
        plot_error_budget(axes[3], budget["rows"])
    fig.suptitle(figure_title(report), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_error_budget(ax, rows) -> None:
    """Stacked bars of the radial, spread and divergence parts per step count, with their sum marked."""
    positions = range(len(rows))
    parts = (("radial", "C0", "radial: x_K . (T - x_K)"), ("spread", "C1", "spread: |T - x_K|^2 / 2"),
             ("divergence", "C2", "divergence: sum h D - integral"))
    above, below = [0.0] * len(rows), [0.0] * len(rows)
    for key, colour, label in parts:
        values = [r[key] for r in rows]
        bottoms = [a if v >= 0 else b for v, a, b in zip(values, above, below)]
        ax.bar(positions, values, bottom=bottoms, width=0.6, color=colour, label=label)
        above = [a + max(v, 0.0) for v, a in zip(values, above)]
        below = [b + min(v, 0.0) for v, b in zip(values, below)]
    ax.plot(positions, [r["error"] for r in rows], "D", color="k", ms=6, label="total error (sum)")
    if "self_consistent_error" in rows[0]:
        ax.plot(positions, [r["self_consistent_error"] for r in rows], "x", color="C3", ms=8, mew=2,
                label="log N(x_K) + map's own log-det, minus teacher")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(list(positions), [f"{r['steps']}\n{r['error']:+.3g}" for r in rows], fontsize=8)
    ax.set_xlabel("steps; under each: total error (nats)", fontsize=8)
    ax.set_ylabel("log-density error, map minus teacher (nats)")
    ax.set_title("Error budget: where the bias comes from", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)


def plot_from_json(json_path, png_path=None) -> str:
    """Redraw the figure of a written ``calibration_<dataset>.json`` (default: the ``.png`` beside it); no model runs."""
    return redraw_from_json(json_path, plot_report, png_path)


if __name__ == "__main__":
    main(parse_args())
