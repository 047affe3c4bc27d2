#!/usr/bin/env python
"""Distil an F2D2 joint flow map (average velocity ``u`` and average divergence ``D`` over a signed step ``h``)
with Accelerate.

``--objective shortcut``: ``f2d2_diffusers.shortcut_f2d2_loss`` (semigroup distillation). The tangent part
regresses ``u(x, s, 0)`` on the teacher's velocity and ``D(x, s, 0)`` on its divergence; the bootstrap part
regresses dyadic steps ``|h| = 2^-k`` on two half steps. ``--objective meanflow``:
``f2d2_diffusers.meanflow_f2d2_loss`` (the Eulerian identity for both heads, one forward-mode JVP per batch;
``docs/method.md`` 5.4). ``--directions both`` trains sampling (``h < 0``) and
likelihood (``h > 0``) steps; ``forward`` only sampling steps, as the F2D2 paper does.

With ``--teacher_model_name_or_path`` (a folder written by ``train_teacher.py``, or any folder holding a
``UNet2DModel`` / ``FlowMatchingMLPModel`` as ``unet/`` or at its top level) the student starts from the teacher's
weights (``F2D2UNet2DModel.from_teacher`` / ``F2D2MLPModel.from_teacher``). Without it the model self-distils
from scratch (targets ``eps - x_data`` and the Hutchinson divergence of its own ``u(., s, 0)``).

Time convention: ``sigma = 0`` data, ``sigma = 1`` noise, ``timestep = 1000 * sigma``, ``step = 1000 * h``.
The output folder is an ``F2D2Pipeline`` (``F2D2Pipeline.from_pretrained(output_dir)``).

Example (CPU)::

    accelerate launch training/train_f2d2.py --dataset checkerboard --teacher_model_name_or_path teacher-checkerboard \\
        --output_dir f2d2-checkerboard --train_batch_size 256 --max_train_steps 2000 --learning_rate 1e-3

Several processes: ``accelerate launch --multi_gpu --num_processes 2 ...`` (on a machine without GPU the processes
join one gloo group; set ``OMP_NUM_THREADS`` so that processes x threads does not exceed the cores). Resume with
``--resume_from_checkpoint latest``.
"""

import argparse

from f2d2_diffusers import training as training_utils
from f2d2_diffusers.hub import make_diffusers_loadable
from f2d2_diffusers.training import TrainingError, calibration_markdown, hub_base_model, render_model_card
from f2d2_diffusers.training.model_card import card_repo_id, f2d2_usage, portable_path

OBJECTIVES = ("shortcut", "meanflow")
OBJECTIVE_NAMES = {"shortcut": "Shortcut-F2D2", "meanflow": "MeanFlow-F2D2"}
#: Config keys a user may set on a student warm-started from a teacher: the new layers, and the UNet's dropout (0 unless
#: set, whatever the teacher's; ``F2D2UNet2DModel.from_teacher``).
HEAD_KEYS = {
    "F2D2UNet2DModel": ("divergence_head_channels", "divergence_head_resolution", "divergence_head_hidden_dim",
                        "step_embedding_scale", "dropout"),
    "F2D2MLPModel": ("divergence_hidden_dim", "step_embedding_scale"),
}


