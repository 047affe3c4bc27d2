import contextlib
import inspect
import os
import re
from typing import Optional, Tuple

import torch


def sample_shape(config) -> Optional[Tuple[int, ...]]:
    """Shape of one sample from a model config: ``(C, H, W)`` for image models (``in_channels`` and
    ``sample_size``, an int or ``(H, W)``), ``(d,)`` for vector models (``sample_size``), ``None`` when the config
    has no ``sample_size``. ``config`` is a model's ``config`` or a plain dict."""
    size = config.get("sample_size")
    if size is None:
        return None
    if "in_channels" in config:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (config["in_channels"], height, width)
    return (size,)


def timesteps_per_sample(value, sample: torch.Tensor, name: str) -> torch.Tensor:
    """A timestep-like input (number, 0-d or ``(batch,)`` tensor) as a float ``(batch,)`` tensor.

    Unlike ``UNet2DModel``, which turns a Python float into ``torch.long``, fractional values are kept.
    """
    value = torch.as_tensor(value, device=sample.device)
    if not value.is_floating_point():
        value = value.to(torch.float32)
    if value.ndim == 0:
        value = value.expand(sample.shape[0])
    if value.ndim != 1 or value.shape[0] != sample.shape[0]:
        raise ValueError(
            f"`{name}` must be a number or a tensor with one value per sample ({sample.shape[0]}); "
            f"got shape {tuple(value.shape)}"
        )
    return value


def zero_module(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        torch.nn.init.zeros_(p)
    return module


def copy_teacher_weights(student: torch.nn.Module, teacher: torch.nn.Module, new_prefixes: tuple) -> None:
    """Load every teacher weight into ``student``; only parameters under ``new_prefixes`` may stay new."""
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    stray = [k for k in missing if not k.startswith(new_prefixes)]
    if unexpected or stray:
        raise ValueError(
            "teacher and student architectures do not match: "
            f"teacher weights the student lacks: {unexpected[:5]}, student weights the teacher lacks: {stray[:5]}"
        )


def match_device_and_dtype(model, reference):
    model = model.to(reference.device)
    # A same-dtype ``.to(dtype)`` still makes diffusers warn about fp32-pinned modules, so cast only when needed.
    return model if model.dtype == reference.dtype else model.to(reference.dtype)


def init_kwargs_from(cls, config) -> dict:
    """The entries of ``config`` that ``cls.__init__`` takes (a saved config may carry others, e.g. EMA state)."""
    accepted = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in accepted and not k.startswith("_")}


def check_teacher(student_cls, teacher, teacher_cls, other_student: str) -> None:
    """A ``TypeError`` saying what ``from_teacher`` needs when ``teacher`` is not a ``teacher_cls`` velocity model
    (another kind of model, an F2D2 student, a path)."""
    if isinstance(teacher, (str, os.PathLike)):
        raise TypeError(
            f"{student_cls.__name__}.from_teacher takes the loaded teacher model, not a path: "
            f"{student_cls.__name__}.from_teacher(load_teacher({os.fspath(teacher)!r}))"
        )
    name = type(teacher).__name__
    if getattr(teacher, "is_flow_map", False):
        raise TypeError(
            f"teacher is an F2D2 student already ({name}), not a flow-matching teacher; load it with "
            f"{name}.from_pretrained to go on training it"
        )
    if not isinstance(teacher, teacher_cls):
        raise TypeError(
            f"{student_cls.__name__}.from_teacher needs a {teacher_cls.__name__} teacher (a velocity model), got {name}; "
            f"{other_student}"
        )


@contextlib.contextmanager
def explain_mismatched_checkpoint(cls, pretrained_model_name_or_path, subfolder: Optional[str] = None):
    """Turn diffusers' error for weights whose shapes differ from what ``config.json`` builds into one that names
    the checkpoint and the likely cause (an edited ``config.json``, or another model's weights)."""
    try:
        yield
    except (ValueError, RuntimeError) as err:
        text = str(err)
        if "expected shape" not in text and "size mismatch" not in text:
            raise
        where = os.fspath(pretrained_model_name_or_path) + (f"/{subfolder}" if subfolder else "")
        # diffusers says "Cannot load <path> because <param> expected shape ..., but got .... If you want ...".
        detail = re.sub(r"^Cannot load .*? because ", "", text.split(". If you want")[0].strip())
        raise ValueError(
            f"cannot load {cls.__name__} from {where}: its weights do not match its config.json ({detail}). "
            "Was config.json edited (e.g. sample_size, in_channels, channel counts), or do the weights belong to "
            "another model?"
        ) from None
