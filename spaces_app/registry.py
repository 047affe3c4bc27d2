"""The Space's models: a registry of named choices, loaded on first use and cached.

Which models exist is decided by a :class:`ModelRegistry`; ``ui.build_demo(registry=...)`` takes any registry, so
tests inject tiny random-weight models through ``ModelSpec(pipeline_factory=..., teacher_factory=...)``.
"""

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline, load_teacher, sample_shape
from f2d2_diffusers.hub import is_hub_repo_id

from content import APP_DIR, REPO_ROOT
from errors import InputError, ModelUnavailable


@dataclass
class ModelSpec:
    """One model choice.

    Args:
        name: the model's name: the label in the UI's model list (a name, never a path), also the ``model`` value of
            both API endpoints. The registry maps it to ``source`` / ``teacher_source`` internally.
        source: folder or Hub id of a saved ``F2D2Pipeline`` (ignored when ``pipeline_factory`` is given).
        teacher_source: folder (holding ``unet/``) or Hub id of its flow-matching teacher; ``None``: no teacher.
        pipeline_factory / teacher_factory: build the pipeline / teacher directly (tests inject tiny models here).
        missing_hint: appended to the message when the checkpoint is missing (how to get it).
        reference_options: keyword arguments for ``reference_log_likelihood`` (default: dopri5, rtol = atol = 1e-5).
        kind: ``"image"`` or ``"points"`` (2-D data): which ready-made examples fit the model (``None``: unknown, no
            examples are offered for it).
        aliases: other names the API accepts for this model (earlier names, so old client code keeps working).
        guidance_example: a self-guidance scale measured to help this model (README.md); the Sample tab offers an
            example with it (0: no such example).
    """

    name: str
    source: Optional[str] = None
    teacher_source: Optional[str] = None
    pipeline_factory: Optional[Callable[[], F2D2Pipeline]] = None
    teacher_factory: Optional[Callable[[], torch.nn.Module]] = None
    missing_hint: str = ""
    reference_options: Dict[str, Any] = field(default_factory=dict)
    kind: Optional[str] = None
    aliases: Tuple[str, ...] = ()
    guidance_example: float = 0.0