def parse_args(argv=None):
    parser = training_utils.build_parser(
        "Distil an F2D2 joint flow map (few-step sampling and log-likelihood) from a flow-matching teacher.", "f2d2-model"
    )
    f2d2 = parser.add_argument_group("F2D2")
    f2d2.add_argument("--teacher_model_name_or_path", type=str, default=None,
                      help="Folder of a saved teacher: train_teacher.py's output (unet/ = UNet2DModel for images, "
                           "FlowMatchingMLPModel for vectors) or the model folder itself. Omit to self-distil.")
    f2d2.add_argument("--objective", type=str, default="shortcut", choices=OBJECTIVES,
                      help="Distillation objective: 'shortcut' (semigroup / two half steps) or 'meanflow' (Eulerian "
                           "identity, one JVP per batch; docs/method.md 5.4).")
    f2d2.add_argument("--init_student_from", type=str, default=None,
                      help="Start the student from a saved F2D2 pipeline or model folder (e.g. a Shortcut-F2D2 "
                           "checkpoint to fine-tune with --objective meanflow) instead of from the teacher's weights.")
    f2d2.add_argument("--directions", type=str, default="both", choices=["both", "forward"],
                      help="'both': sampling (h < 0) and likelihood (h > 0) steps; 'forward': sampling steps only (paper).")
    f2d2.add_argument("--divergence", type=str, default="auto", choices=["auto", "exact", "hutchinson"],
                      help="Divergence of the teacher velocity: exact (d backward passes), Hutchinson, or auto "
                           "(exact for d <= 256).")
    f2d2.add_argument("--hutchinson_probes", type=int, default=1, help="Rademacher probes per Hutchinson estimate.")
    f2d2.add_argument("--bootstrap_fraction", type=float, default=0.5,
                      help="Fraction of each batch trained on non-zero steps (shortcut: dyadic bootstrap steps; "
                           "meanflow: steps from --step_distribution); the rest on the tangent, h = 0.")
    f2d2.add_argument("--max_level", type=int, default=6, help="Smallest dyadic step is 2^-max_level.")
    f2d2.add_argument("--divergence_weight", type=float, default=1.0, help="Weight of the divergence term.")
    f2d2.add_argument("--teacher_finest_level", action=argparse.BooleanOptionalAction, default=None,
                      help="Targets of the finest level from one midpoint step of the teacher (default: on when a "
                           "teacher is given; --no-teacher_finest_level turns it off).")
    f2d2.add_argument("--anchor_starts_to_grid", action=argparse.BooleanOptionalAction, default=True,
                      help="Draw bootstrap start times on multiples of |h|, the points few-step grids visit (default: on).")
    f2d2.add_argument("--grid_shift", type=float, default=None,
                      help="Train the dyadic steps on the grids of F2D2Scheduler(shift=...) and save the pipeline with "
                           "that shift (docs/method.md 5.7): < 1 puts the short steps next to the data, where the "
                           "likelihood error starts. Default: the resumed checkpoint's, else the --init_student_from "
                           "pipeline's scheduler shift, else 1 (the uniform grids k/N). Given, it also sets the "
                           "encoding steps' grid unless --likelihood_grid_shift is given. Shortcut objective only.")
    f2d2.add_argument("--likelihood_grid_shift", type=float, default=None,
                      help="Train the encoding steps (h > 0) alone on the grids of shift C, saved as the scheduler's "
                           "likelihood_shift: short likelihood steps next to the data while sampling keeps the grids "
                           "of --grid_shift (docs/method.md 5.7). Default: the resumed checkpoint's, else the "
                           "--init_student_from pipeline's likelihood_shift, else --grid_shift if given, else 1/3 "
                           "(2-step midpoint at sigma = 1/4; 1 for MeanFlow-F2D2, the trajectory loss and "
                           "--directions forward). Pass --likelihood_grid_shift 1 for the uniform grids.")
    meanflow = parser.add_argument_group("MeanFlow-F2D2 (--objective meanflow)")
    meanflow.add_argument("--step_distribution", type=str, default="logit_normal", choices=["dyadic", "logit_normal", "uniform"],
                          help="Where the non-zero steps are drawn (default logit_normal, the only one that calibrated in "
                               "benchmarks/results/ablations_meanflow.md): dyadic |h| = 2^-k (starts on the grid with "
                               "--anchor_starts_to_grid), or from two logit-normal / uniform times.")
    meanflow.add_argument("--logit_normal_mean", type=float, default=-0.4, help="Mean of the logit-normal times.")
    meanflow.add_argument("--logit_normal_std", type=float, default=1.0, help="Std of the logit-normal times.")
    meanflow.add_argument("--adaptive_weight_power", type=float, default=1.0,
                          help="MeanFlow's adaptive loss weight 1 / (error + eps)^p; 0 switches it off.")
    meanflow.add_argument("--adaptive_weight_eps", type=float, default=1e-3, help="eps of the adaptive loss weight.")
    meanflow.add_argument("--tangent_warmup_steps", type=int, default=0,
                          help="Ramp the h d/ds terms of the targets from 0 to 1 over this many steps (0: the Eulerian "
                               "identity from the start); the ramp survives --resume_from_checkpoint.")
    f2d2.add_argument("--trajectory_weight", type=float, default=0.0,
                      help="Weight of direct supervision on cached teacher ODE paths (the segments of the 1/2/4/8-step "
                           "grids; docs/method.md 5.3), added (plain MSE) to the objective's loss. 0: off. Needs a teacher.")
    f2d2.add_argument("--teacher_weight_anchor", type=float, default=0.0,
                      help="L2-SP: add this times sum (theta - theta_teacher)^2 over all the weights the student shares "
                           "with the teacher (docs/method.md 5.6; a sum, not a mean: the shipped digits student's is about "
                           "100 without the anchor). Logged as teacher_weight_penalty (part of loss) and "
                           "teacher_weight_distance (|theta - theta_teacher| / |theta_teacher|). 0: off. Needs a teacher.")
    f2d2.add_argument("--student_layers_per_block", type=int, default=None,
                      help="Start from the teacher deepened to this many resnets per block (UNet students; "
                           "f2d2_diffusers.models.deepen: the new layers start as pass-throughs, so the student still "
                           "computes the teacher's velocity at step 0). Default: the teacher's depth. On digits 2 layers "
                           "gave a held-out 1-step bias of -0.149 / -0.158 bits/dim over two seeds against -0.177 "
                           "(benchmarks/results/ablations_digits.md).")
    f2d2.add_argument("--trajectory_samples", type=int, default=2000,
                      help="Training examples whose teacher paths are computed once (dopri5) for --trajectory_weight.")
    f2d2.add_argument("--trajectory_draws", type=int, default=2,
                      help="Dequantisation draws per training image for the teacher paths (vectors: 1).")
    f2d2.add_argument("--calibration_samples", type=int, default=None,
                      help="After training, compare 1/2/4/8-step likelihoods with the teacher's ODE (dopri5) on this many "
                           "test points (the embedded data's test split, else the first training examples) and put the "
                           "table in the model card. Default: 32 images or 1000 vectors; 0 skips it.")
    args = training_utils.parse_args(parser, argv)
    if args.calibration_samples is not None and args.calibration_samples < 0:
        parser.error(f"--calibration_samples must be >= 0, got {args.calibration_samples}")
    if args.hutchinson_probes < 1:
        parser.error(f"--hutchinson_probes must be >= 1, got {args.hutchinson_probes}")
    if not 0.0 <= args.bootstrap_fraction < 1.0:
        parser.error(f"--bootstrap_fraction must lie in [0, 1), got {args.bootstrap_fraction}")
    if args.teacher_finest_level and not args.teacher_model_name_or_path:
        parser.error("--teacher_finest_level needs --teacher_model_name_or_path")
    if args.objective == "meanflow" and args.teacher_finest_level:
        parser.error("--teacher_finest_level belongs to --objective shortcut (MeanFlow-F2D2 has no dyadic recursion)")
    if args.teacher_finest_level is None:
        args.teacher_finest_level = args.objective == "shortcut" and bool(args.teacher_model_name_or_path)
    if args.tangent_warmup_steps < 0:
        parser.error(f"--tangent_warmup_steps must be >= 0, got {args.tangent_warmup_steps}")
    if args.tangent_warmup_steps and args.objective != "meanflow":
        parser.error("--tangent_warmup_steps belongs to --objective meanflow")
    if args.adaptive_weight_power < 0 or args.adaptive_weight_eps <= 0:
        parser.error("--adaptive_weight_power must be >= 0 and --adaptive_weight_eps > 0")
    if args.trajectory_weight < 0:
        parser.error(f"--trajectory_weight must be >= 0, got {args.trajectory_weight}")
    if args.trajectory_weight > 0 and not args.teacher_model_name_or_path:
        parser.error("--trajectory_weight needs --teacher_model_name_or_path (the paths are the teacher's ODE)")
    if args.teacher_weight_anchor < 0:
        parser.error(f"--teacher_weight_anchor must be >= 0, got {args.teacher_weight_anchor}")
    if args.teacher_weight_anchor > 0 and not args.teacher_model_name_or_path:
        parser.error("--teacher_weight_anchor needs --teacher_model_name_or_path (it pulls toward the teacher's weights)")
    if args.student_layers_per_block is not None:
        if args.student_layers_per_block < 1:
            parser.error(f"--student_layers_per_block must be >= 1, got {args.student_layers_per_block}")
        if not args.teacher_model_name_or_path or args.init_student_from:
            parser.error("--student_layers_per_block deepens the teacher's copy: it needs --teacher_model_name_or_path "
                         "and no --init_student_from")
    if args.trajectory_samples < 1 or args.trajectory_draws < 1:
        parser.error("--trajectory_samples and --trajectory_draws must be >= 1")
    from f2d2_diffusers.training.grids import check_grid_shift_flags

    problem = check_grid_shift_flags(args, args.objective, args.trajectory_weight > 0)
    if problem:
        parser.error(problem)
    if args.max_level < 0:
        parser.error(f"--max_level must be >= 0, got {args.max_level}")
    if args.divergence_weight < 0:
        parser.error(f"--divergence_weight must be >= 0, got {args.divergence_weight}")
    return args


