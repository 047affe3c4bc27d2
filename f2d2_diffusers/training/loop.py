"""Accelerate and the training loop both scripts run: setup, seeding, EMA, the optimisation itself.

Time convention everywhere (``docs/method.md`` section 1): ``sigma = 0`` is data, ``sigma = 1`` is noise, models
receive ``timestep = 1000 * sigma``. Images live in [-1, 1]; discrete images are uniformly dequantised per batch.
"""

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..atomic import remove_unfinished, write_text_atomically
from .checkpointing import checkpoint_step, resolve_resume_path, save_checkpoint
from .cli import DEFAULT_MAX_TRAIN_STEPS, TrainingError
from .data import TrainingData
from .sample_grids import SAMPLES_DIR, save_sample_grid

logger = logging.getLogger("f2d2_training")


def _no_accelerator_available() -> bool:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return not accel.is_available()
    return not torch.cuda.is_available()


def create_accelerator(args):
    """An ``Accelerator`` set up like ``train_unconditional.py``'s, plus multi-process CPU runs.

    ``accelerate launch --multi_gpu --num_processes N`` on a machine with no GPU starts N processes that Accelerate
    would each run alone; here they join one gloo process group (MULTI_CPU) instead.
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = multi_process and _no_accelerator_available()
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=7200))],
        cpu=cpu,
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        level=logging.INFO if accelerator.is_local_main_process else logging.ERROR,
    )
    import diffusers

    if accelerator.is_local_main_process:
        diffusers.utils.logging.set_verbosity_warning()
    else:
        diffusers.utils.logging.set_verbosity_error()
    warn_if_fewer_processes_than_requested(accelerator)
    return accelerator


#: Options of ``accelerate launch`` that name the process count.
_NUM_PROCESSES_OPTIONS = ("--num_processes", "--num-processes")


def _launcher_command_line() -> List[str]:
    """The command line of this process's parent (``accelerate launch ...`` when the launcher started it), or ``[]``."""
    try:
        import psutil  # a dependency of accelerate

        return psutil.Process(os.getppid()).cmdline()
    except Exception:  # noqa: BLE001  (no psutil, no permission, a parent that is gone: nothing to read)
        return []


def requested_num_processes(environ=None, command_line: Optional[Sequence[str]] = None) -> Optional[int]:
    """How many processes ``accelerate launch`` was asked for, when that was more than the one it started; else ``None``.

    Without ``--multi_gpu`` (and without a GPU that makes Accelerate add it), ``accelerate launch --num_processes N``
    starts ONE process (its ``simple_launcher``) and passes no count on: no ``WORLD_SIZE``, ``RANK`` or
    ``LOCAL_RANK``. What it does set is ``MASTER_ADDR``/``MASTER_PORT`` (only when N > 1, or several machines)
    beside its ``ACCELERATE_*`` variables. So "asked for more than one, got one" is: ``ACCELERATE_MIXED_PRECISION``
    and ``MASTER_ADDR`` set, ``WORLD_SIZE`` not. The number N itself is read from the launcher's command line (the
    parent process) when it is there; a count from an ``accelerate config`` file is reported as 0 ("more than one").
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ or "MASTER_ADDR" not in environ or "ACCELERATE_MIXED_PRECISION" not in environ:
        return None
    command_line = list(_launcher_command_line() if command_line is None else command_line)
    for i, arg in enumerate(command_line):
        for option in _NUM_PROCESSES_OPTIONS:
            value = None
            if arg == option and i + 1 < len(command_line):
                value = command_line[i + 1]
            elif arg.startswith(option + "="):
                value = arg.split("=", 1)[1]
            if value is not None:
                try:
                    return int(value) if int(value) > 1 else None
                except ValueError:
                    return 0
    return 0


def warn_if_fewer_processes_than_requested(accelerator, environ=None, command_line=None) -> Optional[str]:
    """One warning (main process) when ``accelerate launch`` was asked for more processes than it started; returns it."""
    requested = requested_num_processes(environ, command_line)
    if requested is None or accelerator.num_processes != 1:
        return None
    count = f"{requested} processes" if requested else "more than one process"
    n = str(requested) if requested else "N"
    message = (
        f"`accelerate launch` was asked for {count} but started {accelerator.num_processes}: without "
        f"--multi_gpu it runs the script once. Add --multi_gpu (accelerate launch --multi_gpu --num_processes {n} ...)"
    )
    if _no_accelerator_available():
        message += (
            "; on this machine without GPU the processes then join one gloo group on the CPU. Set OMP_NUM_THREADS so "
            f"that processes x threads does not exceed the {os.cpu_count()} cores (e.g. OMP_NUM_THREADS="
            f"{max(1, (os.cpu_count() or 1) // max(requested, 2))})"
        )
    message += "."
    if accelerator.is_main_process:
        logger.warning(message)
    return message


def seed_everything(args, accelerator, device_specific: bool) -> None:
    """``--seed`` for every generator: the same on every process (``device_specific=False``, for identical initial
    weights) or offset by the process index (``True``, for per-process training noise). No seed: nothing is set."""
    if args.seed is not None:
        from accelerate.utils import set_seed

        set_seed(args.seed, device_specific=device_specific)


def create_ema(args, model):
    """An ``EMAModel`` of ``model`` (``train_unconditional.py``'s warm-up settings), or ``None`` without ``--use_ema``."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
        power=args.ema_power, model_cls=type(model), model_config=model.config,
    )


