#!/usr/bin/env python
"""Few-step sampling and likelihoods with the shipped digits checkpoints, against the teacher's ODE.

Samples a grid in 1, 2 and 4 steps, scores test digits (the first 32 of the split from image 1500 on;
``--reference_subset 0`` for all 297) in 1, 2, 4 and 8 steps with the bidirectional map and the paper's evaluation,
and with the teacher's ODE (dopri5, exact divergence), all on the same dequantisation noise. Prints a table and writes ``samples.png``, ``bits_per_dim_vs_steps.png`` and
``results.json`` to ``--output_dir``.
"""

import argparse
import json
import os

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/f2d2-digits", help="an F2D2 pipeline folder")
    p.add_argument("--teacher", default="checkpoints/fm-digits", help="its teacher (folder with unet/)")
    p.add_argument("--output_dir", default="outputs/quickstart")
    p.add_argument("--reference_subset", type=int, default=32,
                   help="test images to score (the reference solver is the slow part); 0 for the whole split (297)")
    p.add_argument("--rtol", type=float, default=1e-4, help="reference solver tolerance (dopri5)")
    p.add_argument("--atol", type=float, default=1e-4, help="reference solver tolerance (dopri5)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    from diffusers.utils import make_image_grid

    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline, dequantize, likelihood_calibration, load_teacher
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels

    for path in (args.checkpoint, args.teacher):
        if not os.path.isdir(path):
            raise SystemExit(f"error: no checkpoint folder at {path}")
    os.makedirs(args.output_dir, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)

    pipe = F2D2Pipeline.from_pretrained(args.checkpoint)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for steps in (1, 2, 4):
        images = pipe(batch_size=16, num_inference_steps=steps, generator=torch.Generator().manual_seed(args.seed)).images
        rows.append(make_image_grid([im.resize((32, 32), 0) for im in images], rows=2, cols=8))
    make_image_grid(rows, rows=3, cols=1).save(os.path.join(args.output_dir, "samples.png"))

    levels = load_digits_levels("test")
    n = len(levels) if args.reference_subset <= 0 else min(args.reference_subset, len(levels))
    # One dequantisation draw shared by every method, so the errors compare like with like.
    data = dequantize(levels[:n], DIGITS_NUM_LEVELS, generator=torch.Generator().manual_seed(args.seed))
    likelihood = F2D2LikelihoodPipeline.from_pipe(pipe)
    likelihood.set_progress_bar_config(disable=True)
    teacher = load_teacher(args.teacher)
    print(f"scoring {n} test digits: F2D2 at 1, 2, 4, 8 steps, and the teacher's ODE (dopri5, exact divergence) ...",
          flush=True)
    calibration = likelihood_calibration(likelihood, teacher, data, DIGITS_NUM_LEVELS, rtol=args.rtol, atol=args.atol,
                                         show_progress=True)
    results = [dict(method="teacher dopri5 (reference)" if r["evaluation"] == "reference" else f"F2D2 {r['evaluation']}",
                    **r) for r in calibration.rows]

    header = f"{'method':<28}{'steps':>6}{'NFE':>6}{'bits/dim':>10}{'err vs ref':>12}{'|err|':>8}{'seconds':>9}"
    print(header + "\n" + "-" * len(header))
    for r in results:
        print(f"{r['method']:<28}{r['steps'] or '-':>6}{r['nfe']:>6}{r['value']:>10.4f}{r['error']:>+12.4f}"
              f"{r['abs_error']:>8.4f}{r['seconds']:>9.2f}")
    print(f"({n} digits of the test split, bits/dim on the 17-level scale; errors are per sample against the reference)")
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(dict(checkpoint=args.checkpoint, teacher=args.teacher, num_images=n, rtol=args.rtol, atol=args.atol,
                       rows=results), f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for evaluation, marker in (("bidirectional", "o"), ("paper", "s")):
        rs = [r for r in results if r["method"] == f"F2D2 {evaluation}"]
        ax.plot([r["steps"] for r in rs], [r["value"] for r in rs], marker=marker, label=f"F2D2 {evaluation}")
    ax.axhline(results[0]["value"], color="k", ls="--", label=f"teacher dopri5 ({results[0]['nfe']} NFE)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("steps (network calls)")
    ax.set_ylabel("bits/dim, digits test split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.output_dir, "bits_per_dim_vs_steps.png"), dpi=120)
    print(f"wrote {args.output_dir}/samples.png, bits_per_dim_vs_steps.png, results.json")


if __name__ == "__main__":
    main()