def load_teacher(path: str):
    """``(teacher, student_cls)``; the teacher frozen, in eval mode, on the CPU."""
    from f2d2_diffusers import F2D2MLPModel, F2D2UNet2DModel, load_teacher as load_teacher_model

    try:
        teacher = load_teacher_model(path)
    except (OSError, ValueError) as err:
        raise TrainingError(f"--teacher_model_name_or_path: {err}") from None
    except Exception as err:  # noqa: BLE001  (corrupt weights are the user's input too)
        raise TrainingError(f"--teacher_model_name_or_path: cannot load {path} ({type(err).__name__}: {err})") from None
    return teacher, (F2D2UNet2DModel if "in_channels" in teacher.config else F2D2MLPModel)


def build_student(args, data, teacher, student_cls, user_config):
    from f2d2_diffusers import F2D2MLPModel, F2D2UNet2DModel

    if args.init_student_from:
        return load_initial_student(args.init_student_from, data, teacher, user_config)
    if teacher is None:
        if data.kind == "image":
            return training_utils.build_model(F2D2UNet2DModel, training_utils.image_model_config(user_config, data))
        return training_utils.build_model(F2D2MLPModel, training_utils.vector_model_config(user_config, data))
    allowed = HEAD_KEYS[student_cls.__name__]
    other = sorted(set(user_config) - set(allowed))
    if other:
        raise TrainingError(
            f"with a teacher the student copies the teacher's architecture; --model_config_name_or_path may only set "
            f"{list(allowed)}, got {other}"
        )
    try:
        student = student_cls.from_teacher(teacher, **user_config)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"cannot build a {student_cls.__name__} from the teacher: {err}") from None
    if args.student_layers_per_block is not None:
        from f2d2_diffusers.models.deepen import deepen_unet

        if student_cls is not F2D2UNet2DModel:
            raise TrainingError("--student_layers_per_block deepens UNet students; this teacher is a vector model")
        try:
            student = deepen_unet(student, args.student_layers_per_block)
        except ValueError as err:
            raise TrainingError(f"--student_layers_per_block: {err}") from None
    return student


