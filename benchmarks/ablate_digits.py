#!/usr/bin/env python
"""The digits calibration experiment loop: fine-tune one variant for a fixed budget, measure it, keep the row.

Each run starts from a fixed checkpoint (default: the shipped ``checkpoints/f2d2-digits``), trains ``--steps``
optimiser steps of Shortcut-F2D2 with the variant's settings (optionally plus direct supervision on cached teacher
trajectories), and scores 64 test digits at 1, 2, 4 and 8 steps against the teacher's cached dopri5 reference
(exact divergence, the same dequantisation draw), with per-segment state errors on the 8-step likelihood grid.
The row goes to ``benchmarks/results/ablations_digits.md`` (and ``.jsonl``): negative results are results.

Caches (``outputs/cache``, keyed by teacher weights and seed, computed once):
- the reference: 64 test digits, exact divergence, states and integrals at ``sigma = k/8``;
- training trajectories (``--trajectory_fraction > 0``): every training digit, ``--trajectory_draws`` dequantisation
  draws, Hutchinson integrals (unbiased targets).

    python benchmarks/ablate_digits.py --variant baseline --steps 1500
    python benchmarks/ablate_digits.py --variant traj0.5 --steps 1500 --trajectory_fraction 0.5 \
        --init checkpoints/candidates/f2d2-digits-uniform

The trajectory loss and ``--objective meanflow`` train the uniform grids only, so they start from a uniform-grid
student (as above) or move the shipped one onto them with ``--grid_shift 1 --likelihood_grid_shift 1``.
"""

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from f2d2_diffusers.evaluation.digits_reference import GRID, NUM_TEST, cached_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = (1, 2, 4, 8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default=None, help="name of the row (required unless --rewrite_table)")
    p.add_argument("--init", default=str(REPO_ROOT / "checkpoints" / "f2d2-digits"),
                   help="F2D2 pipeline folder to start from, or 'teacher' (from_teacher)")
    p.add_argument("--student_config", default=None,
                   help="a UNet config JSON: start from a randomly initialised F2D2UNet2DModel of that shape instead of "
                        "--init (a capacity probe; e.g. with --trajectory_only)")
    p.add_argument("--deepen_to", type=int, default=0,
                   help="start from --init deepened to this many resnets per down block, computing the same function "
                        "(f2d2_diffusers.models.deepen; does more capacity lower the error from where it stands?)")
    p.add_argument("--teacher", default=str(REPO_ROOT / "checkpoints" / "fm-digits"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--lr_schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: the learning rate decays to 0 over --steps (does an optimisation noise floor limit the fit?)")
    p.add_argument("--ema_decay", type=float, default=0.999, help="0: no EMA")
    p.add_argument("--bootstrap_fraction", type=float, default=0.5)
    p.add_argument("--max_level", type=int, default=6)
    p.add_argument("--level_weights", default=None,
                   help="comma-separated odds of the dyadic levels 0..max_level (level 0 = the 1-step map); default uniform")
    p.add_argument("--hutchinson_probes", type=int, default=4)
    p.add_argument("--no_anchor", action="store_true", help="bootstrap starts not anchored to the grid")
    p.add_argument("--no_teacher_finest_level", action="store_true")
    p.add_argument("--trajectory_fraction", type=float, default=0.0,
                   help="weight of the trajectory loss (a batch of cached teacher segments per step); 0: off")
    p.add_argument("--trajectory_only", action="store_true", help="train on the trajectory loss alone")
    p.add_argument("--trajectory_draws", type=int, default=2)
    p.add_argument("--trajectory_grids", default="1,2,4,8", help="grids whose segments the trajectory loss uses")
    p.add_argument("--divergence_weight", type=float, default=1.0)
    p.add_argument("--grid_shift", type=float, default=None,
                   help="train and score on the grids of F2D2Scheduler(shift=...) (docs/method.md 5.7); default: the "
                        "--init pipeline's scheduler shift (1 for the teacher or a scratch student); given, it also "
                        "sets the encoding steps' grid unless --likelihood_grid_shift is given")
    p.add_argument("--likelihood_grid_shift", type=float, default=None,
                   help="the encoding steps' grid alone (F2D2Scheduler(likelihood_shift=...)); default: the --init "
                        "pipeline's likelihood_shift, else --grid_shift; from the teacher or from scratch with neither "
                        "flag, train_f2d2.py's default (1/3 for the shortcut objective)")
    p.add_argument("--objective", choices=["shortcut", "meanflow"], default="shortcut",
                   help="meanflow: meanflow_f2d2_loss (JVP targets from the online student, docs/method.md 5.4)")
    p.add_argument("--step_distribution", choices=["dyadic", "logit_normal", "uniform"], default="dyadic",
                   help="MeanFlow-F2D2's (sigma, h) draws")
    p.add_argument("--adaptive_weight_power", type=float, default=1.0, help="MeanFlow-F2D2's adaptive weight power")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache_dir", default=str(REPO_ROOT / "outputs" / "cache"))
    p.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results" / "ablations_digits"),
                   help="path stem of the .md table and .jsonl rows")
    p.add_argument("--save_to", default=None, help="also save the fine-tuned pipeline here")
    p.add_argument("--only_caches", action="store_true", help="build the caches and stop")
    p.add_argument("--rewrite_table", action="store_true",
                   help="only rewrite <results>.md from its .jsonl rows and the hand-kept <results>_notes.md")
    p.add_argument("--widen_starts", choices=["none", "gaussian", "mixup", "teacher", "shift"], default="none",
                   help="replace part of each batch by wider start points (f2d2_diffusers.training.starts)")
    p.add_argument("--widen_fraction", type=float, default=0.5)
    p.add_argument("--widen_noise_std", type=float, default=0.2)
    p.add_argument("--teacher_pool", type=int, default=8192, help="teacher samples in the 'teacher' pool (cached)")
    p.add_argument("--teacher_pool_temperature", type=float, default=1.0,
                   help="prior temperature of the 'teacher' pool (noise N(0, T^2 I)): above 1 reaches held-out-like inputs")
    p.add_argument("--eval_split", choices=["test", "train"], default="test",
                   help="score 64 test digits (default) or the first 64 training digits (same dequantisation seed): "
                        "the gap between the two separates a map that does not fit from one that does not generalise")
    args = p.parse_args(argv)
    if args.variant is None and not args.rewrite_table:
        p.error("--variant is required (unless --rewrite_table)")
    if args.level_weights is not None:
        from f2d2_diffusers.objectives.steps import check_level_weights

        try:
            args.level_weights = [float(w) for w in args.level_weights.split(",")]
            check_level_weights(args.level_weights, args.max_level)
        except ValueError as err:
            p.error(f"--level_weights: {err}")
    from f2d2_diffusers.training.grids import check_grid_shift_flags

    problem = check_grid_shift_flags(args, args.objective, args.trajectory_fraction > 0 or args.trajectory_only)
    if problem:
        p.error(problem)
    return args


def build_caches(args, teacher):
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels
    from f2d2_diffusers.trajectories import load_or_compute_teacher_trajectories, teacher_digest

    key = teacher_digest(teacher)
    test, reference = cached_reference(teacher, args.eval_split, args.cache_dir)
    train = None
    if args.trajectory_fraction > 0 or args.trajectory_only:
        levels = load_digits_levels("train")
        train = load_or_compute_teacher_trajectories(
            os.path.join(args.cache_dir, f"digits_train_{key}_draws{args.trajectory_draws}.safetensors"), teacher,
            lambda: torch.cat([dequantize(levels, DIGITS_NUM_LEVELS, torch.Generator().manual_seed(100 + k))
                               for k in range(args.trajectory_draws)]), GRID,
            dict(teacher=key, data=f"digits train x {args.trajectory_draws} draws (seeds 100+)"),
            divergence="hutchinson", generator=torch.Generator().manual_seed(1))
    return test, reference, train


@torch.no_grad()
def evaluate(student, reference, test, shift: float = 1.0) -> dict:
    """1/2/4/8-step likelihood errors (bits/dim) and per-segment state errors against the cached reference.

    The likelihoods and the budget use the grids of ``F2D2Scheduler(shift=shift)``; the state errors need the
    reference's uniform grid points, so a shifted map (``shift != 1``) gets them on the 1-step map only.
    """
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Scheduler, segment_calibration
    from f2d2_diffusers.calibration import likelihood_calibration, likelihood_error_budget
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS
    from f2d2_diffusers.reference_likelihood import ReferenceLikelihoodOutput

    student.eval()
    pipe = F2D2LikelihoodPipeline(unet=student, scheduler=F2D2Scheduler(shift=shift), num_levels=DIGITS_NUM_LEVELS)
    pipe.set_progress_bar_config(disable=True)
    ref = ReferenceLikelihoodOutput(log_prob=reference.log_prob, bits_per_dim=None, latents=reference.states[:, -1],
                                    nfe=0, trajectory=reference.states.transpose(0, 1),
                                    divergence_integrals=reference.integrals.transpose(0, 1))
    cal = likelihood_calibration(pipe, None, test, DIGITS_NUM_LEVELS, steps=STEPS, evaluations=("bidirectional",),
                                 reference=ref)
    seg = segment_calibration(student, ref, GRID, direction="likelihood") if shift == 1.0 else None
    big = {2: None}
    for steps in (1, 2) if shift == 1.0 else (1,):
        idx = [round(k * 8 / steps) for k in range(steps + 1)]
        sub = ReferenceLikelihoodOutput(log_prob=ref.log_prob, bits_per_dim=None, latents=ref.latents, nfe=0,
                                        trajectory=ref.trajectory[idx], divergence_integrals=ref.divergence_integrals[idx])
        s = segment_calibration(student, sub, [GRID[i] for i in idx], direction="likelihood")
        big[steps] = [round(float(v), 3) for v in s.state_error]
    rows = {r["steps"]: r for r in cal.rows if r["steps"]}
    budget = likelihood_error_budget(student, test, reference.states[:, -1], reference.integrals[:, -1], steps=(1, 2),
                                     shift=shift)
    return dict(error={k: rows[k]["error"] for k in STEPS}, mae={k: rows[k]["abs_error"] for k in STEPS},
                segment_state_error_8=[round(float(v), 3) for v in seg.state_error] if seg else None,
                segment_integral_error_8=[round(float(v), 2) for v in seg.integral_error] if seg else None,
                state_error_1=big[1], state_error_2=big[2],
                budget={str(b["steps"]): {k: round(v, 3) for k, v in b.items() if k != "steps"} for b in budget.rows})


def main(args):
    if args.rewrite_table:
        write_table(args.results)
        print(f"wrote {args.results}.md")
        return
    from f2d2_diffusers import (
        F2D2Pipeline, F2D2UNet2DModel, load_teacher, meanflow_f2d2_loss, shortcut_f2d2_loss,
    )
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels
    from f2d2_diffusers.dequantization import dequantize
    from f2d2_diffusers.training import TrainingError
    from f2d2_diffusers.training.grids import UNIFORM_GRIDS, recorded_grid_shifts, resolve_run_grids, trained_scheduler
    from f2d2_diffusers.objectives import trajectory_f2d2_loss
    from f2d2_diffusers.training.starts import widen_starts

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    teacher = load_teacher(args.teacher).eval()
    from_saved = not args.student_config and args.init != "teacher"
    if not args.only_caches:  # before the caches: grids the variant cannot train stop it before minutes of dopri5
        # A fine-tune stays on the grids the --init map was trained on unless the flags move it (the same rule as
        # train_f2d2.py --init_student_from).
        recorded = (recorded_grid_shifts(args.init) or UNIFORM_GRIDS) if from_saved else None
        try:
            args.grid_shift, args.likelihood_grid_shift = resolve_run_grids(
                args.grid_shift, args.likelihood_grid_shift, recorded, args.objective,
                args.trajectory_fraction > 0 or args.trajectory_only)
        except TrainingError as err:
            raise SystemExit(f"ablate_digits.py: {err}") from None
    test, reference, train = build_caches(args, teacher)
    if args.only_caches:
        return
    init_name = Path(args.init).name
    if args.student_config:
        from f2d2_diffusers.training.configs import load_model_config

        student = F2D2UNet2DModel(**load_model_config(args.student_config))
        init_name = f"scratch ({Path(args.student_config).stem})"
    elif not from_saved:
        student = F2D2UNet2DModel.from_teacher(teacher)
    else:
        student = F2D2Pipeline.from_pretrained(args.init).unet
    if args.deepen_to:
        from f2d2_diffusers.models.deepen import deepen_unet

        student = deepen_unet(student, args.deepen_to)
        init_name += f", deepened to {args.deepen_to} layers per block"
    ema = copy.deepcopy(student).eval() if args.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.learning_rate, weight_decay=1e-6, betas=(0.95, 0.999))
    schedule = None
    if args.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.steps, 1))
    levels = load_digits_levels("train")
    generator = torch.Generator().manual_seed(args.seed)
    pool = None
    if args.widen_starts == "teacher":
        pool = teacher_pool(args, teacher)
    grids = tuple(int(g) for g in args.trajectory_grids.split(","))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        student.train()
        loss = torch.zeros(())
        if not args.trajectory_only:
            idx = torch.randint(0, levels.shape[0], (args.batch_size,), generator=generator)
            batch = dequantize(levels[idx], DIGITS_NUM_LEVELS, generator)
            batch = widen_starts(batch, args.widen_fraction, args.widen_starts, generator, args.widen_noise_std, pool)
            common = dict(generator=generator, teacher=teacher, divergence="hutchinson", num_probes=args.hutchinson_probes,
                          max_level=args.max_level, divergence_weight=args.divergence_weight,
                          anchor_starts_to_grid=not args.no_anchor)
            if args.objective == "meanflow":
                out = meanflow_f2d2_loss(student, batch, step_fraction=args.bootstrap_fraction,
                                         step_distribution=args.step_distribution,
                                         adaptive_weight_power=args.adaptive_weight_power, **common)
            else:
                out = shortcut_f2d2_loss(
                    student, batch, target_model=ema if ema is not None else student,
                    bootstrap_fraction=args.bootstrap_fraction, teacher_finest_level=not args.no_teacher_finest_level,
                    level_weights=args.level_weights, grid_shift=args.grid_shift,
                    likelihood_grid_shift=args.likelihood_grid_shift, **common)
            loss = loss + out.loss
        if train is not None:
            idx = torch.randint(0, train.states.shape[0], (args.batch_size,), generator=generator)
            traj = trajectory_f2d2_loss(student, train.states[idx], train.integrals[idx], train.sigmas, grids=grids,
                                        generator=generator, divergence_weight=args.divergence_weight)
            loss = loss + (1.0 if args.trajectory_only else args.trajectory_fraction) * traj.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), student.parameters()):
                    p_ema.lerp_(p, 1 - args.ema_decay)
        if step % 100 == 0 or step == 10:
            print(f"step {step}: loss {loss.item():.5f} ({time.perf_counter() - start:.0f} s)", flush=True)
    minutes = (time.perf_counter() - start) / 60
    final = ema if ema is not None else student
    metrics = evaluate(final, reference, test, shift=args.likelihood_grid_shift)
    variant = args.variant + ("" if args.eval_split == "test" else " [scored on train digits]")
    row = dict(variant=variant, steps=args.steps, minutes=round(minutes, 1), init=init_name,
               settings={k: v for k, v in vars(args).items() if k not in ("variant", "results", "cache_dir", "save_to")},
               **metrics)
    write_row(args.results, row)
    if args.save_to:
        F2D2Pipeline(unet=final, scheduler=trained_scheduler(args.grid_shift, args.likelihood_grid_shift),
                     num_levels=DIGITS_NUM_LEVELS).save_pretrained(args.save_to)
    print(json.dumps(row, indent=1))


