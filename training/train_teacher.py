#!/usr/bin/env python
"""Train a flow-matching teacher ``v(x, sigma)`` with Accelerate.

Images: a plain diffusers ``UNet2DModel``; vectors: ``f2d2_diffusers.FlowMatchingMLPModel``. Objective
``f2d2_diffusers.flow_matching_loss``: ``|| v(x_sigma, sigma) - (eps - x_data) ||^2`` with ``sigma = 0`` data,
``sigma = 1`` noise and ``timestep = 1000 * sigma`` (diffusers' flow-matching convention).

The output folder holds ``unet/`` (the model, EMA weights with ``--use_ema``), ``scheduler/`` (diffusers'
``FlowMatchEulerDiscreteScheduler``) and ``model_index.json`` (``f2d2_diffusers.hub.make_diffusers_loadable``: a stock
``DDPMPipeline`` for image teachers, so diffusers alone loads and samples them), and
``train_f2d2.py --teacher_model_name_or_path OUTPUT_DIR`` distils it.

Example (CPU, a minute or two)::

    accelerate launch training/train_teacher.py --dataset checkerboard --output_dir teacher-checkerboard \\
        --train_batch_size 256 --max_train_steps 2000 --learning_rate 1e-3 --lr_warmup_steps 100

Several processes: ``accelerate launch --multi_gpu --num_processes 2 ...`` (on a machine without GPU the processes
join one gloo group; set ``OMP_NUM_THREADS`` so that processes x threads does not exceed the cores). Resume with
``--resume_from_checkpoint latest``.
"""

import os

from f2d2_diffusers import training as training_utils
from f2d2_diffusers.hub import make_diffusers_loadable
from f2d2_diffusers.training import render_model_card
from f2d2_diffusers.training.model_card import card_repo_id, teacher_usage


def parse_args(argv=None):
    parser = training_utils.build_parser(
        "Train a flow-matching teacher (UNet2DModel for images, FlowMatchingMLPModel for vectors).", "f2d2-teacher"
    )
    teacher = parser.add_argument_group("teacher")
    teacher.add_argument("--eval_num_inference_steps", type=int, default=50,
                         help="Euler steps of the teacher's --save_images_steps sample grids.")
    args = training_utils.parse_args(parser, argv)
    if args.eval_num_inference_steps < 1:
        parser.error(f"--eval_num_inference_steps must be a positive integer, got {args.eval_num_inference_steps}")
    return args


def main(args):
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    from f2d2_diffusers import FlowMatchingMLPModel, flow_matching_loss

    user_config = {}
    if args.model_config_name_or_path:
        user_config = training_utils.load_model_config(args.model_config_name_or_path)
    if training_utils.uses_image_data(args):
        channels, resolution = training_utils.resolve_image_geometry(args, user_config)
        data = training_utils.load_training_data(args, channels, resolution)
        model_cls, config = UNet2DModel, training_utils.image_model_config(user_config, data)
    else:
        data = training_utils.load_training_data(args)
        model_cls, config = FlowMatchingMLPModel, training_utils.vector_model_config(user_config, data)

    accelerator = training_utils.create_accelerator(args)
    # The same seed on every process: identical initial weights, then per-process training noise.
    training_utils.seed_everything(args, accelerator, device_specific=False)
    model = training_utils.build_model(model_cls, config)
    training_utils.seed_everything(args, accelerator, device_specific=True)
    ema_model = training_utils.create_ema(args, model)
    training_utils.register_checkpoint_hooks(accelerator, model_cls, ema_model)

    def loss_fn(prepared_model, batch):
        return flow_matching_loss(prepared_model, batch), {}

    sample_grid = None
    if args.save_images_steps:
        sample_grid = training_utils.teacher_grid(data, args.eval_batch_size, args.eval_num_inference_steps)
    result = training_utils.train(args, accelerator, model, data, loss_fn, ema_model, tracker_name="train_teacher",
                                  sample_grid=sample_grid)

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        # Staged, then renamed into place: a kill mid-save leaves no half-written unet/ that looks complete.
        with training_utils.staged_output(args.output_dir) as staging:
            with training_utils.ema_weights(unwrapped, ema_model):
                unwrapped.save_pretrained(os.path.join(staging, "unet"))
            FlowMatchEulerDiscreteScheduler().save_pretrained(os.path.join(staging, "scheduler"))
            make_diffusers_loadable(staging)  # model_index.json: a stock DDPMPipeline (images) or the package's pipeline
        generalization = held_out_loss(args, data, unwrapped, ema_model)
        write_card(args, data, result, model_cls, generalization)
        accelerator.print(f"saved the teacher to {args.output_dir} (unet/, scheduler/, model_index.json)")
        if args.push_to_hub:
            training_utils.push_to_hub(args, f"flow-matching teacher, step {result.global_step}")
    accelerator.end_training()


def held_out_loss(args, data, model, ema_model):
    """The saved model's flow-matching loss by band of ``sigma`` on training and on held-out points (``None`` where
    the data has no held-out split here); printed, and written to the card."""
    import torch

    from f2d2_diffusers import flow_matching_loss_by_band

    points = training_utils.generalization_data(args, data)
    if points is None:
        return None
    was_training = model.training
    with training_utils.ema_weights(model, ema_model), torch.no_grad():
        model.eval()  # dropout off: the loss of the model that was saved
        losses = {name: flow_matching_loss_by_band(model, split) for name, split in zip(("training", "held_out"), points)}
    model.train(was_training)
    print(f"flow-matching loss by sigma band on {points[1].shape[0]} training / held-out points: " + "; ".join(
        f"{band}: {losses['training'][band]:.4f} / {losses['held_out'][band]:.4f}" for band in losses["training"]))
    return dict(points=points[1].shape[0], **losses)


def generalization_sentence(generalization) -> str:
    """The card's line for :func:`held_out_loss`'s result."""
    bands = list(generalization["training"])

    def values(split):
        return " / ".join(f"{generalization[split][band]:.3f}" for band in bands)

    return (
        f"Flow-matching loss on {generalization['points']} training and {generalization['points']} held-out points, "
        f"sigma in {' / '.join(bands)}: training {values('training')}, held-out {values('held_out')}. A held-out loss "
        "well above the training loss at small sigma is a teacher that memorises its training data; distilled "
        "likelihoods of new data are then biased (`docs/method.md` section 5.1)."
    )


def write_card(args, data, result, model_cls, generalization=None):
    repo_id = card_repo_id(args.output_dir, args.hub_model_id)
    usage = teacher_usage(repo_id, data.kind, data.sample_shape)
    render_model_card(
        args.output_dir, is_f2d2=False,
        title=f"Flow-matching teacher ({model_cls.__name__})",
        summary=(
            f"A `{model_cls.__name__}` velocity field `v(x, sigma) = dx/dsigma` trained by flow matching "
            "(target `eps - x_data`), with a `FlowMatchEulerDiscreteScheduler` to sample it. It is the teacher of "
            "an F2D2 joint flow map (`train_f2d2.py`)."
        ),
        data=data, result=result, command=training_utils.training_command("train_teacher.py"), usage=usage,
        details=[f"EMA weights: {'yes' if args.use_ema else 'no'}."]
        + ([generalization_sentence(generalization)] if generalization else []), repo_id=repo_id,
        calibration=(
            "This teacher is the reference its F2D2 students are calibrated against: its likelihood is the augmented "
            "ODE solved by `f2d2_diffusers.reference_log_likelihood` (dopri5, exact or Hutchinson divergence). "
            "See the student's card for few-step calibration."
        ),
    )


if __name__ == "__main__":
    training_utils.run_main(main, parse_args())