def resolve_grid_shift(args) -> None:
    """Fill in ``--grid_shift`` and ``--likelihood_grid_shift`` when they were left out: the values a resumed
    checkpoint was trained with, else those recorded with the ``--init_student_from`` student (its steps are on those
    grids), else 1 and ``--grid_shift`` where that is given, else the default likelihood grid of the objective
    (``f2d2_diffusers.training.grids``). A resumed run given another value than its checkpoint's, or grids the
    objective cannot train, are a ``TrainingError``."""
    from f2d2_diffusers.training.grids import UNIFORM_GRIDS, recorded_grid_shifts, resolve_run_grids

    resume_path = training_utils.resolve_resume_path(args)
    recorded = None
    if resume_path is not None:
        training_utils.check_resume_settings(args, resume_path)
        recorded = UNIFORM_GRIDS  # a checkpoint written before its grids were recorded trained the uniform ones
    if args.init_student_from and (args.grid_shift is None or args.likelihood_grid_shift is None):
        recorded = recorded_grid_shifts(args.init_student_from)
        if recorded is None:
            print(f"--init_student_from {args.init_student_from}: no grid recorded with it (scheduler config or "
                  "checkpoint manifest); training on the uniform grids unless --grid_shift / --likelihood_grid_shift "
                  "say otherwise", flush=True)
            recorded = UNIFORM_GRIDS
    args.grid_shift, args.likelihood_grid_shift = resolve_run_grids(
        args.grid_shift, args.likelihood_grid_shift, recorded, args.objective, args.trajectory_weight > 0,
        encodes=args.directions == "both")
    print(f"grids: sampling steps on shift {args.grid_shift}, encoding steps on shift {args.likelihood_grid_shift} "
          "(docs/method.md 5.7; --grid_shift / --likelihood_grid_shift)", flush=True)


