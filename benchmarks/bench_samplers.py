#!/usr/bin/env python
"""Energy samplers (``docs/method.md`` section 7): evidence and sample quality against network calls.

For every shipped sampler (``checkpoints/sampler-<target>``) and K in ``--steps`` (1, 2, 4, 8, 16, 128):

- deterministic flow (``EnergySamplerPipeline.__call__``, ``volume="auto"``: the first-order log-volume ``h tr(du/dx)``,
  exact trace for d <= 64, the paper's DF weight) and the exact Euler change of variables (``volume="logdet"``);
- Euler-Maruyama path-space weights from the SDE (``EnergySamplerPipeline.euler_maruyama``);

each with ``--num_samples`` samples (2,000) and ``--repeats`` seeds (20; K = 128 rows take ``--repeats_long``, 3, as
they cost 128 calls plus d backward passes each): mean and standard deviation of ``|log Z error|`` (against the true
value, or the stored reference estimate for breast-cancer), ELBO, ESS / N, wall seconds and network calls. Against
2,000 exact target samples (seed 0; targets with an exact sampler): Sinkhorn divergence (POT,
``empirical_sinkhorn_divergence`` on the first 1,000 points of each set, squared-Euclidean cost divided by the
target's squared prior scale, points clipped to
``[-30, 30]`` as the reference code does for the funnel, ``reg`` = 0.05 x the mean cost; ``exact_vs_exact`` is its floor) and MMD^2 (``f2d2_diffusers.evaluation.metrics.mmd_rbf`` with the median-distance bandwidth), on the first
repeat. Peer: ``dynesty`` static nested sampling on the same target (Gaussian prior ``N(0, s^2 I)``, ``log rho`` minus
its log-density as the likelihood, 500 live points, ``dlogz = 0.1``), its ``log Z`` error and number of target
evaluations. The issue's targets (GMM-40 |err| <= 0.5 at K = 1 and <= 0.1 at 4; Funnel <= 1.0 / <= 0.5; Many-Well-32
<= 2 at 4) are stored with ``met`` flags.

Writes ``samplers.json`` and ``samplers.png`` to ``--output_dir`` (``benchmarks/results``; ``--quick``:
``outputs/benchmarks-quick``, fewer samples, repeats and steps, no dynesty).

    OMP_NUM_THREADS=1 python benchmarks/bench_samplers.py
    OMP_NUM_THREADS=1 python benchmarks/bench_samplers.py --quick
"""

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from f2d2_diffusers import EnergySamplerPipeline
from f2d2_diffusers.evaluation.metrics import mmd_rbf
from f2d2_diffusers.evaluation.reports import benchmark_paths, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
CHECKPOINTS = os.path.join(PATHS.repo_root, "checkpoints")
TARGETS = ("gmm40", "funnel", "breast_cancer", "many_well_32")
STEPS = (1, 2, 4, 8, 16, 128)
#: The issue's goals: target -> {K: max |log Z error|}.
GOALS = {"gmm40": {1: 0.5, 4: 0.1}, "funnel": {1: 1.0, 4: 0.5}, "many_well_32": {4: 2.0}}
#: dynesty prior scale per target (a Gaussian that covers the target's mass).
#: Sinkhorn divergence on the first SINKHORN_POINTS points of each set, clipped to [-30, 30] (prior units; the reference
#: code clips the funnel's samples so), entropic regularisation SINKHORN_REG x the mean squared distance (in prior units): a full 2000 x 2000 log-domain solve took minutes per row on one busy CPU thread.
SINKHORN_POINTS = 1000
SINKHORN_REG = 0.05
DYNESTY_SCALE = {"gmm40": 40.0, "funnel": 3.0, "breast_cancer": 1.0, "many_well_32": 2.0}


def sinkhorn(x, y, scale):
    try:
        import ot
    except ImportError:
        return None
    a = (x[:SINKHORN_POINTS] / scale).clamp(-30, 30).double().numpy()
    b = (y[:SINKHORN_POINTS] / scale).clamp(-30, 30).double().numpy()
    reg = SINKHORN_REG * float(ot.dist(a, b).mean())
    value = ot.bregman.empirical_sinkhorn_divergence(a, b, reg, numIterMax=300, stopThr=1e-7, warn=False)
    return float(value)


def mmd_median(x, y):
    z = torch.cat([x, y]).double()
    idx = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(0))[:1000]
    bandwidth = float(torch.cdist(z[idx], z[idx]).median())
    return mmd_rbf(x, y, bandwidths=(bandwidth,))