class EpochShuffle:
    """The data order: epoch ``e`` is shuffled by ``generator``, seeded from ``(seed, e)`` alone.

    So a resumed run sees the interrupted epoch in the same order again (Accelerate's ``skip_first_batches`` then
    skips what was trained on), and shuffling never draws from the global RNG that the training noise comes from. The
    seed is saved in checkpoints (``accelerator.register_for_checkpointing``).
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        # Mixed by SeedSequence: seeding the generator with --seed itself would repeat the training noise's stream.
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]))

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = int(state["seed"])


def _data_seed(args, accelerator) -> int:
    """``--seed``, else a random seed; the same on every process, whose shards must come from one order."""
    if args.seed is not None:
        return args.seed
    seed = [int(torch.randint(0, 2**62, ()).item())]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(seed)
    return seed[0]


def _open_train_log(args, resumed_step: Optional[int]):
    """``output_dir/logs/train_log.jsonl`` opened for appending. A resumed run (``resumed_step``: the step it resumes
    from, 0 when ``latest`` found nothing) first drops the lines past that step, which it will log again."""
    path = os.path.join(args.output_dir, "logs", "train_log.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if resumed_step is not None and os.path.isfile(path):
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    step = json.loads(line)["step"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by the kill
                if step <= resumed_step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        write_text_atomically(path, "".join(kept))
    return open(path, "a")


@dataclass
class TrainingResult:
    """What :func:`train` reports for the model card."""

    global_step: int
    last_logs: Dict[str, float]
    batch_description: str = ""
    #: Wall time of this run's training loop (a resumed run counts from its resume).
    seconds: float = 0.0
    device_description: str = ""


def train(
    args,
    accelerator,
    model,
    data: TrainingData,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], Tuple[torch.Tensor, Dict[str, float]]],
    ema_model=None,
    tracker_name: str = "f2d2",
    sample_grid: Optional[Callable[[torch.nn.Module], object]] = None,
) -> TrainingResult:
    """Optimise ``model`` on ``data`` with ``loss_fn(prepared_model, model_space_batch) -> (loss, logs)``.

    AdamW, ``get_scheduler``, ``accelerator.accumulate``, gradient clipping, EMA, ``checkpoint-N`` folders with
    pruning, resuming (``--resume_from_checkpoint``) with the batches of the interrupted epoch skipped,
    ``accelerator.log`` and a progress bar on the main process.

    A resumed run continues exactly as the uninterrupted run would have (``num_workers=0``): weights, optimiser,
    scheduler, EMA, every random state and the data order all come back from the checkpoint.

    ``sample_grid``: a :mod:`.sample_grids` function (``teacher_grid`` / ``f2d2_grid``), drawn every
    ``--save_images_steps`` steps into ``output_dir/samples/`` and the trackers; it uses no global random state.
    """
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    data_order = EpochShuffle(_data_seed(args, accelerator))
    dataloader = torch.utils.data.DataLoader(
        data.dataset, batch_size=args.train_batch_size, shuffle=True, num_workers=args.dataloader_num_workers,
        generator=data_order.generator,
    )
    if len(data.dataset) == 0:
        raise TrainingError("the training set is empty")
    # Steps per epoch as each process will see them after `prepare` shards the data.
    batches_per_process = math.ceil(len(dataloader) / accelerator.num_processes)
    updates_per_epoch = max(1, math.ceil(batches_per_process / args.gradient_accumulation_steps))
    if args.max_train_steps is not None:
        max_train_steps = args.max_train_steps
    elif args.num_epochs is not None:
        max_train_steps = args.num_epochs * updates_per_epoch
    else:
        max_train_steps = DEFAULT_MAX_TRAIN_STEPS
    # The prepared scheduler steps once per process for every optimiser step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if ema_model is not None:
        ema_model.to(accelerator.device)
    updates_per_epoch = max(1, math.ceil(len(dataloader) / args.gradient_accumulation_steps))
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)

    accelerator.register_for_checkpointing(data_order)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        remove_unfinished(args.output_dir)
        remove_unfinished(os.path.join(args.output_dir, SAMPLES_DIR))  # a grid whose write was cut short
        tracker_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(tracker_name, config=tracker_config)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Data = {data.description}")
    logger.info(f"  Num examples = {len(data.dataset)}")
    logger.info(f"  Num epochs = {num_epochs}")
    logger.info(f"  Batch size per process = {args.train_batch_size}")
    logger.info(f"  Total batch size (parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimisation steps = {max_train_steps}")

    global_step, first_epoch, resume_batches = 0, 0, 0
    resume_path = resolve_resume_path(args)
    if resume_path is not None:
        accelerator.print(f"resuming from {resume_path}")
        try:
            accelerator.load_state(resume_path)
        except Exception as err:  # noqa: BLE001  (a corrupt checkpoint is the user's input too)
            hint = ""
            if "custom checkpoints" in str(err):
                hint = (" (the checkpoint was saved with other ramp flags than this run's, e.g. --tangent_warmup_steps "
                        "on in one and off in the other: resume with the flags it was saved with)")
            raise TrainingError(f"cannot resume from {resume_path}: {type(err).__name__}: {err}{hint}") from None
        global_step = checkpoint_step(resume_path)
        first_epoch = global_step // updates_per_epoch
        resume_batches = (global_step % updates_per_epoch) * args.gradient_accumulation_steps

    log_file = None
    if accelerator.is_main_process:
        log_file = _open_train_log(args, global_step if args.resume_from_checkpoint is not None else None)

    start_time = time.perf_counter()
    progress_bar = tqdm(range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process,
                        desc="Steps")
    logs: Dict[str, float] = {}
    try:
        for epoch in range(first_epoch, num_epochs):
            if global_step >= max_train_steps:
                break
            model.train()
            data_order.set_epoch(epoch)
            loader = dataloader
            if epoch == first_epoch and resume_batches > 0:
                loader = accelerator.skip_first_batches(dataloader, resume_batches)
            for batch in loader:
                clean = data.to_model_space(batch.to(accelerator.device))
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, extra = loss_fn(model, clean)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"the loss became {loss.item()} at step {global_step}; lower --learning_rate")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    if ema_model is not None:
                        ema_model.step(model.parameters())
                    progress_bar.update(1)
                    global_step += 1
                    logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step,
                            "epoch": epoch, "elapsed_seconds": round(time.perf_counter() - start_time, 2), **extra}
                    if ema_model is not None:
                        logs["ema_decay"] = ema_model.cur_decay_value
                    progress_bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2g}")
                    accelerator.log(logs, step=global_step)
                    if log_file is not None:
                        log_file.write(json.dumps(logs) + "\n")
                        log_file.flush()
                    if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
                        save_checkpoint(args, accelerator, global_step)
                    save_images_steps = getattr(args, "save_images_steps", 0)
                    if sample_grid is not None and save_images_steps and global_step % save_images_steps == 0:
                        save_sample_grid(args, accelerator, model, ema_model, global_step, sample_grid)
                    if global_step >= max_train_steps:
                        break
    finally:
        progress_bar.close()
        if log_file is not None:
            log_file.close()
    accelerator.wait_for_everyone()
    batch_description = (
        f"{args.train_batch_size} per process x {accelerator.num_processes} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation step(s) = {total_batch_size}"
    )
    device = accelerator.device.type
    device_description = f"{accelerator.num_processes} process(es) on {device}" + (
        f", {torch.get_num_threads()} CPU thread(s) each" if device == "cpu" else ""
    )
    return TrainingResult(global_step=global_step, last_logs=logs, batch_description=batch_description,
                          seconds=time.perf_counter() - start_time, device_description=device_description)


def calibration_metrics(rows: Sequence[dict], unit: str) -> Dict[str, float]:
    """Tracker scalars of a calibration table (``f2d2_diffusers.likelihood_calibration`` rows).

    Keys ``calibration/{what}_{unit}[_{K}_step]``, unit ``bits_per_dim`` or ``nll_nats``: ``reference_...`` (the
    teacher's ODE), ``..._K_step`` (the F2D2 bidirectional value at K steps), ``error_...`` (F2D2 minus reference,
    mean), ``abs_error_...`` (per-sample mean absolute error), and the same with ``paper_`` for the paper's evaluation,
    e.g. ``calibration/error_bits_per_dim_1_step``.
    """
    slug = "bits_per_dim" if unit == "bits/dim" else "nll_nats"
    metrics = {}
    for row in rows:
        if row["evaluation"] == "reference":
            metrics[f"calibration/reference_{slug}"] = float(row["value"])
            continue
        prefix = "" if row["evaluation"] == "bidirectional" else f"{row['evaluation']}_"
        suffix = f"{slug}_{row['steps']}_step"
        metrics[f"calibration/{prefix}{suffix}"] = float(row["value"])
        metrics[f"calibration/{prefix}error_{suffix}"] = float(row["error"])
        metrics[f"calibration/{prefix}abs_error_{suffix}"] = float(row["abs_error"])
    return metrics


def log_calibration(accelerator, rows: Sequence[dict], unit: str, step: Optional[int] = None) -> Dict[str, float]:
    """:func:`calibration_metrics` to the trackers (``accelerator.log``, main process); returns them."""
    metrics = calibration_metrics(rows, unit)
    if metrics:
        accelerator.log(metrics, step=step)
    return metrics


class ema_weights:
    """Context manager: the unwrapped model holds the EMA weights inside, its own weights again after."""

    def __init__(self, model, ema_model):
        self.model, self.ema_model = model, ema_model

    def __enter__(self):
        if self.ema_model is not None:
            self.ema_model.store(self.model.parameters())
            self.ema_model.copy_to(self.model.parameters())
        return self.model

    def __exit__(self, *exc):
        if self.ema_model is not None:
            self.ema_model.restore(self.model.parameters())
        return False