def scheduler_for(args):
    """The ``F2D2Scheduler`` whose grids this run trains (``f2d2_diffusers.training.grids.trained_scheduler``)."""
    from f2d2_diffusers.training.grids import trained_scheduler

    return trained_scheduler(args.grid_shift, args.likelihood_grid_shift)


def load_initial_student(path, data, teacher, user_config):
    """The student of ``--init_student_from``, checked against the data and the teacher."""
    from f2d2_diffusers import sample_shape
    from f2d2_diffusers.models import load_flow_map

    if user_config:
        raise TrainingError("--init_student_from copies a saved student; drop --model_config_name_or_path")
    try:
        student = load_flow_map(path)
    except (OSError, ValueError) as err:
        raise TrainingError(f"--init_student_from: {err}") from None
    if sample_shape(student.config) != tuple(data.sample_shape):
        raise TrainingError(
            f"--init_student_from: the student expects samples of shape {sample_shape(student.config)}; "
            f"the data are {tuple(data.sample_shape)}"
        )
    if teacher is not None and sample_shape(teacher.config) != sample_shape(student.config):
        raise TrainingError("--init_student_from: the student and the teacher have different sample shapes")
    return student.train()


def check_teacher_matches_data(teacher, data):
    from f2d2_diffusers import sample_shape

    is_image_teacher = "in_channels" in teacher.config
    expected = sample_shape(teacher.config)
    if data.kind == "image":
        if not is_image_teacher:
            raise TrainingError("the teacher is a vector model but the data are images")
        if expected != tuple(data.sample_shape):
            raise TrainingError(f"the teacher expects images of shape {expected}; the data are {data.sample_shape}")
    else:
        if is_image_teacher:
            raise TrainingError("the teacher is an image model but the data are vectors")
        if expected != tuple(data.sample_shape):
            raise TrainingError(
                f"the teacher expects vectors of length {teacher.config.sample_size}; the data have {data.sample_shape[0]}"
            )


