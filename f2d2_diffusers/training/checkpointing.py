"""Resumable training state: ``output_dir/checkpoint-N`` folders written by ``accelerator.save_state``.

Besides Accelerate's optimiser, scheduler, random and data-order states, each checkpoint holds diffusers folders:
``unet/`` (the model, loadable with ``from_pretrained``) and, with ``--use_ema``, ``unet_ema/`` (the EMA weights and
state).

A checkpoint is written as ``.incomplete-checkpoint-N``, ends with ``checkpoint_complete.json`` (every file and its
size) and is then renamed to ``checkpoint-N``; old checkpoints are pruned only after that. A kill at any moment
leaves the previous checkpoints intact, and :func:`resolve_resume_path` checks a folder against its manifest before
resuming from it.
"""

import json
import logging
import math
import os
import re
import signal
from typing import List, Optional

from ..atomic import STAGING_PREFIX, discard, fsync_tree, replace_folder
from .cli import TrainingError

CHECKPOINT_PREFIX = "checkpoint-"
#: Written last into a checkpoint: ``{"step": N, "files": {relative path: size in bytes}, "settings": {...}}``
#: (``settings``: the :data:`RESUME_SETTINGS` of the run).
MANIFEST_NAME = "checkpoint_complete.json"
#: What a checkpoint cannot do without, named when a folder has no manifest to say what is missing.
CORE_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "optimizer.bin", "scheduler.bin",
              "random_states_0.pkl")
#: Test hook: ``F2D2_TEST_CRASH_DURING_SAVE=N`` kills the process (SIGKILL) half-way through writing checkpoint-N.
TEST_CRASH_DURING_SAVE = "F2D2_TEST_CRASH_DURING_SAVE"
#: Flags that change what is being trained, recorded in each checkpoint's manifest and checked on resume
#: (:func:`check_resume_settings`): a run resumed with another value would silently train something else.
RESUME_SETTINGS = ("grid_shift", "likelihood_grid_shift")
#: The ``EMAModel`` state saved in ``unet_ema/config.json`` besides the model config.
EMA_STATE_KEYS = ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")

logger = logging.getLogger("f2d2_training")


def register_checkpoint_hooks(accelerator, model_cls, ema_model) -> None:
    """Make ``accelerator.save_state``/``load_state`` write and read diffusers folders inside ``checkpoint-N``:
    ``unet/`` (the model, loadable with ``model_cls.from_pretrained``) and ``unet_ema/`` (with ``--use_ema``)."""

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_model is not None:
                import torch

                # EMAModel.save_pretrained builds a fresh model to save from, whose initialisation would draw from
                # the training's random stream: a run that saves checkpoints would train differently from one that
                # does not.
                with torch.random.fork_rng(devices=[]):
                    ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, "unet"))
            _test_hook_crash_during_save(output_dir)
        # Accelerate must not save the same weights a second time.
        while weights:
            weights.pop()

    def load_model_hook(models, input_dir):
        if ema_model is not None:
            load_ema(ema_model, os.path.join(input_dir, "unet_ema"), model_cls, accelerator.unwrap_model(models[0]))
            ema_model.to(accelerator.device)
        while models:
            model = models.pop()
            loaded = model_cls.from_pretrained(input_dir, subfolder="unet")
            target = accelerator.unwrap_model(model)
            target.register_to_config(**loaded.config)
            target.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def load_ema(ema_model, folder: str, model_cls, model) -> None:
    """Load the ``unet_ema/`` folder ``EMAModel.save_pretrained`` wrote into ``ema_model``.

    Same result as ``EMAModel.from_pretrained`` without its deprecated ``from_config(path)`` call and its warning
    about the EMA keys in the config: the weights are read by name and ordered like ``model.parameters()``.
    """
    config = model_cls.load_config(folder)
    weights_file = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(weights_file):
        from safetensors.torch import load_file

        state = load_file(weights_file)
    else:
        state = model_cls.from_pretrained(folder).state_dict()
    names = [name for name, _ in model.named_parameters()]
    missing = [name for name in names if name not in state]
    if missing:
        raise TrainingError(f"{folder} lacks EMA weights for {missing[:3]}; it does not match the model")
    ema_state = {key: config[key] for key in EMA_STATE_KEYS if key in config}
    ema_state["shadow_params"] = [state[name] for name in names]
    ema_model.load_state_dict(ema_state)


