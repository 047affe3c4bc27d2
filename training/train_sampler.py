#!/usr/bin/env python
"""Train a one-step energy sampler (``docs/method.md`` section 7) for an unnormalised target with Accelerate.

``--target`` is a built-in (``gmm40``, ``funnel``, ``many_well_32``, ``many_well_554``, ``breast_cancer``,
``gmm_grid``, ``eight_gaussians``) or a user's ``path/to/file.py:ClassName`` (a subclass of
``f2d2_diffusers.targets.EnergyTarget``); it is checked (``validate_target``) before anything else runs. There is no
data: each batch is ``--train_batch_size`` fresh prior draws. The loss is ``f2d2_diffusers.energy_sampler_loss``: the
reverse KL of a ``--num_fine_steps`` Euler-Maruyama rollout, plus (weight ramped from 0 to ``--distill_weight`` over
``--distill_warmup_steps``) state-space self-distillation and volume consistency against two half steps of the EMA
teacher (``--use_ema``; without it the online model, stop-gradient).

Everything else is the package's shared training code (``f2d2_diffusers.training``): the common flags (optimiser,
EMA, ``--checkpointing_steps``, ``--resume_from_checkpoint latest``, ``--logger``, ``--push_to_hub``), the loop,
checkpoints and ``logs/train_log.jsonl``. The output folder is an ``EnergySamplerPipeline`` that remembers its target
(``EnergySamplerPipeline.from_pretrained(output_dir)``); a user's target file is copied into it.

Example (CPU, one thread)::

    OMP_NUM_THREADS=1 accelerate launch --num_processes 1 training/train_sampler.py --target funnel \\
        --output_dir sampler-funnel --train_batch_size 256 --max_train_steps 2000 --learning_rate 5e-4 --use_ema \\
        --ema_max_decay 0.999
"""

import os
import shutil
import sys

from f2d2_diffusers import training as training_utils
from f2d2_diffusers.training import TrainingError

#: Stands in for the data source the shared parser insists on: a sampler has no data (replaced by ``None``).
_NO_DATA = "<energy target: no data>"
_DATA_FLAGS = ("--dataset_name", "--dataset_config_name", "--image_column", "--train_data_dir", "--train_data_file",
               "--dataset", "--num_toy_samples", "--max_train_samples", "--resolution", "--center_crop",
               "--random_flip", "--num_levels")
