#!/usr/bin/env python
"""Wall time and peak memory of likelihood evaluation vs batch size and image size: F2D2 (2 steps) vs the reference.

- Batch sweep: the shipped 8x8 digits checkpoints (``checkpoints/f2d2-digits``, teacher ``checkpoints/fm-digits``),
  batch sizes 1, 8, 32, 128 of the digits test split.
- Image sweep: UNTRAINED models of the same family as ``checkpoints/f2d2-digits/unet/config.json`` (and the
  teacher's ``UNet2DModel`` config), only ``sample_size`` changed (8, 16, 32), on random inputs in [-1, 1].
  Timing and memory do not depend on the weights; the values they produce mean nothing and are not reported.

The reference is our teacher solver (``reference_log_likelihood``) with a Hutchinson divergence (1 Rademacher
probe), so it finishes at every size: dopri5 (rtol = atol = 1e-3) on the trained 8x8 teacher, fixed-step midpoint
(16 steps, 32 network calls) on the untrained image-size models, where an adaptive solver's call count would
depend on random weights. Exact divergence would multiply the reference's cost by about d (64 to 1024 backward
passes per call); see bench_likelihood.py for exact-divergence numbers.

Peak memory: the process's peak resident set size (``VmHWM`` in ``/proc/self/status``) during the call, minus the
resident set just before it, after ``malloc_trim(0)`` and resetting the peak with ``/proc/self/clear_refs`` (Linux).
No psutil, and it sees PyTorch's CPU allocations, which ``tracemalloc`` does not.

Writes ``<output_dir>/scaling.json`` (with a markdown table) and ``scaling.png``; the default ``<output_dir>`` is
``benchmarks/results`` (the committed numbers), ``outputs/benchmarks-quick`` with ``--quick``.

    python benchmarks/bench_scaling.py --quick
    python benchmarks/bench_scaling.py
"""

import argparse
import ctypes
import gc
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from f2d2_diffusers import sample_shape
from f2d2_diffusers.data import load_test_split
from f2d2_diffusers.evaluation.reports import benchmark_paths, require_folders, timed, write_json

PATHS = benchmark_paths(Path(__file__).resolve().parents[1])
CONFIGS = {
    "full": dict(batch_sizes=(1, 8, 32, 128), image_sizes=(8, 16, 32), image_batch=8, rtol=1e-3, atol=1e-3,
                 midpoint_steps=16),
    "quick": dict(batch_sizes=(1, 8), image_sizes=(8, 16), image_batch=4, rtol=5e-2, atol=5e-2, midpoint_steps=2),
}
F2D2_STEPS = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=PATHS.shipped["digits"][0], help="F2D2 pipeline folder (8x8 digits)")
    p.add_argument("--teacher", default=PATHS.shipped["digits"][1], help="its teacher folder")
    p.add_argument("--quick", action="store_true", help="batch sizes 1, 8; image sizes 8, 16; loose reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default=None,
                   help="default: benchmarks/results; with --quick outputs/benchmarks-quick (never the committed results)")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or PATHS.output_dir(args.quick)
    return args


# ----------------------------------------------------------------------------------------------------- memory
_STATUS = "/proc/self/status"


def _status_kb(field: str):
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, repeats: int = 1):
    """``(output, median wall seconds, peak memory in MiB above the resident set at the start or None)``.

    Memory comes from the first call; later calls only add timings.
    """
    can_reset = _reset_peak()
    base = _status_kb("VmRSS")
    out, seconds = timed(fn)
    peak = _status_kb("VmHWM")
    memory = (peak - base) / 1024 if (can_reset and base is not None and peak is not None) else None
    times = [seconds]
    for _ in range(repeats - 1):
        times.append(timed(fn)[1])
    return out, statistics.median(times), memory