def list_checkpoints(output_dir: str) -> List[str]:
    """``checkpoint-N`` folder names in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [d for d in os.listdir(output_dir) if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", d)]
    return sorted(names, key=checkpoint_step)


def checkpoint_step(path: str) -> int:
    """The step ``N`` of a ``checkpoint-N`` folder (a name or a path)."""
    return int(os.path.basename(path)[len(CHECKPOINT_PREFIX):])


def save_checkpoint(args, accelerator, global_step: int) -> str:
    """Save ``checkpoint-{global_step}`` crash-safely, then prune old checkpoints (``--checkpoints_total_limit``)."""
    name = f"{CHECKPOINT_PREFIX}{global_step}"
    save_path = os.path.join(args.output_dir, name)
    staging = os.path.join(args.output_dir, f"{STAGING_PREFIX}{name}")
    if accelerator.is_main_process:
        discard(staging)
        os.makedirs(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    # Every process has written its random states before the folder is declared complete.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(staging, global_step, {k: getattr(args, k) for k in RESUME_SETTINGS if hasattr(args, k)})
        replace_folder(staging, save_path)
        if args.checkpoints_total_limit is not None:
            older = [c for c in list_checkpoints(args.output_dir) if c != name]
            to_remove = older[: max(0, len(older) + 1 - args.checkpoints_total_limit)]
            if to_remove:
                logger.info(f"removing {len(to_remove)} old checkpoint(s): {', '.join(to_remove)}")
            for old in to_remove:
                discard(os.path.join(args.output_dir, old))
    logger.info(f"saved state to {save_path}")
    return save_path


def write_manifest(folder: str, step: int, settings: Optional[dict] = None) -> None:
    """Flush every file of ``folder`` to disk, then list them with their sizes (and the run's ``settings``, see
    :data:`RESUME_SETTINGS`) in its manifest, written last."""
    fsync_tree(folder)
    files = {}
    for root, _, names in os.walk(folder):
        for file_name in names:
            path = os.path.join(root, file_name)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    files.pop(MANIFEST_NAME, None)
    with open(os.path.join(folder, MANIFEST_NAME), "w") as f:
        json.dump({"step": step, "settings": settings or {}, "files": dict(sorted(files.items()))}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _test_hook_crash_during_save(folder: str) -> None:
    """Test hook (:data:`TEST_CRASH_DURING_SAVE`): die as a kill would, after the model folders, before the rest."""
    step = os.environ.get(TEST_CRASH_DURING_SAVE)
    if step and os.path.basename(os.path.normpath(folder)) == f"{STAGING_PREFIX}{CHECKPOINT_PREFIX}{step}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def checkpoint_problem(path: str) -> Optional[str]:
    """Why the folder ``path`` cannot be resumed from (no manifest, missing or cut-short files), or ``None``."""
    if not os.path.isdir(path):
        return "it is not a folder"
    problems = []
    if os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        try:
            with open(os.path.join(path, MANIFEST_NAME)) as f:
                expected = dict(json.load(f)["files"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"its {MANIFEST_NAME} is unreadable ({type(err).__name__}: {err})"
    else:
        problems.append(f"no {MANIFEST_NAME}, so its save did not finish")
        if not os.listdir(path):
            return problems[0] + "; the folder is empty"
        expected = dict.fromkeys(CORE_FILES)  # sizes unknown: name what is surely missing
    missing, damaged = [], []
    for name, size in expected.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            missing.append(name)
            continue
        actual = os.path.getsize(file)
        if size is None and actual == 0:  # no manifest to compare with: only an empty file is surely cut short
            damaged.append(f"{name} is empty")
        elif size is not None and actual != size:
            damaged.append(f"{name} has {actual} bytes, expected {size}")
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    problems.extend(damaged)
    return "; ".join(problems) or None


def resolve_resume_path(args) -> Optional[str]:
    """The checkpoint to resume from, or ``None`` to start afresh (``latest`` with no complete checkpoint yet).

    ``latest`` is the newest complete ``checkpoint-N``; incomplete or corrupt ones are skipped with a warning. A named
    folder that is incomplete or corrupt is an error naming what is missing.
    """
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {args.output_dir}; starting a new run")
            return None
        for name in reversed(checkpoints):
            path = os.path.join(args.output_dir, name)
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning(f"--resume_from_checkpoint latest: skipping {path}, incomplete or corrupt: {problem}")
        logger.warning(
            f"--resume_from_checkpoint latest: no complete checkpoint in {args.output_dir}; starting a new run"
        )
        return None
    path = args.resume_from_checkpoint.rstrip("/")
    if not re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", os.path.basename(path)):
        raise TrainingError(f"--resume_from_checkpoint: {path} is not a {CHECKPOINT_PREFIX}N folder")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise TrainingError(
            f"--resume_from_checkpoint: {path} is incomplete or corrupt: {problem}. Resume from an earlier "
            f"{CHECKPOINT_PREFIX}N or with 'latest' (the newest complete one)"
        )
    return path


def check_resume_settings(args, path: str) -> None:
    """Make ``args`` agree with the :data:`RESUME_SETTINGS` recorded in checkpoint ``path``: a flag left unset
    (``None``) takes the recorded value; one set to another value is a ``TrainingError``. Checkpoints written before
    the record existed are not checked."""
    try:
        with open(os.path.join(path, MANIFEST_NAME)) as f:
            recorded = dict(json.load(f).get("settings") or {})
    except (OSError, ValueError, TypeError):
        return  # resolve_resume_path has already vetted the folder; an old one simply has no record
    for name, value in recorded.items():
        if not hasattr(args, name):
            continue
        given = getattr(args, name)
        if given is None or _same_setting(given, value):
            setattr(args, name, value)  # a value given to fewer digits (1/3 as 0.333333333333) is the recorded one
        else:
            raise TrainingError(
                f"cannot resume from {path}: it was trained with --{name} {value}, this run has --{name} "
                f"{given}; resume with the same value (or leave the flag out)"
            )


def _same_setting(given, recorded) -> bool:
    if isinstance(given, float) and isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return math.isclose(given, recorded, rel_tol=1e-9)
    return given == recorded


class StepCounter:
    """The optimisation step a loss sees (for ramps such as ``--distill_warmup_steps``); register it with
    ``accelerator.register_for_checkpointing`` so that a resumed run ramps on from where it stopped."""

    def __init__(self):
        self.step = 0

    def advance(self, accelerator=None) -> None:
        """Count a loss call; with ``accelerator`` only the micro-batch that completes an optimisation step, so that
        ``--gradient_accumulation_steps`` does not shorten a ramp."""
        if accelerator is None or accelerator.sync_gradients:
            self.step += 1

    def ramp(self, warmup_steps: int) -> float:
        """``min(1, step / warmup_steps)``; 1 when ``warmup_steps`` is 0."""
        return 1.0 if warmup_steps <= 0 else min(1.0, self.step / warmup_steps)

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])