def run_estimator(fn, target, steps, num_samples, repeats, reference, metrics):
    rows = []
    for r in range(repeats):
        start = time.perf_counter()
        out = fn(batch_size=num_samples, num_inference_steps=steps, generator=torch.Generator().manual_seed(1000 + r))
        seconds = time.perf_counter() - start
        row = {"log_Z": out.log_Z, "elbo": out.elbo, "ess": out.ess / num_samples, "seconds": seconds}
        if target.log_Z is not None:
            row["abs_error"] = abs(out.log_Z - target.log_Z)
        if r == 0 and reference is not None and metrics:
            samples = out.samples.float().cpu()
            if torch.isfinite(samples).all():
                row["sinkhorn"] = sinkhorn(samples, reference, target.prior_scale)
                row["mmd"] = mmd_median(samples, reference)
        rows.append(row)
        nfe = out.nfe
    summary = {"steps": steps, "nfe": nfe, "repeats": repeats, "num_samples": num_samples}
    for key in ("log_Z", "abs_error", "elbo", "ess", "seconds"):
        values = [row[key] for row in rows if key in row and math.isfinite(row[key])]
        if values:
            summary[key] = float(np.mean(values))
            summary[key + "_std"] = float(np.std(values))
    for key in ("sinkhorn", "mmd"):
        if key in rows[0] and rows[0][key] is not None:
            summary[key] = rows[0][key]
    return summary, out.samples.float().cpu() if steps in (1, 4) else None