def main(args):
    import torch

    from f2d2_diffusers import (
        F2D2MLPModel, F2D2Pipeline, F2D2UNet2DModel, meanflow_f2d2_loss, shortcut_f2d2_loss,
    )
    from f2d2_diffusers.objectives import (
        anchor_norm, anchor_weights, trajectory_f2d2_loss, weight_anchor_penalty,
    )

    resolve_grid_shift(args)
    user_config = {}
    if args.model_config_name_or_path:
        user_config = training_utils.load_model_config(args.model_config_name_or_path)
    teacher, student_cls = (None, None)
    if args.teacher_model_name_or_path:
        teacher, student_cls = load_teacher(args.teacher_model_name_or_path)
    image_data = training_utils.uses_image_data(args)
    if teacher is not None:
        is_image_teacher = "in_channels" in teacher.config
        if is_image_teacher != image_data:
            raise TrainingError(
                f"the teacher is {'an image' if is_image_teacher else 'a vector'} model but the data are "
                f"{'images' if image_data else 'vectors'}"
            )
        geometry = training_utils.resolve_image_geometry(args, dict(teacher.config)) if image_data else (None, None)
    else:
        geometry = training_utils.resolve_image_geometry(args, user_config) if image_data else (None, None)
    data = training_utils.load_training_data(args, *geometry)
    if teacher is not None:
        check_teacher_matches_data(teacher, data)

    accelerator = training_utils.create_accelerator(args)
    training_utils.seed_everything(args, accelerator, device_specific=False)
    model = build_student(args, data, teacher, student_cls, user_config)
    training_utils.seed_everything(args, accelerator, device_specific=True)
    model_cls = F2D2UNet2DModel if data.kind == "image" else F2D2MLPModel
    ema_model = training_utils.create_ema(args, model)
    training_utils.register_checkpoint_hooks(accelerator, model_cls, ema_model)
    if teacher is not None:
        teacher.to(accelerator.device)

    counter = None
    if args.tangent_warmup_steps:
        # Registered only when used: checkpoints of runs without the ramp keep their layout.
        counter = training_utils.StepCounter()
        accelerator.register_for_checkpointing(counter)

    paths = None
    if args.trajectory_weight > 0:
        from f2d2_diffusers.training.trajectories import training_trajectories

        paths = training_trajectories(args, data, teacher, accelerator, seed=args.seed)

    anchor = None
    if args.teacher_weight_anchor > 0:
        try:
            anchor = anchor_weights(model, teacher)
            teacher_weight_norm = anchor_norm(anchor)
        except ValueError as error:
            raise TrainingError(f"--teacher_weight_anchor: {error}") from None

    def objective_loss(prepared_model, batch):
        common = dict(
            teacher=teacher,
            # Targets come from the unwrapped model: no DDP hooks around the extra, gradient-free calls.
            target_model=accelerator.unwrap_model(prepared_model),
            directions=args.directions, divergence=args.divergence, num_probes=args.hutchinson_probes,
            max_level=args.max_level, divergence_weight=args.divergence_weight,
            anchor_starts_to_grid=args.anchor_starts_to_grid,
        )
        if args.objective == "meanflow":
            tangent_scale = 1.0
            if counter is not None:
                tangent_scale = counter.ramp(args.tangent_warmup_steps)
                counter.advance(accelerator)
            return meanflow_f2d2_loss(
                prepared_model, batch, step_fraction=args.bootstrap_fraction, step_distribution=args.step_distribution,
                logit_normal_mean=args.logit_normal_mean, logit_normal_std=args.logit_normal_std,
                adaptive_weight_power=args.adaptive_weight_power, adaptive_weight_eps=args.adaptive_weight_eps,
                tangent_scale=tangent_scale, **common,
            )
        return shortcut_f2d2_loss(
            prepared_model, batch, bootstrap_fraction=args.bootstrap_fraction,
            teacher_finest_level=args.teacher_finest_level, grid_shift=args.grid_shift,
            likelihood_grid_shift=args.likelihood_grid_shift, **common,
        )

    def loss_fn(prepared_model, batch):
        out = objective_loss(prepared_model, batch)
        extra = {name: float(value) for name, value in out.items() if name != "loss"}
        loss = out.loss
        if paths is not None:
            index = torch.randint(0, paths.states.shape[0], (batch.shape[0],))
            on_paths = trajectory_f2d2_loss(
                prepared_model, paths.states[index].to(batch.device), paths.integrals[index].to(batch.device),
                paths.sigmas, directions=args.directions, divergence_weight=args.divergence_weight,
            )
            loss = loss + args.trajectory_weight * on_paths.loss
            extra["trajectory_loss"] = float(on_paths.loss)
        if anchor is not None:
            squared_distance = weight_anchor_penalty(accelerator.unwrap_model(prepared_model), anchor)
            penalty = args.teacher_weight_anchor * squared_distance
            loss = loss + penalty
            extra["teacher_weight_penalty"] = penalty.item()
            extra["teacher_weight_distance"] = squared_distance.item() ** 0.5 / teacher_weight_norm
        return loss, extra

    # The grid of samples is drawn on the sampling grids (--grid_shift), the ones F2D2Pipeline steps.
    sample_grid = (training_utils.f2d2_grid(data, args.eval_batch_size, shift=args.grid_shift)
                   if args.save_images_steps else None)
    result = training_utils.train(args, accelerator, model, data, loss_fn, ema_model, tracker_name="train_f2d2",
                                  sample_grid=sample_grid)

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with training_utils.ema_weights(unwrapped, ema_model):
            pipeline = F2D2Pipeline(unet=unwrapped, scheduler=scheduler_for(args), num_levels=data.num_levels)
            # Staged, then renamed into place with model_index.json last: never a half-written pipeline.
            with training_utils.staged_output(args.output_dir) as staging:
                pipeline.save_pretrained(staging)
                make_diffusers_loadable(staging)  # pipeline.py + shims: DiffusionPipeline.from_pretrained(..., trust_remote_code=True)
            calibration = measure_calibration(args, data, pipeline, teacher, accelerator, result.global_step)
        write_card(args, data, result, model_cls, calibration)
        accelerator.print(f"saved the F2D2 pipeline to {args.output_dir}")
        if args.push_to_hub:
            training_utils.push_to_hub(args, f"F2D2 joint flow map, step {result.global_step}")
    accelerator.end_training()


