#!/usr/bin/env python
"""Few-step F2D2 likelihoods against the tools people use today, all in one run on the same dequantised data.

Rows (per data set):

- F2D2 at 1, 2, 4, 8 steps, bidirectional map and the paper's evaluation (``F2D2LikelihoodPipeline``);
- the reference: our teacher likelihood, torchdiffeq dopri5 with exact divergence. Every error is measured
  against this row;
- the same teacher through facebookresearch's ``flow_matching`` (``ODESolver.compute_likelihood``), dopri5, exact
  and Hutchinson divergence (benchmark-only dependency: ``bash benchmarks/setup.sh``; rows are marked skipped
  when it is not importable);
- fixed-step Euler and midpoint integration of the teacher (torchdiffeq, through ``reference_log_likelihood``).

Each row: network calls (nfe), wall seconds, mean score (bits/dim for digits, NLL in nats for 2-D data), mean
error and per-sample mean absolute error against the reference, and wall time relative to 2-step F2D2 measured
in the same run. The issue's two targets are computed at the end.

Writes ``<output_dir>/likelihood_<dataset>.json`` and ``likelihood_<dataset>.png`` (error vs wall time); the
default ``<output_dir>`` is ``benchmarks/results`` (the committed numbers), ``outputs/benchmarks-quick`` with ``--quick``.

    python benchmarks/bench_likelihood.py --quick          # a few test points, loose tolerances (CI)
    python benchmarks/bench_likelihood.py                  # whole test splits (the README numbers)
    python benchmarks/bench_likelihood.py --replot benchmarks/results/likelihood_*.json   # redraw the PNGs only
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from f2d2_diffusers.calibration import likelihood_score, likelihood_score_unit
from f2d2_diffusers.data import load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, redraw_from_json, require_folders, timed, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
#: Data sets with shipped checkpoints, in run order (digits, checkerboard).
DATASETS = tuple(PATHS.shipped)
F2D2_STEPS = (1, 2, 4, 8)
EVALUATIONS = ("bidirectional", "paper")
#: Network-call budgets at which target (b) compares F2D2 with fixed-step integration.
EQUAL_NFE = (2, 4, 8)


def _powers(low: int, high: int):
    return tuple(2**k for k in range(int(math.log2(low)), int(math.log2(high)) + 1))


#: Per mode and data set: test points, reference tolerances, fixed-step grids, divergence choices.
#: ``exact_max_nfe``: fixed-step rows up to this many network calls use the exact divergence, longer ones
#: Hutchinson with ``probes`` Rademacher probes (``None``: exact everywhere). ``fm_exact_points``: test points
#: for the flow_matching exact-divergence row (0: all of them); ``exact_fixed_points``: test points for the
#: fixed-step rows with exact divergence when d is large (``exact_max_nfe`` set; 0: all of them).
CONFIGS = {
    "full": {
        # d = 2: exact divergence is 2 backward passes per call, so every row uses it. Midpoint stops at 512 steps
        # (1024 calls), the same call range as Euler's 1024 steps.
        "checkerboard": dict(num_samples=0, rtol=1e-5, atol=1e-5, euler=_powers(2, 1024), midpoint=_powers(1, 512),
                             exact_max_nfe=None, probes=1, fm_exact_points=0, exact_fixed_points=0),
        # d = 64: one exact divergence is 64 backward passes (about 12 s per call for the 297 test images on one
        # CPU thread). To finish in about 20 CPU minutes: the reference is dopri5 with exact divergence on all 297
        # images at rtol = atol = 1e-3 (measured 62 calls; 1e-5 needs 278 and moved the mean by 0.0016 bits/dim).
        # Fixed-step rows up to 8 calls (the equal-call comparison) use the exact divergence on the first 64 test
        # images; longer ones Hutchinson with 1 Rademacher probe (flow_matching's estimator) on all images, up to
        # 64 calls (Euler 64 steps, midpoint 32). flow_matching's exact row (64 double-backward passes per call)
        # runs on the first 16 images. Subset rows are scored against the reference on the same images.
        "digits": dict(num_samples=0, rtol=1e-3, atol=1e-3, euler=_powers(2, 64), midpoint=_powers(1, 32),
                       exact_max_nfe=8, probes=1, fm_exact_points=16, exact_fixed_points=64),
    },
    "quick": {
        "checkerboard": dict(num_samples=200, rtol=1e-3, atol=1e-3, euler=_powers(2, 32), midpoint=_powers(1, 16),
                             exact_max_nfe=None, probes=1, fm_exact_points=0, exact_fixed_points=0),
        "digits": dict(num_samples=8, rtol=5e-2, atol=5e-2, euler=_powers(2, 32), midpoint=_powers(1, 16),
                       exact_max_nfe=8, probes=1, fm_exact_points=4, exact_fixed_points=0),
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="both", help="digits, checkerboard or both")
    p.add_argument("--student", default=None, help="F2D2 pipeline folder (default: the shipped one; one data set only)")
    p.add_argument("--teacher", default=None, help="teacher folder (default: the shipped one; one data set only)")
    p.add_argument("--quick", action="store_true", help="a few test points, loose tolerances, fewer step counts")
    p.add_argument("--num_samples", type=int, default=None, help="override the number of test points (0: whole split)")
    p.add_argument("--rtol", type=float, default=None, help="override the dopri5 tolerances (reference and flow_matching)")
    p.add_argument("--atol", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="dequantisation noise and Hutchinson probes")
    p.add_argument("--output_dir", default=None,
                   help="default: benchmarks/results; with --quick outputs/benchmarks-quick (never the committed results)")
    p.add_argument("--reuse_teacher_rows", action="store_true",
                   help="take the teacher-side rows (reference, flow_matching, fixed-step) from <output_dir>/cache/ when "
                        "they were computed for the same teacher weights, data and settings, and recompute only the "
                        "F2D2 rows (seconds after retraining a student; their wall times then come from that earlier run)")
    p.add_argument("--replot", nargs="+", metavar="JSON", default=None,
                   help="only redraw the PNG next to each given likelihood_<dataset>.json (nothing is measured)")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or PATHS.output_dir(args.quick)
    return args


def _teacher_cache(teacher_path, dataset, n, cfg, seed, fm_version, output_dir):
    """``(stem, key)`` of the teacher-side rows' cache: the teacher's weights, the data and every setting.

    The cache is ``<stem>.json`` (key, date, rows) and ``<stem>.safetensors`` (per-point scores by row name).
    """
    import hashlib

    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(teacher_path)):
        if "checkpoint-" in root:
            continue
        for name in sorted(files):
            if name.endswith((".safetensors", ".bin", ".json")) and name != "README.md":
                with open(os.path.join(root, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    settings = json.dumps(dict(dataset=dataset, n=n, seed=seed, fm=fm_version, torch=torch.__version__,
                               cfg={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}), sort_keys=True)
    digest.update(settings.encode())
    return os.path.join(output_dir, "cache", f"likelihood_{dataset}_teacher_rows"), digest.hexdigest()


def save_teacher_rows(stem: str, key: str, scores: dict, rows: list) -> None:
    """Cache the teacher-side rows: their per-point scores (safetensors) and the rows themselves (JSON)."""
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    save_file({name: s.contiguous() for name, s in scores.items()}, stem + ".safetensors", metadata={"key": key})
    write_json(stem + ".json", dict(key=key, date=time.strftime("%Y-%m-%d %H:%M:%S"), rows=rows))


def load_teacher_rows(stem: str, key: str):
    """``(cache or None, note)``: the cache of :func:`save_teacher_rows` as ``{key, date, rows, scores}`` when both
    files are there and were written for ``key``."""
    if not (os.path.isfile(stem + ".json") and os.path.isfile(stem + ".safetensors")):
        return None, f"NOTE: no cache at {stem}.json/.safetensors; recomputing every row"
    with open(stem + ".json") as f:
        blob = json.load(f)
    with safe_open(stem + ".safetensors", framework="pt") as f:
        tensor_key = (f.metadata() or {}).get("key")
    if blob.get("key") != key or tensor_key != key:
        return None, f"NOTE: {stem}.json is for another teacher, data or settings; recomputing every row"
    blob["scores"] = load_file(stem + ".safetensors")
    return blob, f"reusing {len(blob['rows'])} teacher-side rows from {stem}.json ({blob.get('date')})"


# --------------------------------------------------------------------------------------------------- flow_matching
def flow_matching_status():
    """``(available, version or None, reason or None)``."""
    try:
        import flow_matching  # noqa: F401
        from flow_matching.solver import ODESolver  # noqa: F401
        from flow_matching.utils import ModelWrapper  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return False, None, f"flow_matching is not importable ({type(exc).__name__}: {exc}); install it with `bash benchmarks/setup.sh`"
    try:
        from importlib.metadata import version

        return True, version("flow_matching"), None
    except Exception:
        return True, getattr(flow_matching, "__version__", None), None


def flow_matching_likelihood(teacher, data, exact: bool, rtol: float, atol: float, seed: int):
    """The teacher's log-likelihood through ``flow_matching``'s ``ODESolver.compute_likelihood`` (dopri5).

    flow_matching runs t = 0 noise, t = 1 data, so its velocity is ``-v(x, sigma = 1 - t)``. Its exact divergence
    indexes the flattened dimension of ``x``, so the wrapper works on flattened samples and reshapes for the model.
    Returns ``(log_prob, nfe)``.
    """
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    from f2d2_diffusers import evaluate_velocity, standard_normal_log_prob

    sample_shape = tuple(data.shape[1:])

    class TeacherInFlowMatchingTime(ModelWrapper):
        def __init__(self, model):
            super().__init__(model)
            self.nfe = 0

        def forward(self, x, t, **extras):
            self.nfe += 1
            v = evaluate_velocity(self.model, x.reshape(x.shape[0], *sample_shape), 1.0 - t)
            return -v.reshape(x.shape[0], -1)

    wrapper = TeacherInFlowMatchingTime(teacher)
    solver = ODESolver(velocity_model=wrapper)
    with torch.random.fork_rng():  # its Hutchinson probe comes from the global generator
        torch.manual_seed(seed)
        _, log_prob = solver.compute_likelihood(
            x_1=data.reshape(data.shape[0], -1), log_p0=standard_normal_log_prob, step_size=None, method="dopri5",
            atol=atol, rtol=rtol, time_grid=torch.tensor([1.0, 0.0]), exact_divergence=exact,
        )
    return log_prob.detach(), wrapper.nfe


# --------------------------------------------------------------------------------------------------------- runner
def run_dataset(dataset, student_path, teacher_path, cfg, args, mode, partial_path=None):
    from f2d2_diffusers import F2D2LikelihoodPipeline, load_teacher, reference_log_likelihood

    require_folders(student_path, teacher_path)
    data, num_levels = load_test_split(dataset, cfg["num_samples"], args.seed)
    n, num_dims = len(data), data[0].numel()
    unit = likelihood_score_unit(num_levels)
    fm_available, fm_version, fm_reason = flow_matching_status()
    if not fm_available:
        print(f"NOTE: {fm_reason}. The flow_matching rows are marked skipped.")
    print(f"\n== {dataset}: {n} test points (d = {num_dims}), {mode} mode, torch threads {torch.get_num_threads()} ==")

    try:
        teacher = load_teacher(teacher_path)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}")
    try:
        pipe = F2D2LikelihoodPipeline.from_pretrained(student_path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot load an F2D2 pipeline from {student_path}: {exc}")
    pipe.set_progress_bar_config(disable=True)

    rows = []
    reference = {}
    diffs = {}  # per-point score(row) - score(reference), for errors on matching subsets
    scores = {}  # per-point scores of the teacher-side rows, for the cache
    cache_path, cache_key = _teacher_cache(teacher_path, dataset, n, cfg, args.seed, fm_version, args.output_dir)
    cached = None
    if getattr(args, "reuse_teacher_rows", False):
        cached, note = load_teacher_rows(cache_path, cache_key)
        print(note)
    if cached:
        reference["score"] = cached["scores"][cached["rows"][0]["name"]]
        for row in cached["rows"]:
            row = dict(row, reused_from_cache=cached.get("date"))
            if not row["skipped"]:
                diffs[row["name"]] = cached["scores"][row["name"]] - reference["score"][: row["num_points"]]
            rows.append(row)

    def add_row(name, method, divergence, steps, nfe, log_prob, seconds, points=None, vjp_per_call=0, **extra):
        points = n if points is None else points
        s = likelihood_score(log_prob, num_dims, num_levels)
        if method != "f2d2":
            scores[name] = s
        row = dict(name=name, method=method, divergence=divergence, steps=steps, nfe=nfe, num_points=points,
                   seconds=seconds, seconds_full=seconds * n / points, backward_passes=nfe * vjp_per_call,
                   value=s.mean().item(), skipped=False, reason=None, **extra)
        if reference:
            diff = s - reference["score"][:points]
            diffs[name] = diff
            row.update(error=diff.mean().item(), abs_error=diff.abs().mean().item(),
                       reference_value=reference["score"][:points].mean().item())
        else:
            row.update(error=0.0, abs_error=0.0, reference_value=row["value"])
        rows.append(row)
        print(f"  {name:<36} nfe {nfe:>5}  {seconds:8.2f} s  {unit} {row['value']:.4f}  error {row['error']:+.4f}"
              f"  |error| {row['abs_error']:.4f}" + (f"  ({points} points)" if points != n else ""), flush=True)
        return row

    def skip_row(name, method, divergence, reason, points=None):
        rows.append(dict(name=name, method=method, divergence=divergence, steps=None, nfe=None,
                         num_points=n if points is None else points, seconds=None, seconds_full=None,
                         backward_passes=None, value=None, skipped=True, reason=reason, error=None, abs_error=None,
                         reference_value=None))
        print(f"  {name:<36} skipped: {reason}")

    def build_report(complete):
        order = {"reference": 0, "f2d2": 1, "flow_matching": 2, "euler": 3, "midpoint": 4}
        rows.sort(key=lambda r: (order[r["method"]], r["method"] == "flow_matching" and r["divergence"] == "exact"))
        base = next((r for r in rows if r["method"] == "f2d2" and r["evaluation"] == "bidirectional"
                     and r["steps"] == 2), None)
        for r in rows:
            r["time_ratio_vs_f2d2_2step"] = (None if r["skipped"] or base is None
                                             else r["seconds_full"] / base["seconds_full"])
        targets = compute_targets(rows, diffs) if complete else None
        notes = [
            "All rows score the same dequantised test points (one seeded noise draw); errors are score(row) - "
            "score(reference) per point, in " + unit + ("; bits/dim on the 17-level grey scale" if num_levels else
                                                         "; the score is the NLL in nats"),
            "seconds: wall time of the row's call on this machine; F2D2 rows: median of 3 calls after a warm-up, "
            "other rows: one call. seconds_full = seconds * num_points_total / num_points (rows run on a subset are "
            "scaled linearly to the whole set); ratios use seconds_full and are measured within this run.",
            "nfe = velocity/flow-map network calls; backward_passes = vector-Jacobian products spent on divergences.",
            f"reference: torchdiffeq dopri5, rtol {cfg['rtol']}, atol {cfg['atol']}, exact divergence. flow_matching rows "
            "use the same method and tolerances; its Hutchinson estimator uses one Rademacher probe.",
            "fixed-step rows: exact divergence" + ("" if cfg["exact_max_nfe"] is None else
                                                   f" up to {cfg['exact_max_nfe']} network calls, Hutchinson with "
                                                   f"{cfg['probes']} Rademacher probe(s) beyond (cost)"),
        ]
        if cfg["fm_exact_points"] and cfg["fm_exact_points"] < n:
            notes.append(f"flow_matching exact row: first {min(cfg['fm_exact_points'], n)} test points only (64 "
                         "double-backward passes per call); its error is against the reference on those points.")
        if cfg["exact_max_nfe"] is not None and cfg["exact_fixed_points"] and cfg["exact_fixed_points"] < n:
            notes.append(f"fixed-step rows with exact divergence: first {cfg['exact_fixed_points']} test points only "
                         f"({num_dims} backward passes per call); errors against the reference on those points.")
        notes.append("targets: F2D2's error is taken on the same points as the row it is compared with.")
        if cached:
            notes.append(f"teacher-side rows reused from {cached.get('date')} (--reuse_teacher_rows, same teacher "
                         "weights, data and settings); their wall times come from that run, so time ratios mix runs.")
        report = dict(
            dataset=dataset, mode=mode, student=student_path, teacher=teacher_path, num_points=n, num_dims=num_dims,
            num_levels=num_levels, unit=unit, seed=args.seed,
            config=dict(cfg, euler=list(cfg["euler"]), midpoint=list(cfg["midpoint"]), f2d2_steps=list(F2D2_STEPS)),
            flow_matching=dict(available=fm_available, version=fm_version, reason=fm_reason),
            machine=dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                         threads=torch.get_num_threads(), cpu_count=os.cpu_count()),
            complete=complete, notes=notes, rows=rows, targets=targets,
        )
        return report

    # Cheapest first after the reference, so a stopped run still leaves the headline rows in its partial JSON.
    jobs = ["reference"] + [("f2d2", e, k) for e in EVALUATIONS for k in F2D2_STEPS] + ["fm-hutchinson"]
    jobs += [("fixed", m, k) for m in ("euler", "midpoint") for k in cfg[m]] + ["fm-exact"]
    progress = tqdm(jobs, desc=f"{dataset} rows", unit="row")
    generator_seed = args.seed + 1
    for job in progress:
        if cached and not (isinstance(job, tuple) and job[0] == "f2d2"):
            continue
        if rows and partial_path:  # what is done so far, in case the run is stopped
            write_json(partial_path, build_report(False))
        if job == "reference":
            out, seconds = timed(lambda: reference_log_likelihood(
                teacher, data, method="dopri5", divergence="exact", rtol=cfg["rtol"], atol=cfg["atol"]))
            reference["score"] = likelihood_score(out.log_prob, num_dims, num_levels)
            add_row("reference dopri5 exact (ours)", "reference", "exact", None, out.nfe, out.log_prob, seconds,
                    vjp_per_call=num_dims, rtol=cfg["rtol"], atol=cfg["atol"])
        elif job[0] == "f2d2":
            _, evaluation, steps = job

            def call():
                return pipe(data, num_inference_steps=steps, dequantize=False, evaluation=evaluation)

            call()  # warm-up; F2D2 rows last well under a second, so time the median of 3 calls
            times = []
            for _ in range(3):
                out, seconds = timed(call)
                times.append(seconds)
            add_row(f"F2D2 {evaluation} {steps} step{'s' * (steps > 1)}", "f2d2", evaluation, steps, out.nfe,
                    out.log_prob, statistics.median(times), evaluation=evaluation)
        elif job in ("fm-exact", "fm-hutchinson"):
            exact = job == "fm-exact"
            name = f"flow_matching dopri5 {'exact' if exact else 'hutchinson'}"
            points = (cfg["fm_exact_points"] or n) if exact else n
            points = min(points, n)
            if not fm_available:
                skip_row(name, "flow_matching", "exact" if exact else "hutchinson", fm_reason, points)
                continue
            (log_prob, nfe), seconds = timed(lambda: flow_matching_likelihood(
                teacher, data[:points], exact, cfg["rtol"], cfg["atol"], generator_seed))
            add_row(name, "flow_matching", "exact" if exact else "hutchinson", None, nfe, log_prob, seconds, points,
                    vjp_per_call=num_dims if exact else 1, rtol=cfg["rtol"], atol=cfg["atol"],
                    flow_matching_version=fm_version, probes=None if exact else 1)
        else:
            _, method, steps = job
            nfe_expected = steps * (2 if method == "midpoint" else 1)
            exact = cfg["exact_max_nfe"] is None or nfe_expected <= cfg["exact_max_nfe"]
            divergence = "exact" if exact else "hutchinson"
            points = min(cfg["exact_fixed_points"] or n, n) if exact and cfg["exact_max_nfe"] is not None else n
            out, seconds = timed(lambda: reference_log_likelihood(
                teacher, data[:points], method=method, num_steps=steps, divergence=divergence, num_probes=cfg["probes"],
                generator=torch.Generator().manual_seed(generator_seed)))
            add_row(f"{method} {steps} step{'s' * (steps > 1)} ({divergence})", method, divergence, steps, out.nfe,
                    out.log_prob, seconds, points, vjp_per_call=num_dims if exact else cfg["probes"],
                    probes=None if exact else cfg["probes"])
    progress.close()
    if not cached:
        save_teacher_rows(cache_path, cache_key, scores, [r for r in rows if r["method"] != "f2d2"])
    return build_report(True)


def compute_targets(rows, diffs):
    """The issue's two targets, for both F2D2 evaluations and both error measures.

    Rows run on a subset (the first ``num_points`` test points) are compared with F2D2's error on those points.
    """
    done = [r for r in rows if not r["skipped"]]
    metrics = {"mean_error": lambda d: d.mean().abs().item(), "per_sample_mae": lambda d: d.abs().mean().item()}
    peers = [r for r in done if r["method"] != "f2d2"]
    fixed = [r for r in done if r["method"] in ("euler", "midpoint")]
    a, b = {}, {}
    for evaluation in EVALUATIONS:
        f2d2 = {r["steps"]: r for r in done if r["method"] == "f2d2" and r["evaluation"] == evaluation}
        a[evaluation], b[evaluation] = {}, {}
        for metric, measure in metrics.items():
            def err(row, points=None):
                return measure(diffs[row["name"]][:points])

            two = f2d2[2]
            ok = [r for r in peers if err(r) <= err(two, r["num_points"])]
            best = min(ok, key=lambda r: r["seconds_full"]) if ok else None
            entry = dict(f2d2_error=err(two), f2d2_seconds=two["seconds_full"])
            if best is None:
                entry.update(best_peer=None, met=None, speedup=None,
                             note="no peer row reaches 2-step F2D2's error")
            else:
                speedup = best["seconds_full"] / two["seconds_full"]
                entry.update(best_peer=best["name"], peer_error=err(best), peer_points=best["num_points"],
                             f2d2_error_same_points=err(two, best["num_points"]), peer_seconds=best["seconds_full"],
                             peer_nfe=best["nfe"], speedup=speedup, met=bool(speedup >= 100))
            a[evaluation][metric] = entry
            per_nfe = {}
            for nfe in EQUAL_NFE:
                same = [r for r in fixed if r["nfe"] == nfe]
                if nfe not in f2d2 or not same:
                    per_nfe[str(nfe)] = dict(met=None, note="no row at this call count")
                    continue
                best_fixed = min(same, key=err)
                f_err = err(f2d2[nfe], best_fixed["num_points"])
                ratio = err(best_fixed) / f_err if f_err > 0 else math.inf
                per_nfe[str(nfe)] = dict(f2d2_error=f_err, best_fixed_step=best_fixed["name"],
                                         fixed_step_error=err(best_fixed), points=best_fixed["num_points"],
                                         ratio=ratio, met=bool(ratio >= 10))
            per_nfe["all_met"] = all(v["met"] for v in per_nfe.values() if isinstance(v, dict))
            b[evaluation][metric] = per_nfe
    return {
        "a_100x_less_wall_time_at_equal_or_better_error": dict(
            definition="best peer = fastest non-F2D2 row whose |error| <= 2-step F2D2's; met when its wall time "
                       "(seconds_full) is at least 100x 2-step F2D2's", results=a),
        "b_10x_lower_error_at_equal_network_calls": dict(
            definition="at 2, 4 and 8 network calls, the lowest error of Euler/midpoint integration of the teacher "
                       "divided by F2D2's error; met when at least 10", results=b),
    }


# ---------------------------------------------------------------------------------------------------------- plot
#: Colour and marker of each kind of row in the figure.
PLOT_STYLES = {
    ("f2d2", "bidirectional"): ("C3", "o", "F2D2 bidirectional"),
    ("f2d2", "paper"): ("C1", "s", "F2D2 paper evaluation"),
    ("euler", "exact"): ("C0", "^", "Euler (torchdiffeq), exact div."),
    ("euler", "hutchinson"): ("C9", "^", "Euler (torchdiffeq), Hutchinson"),
    ("midpoint", "exact"): ("C2", "v", "midpoint (torchdiffeq), exact div."),
    ("midpoint", "hutchinson"): ("C8", "v", "midpoint (torchdiffeq), Hutchinson"),
    ("flow_matching", "exact"): ("C4", "D", "flow_matching dopri5, exact div."),
    ("flow_matching", "hutchinson"): ("C5", "P", "flow_matching dopri5, Hutchinson"),
}


def plot_groups(report):
    """The figure's lines: ``[(label, rows)]``, one per kind of row *and* set of test points.

    Rows measured on different subsets (e.g. fixed-step rows with exact divergence on the first 64 test images and
    with Hutchinson on all of them) are never joined into one line; the label says which points each line is on.
    """
    n = report["num_points"]
    groups = {}
    for r in report["rows"]:
        if r["skipped"] or r["method"] == "reference":
            continue
        kind = r["evaluation"] if r["method"] == "f2d2" else r["divergence"]
        groups.setdefault((r["method"], kind, r["num_points"]), []).append(r)
    order = list(PLOT_STYLES)
    result = []
    for (method, kind, points), rs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][:2]), -kv[0][2])):
        label = PLOT_STYLES[(method, kind)][2]
        label += f", all {n} points" if points == n else f", first {points} of {n} points"
        result.append(((method, kind, points), label, sorted(rs, key=lambda r: (r["nfe"], r["seconds_full"]))))
    return result


def plot(report, path):
    """Error against wall time, one line per kind of row and set of test points (see :func:`plot_groups`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = report["num_points"]
    fig, ax = plt.subplots(figsize=(9.5, 5.6))
    floor = 1e-6
    for (method, kind, points), label, rs in plot_groups(report):
        color, marker, _ = PLOT_STYLES[(method, kind)]
        ls = "-" if points == n else "--"  # dashed: a subset of the test points
        xs = [r["seconds_full"] for r in rs]
        ax.plot(xs, [max(abs(r["error"]), floor) for r in rs], marker=marker, ls=ls if len(rs) > 1 else "none",
                color=color, label=label, ms=5)
        ax.plot(xs, [max(r["abs_error"], floor) for r in rs], marker=marker, ls="none", color=color, mfc="none",
                ms=6, alpha=0.6)
        for r in rs:
            ax.annotate(str(r["nfe"]), (r["seconds_full"], max(abs(r["error"]), floor)), fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color=color)
    ref = next(r for r in report["rows"] if r["method"] == "reference")
    ax.axvline(ref["seconds_full"], color="k", ls=":", lw=1,
               label=f"reference: dopri5, exact div. ({ref['nfe']} calls, all {n} points)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall seconds (whole test set; subset rows scaled to it; this machine)")
    ax.set_ylabel(f"error vs reference ({report['unit']})")
    ax.set_title(f"{report['dataset']}: likelihood error against wall time, {n} test points ({report['mode']} run)\n"
                 "filled: |mean error|, hollow: per-sample MAE; labels: network calls; "
                 "solid: all points, dashed: a subset (error on that subset)", fontsize=8)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_from_json(json_path, png_path=None) -> str:
    """Redraw ``likelihood_<dataset>.png`` from its JSON (default: the ``.png`` beside it); nothing is measured."""
    return redraw_from_json(json_path, plot, png_path)


def print_summary(report):
    t = report["targets"]
    for evaluation in EVALUATIONS:
        for metric in ("mean_error", "per_sample_mae"):
            a = t["a_100x_less_wall_time_at_equal_or_better_error"]["results"][evaluation][metric]
            b = t["b_10x_lower_error_at_equal_network_calls"]["results"][evaluation][metric]
            tag = f"{evaluation}, {metric}"
            if a["best_peer"] is None:
                print(f"  target (a), {tag}: {a['note']}")
            else:
                print(f"  target (a), {tag}: best peer {a['best_peer']!r} at {a['peer_error']:.4f} vs F2D2 2-step "
                      f"{a['f2d2_error']:.4f}: {a['speedup']:.1f}x the wall time -> met={a['met']}")
            parts = [f"{k} calls {v['ratio']:.2f}x" for k, v in b.items() if isinstance(v, dict) and "ratio" in v]
            print(f"  target (b), {tag}: fixed-step error / F2D2 error: {', '.join(parts)} -> all met={b['all_met']}")


def main(args):
    if getattr(args, "replot", None):
        for path in args.replot:
            print(f"wrote {plot_from_json(path)}")
        return
    if args.dataset not in DATASETS + ("both",):
        raise SystemExit(f"error: unknown dataset {args.dataset!r}; choose digits, checkerboard or both")
    datasets = DATASETS if args.dataset == "both" else (args.dataset,)
    if (args.student or args.teacher) and len(datasets) > 1:
        raise SystemExit("error: --student/--teacher need a single --dataset (digits or checkerboard)")
    mode = "quick" if args.quick else "full"
    os.makedirs(args.output_dir, exist_ok=True)
    # Check every folder first, so a typo fails before minutes of work.
    paths = {}
    for dataset in datasets:
        student, teacher = PATHS.shipped[dataset]
        paths[dataset] = (args.student or student, args.teacher or teacher)
        require_folders(*paths[dataset])
    start = time.perf_counter()
    for dataset in datasets:
        cfg = dict(CONFIGS[mode][dataset])
        for key in ("num_samples", "rtol", "atol"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        t0 = time.perf_counter()
        name = os.path.join(args.output_dir, f"likelihood_{dataset}")
        report = run_dataset(dataset, *paths[dataset], cfg, args, mode, partial_path=name + ".json")
        report["total_seconds"] = time.perf_counter() - t0
        write_json(name + ".json", report)
        plot(report, name + ".png")
        print_summary(report)
        print(f"wrote {name}.json and .png ({report['total_seconds']:.0f} s)")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(parse_args())