def run_dynesty(target, max_calls):
    try:
        import dynesty
    except ImportError:
        return {"skipped": "dynesty is not installed (benchmarks/setup.sh)"}
    scale = DYNESTY_SCALE.get(target.name, 3.0)
    d = target.dim
    from scipy.special import ndtri

    def prior_transform(u):
        return scale * ndtri(np.clip(u, 1e-12, 1 - 1e-12))

    def loglike(x):
        xt = torch.as_tensor(x, dtype=torch.float64)[None]
        log_prior = float(-0.5 * (xt**2).sum() / scale**2 - d * math.log(scale) - 0.5 * d * math.log(2 * math.pi))
        value = float(target.log_prob(xt)) - log_prior
        return value if math.isfinite(value) else -1e300

    start = time.perf_counter()
    sampler = dynesty.NestedSampler(loglike, prior_transform, d, nlive=500, rstate=np.random.default_rng(0))
    sampler.run_nested(dlogz=0.1, maxcall=max_calls, print_progress=False)
    res = sampler.results
    out = {"log_Z": float(res.logz[-1]), "log_Z_std": float(res.logzerr[-1]), "target_evaluations": int(np.sum(res.ncall)),
           "seconds": time.perf_counter() - start, "nlive": 500, "prior_scale": scale, "max_calls": max_calls}
    if target.log_Z is not None:
        out["abs_error"] = abs(out["log_Z"] - target.log_Z)
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results["targets"] if "rows" in results["targets"][n]]
    fig, axes = plt.subplots(2, max(2, len(names)), figsize=(4.2 * max(2, len(names)), 7.5), squeeze=False)
    for j, name in enumerate(names):
        res = results["targets"][name]
        ax = axes[0, j]
        for method, style in (("deterministic_flow", "o-"), ("deterministic_flow_logdet", "s--"), ("euler_maruyama", "^:")):
            rows = [r for r in res["rows"][method] if "abs_error" in r]
            if rows:
                ax.errorbar([r["steps"] for r in rows], [r["abs_error"] for r in rows],
                            yerr=[r["abs_error_std"] for r in rows], fmt=style, label=method.replace("_", " "), capsize=2)
        if "dynesty" in res and "abs_error" in res["dynesty"]:
            ax.axhline(res["dynesty"]["abs_error"], color="grey", lw=1,
                       label=f"dynesty ({res['dynesty']['target_evaluations']} evals)")
        for k, goal in GOALS.get(name, {}).items():
            ax.plot([k], [goal], "r*", ms=10)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("steps K (network calls)")
        ax.set_ylabel("|log Z error|" + (" (vs reference)" if name == "breast_cancer" else ""))
        ax.set_title(f"{name}: red stars = goals")
        ax.legend(fontsize=7)
        ax = axes[1, j]
        for method, style in (("deterministic_flow", "o-"), ("euler_maruyama", "^:")):
            rows = res["rows"][method]
            ax.plot([r["steps"] for r in rows], [r["ess"] for r in rows], style, label=f"{method.replace('_', ' ')} ESS/N")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("steps K")
        ax.set_ylabel("ESS / N")
        ax.legend(fontsize=7)
    for j in range(len(names), axes.shape[1]):
        axes[0, j].axis("off")
        axes[1, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_samples(samples, target, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 55.0
    grid = torch.linspace(-lim, lim, 300)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    density = target.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(300, 300).exp()
    fig, axes = plt.subplots(1, len(samples), figsize=(4.5 * len(samples), 4.3), squeeze=False)
    for ax, (label, pts) in zip(axes[0], samples.items()):
        ax.contourf(xx, yy, density, levels=20, cmap="Blues")
        ax.scatter(pts[:1000, 0], pts[:1000, 1], s=2, c="crimson")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def merge(paths, output_dir):
    """One report from per-target runs: the first file's settings, every file's targets (later files win)."""
    import json

    reports = [json.load(open(p)) for p in paths]
    runs = [" ".join(n for n, e in r["targets"].items() if "rows" in e) + f" ({r['repeats']} repeats)" for r in reports]
    results = dict(reports[0], targets={}, merged_from=[f"--targets {run}" for run in runs])
    for report in reports:
        for name, entry in report["targets"].items():
            if "rows" in entry or name not in results["targets"]:
                results["targets"][name] = dict(entry, repeats=report["repeats"], num_samples=report["num_samples"])
    write_json(os.path.join(output_dir, "samplers.json"), results)
    plot(results, os.path.join(output_dir, "samplers.png"))
    print(f"merged {len(paths)} reports into {output_dir}/samplers.json and samplers.png", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--steps", nargs="+", type=int, default=None)
    parser.add_argument("--num_samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--repeats_long", type=int, default=3, help="Repeats of rows with K >= 64.")
    parser.add_argument("--dynesty_max_calls", type=int, default=300_000)
    parser.add_argument("--checkpoints", type=str, default=CHECKPOINTS)
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--merge", nargs="+", default=None,
                        help="Instead of running: merge the targets of these samplers.json files (runs split by "
                             "target) into one report and redraw the figures.")
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps or ([1, 2, 4] if quick else list(STEPS))
    num_samples = args.num_samples or (500 if quick else 2000)
    repeats = args.repeats or (2 if quick else 20)
    output_dir = args.output_dir or PATHS.output_dir(quick)
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(1)
    if args.merge:
        return merge(args.merge, output_dir)
    results = {"steps": steps, "num_samples": num_samples, "repeats": repeats, "repeats_long": args.repeats_long,
               "quick": quick, "goals": {k: {str(s): v for s, v in g.items()} for k, g in GOALS.items()}, "targets": {}}
    gmm_samples = {}
    for name in args.targets:
        folder = os.path.join(args.checkpoints, f"sampler-{name.replace('_', '-')}")
        if not os.path.isdir(folder):
            results["targets"][name] = {"skipped": f"no checkpoint at {os.path.relpath(folder, PATHS.repo_root)}"}
            print(f"{name}: skipped, no checkpoint", flush=True)
            continue
        pipe = EnergySamplerPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        target = pipe.target
        reference = target.sample(num_samples, generator=torch.Generator().manual_seed(0)) if target.has_samples else None
        entry = {"dim": target.dim, "true_log_Z": target.log_Z, "log_Z_is_reference_estimate": target.log_Z_error is not None,
                 "reference_log_Z_stderr": target.log_Z_error, "rows": {}}
        if reference is not None:
            entry["exact_vs_exact"] = {"sinkhorn": sinkhorn(target.sample(num_samples, torch.Generator().manual_seed(7)),
                                                            reference, target.prior_scale),
                                       "mmd": mmd_median(target.sample(num_samples, torch.Generator().manual_seed(7)), reference)}
        methods = {
            "deterministic_flow": pipe.__call__,
            "deterministic_flow_logdet": lambda **kw: pipe(volume="logdet", **kw),
            "euler_maruyama": pipe.euler_maruyama,
        }
        for method, fn in methods.items():
            entry["rows"][method] = []
            for k in steps:
                reps = repeats if k < 64 else min(repeats, args.repeats_long)
                if method == "deterministic_flow_logdet" and k >= 64:
                    continue  # the same as the trace at fine steps, at the cost of a determinant per step
                summary, samples = run_estimator(fn, target, k, num_samples, reps, reference, metrics=True)
                entry["rows"][method].append(summary)
                print(f"{name} {method} K={k}: " + ", ".join(f"{key}={value:.4g}" for key, value in summary.items()
                                                          if isinstance(value, float) and not key.endswith("_std")),
                      flush=True)
                if name == "gmm40" and samples is not None and method != "deterministic_flow_logdet":
                    gmm_samples[f"{method.replace('_', ' ')}, K={k}"] = samples
        if not quick:
            entry["dynesty"] = run_dynesty(target, args.dynesty_max_calls)
            print(f"{name} dynesty: {entry['dynesty']}", flush=True)
        goals = {}
        for k, goal in GOALS.get(name, {}).items():
            row = next((r for r in entry["rows"]["deterministic_flow"] if r["steps"] == k), None)
            if row is not None and "abs_error" in row:
                goals[str(k)] = {"goal": goal, "abs_error": row["abs_error"], "met": row["abs_error"] <= goal}
        entry["goals"] = goals
        sink = {r["steps"]: r.get("sinkhorn") for r in entry["rows"]["deterministic_flow"]}
        if sink.get(4) is not None and sink.get(128) is not None:
            entry["sinkhorn_4_within_2x_of_128"] = bool(sink[4] <= 2 * sink[128])
        results["targets"][name] = entry
        write_json(os.path.join(output_dir, "samplers.json"), results)
    for name in GOALS:
        if name not in results["targets"] or "goals" not in results["targets"][name]:
            results["targets"].setdefault(name, {})["goals_not_measured"] = GOALS[name]
    write_json(os.path.join(output_dir, "samplers.json"), results)
    plot(results, os.path.join(output_dir, "samplers.png"))
    if gmm_samples:
        from f2d2_diffusers.targets import load_target

        plot_samples(gmm_samples, load_target("gmm40"), os.path.join(output_dir, "samplers_gmm40_samples.png"))
    print(f"wrote {output_dir}/samplers.json and samplers.png", flush=True)
    return results


if __name__ == "__main__":
    main()