# ---------------------------------------------------------------------------------------------------- models
def untrained_models(student_path, teacher_path, sample_size, seed):
    """A fresh teacher ``UNet2DModel`` and F2D2 student of the shipped family, ``sample_size`` changed."""
    from diffusers import UNet2DModel

    from f2d2_diffusers import F2D2UNet2DModel

    teacher_cfg = dict(UNet2DModel.load_config(teacher_path, subfolder="unet"), sample_size=sample_size)
    student_cfg = dict(F2D2UNet2DModel.load_config(student_path, subfolder="unet"), sample_size=sample_size)
    torch.manual_seed(seed)
    teacher = UNet2DModel.from_config(teacher_cfg).eval().requires_grad_(False)
    student = F2D2UNet2DModel.from_config(student_cfg).eval().requires_grad_(False)
    return teacher, student


def main(args):
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Scheduler, load_teacher, reference_log_likelihood

    require_folders(args.student, args.teacher)
    for sub in (os.path.join(args.student, "unet", "config.json"), os.path.join(args.teacher, "unet", "config.json")):
        if not os.path.isfile(sub):
            raise SystemExit(f"error: no {sub}: give folders written by the training scripts (model in unet/)")
    mode = "quick" if args.quick else "full"
    cfg = CONFIGS[mode]
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()

    try:
        teacher = load_teacher(args.teacher)
        pipe = F2D2LikelihoodPipeline.from_pretrained(args.student)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}")
    pipe.set_progress_bar_config(disable=True)
    data, _ = load_test_split("digits", 0, args.seed)
    if tuple(data.shape[1:]) != sample_shape(pipe.unet.config):
        raise SystemExit(f"error: {args.student} does not score 8x8 digits (sample shape {tuple(data.shape[1:])})")

    rows = []

    def f2d2_row(sweep, pipeline, x, batch, size):
        call = lambda: pipeline(x, num_inference_steps=F2D2_STEPS, dequantize=False)  # noqa: E731
        call()  # warm-up
        out, seconds, memory = measure(call, repeats=3)
        rows.append(dict(sweep=sweep, method=f"F2D2 {F2D2_STEPS} steps", batch_size=batch, image_size=size,
                         nfe=out.nfe, seconds=seconds, seconds_per_sample=seconds / batch, peak_memory_mib=memory))

    def reference_row(sweep, model, x, batch, size, **solver):
        out, seconds, memory = measure(lambda: reference_log_likelihood(
            model, x, divergence="hutchinson", num_probes=1, generator=torch.Generator().manual_seed(args.seed), **solver))
        label = "reference dopri5" if solver.get("method", "dopri5") == "dopri5" else f"reference midpoint {solver['num_steps']} steps"
        rows.append(dict(sweep=sweep, method=label + " (Hutchinson, 1 probe)", batch_size=batch, image_size=size,
                         nfe=out.nfe, seconds=seconds, seconds_per_sample=seconds / batch, peak_memory_mib=memory))

    jobs = [("batch", b) for b in cfg["batch_sizes"]] + [("image", s) for s in cfg["image_sizes"]]
    for sweep, value in tqdm(jobs, desc="scaling", unit="config"):
        if sweep == "batch":
            reps = -(-value // len(data))
            x = data.repeat(reps, 1, 1, 1)[:value]
            f2d2_row("batch", pipe, x, value, data.shape[-1])
            reference_row("batch", teacher, x, value, data.shape[-1], method="dopri5", rtol=cfg["rtol"], atol=cfg["atol"])
        else:
            t_model, s_model = untrained_models(args.student, args.teacher, value, args.seed)
            untrained = F2D2LikelihoodPipeline(unet=s_model, scheduler=F2D2Scheduler(), num_levels=None)
            untrained.set_progress_bar_config(disable=True)
            g = torch.Generator().manual_seed(args.seed)
            x = torch.rand(cfg["image_batch"], 1, value, value, generator=g) * 2 - 1
            f2d2_row("image", untrained, x, cfg["image_batch"], value)
            reference_row("image", t_model, x, cfg["image_batch"], value, method="midpoint", num_steps=cfg["midpoint_steps"])
            del t_model, s_model, untrained
        for r in rows[-2:]:
            mem = "n/a" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f} MiB"
            print(f"  {sweep:<5} batch {r['batch_size']:>4} size {r['image_size']:>3}  {r['method']:<50} nfe {r['nfe']:>4} "
                  f"{r['seconds']:8.3f} s  peak +{mem}", flush=True)

    table = markdown_table(rows)
    report = dict(
        mode=mode, student=args.student, teacher=args.teacher, config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        f2d2_steps=F2D2_STEPS,
        memory_method="peak resident set (VmHWM, /proc/self/status) during the call minus the resident set before it, "
                      "after malloc_trim(0) and a peak reset through /proc/self/clear_refs; null where unavailable",
        notes=[
            "batch sweep: shipped 8x8 digits checkpoints on the digits test split (repeated to fill the batch); "
            f"reference = dopri5 rtol {cfg['rtol']} atol {cfg['atol']} with Hutchinson divergence (1 Rademacher probe).",
            f"image sweep: untrained models of the shipped family (only sample_size changed), batch {cfg['image_batch']} "
            f"of uniform noise in [-1, 1]; reference = fixed-step midpoint, {cfg['midpoint_steps']} steps "
            f"({2 * cfg['midpoint_steps']} network calls), Hutchinson divergence (1 probe).",
            "seconds: F2D2 median of 3 calls after a warm-up; reference one call. One CPU thread unless OMP_NUM_THREADS "
            "says otherwise; the machine may be shared, so compare ratios within this run.",
        ],
        machine=dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                     threads=torch.get_num_threads(), cpu_count=os.cpu_count()),
        rows=rows, markdown_table=table, total_seconds=time.perf_counter() - start,
    )
    write_json(os.path.join(args.output_dir, "scaling.json"), report)
    plot(rows, os.path.join(args.output_dir, "scaling.png"))
    print("\n" + table)
    print(f"wrote {args.output_dir}/scaling.json and .png ({report['total_seconds']:.0f} s)")