def measure_calibration(args, data, pipeline, teacher, accelerator=None, step=None) -> str:
    """The calibration section of the card: few-step likelihoods against the teacher's ODE on held-out points; with
    ``accelerator``, also to its trackers at ``step`` (``calibration/error_bits_per_dim_1_step``, ...).

    Without a teacher the reference is the map's own tangent field ``u(x, sigma, 0)``, the flow it self-distils.
    """
    import torch

    from f2d2_diffusers import F2D2LikelihoodPipeline, likelihood_calibration, resolve_divergence_method

    num_samples = args.calibration_samples
    if num_samples is None:
        num_samples = 32 if data.kind == "image" else 1000
    if num_samples == 0:
        return "Not measured (`--calibration_samples 0`); run `benchmarks/calibration.py ... --update_card`."
    sample, where = training_utils.calibration_data(args, data, num_samples)
    num_dims = sample[0].numel()
    divergence = resolve_divergence_method("auto", num_dims)
    reference_model = teacher if teacher is not None else pipeline.unet
    likelihood = F2D2LikelihoodPipeline.from_pipe(pipeline)
    likelihood.set_progress_bar_config(disable=True)
    was_training = pipeline.unet.training
    pipeline.unet.eval()
    print(f"calibration: {len(sample)} {where}, F2D2 at 1/2/4/8 steps vs the teacher's dopri5 likelihood ...", flush=True)
    result = likelihood_calibration(
        likelihood, reference_model, sample.to(pipeline.device), data.num_levels, divergence=divergence,
        num_probes=16, rtol=1e-4, atol=1e-4, generator=torch.Generator().manual_seed(0), show_progress=True,
    )
    pipeline.unet.train(was_training)
    if accelerator is not None:
        training_utils.log_calibration(accelerator, result.rows, result.unit, step)
    reference = "the teacher" if teacher is not None else "the map's own zero-step velocity (no teacher)"
    probes = "exact divergence" if divergence == "exact" else "Hutchinson divergence, 16 Rademacher probes"
    return calibration_markdown(
        result.rows, result.unit,
        f"Measured at the end of training on {len(sample)} {where}, one dequantisation draw shared by all rows. "
        f"Reference: {reference}'s likelihood ODE, dopri5 (rtol = atol = 1e-4), {probes}.",
    )