def teacher_pool(args, teacher) -> torch.Tensor:
    """The teacher's 64-step Euler samples for the 'teacher' widening, cached by teacher weights and size."""
    from safetensors.torch import load_file, save_file

    from f2d2_diffusers.trajectories import teacher_digest
    from f2d2_diffusers.training.starts import teacher_sample_pool

    temperature = "" if args.teacher_pool_temperature == 1.0 else f"_t{args.teacher_pool_temperature:g}"
    path = os.path.join(args.cache_dir,
                        f"digits_teacher_pool_{teacher_digest(teacher)}_n{args.teacher_pool}{temperature}.safetensors")
    if os.path.exists(path):
        return load_file(path)["samples"]
    pool = teacher_sample_pool(teacher, (1, 8, 8), args.teacher_pool, generator=torch.Generator().manual_seed(7),
                               temperature=args.teacher_pool_temperature)
    os.makedirs(args.cache_dir, exist_ok=True)
    save_file({"samples": pool.contiguous()}, path)
    return pool


def _first(values) -> str:
    """A state-error cell: ``-`` where the run had none (shifted grids miss the reference's grid points)."""
    return f"{values[0]:.2f}" if values else "-"


def _budget_cell(budget) -> str:
    if not budget:
        return "-"
    b = budget["1"]
    return f"{b['radial']:+.2f} / {b['spread']:.2f} / {b['divergence']:+.2f}"


