"""Resumable training state: ``output_dir/checkpoint-N`` folders written by ``accelerator.save_state``.

Besides Accelerate's optimiser, scheduler and random states, each checkpoint holds diffusers folders: ``unet/`` (the
model, loadable with ``from_pretrained``) and, with ``--use_ema``, ``unet_ema/`` (the EMA weights and state).
"""

import logging
import os
import re
import shutil
from typing import List, Optional

from .cli import TrainingError

CHECKPOINT_PREFIX = "checkpoint-"
#: The ``EMAModel`` state saved in ``unet_ema/config.json`` besides the model config.
EMA_STATE_KEYS = ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")

logger = logging.getLogger("f2d2_training")


def register_checkpoint_hooks(accelerator, model_cls, ema_model) -> None:
    """Make ``accelerator.save_state``/``load_state`` write and read diffusers folders inside ``checkpoint-N``:
    ``unet/`` (the model, loadable with ``model_cls.from_pretrained``) and ``unet_ema/`` (with ``--use_ema``)."""

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_model is not None:
                ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, "unet"))
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
    """Prune old checkpoints to make room (``--checkpoints_total_limit``), then save ``checkpoint-{global_step}``."""
    if accelerator.is_main_process and args.checkpoints_total_limit is not None:
        checkpoints = list_checkpoints(args.output_dir)
        if len(checkpoints) >= args.checkpoints_total_limit:
            to_remove = checkpoints[: len(checkpoints) - args.checkpoints_total_limit + 1]
            logger.info(f"removing {len(to_remove)} old checkpoint(s): {', '.join(to_remove)}")
            for name in to_remove:
                shutil.rmtree(os.path.join(args.output_dir, name))
    accelerator.wait_for_everyone()
    save_path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    accelerator.save_state(save_path)
    logger.info(f"saved state to {save_path}")
    return save_path


def resolve_resume_path(args) -> Optional[str]:
    """The checkpoint to resume from, or ``None`` to start afresh (``latest`` with no checkpoint yet)."""
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {args.output_dir}; starting a new run")
            return None
        return os.path.join(args.output_dir, checkpoints[-1])
    path = args.resume_from_checkpoint.rstrip("/")
    if not re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", os.path.basename(path)):
        raise TrainingError(f"--resume_from_checkpoint: {path} is not a {CHECKPOINT_PREFIX}N folder")
    if not os.path.isdir(os.path.join(path, "unet")):
        raise TrainingError(f"--resume_from_checkpoint: {path} holds no unet/ folder; was it written by these scripts?")
    return path