def step_description(args) -> str:
    if args.objective == "meanflow" and args.step_distribution != "dyadic":
        steps = f"{args.step_distribution} steps"
    else:
        steps = f"dyadic steps down to 2^-{args.max_level}"
        if args.grid_shift != 1.0 or args.likelihood_grid_shift != args.grid_shift:
            config = ", ".join(f"{k}={v!r}" for k, v in scheduler_for(args).config.items()
                               if k in ("shift", "likelihood_shift") and v is not None)
            steps += f" on the grids of `F2D2Scheduler({config})` (saved with the pipeline)"
    weight = ""
    if args.objective == "meanflow":
        weight = f", adaptive loss weight p = {args.adaptive_weight_power}"
        if args.init_student_from:
            weight += f", started from `{portable_path(args.init_student_from)}`"
    return f"non-zero steps on a fraction {args.bootstrap_fraction} of each batch, {steps}{weight}"


def write_card(args, data, result, model_cls, calibration: str):
    dyadic = args.objective == "shortcut" or args.step_distribution == "dyadic"
    repo_id = card_repo_id(args.output_dir, args.hub_model_id)
    usage = f2d2_usage(repo_id, data.kind, data.num_levels)
    teacher = args.teacher_model_name_or_path
    render_model_card(
        args.output_dir, is_f2d2=True, base_model=hub_base_model(teacher), calibration=calibration, repo_id=repo_id,
        base_model_note=f"the teacher was the local folder `{portable_path(teacher)}`" if teacher else "no teacher",
        title=f"F2D2 joint flow map ({model_cls.__name__})",
        summary=(
            f"A joint flow map distilled with {OBJECTIVE_NAMES[args.objective]}: one network gives the average velocity `u(x, sigma, h)` "
            "and the average divergence `D(x, sigma, h)` over a signed step `h = sigma_end - sigma`, so a few steps "
            "both sample (`h < 0`) and give log-likelihoods (`h > 0`): `log p_(sigma+h)(x + h u) = log p_sigma(x) - h D`."
        ),
        data=data, result=result, command=training_utils.training_command("train_f2d2.py"), usage=usage,
        extra_tags=["few-step", "likelihood", "f2d2"],
        details=[
            f"Teacher: {portable_path(teacher) if teacher else 'none (self-distillation from scratch)'}.",
            f"Objective: {args.objective}; directions: {args.directions} "
            f"({'sampling and likelihood steps' if args.directions == 'both' else 'sampling steps only'}); "
            f"divergence targets: {args.divergence} (Hutchinson probes: {args.hutchinson_probes}); "
            f"{step_description(args)}"
            f"{', starts anchored to the grid' if args.anchor_starts_to_grid and dyadic else ''}"
            f"{', finest level from teacher midpoint steps' if args.teacher_finest_level else ''}"
            f"{f', plus teacher-path supervision (weight {args.trajectory_weight})' if args.trajectory_weight else ''}"
            f"{f', weights pulled toward the teacher (L2-SP, {args.teacher_weight_anchor})' if args.teacher_weight_anchor else ''}"
            f"{f', student started as the teacher deepened to {args.student_layers_per_block} resnets per block' if args.student_layers_per_block else ''}.",
            f"EMA weights: {'yes' if args.use_ema else 'no'}.",
        ],
    )


if __name__ == "__main__":
    training_utils.run_main(main, parse_args())