def markdown_table(rows):
    """One line per configuration: F2D2 vs reference wall time, their ratio and peak memory."""
    lines = ["| sweep | batch | image | F2D2 calls | F2D2 s | reference calls | reference s | reference / F2D2 time "
             "| F2D2 peak MiB | reference peak MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt_mem = lambda m: "n/a" if m is None else f"{m:.1f}"  # noqa: E731
    for sweep in ("batch", "image"):
        f2d2 = [r for r in rows if r["sweep"] == sweep and r["method"].startswith("F2D2")]
        for f in f2d2:
            ref = next(r for r in rows if r["sweep"] == sweep and not r["method"].startswith("F2D2")
                       and r["batch_size"] == f["batch_size"] and r["image_size"] == f["image_size"])
            lines.append(f"| {sweep} | {f['batch_size']} | {f['image_size']}x{f['image_size']} | {f['nfe']} | "
                         f"{f['seconds']:.3f} | {ref['nfe']} | {ref['seconds']:.2f} | {ref['seconds'] / f['seconds']:.0f}x | "
                         f"{fmt_mem(f['peak_memory_mib'])} | {fmt_mem(ref['peak_memory_mib'])} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    for col, (sweep, key, xlabel) in enumerate((("batch", "batch_size", "batch size (8x8 digits)"),
                                                ("image", "image_size", "image side (untrained models)"))):
        for is_f2d2, style, color in ((True, "o-", "C3"), (False, "s--", "C0")):
            rs = sorted([r for r in rows if r["sweep"] == sweep and r["method"].startswith("F2D2") == is_f2d2],
                        key=lambda r: r[key])
            if not rs:
                continue
            label = rs[0]["method"]
            axes[0, col].plot([r[key] for r in rs], [r["seconds"] for r in rs], style, color=color, label=label)
            mem = [(r[key], r["peak_memory_mib"]) for r in rs if (r["peak_memory_mib"] or 0) > 0]
            if mem:
                axes[1, col].plot(*zip(*mem), style, color=color, label=label)
        for row, ylabel in ((0, "wall seconds"), (1, "peak memory above start (MiB)")):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(parse_args())