#: Evaluation grid of the card.
CARD_STEPS = (1, 2, 4, 8, 128)


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = training_utils.build_parser(
        "Train a one-step energy sampler (samples and log Z in one or a few network calls).", "sampler-model"
    )
    group = parser.add_argument_group("energy sampler")
    group.add_argument("--target", type=str, required=True,
                       help="A built-in target (gmm40, funnel, many_well_32, many_well_554, breast_cancer, gmm_grid, "
                            "eight_gaussians) or path/to/file.py:ClassName (an EnergyTarget subclass).")
    group.add_argument("--num_fine_steps", type=int, default=128,
                       help="Euler-Maruyama steps of the training rollout (a power of 2; the paper's 128).")
    group.add_argument("--distill_weight", type=float, default=0.25,
                       help="Weight of self-distillation + volume consistency (0: the KL rollout only).")
    group.add_argument("--distill_warmup_steps", type=int, default=2500,
                       help="The distillation weight ramps linearly from 0 over this many steps (the paper's 2500).")
    group.add_argument("--volume_weight", type=float, default=0.25, help="Volume consistency, inside the distillation term.")
    group.add_argument("--jacobian_weight", type=float, default=1e-4, help="Jacobian penalty, inside the distillation term.")
    group.add_argument("--prior_scale", type=float, default=None,
                       help="Standard deviation of the Gaussian prior (default: the target's suggestion, GMM-40: 40).")
    group.add_argument("--steps_per_epoch", type=int, default=100,
                       help="Batches per epoch (only for the loop's bookkeeping: every batch is fresh prior draws).")
    group.add_argument("--eval_samples", type=int, default=2000,
                       help=f"Samples per row of the card's evaluation (K = {', '.join(map(str, CARD_STEPS))}); 0 skips it.")
    given = [a.split("=")[0] for a in argv if a.split("=")[0] in _DATA_FLAGS]
    if given:
        parser.error(f"train_sampler.py trains from a target density, not data; drop {', '.join(given)}")
    args = training_utils.parse_args(parser, argv + ["--train_data_file", _NO_DATA])
    args.train_data_file = None
    n = args.num_fine_steps
    if n < 2 or n & (n - 1):
        parser.error(f"--num_fine_steps must be a power of 2 >= 2, got {n}")
    for name in ("distill_weight", "volume_weight", "jacobian_weight", "distill_warmup_steps", "eval_samples"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.prior_scale is not None and not args.prior_scale > 0:
        parser.error(f"--prior_scale must be positive, got {args.prior_scale}")
    if args.steps_per_epoch < 1:
        parser.error(f"--steps_per_epoch must be >= 1, got {args.steps_per_epoch}")
    return args


def load_checked_target(spec: str):
    from f2d2_diffusers.targets import load_target, validate_target

    try:
        target = load_target(spec)
        validate_target(target)
    except ValueError as err:
        raise TrainingError(f"--target: {err}") from None
    return target


def main(args):
    import copy

    import torch

    from f2d2_diffusers import EnergySamplerMLPModel, EnergySamplerPipeline, F2D2Scheduler, energy_sampler_loss
    from f2d2_diffusers.hub import make_diffusers_loadable
    from f2d2_diffusers.training.data import TrainingData, VectorDataset

    target = load_checked_target(args.target)
    user_config = training_utils.load_model_config(args.model_config_name_or_path) if args.model_config_name_or_path else {}
    if "sample_size" in user_config and user_config["sample_size"] != target.dim:
        raise TrainingError(f"the model config's sample_size={user_config['sample_size']} does not match the "
                            f"{target.dim}-D target")
    config = {"hidden_dim": 64, **user_config, "sample_size": target.dim,
              "prior_scale": args.prior_scale or user_config.get("prior_scale") or target.prior_scale}
    data = TrainingData(
        dataset=VectorDataset(torch.zeros(args.train_batch_size * args.steps_per_epoch, target.dim)), kind="vector",
        sample_shape=(target.dim,), num_levels=None,
        description=f"energy target '{target.name}' ({target.dim}-D; no data, fresh prior draws every batch)",
    )

    accelerator = training_utils.create_accelerator(args)
    training_utils.seed_everything(args, accelerator, device_specific=False)
    model = training_utils.build_model(EnergySamplerMLPModel, config)
    training_utils.seed_everything(args, accelerator, device_specific=True)
    ema_model = training_utils.create_ema(args, model)
    training_utils.register_checkpoint_hooks(accelerator, EnergySamplerMLPModel, ema_model)
    teacher = None
    if ema_model is not None:
        teacher = copy.deepcopy(model).requires_grad_(False).to(accelerator.device)
    counter = training_utils.StepCounter()
    accelerator.register_for_checkpointing(counter)

    def loss_fn(prepared_model, batch):
        weight = args.distill_weight * counter.ramp(args.distill_warmup_steps)
        if teacher is not None:
            ema_model.copy_to(teacher.parameters())
        out = energy_sampler_loss(
            prepared_model, target, batch.shape[0], teacher=teacher, num_steps=args.num_fine_steps,
            distill_weight=weight, volume_weight=args.volume_weight, jacobian_weight=args.jacobian_weight,
            device=batch.device,
        )
        counter.advance(accelerator)
        return out.loss, {"kl_loss": float(out.kl_loss), "state_loss": float(out.state_loss),
                          "volume_loss": float(out.volume_loss), "jacobian_loss": float(out.jacobian_loss),
                          "elbo_em": float(out.elbo), "distill_weight": weight}

    result = training_utils.train(args, accelerator, model, data, loss_fn, ema_model, tracker_name="train_sampler")

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with training_utils.ema_weights(unwrapped, ema_model):
            copied = None
            if ".py:" in args.target:  # a user's file travels with the folder
                path, _, class_name = args.target.rpartition(":")
                copied = (path, f"target/{os.path.basename(path)}")
                target.name = f"{copied[1]}:{class_name}"
            pipeline = EnergySamplerPipeline(model=unwrapped, scheduler=F2D2Scheduler(), target=target)
            with training_utils.staged_output(args.output_dir) as staging:
                pipeline.save_pretrained(staging)
                if copied:
                    os.makedirs(os.path.join(staging, "target"), exist_ok=True)
                    shutil.copyfile(copied[0], os.path.join(staging, copied[1]))
                make_diffusers_loadable(staging)
            evaluation = evaluate(pipeline, target, args.eval_samples)
        write_card(args, target, config, result, evaluation)
        accelerator.print(f"saved the energy sampler to {args.output_dir}")
        if args.push_to_hub:
            training_utils.push_to_hub(args, f"energy sampler, step {result.global_step}")
    accelerator.end_training()


def evaluate(pipeline, target, num_samples: int) -> str:
    """The card's table: deterministic-flow log Z, ELBO and ESS at a few step counts, plus the EM ELBO."""
    import time

    import torch

    if num_samples == 0:
        return "Not measured (`--eval_samples 0`); run `benchmarks/bench_samplers.py`."
    pipeline.set_progress_bar_config(disable=True)
    pipeline.model.eval()
    true = target.log_Z
    lines = [f"{num_samples} samples per row, seed 0, `volume=\"auto\"` (exact trace for d <= 64). "
             + (f"True log Z = {true:.4f}" + (f" (reference estimate +- {target.log_Z_error})" if target.log_Z_error else "")
                + "." if true is not None else "No true log Z."),
             "", "| estimator | steps | log Z | abs. error | ELBO | ESS / N | seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, fn in (("deterministic flow", pipeline.__call__), ("Euler-Maruyama", pipeline.euler_maruyama)):
        for steps in CARD_STEPS:
            start = time.perf_counter()
            out = fn(batch_size=num_samples, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
            seconds = time.perf_counter() - start
            err = f"{abs(out.log_Z - true):.3f}" if true is not None else "-"
            lines.append(f"| {name} | {steps} | {out.log_Z:.3f} | {err} | {out.elbo:.3f} | {out.ess / num_samples:.3f} | "
                         f"{seconds:.1f} |")
    return "\n".join(lines)


def write_card(args, target, config, result, evaluation: str):
    from f2d2_diffusers.training.model_card import portable_path
    from f2d2_diffusers.training.sampler_card import render_sampler_card

    loss = result.last_logs.get("loss")
    details = [
        f"Target: `{portable_path(args.target) if '.py:' in args.target else args.target}` ({target.dim}-D).",
        f"Model: EnergySamplerMLPModel, hidden width {config['hidden_dim']}, prior scale {config['prior_scale']:g}.",
        f"Optimisation steps: {result.global_step}" + (f" (final loss {loss:.4g})." if loss is not None else "."),
        f"Batch size: {result.batch_description}.",
        f"Wall time: {result.seconds / 60:.1f} minutes ({result.device_description}).",
        f"Objective: reverse KL of a {args.num_fine_steps}-step Euler-Maruyama rollout + {args.distill_weight} x "
        f"(self-distillation + {args.volume_weight} x volume consistency + {args.jacobian_weight} x Jacobian), the "
        f"weight ramped over {args.distill_warmup_steps} steps; teacher: "
        f"{'EMA (max decay ' + str(args.ema_max_decay) + ')' if args.use_ema else 'the online model, stop-gradient'}.",
    ]
    render_sampler_card(
        args.output_dir, title=f"One-step energy sampler for {target.name}",
        summary=("A step-conditioned flow map from a Gaussian prior to the unnormalised target, trained with a "
                 "path-space KL, state-space self-distillation and volume consistency: one network call gives a sample "
                 "and, through the deterministic-flow importance weight, an estimate of log Z."),
        target=target.name, target_dim=target.dim, prior_scale=config["prior_scale"], training_details=details,
        command=training_utils.training_command("train_sampler.py"), evaluation=evaluation,
        hub_model_id=args.hub_model_id,
    )


if __name__ == "__main__":
    training_utils.run_main(main, parse_args())