def write_row(stem: str, row: dict) -> None:
    """Append ``row`` to ``<stem>.jsonl`` and rewrite ``<stem>.md`` from all rows (see :func:`write_table`)."""
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(stem + ".jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    write_table(stem)


def write_table(stem: str) -> None:
    """``<stem>.md``: the table of every row in ``<stem>.jsonl``, then the hand-kept ``<stem>_notes.md``."""
    rows = [json.loads(line) for line in open(stem + ".jsonl")]
    lines = [
        "# Digits calibration ablations",
        "",
        f"Written by `benchmarks/ablate_digits.py` (one row per run, appended; raw rows in `{Path(stem).name}.jsonl`).",
        f"Errors: few-step bits/dim minus the teacher's dopri5 (exact divergence) on the first {NUM_TEST} test digits, "
        "one dequantisation draw; negative = the map is too optimistic. State error: mean L2 distance (64 dims) "
        "between the map's end point and the teacher's, started from the teacher's state: for the 1-step encode, "
        "the first of 2 steps, and the 8 segments of the 8-step grid. Rows marked [scored on train digits] score the "
        "first 64 training digits instead (`--eval_split train`). Budget: the 1-step error in log-density split into "
        "radial + spread + divergence parts (nats of log-density, positive = too optimistic, so their sum is "
        "err 1 x (-64 ln 2); `docs/method.md` section 6.1); "
        "- for rows measured before it existed. Maps trained on a shifted grid (`--grid_shift`, `docs/method.md` 5.7) "
        "are scored on their own grids, whose points the reference does not hold: - for their state errors past the "
        "1-step map.",
        "",
        "| variant | init | steps | min | err 1 | err 2 | err 4 | err 8 | MAE 1 | MAE 2 | state 1-step | state 1st of 2 "
        "| state per segment (8-step) | budget 1-step (radial / spread / div) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        e, m = r["error"], r["mae"]
        lines.append(
            f"| {r['variant']} | {r['init']} | {r['steps']} | {r['minutes']} | {e['1']:+.3f} | {e['2']:+.3f} | "
            f"{e['4']:+.3f} | {e['8']:+.3f} | {m['1']:.3f} | {m['2']:.3f} | {r['state_error_1'][0]:.2f} | "
            f"{_first(r['state_error_2'])} | {', '.join(f'{v:.2f}' for v in r['segment_state_error_8'] or []) or '-'} | "
            f"{_budget_cell(r.get('budget'))} |"
        )
    notes = stem + "_notes.md"  # what the rows say, kept by hand beside the generated table
    if os.path.exists(notes):
        lines += ["", open(notes).read().rstrip()]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(parse_args())