def _device() -> torch.device:
    return torch.device(os.environ.get("F2D2_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


class NamedRegistry:
    """Named choices, loaded on first use and cached (thread-safe): what the model and sampler registries share.

    A spec has ``name``, ``aliases``, ``source`` (folder or Hub id) and ``pipeline_factory`` (tests inject tiny
    models there). Subclasses say what a choice is called (``noun``) and how to build its pipeline.
    """

    #: What one choice is called in messages.
    noun = "model"

    def __init__(self, specs: Sequence[Any]):
        if not specs:
            raise ValueError(f"a registry needs at least one {self.noun}")
        self._specs: "OrderedDict[str, Any]" = OrderedDict((s.name, s) for s in specs)
        self._aliases: Dict[str, str] = {alias: s.name for s in specs for alias in s.aliases if alias not in self._specs}
        self._cache: Dict[Tuple[str, str], Any] = {}
        self._lock = threading.RLock()

    @property
    def names(self) -> List[str]:
        """The choices' names, as the UI lists them."""
        return list(self._specs)

    def spec(self, name: str):
        name = self._aliases.get(name, name)
        if name not in self._specs:
            raise InputError(f"Unknown {self.noun} {name!r}; choose one of: {', '.join(self._specs)}.")
        return self._specs[name]

    def canonical(self, name):
        """The name for ``name`` (itself, or the name an alias stands for); anything else unchanged."""
        return self._aliases.get(name, name) if isinstance(name, str) else name

    def _cached(self, key: Tuple[str, str], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def status(self, name: str) -> str:
        """One line on whether the choice can be loaded, without loading it (no local path: the UI shows names)."""
        spec = self.spec(name)
        if spec.pipeline_factory is not None:
            return "ready"
        if (spec.name, "pipeline") in self._cache:
            return "loaded"
        if not spec.source:
            return "not configured"
        if not is_hub_repo_id(spec.source):
            path = Path(spec.source).expanduser()
            if (path / "model_index.json").is_file():
                return "ready"
            return "**missing**: its checkpoint is not there yet (using it says where it was looked for)"
        return f"on the Hub as `{spec.source}` (loaded on first use)"

    def is_available(self, name: str) -> bool:
        return not self.status(name).startswith(("**missing**", "not configured"))

    def first_available(self) -> str:
        """The first choice whose checkpoint is there (or that is injected / on the Hub), else the first one."""
        return next((n for n in self._specs if self.is_available(n)), self.names[0])


class ModelRegistry(NamedRegistry):
    """F2D2 model choices (with their teachers), loaded on first use and cached (thread-safe)."""

    noun = "model"

    def first_of_kind(self, kind: str) -> Optional[str]:
        """The first model of ``kind`` (``"image"`` / ``"points"``) whose checkpoint is there, else the first of that
        kind, else ``None``."""
        names = [n for n, s in self._specs.items() if s.kind == kind]
        available = [n for n in names if self.is_available(n)]
        return (available or names or [None])[0]

    def pipeline(self, name: str) -> F2D2Pipeline:
        spec = self.spec(name)
        name = spec.name

        def build():
            pipe = spec.pipeline_factory() if spec.pipeline_factory is not None else _load_pipeline(spec, noun=self.noun)
            pipe = pipe.to(_device())
            pipe.unet.eval()
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._cached((name, "pipeline"), build)

    def likelihood_pipeline(self, name: str) -> F2D2LikelihoodPipeline:
        """The likelihood pipeline sharing the sampling pipeline's network (loaded once for both)."""
        name = self.spec(name).name

        def build():
            pipe = F2D2LikelihoodPipeline.from_pipe(self.pipeline(name))
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._cached((name, "likelihood"), build)

    def has_teacher(self, name: str) -> bool:
        spec = self.spec(name)
        return spec.teacher_factory is not None or bool(spec.teacher_source)

    def teacher(self, name: str) -> torch.nn.Module:
        """The flow-matching teacher; raises ``ModelUnavailable`` when there is none or it cannot be loaded."""
        spec = self.spec(name)
        name = spec.name
        if not self.has_teacher(name):
            raise ModelUnavailable(f"The model {name!r} has no teacher configured, so there is no teacher to compare with.")

        def build():
            if spec.teacher_factory is not None:
                model = spec.teacher_factory()
            else:
                model = _load_teacher(spec.teacher_source, name)
            model = model.to(_device()).eval()
            model.requires_grad_(False)
            return model

        return self._cached((name, "teacher"), build)

    def status_markdown(self) -> str:
        lines = ["**Models**"]
        for name in self._specs:
            teacher = "with teacher" if self.has_teacher(name) else "no teacher"
            lines.append(f"- `{name}`: {self.status(name)}; {teacher}")
        return "\n".join(lines)


def pipeline_sample_shape(pipe) -> Tuple[int, ...]:
    """Shape of one sample of ``pipe``'s model: ``(C, H, W)`` for images, ``(d,)`` for vectors."""
    shape = sample_shape(pipe.unet.config)
    if shape is None:
        raise ModelUnavailable("The model's config has no sample_size, so the demo does not know the data's shape.")
    return shape


def _load_pipeline(spec, pipeline_class=F2D2Pipeline, noun: str = "model"):
    """``pipeline_class.from_pretrained(spec.source)``; any failure is a ``ModelUnavailable`` naming ``spec.name`` (a
    ``noun``: model, sampler)."""
    source = spec.source
    hint = f" {spec.missing_hint}" if spec.missing_hint else ""
    if not source:
        raise ModelUnavailable(f"The {noun} {spec.name!r} has no checkpoint configured.{hint}")
    # A local folder is checked first, so that a half-trained checkpoint gets a clear message, not a loader error.
    if not is_hub_repo_id(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ModelUnavailable(f"The {spec.name!r} checkpoint is not available: no folder at {path}.{hint}")
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"The {spec.name!r} checkpoint is not available: {path} has no model_index.json "
                f"(training may still be running).{hint}"
            )
    try:
        return pipeline_class.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - any loader failure is reported, the app keeps serving
        offline = " HF_HUB_OFFLINE is set, so only the local Hub cache is used." if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelUnavailable(
            f"Could not load the {spec.name!r} {noun} from {source} ({type(err).__name__}: {err}).{offline}{hint}"
        ) from None


def _load_teacher(source: str, name: str) -> torch.nn.Module:
    try:
        return load_teacher(source)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"The teacher of {name!r} is not available (training may still be running): {err}") from None


def _shipped(folder: str) -> str:
    """A shipped checkpoint: next to ``app.py`` (a deployed Space) or in the repository root (a source checkout)."""
    for base in (APP_DIR, REPO_ROOT):
        if (base / "checkpoints" / folder).is_dir():
            return str(base / "checkpoints" / folder)
    return str(REPO_ROOT / "checkpoints" / folder)


#: The shipped models' names in the UI and the API (their checkpoints' folder names, then what they are).
DIGITS_MODEL_NAME = "f2d2-digits (F2D2, 8x8 digits)"
CHECKERBOARD_MODEL_NAME = "f2d2-checkerboard (F2D2, 2-D checkerboard)"
#: MeanFlow-F2D2 checkpoints (issue 12): listed after the calibrated Shortcut-F2D2 ones, which stay the defaults.
MEANFLOW_MODEL_NAMES = {
    "f2d2-meanflow-digits": ("f2d2-meanflow-digits (MeanFlow-F2D2, 8x8 digits, not calibrated)", "fm-digits", "image"),
    "f2d2-meanflow-checkerboard": (
        "f2d2-meanflow-checkerboard (MeanFlow-F2D2, 2-D checkerboard, not calibrated)", "fm-checkerboard", "points"),
}
#: Self-guidance scales measured to help (README.md, issue 12: 2-step FD 37.2 -> 21.4 on digits; none helped the
#: checkerboard).
GUIDANCE_EXAMPLES = {"f2d2-meanflow-digits": 0.2}


def default_registry() -> ModelRegistry:
    """The shipped digits and checkerboard models, plus ``F2D2_EXTRA_MODEL`` when it is set."""
    env = os.environ.get
    specs = [
        ModelSpec(
            name=DIGITS_MODEL_NAME,
            source=env("F2D2_DIGITS_MODEL") or _shipped("f2d2-digits"),
            teacher_source=env("F2D2_DIGITS_TEACHER") or _shipped("fm-digits"),
            missing_hint="Train it with training/train_f2d2.py (see README.md), or set F2D2_DIGITS_MODEL to a folder or Hub id.",
            kind="image",
            aliases=("digits (8x8, 17 grey levels)",),
        ),
        ModelSpec(
            name=CHECKERBOARD_MODEL_NAME,
            source=env("F2D2_CHECKERBOARD_MODEL") or _shipped("f2d2-checkerboard"),
            teacher_source=env("F2D2_CHECKERBOARD_TEACHER") or _shipped("fm-checkerboard"),
            missing_hint="Train it with training/train_f2d2.py (see README.md), or set F2D2_CHECKERBOARD_MODEL to a folder or Hub id.",
            kind="points",
            aliases=("checkerboard (2-D points)",),
        ),
    ]
    for folder, (name, teacher, kind) in MEANFLOW_MODEL_NAMES.items():
        specs.append(ModelSpec(
            name=name, source=_shipped(folder), teacher_source=_shipped(teacher), kind=kind,
            missing_hint="Train it with training/train_f2d2.py --objective meanflow (see README.md).",
            guidance_example=GUIDANCE_EXAMPLES.get(folder, 0.0),
        ))
    extra = env("F2D2_EXTRA_MODEL")
    if extra:
        specs.append(
            ModelSpec(
                name=env("F2D2_EXTRA_MODEL_NAME") or f"{_short_name(extra)} (F2D2, custom)",
                source=extra,
                teacher_source=env("F2D2_EXTRA_TEACHER") or None,
                missing_hint="Check F2D2_EXTRA_MODEL.",
            )
        )
    return ModelRegistry(specs)


def _short_name(source: str) -> str:
    """The last part of a folder or Hub id (``/data/runs/f2d2-mnist/`` -> ``f2d2-mnist``): a name, not a path."""
    return Path(source.rstrip("/\\")).name or source
