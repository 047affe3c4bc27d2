"""F2D2 demo: few-step sampling and log-likelihoods with joint flow maps (a Hugging Face Space).

Run it with ``python spaces_app/app.py`` (port from ``GRADIO_SERVER_PORT``, host from ``GRADIO_SERVER_NAME``, as
gradio reads them). Two public API endpoints, usable from ``gradio_client``:

- ``/sample``: ``model, num_steps, seed, batch_size, teacher_steps`` -> grid image, per-sample table, summary, details
  JSON, teacher grid image.
- ``/likelihood``: ``model, image, sketch, points, points_file, reference, seed`` -> results table, summary, preview
  image, details JSON.

Models are loaded lazily, on first use, and cached. Which models exist is decided by a :class:`ModelRegistry`;
``build_demo(registry=...)`` takes any registry, so tests inject tiny random-weight models through
``ModelSpec(pipeline_factory=..., teacher_factory=...)``. The default registry (:func:`default_registry`) has the
shipped checkpoints and, optionally, one more model from the environment:

- ``F2D2_DIGITS_MODEL`` / ``F2D2_DIGITS_TEACHER``: override the digits checkpoint and its teacher (folder or Hub id);
  default ``checkpoints/f2d2-digits`` and ``checkpoints/fm-digits`` next to this file or in the repository root.
- ``F2D2_CHECKERBOARD_MODEL`` / ``F2D2_CHECKERBOARD_TEACHER``: the same for the 2-D checkerboard.
- ``F2D2_EXTRA_MODEL`` (folder or Hub id of a saved ``F2D2Pipeline``), ``F2D2_EXTRA_TEACHER`` (its teacher, optional)
  and ``F2D2_EXTRA_MODEL_NAME`` (the label shown).
- ``F2D2_DEVICE`` (default ``cuda`` when available, else ``cpu``), ``F2D2_TORCH_THREADS``.

Nothing here touches the network unless a Hub id is configured; with ``HF_HUB_OFFLINE=1`` Hub ids resolve from the
local cache only.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# On a busy CPU (measured on a 2-core machine running other jobs) OpenMP's default busy-waiting made each
# small network call take ~0.5 s instead of ~3 ms with 2 threads; passive waiting avoids it. Only effective when
# this module is the first to import torch (``python app.py``), so only then is it set.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import PIL.ImageDraw  # noqa: E402
import PIL.ImageFont  # noqa: E402
import PIL.ImageOps  # noqa: E402
import torch  # noqa: E402

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent

try:
    import f2d2_diffusers  # noqa: F401
except ImportError:  # running from a source checkout without the package installed
    if (REPO_ROOT / "f2d2_diffusers").is_dir():
        sys.path.insert(0, str(REPO_ROOT))
    else:
        raise

from f2d2_diffusers import (  # noqa: E402
    F2D2LikelihoodPipeline,
    F2D2Pipeline,
    dequantize,
    load_teacher,
    reference_log_likelihood,
)
from f2d2_diffusers.flow_map import evaluate_velocity  # noqa: E402

logger = logging.getLogger("f2d2_space")

if os.environ.get("F2D2_TORCH_THREADS"):
    torch.set_num_threads(int(os.environ["F2D2_TORCH_THREADS"]))

# ----------------------------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------------------------

MAX_SAMPLE_STEPS = 8
LIKELIHOOD_STEPS = (1, 2, 4, 8)
MAX_IMAGE_BATCH = 64
MAX_VECTOR_BATCH = 2000
MAX_TEACHER_STEPS = 200
MAX_POINTS = 2000
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_SEED = 2**32 - 1
#: Exact divergence in the reference solver up to this many dimensions, Hutchinson (8 probes) above.
EXACT_DIVERGENCE_MAX_DIMS = 256

#: The Explain tab's plots (the same list as prepare_space.py copies into a Space).
EXPLAIN_PLOTS = (
    ("benchmarks/results/calibration_digits.png", "Digits: error against network calls, and per segment (benchmarks/calibration.py)"),
    ("benchmarks/results/calibration_checkerboard.png", "Checkerboard: error against network calls, and per segment (benchmarks/calibration.py)"),
    ("benchmarks/results/likelihood_digits.png", "Digits: error against wall time, F2D2 and the ODE solvers people use (benchmarks/bench_likelihood.py)"),
)

METHOD_TEXT = """
### How F2D2 works

A flow-matching model turns noise into data by following a learned velocity field, and the exact log-likelihood
of a point comes from adding up the divergence of that field along the same path, which normally costs hundreds
of network calls, each with many backward passes for the divergence. F2D2 distils such a teacher into one network
with two heads: for a point, a noise level σ and a step h, one head gives the *average velocity* over the step
(the point jumps to `x + h·u`) and the other the *average divergence* (the log-density changes by `−h·D`). A few
such jumps from noise to data draw a sample and give its log-likelihood at no extra cost; the same jumps run
from data to noise (h > 0) score an input you give it. The reference number is the teacher's own likelihood from
an adaptive ODE solve (dopri5 with the exact divergence): the closer F2D2's bits/dim at 1–8 calls comes to it,
the better the distillation.

- Convention (diffusers): σ = 0 is data, σ = 1 is noise, `x_σ = (1 − σ)·x + σ·ε`.
- Images are grey levels `k ∈ {0..L−1}` (L = 17 for the 8×8 digits), dequantised to `z = 2(k + u)/L − 1`;
  bits/dim = `−(log p(z) + d·log 2 − d·log L) / (d·ln 2)`. Lower is better.
- For 2-D points the data are continuous, so bits/dim is that of the density itself and can be negative.
"""


class InputError(ValueError):
    """Bad user input; shown to the user as it is."""


class ModelUnavailable(RuntimeError):
    """A configured model cannot be loaded (missing checkpoint, offline Hub id, ...)."""


def user_errors(fn: Callable) -> Callable:
    """Turn any exception into a ``gr.Error`` with a readable message; the server keeps serving.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, ModelUnavailable) as err:
            raise gr.Error(str(err), print_exception=False) from None
        except torch.OutOfMemoryError:
            raise gr.Error("Out of memory: try a smaller batch or fewer teacher steps.", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - never take the app down
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {err}). The app is still running.") from None

    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# Models: a registry with lazy, cached loading
# ----------------------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ModelSpec:
    """One model choice.

    Args:
        name: the label in the UI, also the ``model`` value of both API endpoints.
        source: folder or Hub id of a saved ``F2D2Pipeline`` (ignored when ``pipeline_factory`` is given).
        teacher_source: folder (holding ``unet/``) or Hub id of its flow-matching teacher; ``None``: no teacher.
        pipeline_factory / teacher_factory: build the pipeline / teacher directly (tests inject tiny models here).
        missing_hint: appended to the message when the checkpoint is missing (how to get it).
        reference_options: keyword arguments for ``reference_log_likelihood`` (default: dopri5, rtol = atol = 1e-5).
    """

    name: str
    source: Optional[str] = None
    teacher_source: Optional[str] = None
    pipeline_factory: Optional[Callable[[], F2D2Pipeline]] = None
    teacher_factory: Optional[Callable[[], torch.nn.Module]] = None
    missing_hint: str = ""
    reference_options: Dict[str, Any] = field(default_factory=dict)


def _is_local(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or not _HUB_ID.match(source) or source.startswith((".", "/", "~"))


def _device() -> torch.device:
    name = os.environ.get("F2D2_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ModelRegistry:
    """Model choices, loaded on first use and cached (thread-safe)."""

    def __init__(self, specs: Sequence[ModelSpec]):
        if not specs:
            raise ValueError("a registry needs at least one model")
        self._specs: "OrderedDict[str, ModelSpec]" = OrderedDict((s.name, s) for s in specs)
        self._cache: Dict[Tuple[str, str], Any] = {}
        self._lock = threading.RLock()

    @property
    def names(self) -> List[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        if name not in self._specs:
            raise InputError(f"Unknown model {name!r}; choose one of: {', '.join(self._specs)}.")
        return self._specs[name]

    def _cached(self, key: Tuple[str, str], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def pipeline(self, name: str) -> F2D2Pipeline:
        spec = self.spec(name)

        def build():
            if spec.pipeline_factory is not None:
                pipe = spec.pipeline_factory()
            else:
                pipe = _load_pipeline(spec)
            pipe = pipe.to(_device())
            pipe.unet.eval()
            pipe.set_progress_bar_config(disable=True)
            return pipe

        return self._cached((name, "pipeline"), build)

    def likelihood_pipeline(self, name: str) -> F2D2LikelihoodPipeline:
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
        if not self.has_teacher(name):
            raise ModelUnavailable(f"The model {name!r} has no teacher configured, so there is no teacher to compare with.")

        def build():
            if spec.teacher_factory is not None:
                model = spec.teacher_factory()
            else:
                model = _load_teacher(spec.teacher_source, name=name)
            model = model.to(_device()).eval()
            model.requires_grad_(False)
            return model

        return self._cached((name, "teacher"), build)

    def status(self, name: str) -> str:
        """One line on whether the model can be loaded, without loading it."""
        spec = self.spec(name)
        if spec.pipeline_factory is not None:
            return "ready"
        if (name, "pipeline") in self._cache:
            return "loaded"
        if not spec.source:
            return "not configured"
        if _is_local(spec.source):
            path = Path(spec.source).expanduser()
            if (path / "model_index.json").is_file():
                return f"ready (`{_display_path(path)}`)"
            return f"**missing**: no checkpoint at `{_display_path(path)}` yet"
        return f"Hub id `{spec.source}` (loaded on first use)"

    def first_available(self) -> str:
        """The first model whose checkpoint is there (or that is injected / on the Hub), else the first one."""
        return next((n for n in self._specs if not self.status(n).startswith(("**missing**", "not configured"))), self.names[0])

    def status_markdown(self) -> str:
        lines = ["**Models**"]
        for name in self._specs:
            teacher = "with teacher" if self.has_teacher(name) else "no teacher"
            lines.append(f"- `{name}`: {self.status(name)}; {teacher}")
        return "\n".join(lines)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _load_pipeline(spec: ModelSpec) -> F2D2Pipeline:
    source = spec.source
    hint = f" {spec.missing_hint}" if spec.missing_hint else ""
    if not source:
        raise ModelUnavailable(f"The model {spec.name!r} has no checkpoint configured.{hint}")
    if _is_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ModelUnavailable(f"The {spec.name!r} checkpoint is not available: no folder at {path}.{hint}")
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"The {spec.name!r} checkpoint is not available: {path} has no model_index.json "
                f"(training may still be running).{hint}"
            )
    try:
        return F2D2Pipeline.from_pretrained(source)
    except Exception as err:  # noqa: BLE001
        offline = " HF_HUB_OFFLINE is set, so only the local Hub cache is used." if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelUnavailable(
            f"Could not load the {spec.name!r} model from {source} ({type(err).__name__}: {err}).{offline}{hint}"
        ) from None


def _load_teacher(source: str, name: str) -> torch.nn.Module:
    try:
        return load_teacher(source)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"The teacher of {name!r} is not available (training may still be running): {err}") from None


def _shipped(folder: str) -> str:
    """A shipped checkpoint: next to this file (a deployed Space) or in the repository root (a source checkout)."""
    for base in (APP_DIR, REPO_ROOT):
        if (base / "checkpoints" / folder).is_dir():
            return str(base / "checkpoints" / folder)
    return str(REPO_ROOT / "checkpoints" / folder)


def default_registry() -> ModelRegistry:
    """The shipped digits and checkerboard models, plus ``F2D2_EXTRA_MODEL`` when it is set."""
    env = os.environ.get
    specs = [
        ModelSpec(
            name="digits (8x8, 17 grey levels)",
            source=env("F2D2_DIGITS_MODEL") or _shipped("f2d2-digits"),
            teacher_source=env("F2D2_DIGITS_TEACHER") or _shipped("fm-digits"),
            missing_hint="Train it with training/train_f2d2.py (see README.md), or set F2D2_DIGITS_MODEL to a folder or Hub id.",
        ),
        ModelSpec(
            name="checkerboard (2-D points)",
            source=env("F2D2_CHECKERBOARD_MODEL") or _shipped("f2d2-checkerboard"),
            teacher_source=env("F2D2_CHECKERBOARD_TEACHER") or _shipped("fm-checkerboard"),
            missing_hint="Train it with training/train_f2d2.py (see README.md), or set F2D2_CHECKERBOARD_MODEL to a folder or Hub id.",
        ),
    ]
    extra = env("F2D2_EXTRA_MODEL")
    if extra:
        specs.append(
            ModelSpec(
                name=env("F2D2_EXTRA_MODEL_NAME") or f"custom: {extra}",
                source=extra,
                teacher_source=env("F2D2_EXTRA_TEACHER") or None,
                missing_hint="Check F2D2_EXTRA_MODEL.",
            )
        )
    return ModelRegistry(specs)


def _sample_shape(pipe) -> Tuple[int, ...]:
    config = pipe.unet.config
    size = config.get("sample_size")
    if size is None:
        raise ModelUnavailable("The model's config has no sample_size, so the demo does not know the data's shape.")
    if "in_channels" in config:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (config["in_channels"], height, width)
    return (size,)


def _is_image_model(pipe) -> bool:
    return len(_sample_shape(pipe)) == 3


# ----------------------------------------------------------------------------------------------------------------
# Input checking and conversion
# ----------------------------------------------------------------------------------------------------------------


def _whole_number(value, name: str, low: int, high: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} is missing: give a whole number from {low} to {high}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    number = int(number)
    if not low <= number <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {number}.")
    return number


def _contrast_fill(image: PIL.Image.Image) -> Tuple[int, int, int]:
    """Background for transparent areas: white behind dark strokes, black behind light ones."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    opaque = rgba[..., 3] > 127
    if not opaque.any():
        return (0, 0, 0)
    luminance = rgba[..., :3][opaque] @ np.array([0.299, 0.587, 0.114])
    return (0, 0, 0) if luminance.mean() > 127 else (255, 255, 255)


def prepare_image(
    image: PIL.Image.Image, shape: Tuple[int, int, int], num_levels: int, auto_invert: bool = True, crop: bool = True
) -> Tuple[np.ndarray, List[str]]:
    """Convert any PIL image to the model's format: integer levels, shape ``(H, W, C)``.

    Returns ``(levels, notes)``; ``notes`` says, step by step, what was done.
    """
    channels, height, width = shape
    if channels not in (1, 3):
        raise InputError(f"This model takes {channels}-channel images; the demo handles 1 (grey) or 3 (RGB) channels.")
    notes = [f"Read a {image.width}x{image.height} {image.mode} image."]
    if image.width * image.height > MAX_UPLOAD_PIXELS:
        raise InputError(f"The image is too large ({image.width}x{image.height}); use one under 16 megapixels.")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha < 255).any():
            fill = _contrast_fill(image)
            background = PIL.Image.new("RGBA", image.size, fill + (255,))
            background.alpha_composite(image.convert("RGBA"))
            image = background
            notes.append(f"Filled transparent areas with {'white' if fill[0] else 'black'}.")
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        was_colour = image.mode not in ("L", "1", "I", "I;16", "F", "LA")
        if mode == "L" and was_colour:
            rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
            grey_already = bool((np.abs(rgb - rgb[..., :1]) <= 2).all())
            notes.append("Converted to one grey channel." if grey_already else "Converted colour to greyscale.")
        image = image.convert(mode)
    if channels == 1 and auto_invert:
        grey = np.asarray(image, dtype=np.float64)
        frame = max(1, min(grey.shape) // 16)
        border = np.concatenate(
            [grey[:frame].ravel(), grey[-frame:].ravel(), grey[:, :frame].ravel(), grey[:, -frame:].ravel()]
        )
        if np.median(border) > 127:
            image = PIL.ImageOps.invert(image)
            notes.append(
                "Inverted the grey levels: the image is dark strokes on a light background, and the digits are "
                "light strokes on a dark background."
            )
    if channels == 1 and crop and image.size != (width, height):
        grey = np.asarray(image, dtype=np.float64)
        strokes = grey > max(32.0, 0.25 * grey.max())
        rows, cols = np.nonzero(strokes)
        # Crop only a drawing that is small within its canvas; one that already fills its frame stays as it is.
        if rows.size and max(np.ptp(rows), np.ptp(cols)) + 1 < 0.8 * min(grey.shape):
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            side = int(math.ceil(max(bottom - top, right - left) * 1.15))
            cy, cx = (top + bottom) / 2, (left + right) / 2
            box = (int(round(cx - side / 2)), int(round(cy - side / 2)))
            box = box + (box[0] + side, box[1] + side)
            image = image.crop(box)  # areas outside the image come out black, the background here
            notes.append(
                f"Cropped to the strokes: a {side}x{side} square around them ({right - left}x{bottom - top} px), "
                "with a small margin, as the digits fill their frame."
            )
    if image.size != (width, height):
        old = image.size
        resample = PIL.Image.Resampling.BOX if old[0] >= width and old[1] >= height else PIL.Image.Resampling.BILINEAR
        image = image.resize((width, height), resample)
        how = "area averaging" if resample == PIL.Image.Resampling.BOX else "bilinear"
        notes.append(f"Resized from {old[0]}x{old[1]} to {width}x{height} ({how}).")
    pixels = np.asarray(image, dtype=np.float64).reshape(height, width, channels)
    levels = np.rint(pixels * (num_levels - 1) / 255.0).astype(np.int64)
    if num_levels != 256:
        notes.append(
            f"Mapped the 256 grey values 0-255 to the model's {num_levels} levels 0-{num_levels - 1}: "
            f"level = round(value x {num_levels - 1} / 255)."
        )
    return levels, notes


def open_image_file(path) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as err:  # noqa: BLE001
        raise InputError(f"Could not read the file as an image ({type(err).__name__}); upload a PNG, JPEG, WebP or BMP.") from None


# Components are patched per instance rather than subclassed: gradio writes a ``.pyi`` stub next to the source file
# of every component subclass it sees.


def _checked_image(**kwargs) -> gr.Image:
    """``gr.Image`` that answers an unreadable upload (a non-image file) with a clear ``gr.Error``."""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001
            raise gr.Error(
                f"Could not read the uploaded file as an image ({type(err).__name__}); upload a PNG, JPEG, WebP or BMP.",
                print_exception=False,
            ) from None

    component.preprocess = checked
    return component


def _labelled(component):
    """``component`` whose input errors (e.g. gradio's own bounds check on API calls) name the field."""
    preprocess = component.preprocess

    def labelled(payload):
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise gr.Error(f"{component.label}: {err.message}", print_exception=False) from None

    component.preprocess = labelled
    return component


def Slider(*args, **kwargs) -> gr.Slider:  # noqa: N802 - stands in for gr.Slider
    return _labelled(gr.Slider(*args, **kwargs))


def Number(*args, **kwargs) -> gr.Number:  # noqa: N802 - stands in for gr.Number
    return _labelled(gr.Number(*args, **kwargs))


_NUMBER_SPLIT = re.compile(r"[,;\s]+")


def parse_points(text: str, dim: int) -> Tuple[np.ndarray, List[str]]:
    """Points from CSV-like text: one point per line, numbers separated by commas, semicolons or spaces.

    A first line that is not numeric is taken as a header; ``#`` starts a comment line.
    """
    rows, notes = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t for t in _NUMBER_SPLIT.split(line) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            if not rows and not notes and not any(_is_float(t) for t in tokens):
                notes.append(f"Skipped a header line ({line[:40]!r}).")
                continue
            bad = next(t for t in tokens if not _is_float(t))
            raise InputError(f"Line {number}: {bad!r} is not a number. Give one point per line, e.g. `0.5, -1.2`.") from None
        if len(values) != dim:
            raise InputError(
                f"Line {number} has {len(values)} value(s); this model takes {dim}-D points (one point per line, "
                f"{dim} numbers separated by commas)."
            )
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"Line {number}: NaN or infinite values are not allowed.")
        rows.append(values)
        if len(rows) > MAX_POINTS:
            raise InputError(f"Too many points: at most {MAX_POINTS} per request.")
    if not rows:
        raise InputError(f"No points found: paste one {dim}-D point per line, e.g. `0.5, -1.2`.")
    notes.insert(0, f"Read {len(rows)} point(s) of dimension {dim}.")
    return np.asarray(rows, dtype=np.float32), notes


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def load_points_file(path, dim: int) -> Tuple[np.ndarray, List[str]]:
    path = Path(path)
    name = path.name
    if path.stat().st_size > 10 * 2**20:
        raise InputError(f"{name} is too large; upload at most 10 MB of points.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"Could not read {name} as a .npy array ({type(err).__name__}).") from None
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{name} holds {array.dtype}, not numbers.")
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 1 and array.shape[0] == dim:
            array = array[None]
        if array.ndim != 2 or array.shape[1] != dim or array.shape[0] == 0:
            raise InputError(f"{name} has shape {array.shape}; this model takes points of shape (N, {dim}).")
        if array.shape[0] > MAX_POINTS:
            raise InputError(f"Too many points in {name}: at most {MAX_POINTS} per request.")
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values.")
        return array.astype(np.float32), [f"Read {array.shape[0]} point(s) from {name}."]
    if suffix in (".csv", ".txt", ".tsv"):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise InputError(f"{name} is not a text file; upload comma-separated numbers.") from None
        points, notes = parse_points(text, dim)
        return points, [f"Read {name}."] + notes
    raise InputError(f"Unsupported file type {suffix or '(none)'!r}; upload a .csv or .npy file of points.")


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _font(size: int):
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return PIL.ImageFont.load_default()


def render_image_grid(images: np.ndarray, captions: Optional[Sequence[str]] = None, tile: int = 80) -> PIL.Image.Image:
    """``images`` ``(B, H, W, C)`` in [0, 1] as one grid image, each tile upscaled (nearest) and captioned."""
    count = images.shape[0]
    columns = min(8, max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    caption_height = 18 if captions else 0
    pad = 6
    grid = PIL.Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + pad + caption_height) + pad), "white")
    draw = PIL.ImageDraw.Draw(grid)
    font = _font(11)
    for i in range(count):
        array = (np.clip(images[i], 0, 1) * 255).round().astype(np.uint8)
        tile_image = PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
        tile_image = tile_image.resize((tile, tile), PIL.Image.Resampling.NEAREST)
        x = pad + (i % columns) * (tile + pad)
        y = pad + (i // columns) * (tile + pad + caption_height)
        grid.paste(tile_image, (x, y))
        if captions:
            draw.text((x + tile / 2, y + tile + 2), captions[i], fill="black", font=font, anchor="ma")
    return grid


def _figure_to_image(fig) -> PIL.Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")


def render_scatter(
    points: np.ndarray, values: Optional[np.ndarray], title: str, colour_label: str = "log p (nats)", limits=None
):
    """2-D points (first two coordinates) as a scatter image, coloured by ``values`` when given.

    ``limits``: ``((x_min, x_max), (y_min, y_max))`` to share axes between plots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    xs = points[:, 0]
    ys = points[:, 1] if points.shape[1] > 1 else np.zeros_like(xs)
    size = 18 if len(points) <= 200 else 6
    if values is not None:
        mappable = ax.scatter(xs, ys, c=values, s=size, cmap="viridis", linewidths=0)
        fig.colorbar(mappable, ax=ax, label=colour_label)
    else:
        ax.scatter(xs, ys, s=size, color="tab:grey", linewidths=0)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂" if points.shape[1] > 1 else "")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_image(fig)


def _shared_limits(*point_sets: np.ndarray):
    """Axis limits covering the first two coordinates of every set, with a 5% margin."""
    stacked = np.concatenate([p[:, :2] for p in point_sets])
    if stacked.shape[1] == 1:
        stacked = np.concatenate([stacked, np.zeros_like(stacked)], axis=1)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    margin = 0.05 * np.maximum(high - low, 1e-3)
    return tuple((float(a), float(b)) for a, b in zip(low - margin, high + margin))


def render_levels(levels: np.ndarray, num_levels: int, tile: int = 160) -> PIL.Image.Image:
    """The converted input (integer levels ``(H, W, C)``) as the model sees it, upscaled."""
    array = levels.astype(np.float64) / (num_levels - 1)
    return render_image_grid(array[None], None, tile=tile)


def _round(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


# ----------------------------------------------------------------------------------------------------------------
# The two actions
# ----------------------------------------------------------------------------------------------------------------


def teacher_euler(teacher: torch.nn.Module, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Plain Euler on the teacher's velocity from sigma = 1 to 0 on a uniform grid (``num_steps`` calls)."""
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float32)
    x = noise
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (sigma_next - sigma).item() * evaluate_velocity(teacher, x, float(sigma))
    return x


class DemoActions:
    """The handlers behind the UI and the API, bound to one registry."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._reference_cache: "OrderedDict[str, Any]" = OrderedDict()
        self._reference_lock = threading.Lock()

    # -- sampling ---------------------------------------------------------------------------------------------

    def sample(self, model: str, num_steps: int = 1, seed: int = 0, batch_size: int = 16, teacher_steps: int = 0):
        """Few-step samples with the log-likelihood of each, optionally beside the teacher's Euler samples."""
        num_steps = _whole_number(num_steps, "Sampling steps", 1, MAX_SAMPLE_STEPS)
        seed = _whole_number(seed, "Seed", 0, MAX_SEED)
        batch_size = _whole_number(batch_size, "Batch size", 1, MAX_VECTOR_BATCH)
        teacher_steps = _whole_number(teacher_steps, "Teacher steps", 0, MAX_TEACHER_STEPS)
        pipe = self.registry.pipeline(model)
        shape = _sample_shape(pipe)
        is_image = len(shape) == 3
        if is_image and batch_size > MAX_IMAGE_BATCH:
            raise InputError(f"Batch size {batch_size} is too large for images: at most {MAX_IMAGE_BATCH} per request.")
        teacher = None
        teacher_note = ""
        if teacher_steps > 0:
            try:
                teacher = self.registry.teacher(model)
            except ModelUnavailable as err:
                teacher_note = f"Teacher comparison skipped: {err}"
                gr.Warning(teacher_note)

        device = pipe.device
        noise = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        noise = noise.to(device=device, dtype=pipe.unet.dtype)
        start = time.perf_counter()
        out = pipe(latents=noise, num_inference_steps=num_steps, output_type="np")
        seconds = time.perf_counter() - start
        log_prob = out.log_prob.float().cpu().numpy()
        bpd = out.bits_per_dim.float().cpu().numpy()
        num_levels = pipe.config.num_levels

        teacher_image, teacher_info = None, None
        if teacher is not None:
            start = time.perf_counter()
            teacher_out = teacher_euler(teacher, noise.to(dtype=next(teacher.parameters()).dtype), teacher_steps)
            teacher_seconds = time.perf_counter() - start
            teacher_info = {"euler_steps": teacher_steps, "nfe": teacher_steps, "seconds": _round(teacher_seconds)}
            teacher_samples = teacher_out.float().cpu().numpy()
            title = f"Teacher, {teacher_steps} Euler steps (same noise)"
            limits = None
            if not is_image:
                limits = _shared_limits(np.asarray(out.images), teacher_samples)
            if is_image:
                teacher_image = render_image_grid(
                    np.clip((teacher_samples.transpose(0, 2, 3, 1) + 1) / 2, 0, 1), [f"#{i}" for i in range(batch_size)]
                )
            else:
                teacher_image = render_scatter(teacher_samples, None, title, limits=limits)

        if is_image:
            captions = [f"#{i}: {lp:.1f}" for i, lp in enumerate(log_prob)]
            grid = render_image_grid(out.images, captions)
            table = [[i, _round(lp, 2), _round(b, 3)] for i, (lp, b) in enumerate(zip(log_prob, bpd))]
            headers = ["sample", "log p (nats)", "bits/dim"]
        else:
            points = np.asarray(out.images)
            grid = render_scatter(
                points, log_prob, f"F2D2, {num_steps} step(s): {batch_size} samples",
                limits=_shared_limits(points, teacher_samples) if teacher_info else None,
            )
            table = [
                [i, *[_round(v, 3) for v in points[i][:2]], _round(lp, 3), _round(b, 3)]
                for i, (lp, b) in enumerate(zip(log_prob, bpd))
            ]
            coordinates = ["x1", "x2"][: min(2, points.shape[1])]
            headers = ["sample", *coordinates, "log p (nats)", "bits/dim"]

        scale = f"on the {num_levels}-level scale" if num_levels else "of the continuous density"
        summary = [
            f"**{batch_size} sample(s)** from `{model}` in **{out.nfe} network call(s)**, {seconds:.2f} s.",
            f"Mean log-likelihood **{log_prob.mean():.2f} nats** per sample ({bpd.mean():.3f} bits/dim {scale}), "
            "computed along the way by the same calls.",
        ]
        if is_image:
            summary.append("Each tile is captioned with its sample number and log p (nats).")
        else:
            summary.append("Points are coloured by their log p (nats).")
        if teacher_info:
            summary.append(
                f"Teacher: **{teacher_steps} Euler steps = {teacher_steps} network calls**, {teacher_info['seconds']:.2f} s, "
                "from the same noise (no likelihood: that needs the ODE solve in the Likelihood tab)."
            )
        elif teacher_note:
            summary.append(teacher_note)
        details = {
            "model": model,
            "num_steps": num_steps,
            "seed": seed,
            "batch_size": batch_size,
            "nfe": int(out.nfe),
            "seconds": _round(seconds),
            "num_levels": num_levels,
            "mean_log_prob": _round(log_prob.mean()),
            "mean_bits_per_dim": _round(bpd.mean()),
            "log_prob": [_round(v) for v in log_prob],
            "bits_per_dim": [_round(v) for v in bpd],
            "teacher": teacher_info,
        }
        return grid, {"headers": headers, "data": table}, "\n\n".join(summary), details, teacher_image

    # -- likelihood -------------------------------------------------------------------------------------------

    def _reference(self, model: str, teacher, x: torch.Tensor, num_levels, options: Dict[str, Any]):
        key = hashlib.sha256(
            model.encode() + x.detach().cpu().numpy().tobytes() + json.dumps(options, sort_keys=True).encode()
        ).hexdigest()
        with self._reference_lock:
            if key in self._reference_cache:
                self._reference_cache.move_to_end(key)
                return self._reference_cache[key], True
        result = reference_log_likelihood(teacher, x.to(next(teacher.parameters()).dtype), num_levels=num_levels, **options)
        with self._reference_lock:
            self._reference_cache[key] = result
            while len(self._reference_cache) > 32:
                self._reference_cache.popitem(last=False)
        return result, False

    def likelihood(
        self,
        model: str,
        image=None,
        sketch=None,
        points: str = "",
        points_file=None,
        reference: bool = True,
        seed: int = 0,
    ):
        """Bits/dim of an input at 1, 2, 4 and 8 steps, beside the teacher's dopri5 reference."""
        seed = _whole_number(seed, "Seed", 0, MAX_SEED)
        pipe = self.registry.likelihood_pipeline(model)
        shape = _sample_shape(pipe)
        is_image = len(shape) == 3
        num_levels = pipe.config.num_levels

        if is_image:
            if num_levels is None:
                raise ModelUnavailable(f"The model {model!r} is an image model without num_levels in its config.")
            source, pil = self._pick_image(image, sketch)
            levels, notes = prepare_image(pil, shape, num_levels)
            notes.insert(0, f"Input: the {source}.")
            data = torch.from_numpy(levels).permute(2, 0, 1)[None]
            x = dequantize(data, num_levels, torch.Generator().manual_seed(seed))
            notes.append(f"Dequantised with uniform noise (seed {seed}); every method scores the same point.")
            preview = render_levels(levels, num_levels)
        else:
            if points_file:
                array, notes = load_points_file(_file_path(points_file), shape[0])
            elif points and str(points).strip():
                array, notes = parse_points(str(points), shape[0])
            else:
                raise InputError(
                    f"No points: this is a {shape[0]}-D model; paste points as CSV (one per line, e.g. `0.5, -1.2`) "
                    "or upload a .csv/.npy file."
                )
            x = torch.from_numpy(array)
            preview = None
        device = pipe.device
        x = x.to(device=device, dtype=pipe.unet.dtype)
        dims = int(np.prod(shape))

        rows, results = [], []
        for steps in LIKELIHOOD_STEPS:
            start = time.perf_counter()
            out = pipe(x, num_inference_steps=steps, dequantize=False, num_levels=num_levels)
            seconds = time.perf_counter() - start
            results.append(
                {
                    "method": f"F2D2, {steps} step{'s' if steps > 1 else ''}",
                    "steps": steps,
                    "nfe": int(out.nfe),
                    "bits_per_dim": _round(out.bits_per_dim.float().mean()),
                    "log_prob": _round(out.log_prob.float().mean()),
                    "seconds": _round(seconds),
                    "per_input_bits_per_dim": [_round(v) for v in out.bits_per_dim.float().cpu()],
                    "per_input_log_prob": [_round(v) for v in out.log_prob.float().cpu()],
                }
            )
        last_log_prob = out.log_prob.float().cpu().numpy()

        ref_info, ref_note = None, ""
        if reference:
            try:
                teacher = self.registry.teacher(model)
            except ModelUnavailable as err:
                ref_note = f"Reference skipped: {err}"
                gr.Warning(ref_note)
            else:
                options = {"method": "dopri5"}
                if dims > EXACT_DIVERGENCE_MAX_DIMS:
                    options.update(divergence="hutchinson", num_probes=8, generator=None)
                options.update(self.registry.spec(model).reference_options)
                label_options = {k: v for k, v in options.items() if k != "generator"}
                start = time.perf_counter()
                ref, cached = self._reference(model, teacher, x, num_levels, label_options)
                seconds = time.perf_counter() - start
                method = label_options.get("method", "dopri5")
                divergence = label_options.get("divergence", "exact")
                ref_info = {
                    "method": f"Teacher ODE, {method} (reference)",
                    "divergence": divergence,
                    "steps": None,
                    "nfe": int(ref.nfe),
                    "bits_per_dim": _round(ref.bits_per_dim.float().mean()),
                    "log_prob": _round(ref.log_prob.float().mean()),
                    "seconds": _round(seconds),
                    "cached": cached,
                    "solver_options": label_options,
                    "per_input_bits_per_dim": [_round(v) for v in ref.bits_per_dim.float().cpu()],
                    "per_input_log_prob": [_round(v) for v in ref.log_prob.float().cpu()],
                }
        for entry in results + ([ref_info] if ref_info else []):
            delta = "" if ref_info is None or entry is ref_info else _round(entry["bits_per_dim"] - ref_info["bits_per_dim"])
            rows.append(
                [entry["method"], entry["nfe"], _round(entry["bits_per_dim"], 3), _round(entry["log_prob"], 2),
                 _round(entry["seconds"], 3), delta if delta == "" else _round(delta, 3)]
            )
        headers = ["method", "network calls", "bits/dim", "log p (nats)", "seconds", "Δ bits/dim vs reference"]

        if not is_image:
            preview = render_scatter(array, last_log_prob, f"{len(array)} point(s), coloured by log p (F2D2, 8 steps)")
        count = x.shape[0]
        scale = f"{num_levels}-level grey scale, {dims} dimensions" if num_levels else f"continuous density, {dims} dimensions"
        summary = ["**What was done to the input**"] + [f"- {n}" for n in notes]
        summary.append("")
        best = results[-1]
        line = f"**Result** ({scale}{'; means over ' + str(count) + ' points' if count > 1 else ''}): "
        line += f"F2D2 gives **{best['bits_per_dim']:.3f} bits/dim in {best['nfe']} network calls**"
        if ref_info:
            line += (
                f"; the teacher's ODE gives **{ref_info['bits_per_dim']:.3f} bits/dim in {ref_info['nfe']} network calls**"
                f" ({ref_info['seconds']:.2f} s{', cached' if ref_info['cached'] else ''})."
            )
        else:
            line += "."
        summary.append(line)
        if ref_note:
            summary.append(ref_note)
        details = {
            "model": model,
            "input_notes": notes,
            "num_levels": num_levels,
            "dimensions": dims,
            "num_inputs": int(count),
            "seed": seed,
            "results": results,
            "reference": ref_info,
        }
        return {"headers": headers, "data": rows}, "\n".join(summary), preview, details

    @staticmethod
    def _pick_image(image, sketch) -> Tuple[str, PIL.Image.Image]:
        if image is not None:
            if isinstance(image, (str, Path)):
                image = open_image_file(image)
            elif isinstance(image, np.ndarray):
                image = PIL.Image.fromarray(image)
            return "uploaded image", image
        if isinstance(sketch, dict):
            composite = sketch.get("composite")
            if isinstance(composite, (str, Path)):
                composite = open_image_file(composite)
            elif isinstance(composite, np.ndarray):
                composite = PIL.Image.fromarray(composite)
            if composite is not None:
                extrema = composite.convert("L").getextrema()
                if extrema[0] != extrema[1]:
                    return "drawing", composite
        raise InputError("No image: upload an image or draw a digit on the sketchpad.")


def _file_path(value) -> str:
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    if hasattr(value, "name") and not isinstance(value, (str, Path)):
        value = value.name
    if not value or not Path(value).is_file():
        raise InputError("The uploaded points file could not be found; upload it again.")
    return str(value)


# ----------------------------------------------------------------------------------------------------------------
# Explain tab
# ----------------------------------------------------------------------------------------------------------------


def explain_plots(roots: Sequence[Path] = (REPO_ROOT, APP_DIR)):
    """``(gallery items, status markdown)`` for the benchmark plots that exist now."""
    items, missing = [], []
    for relative, caption in EXPLAIN_PLOTS:
        found = next((root / relative for root in roots if (root / relative).is_file()), None)
        if found is None:
            missing.append(f"- `{relative}`: not there yet ({caption.split(': ', 1)[0]}; run {caption.split('(')[-1].rstrip(')')}).")
            continue
        try:
            with PIL.Image.open(found) as image:
                items.append((image.convert("RGB"), caption))
        except Exception as err:  # noqa: BLE001
            missing.append(f"- `{relative}`: could not be read ({type(err).__name__}).")
    if missing:
        status = "**Benchmark plots**\n\n" + "\n".join(missing)
        if not items:
            status += "\n\nNo plot yet: they appear here once the benchmarks have been run (press Refresh)."
    else:
        status = "**Benchmark plots**: all found."
    return items, status


# ----------------------------------------------------------------------------------------------------------------
# UI
# ----------------------------------------------------------------------------------------------------------------


def example_digit() -> PIL.Image.Image:
    """A test-split digit from scikit-learn (never trained on), as a 256x256 light-on-dark PNG."""
    from f2d2_diffusers.data import load_digits_levels

    levels = load_digits_levels("test")[3, 0].numpy().astype(np.float64)
    image = PIL.Image.fromarray((levels * 255 / 16).round().astype(np.uint8), mode="L")
    return image.resize((256, 256), PIL.Image.Resampling.NEAREST)


def example_points(count: int = 12) -> str:
    from f2d2_diffusers.data import sample_toy

    points = sample_toy("checkerboard", count, torch.Generator().manual_seed(1)).numpy()
    return "x1, x2\n" + "\n".join(f"{a:.3f}, {b:.3f}" for a, b in points)


def build_demo(registry: Optional[ModelRegistry] = None) -> gr.Blocks:
    """The Blocks app. ``registry``: the models (default: :func:`default_registry`)."""
    registry = registry or default_registry()
    actions = DemoActions(registry)
    names = registry.names
    default_model = registry.first_available()
    vector_default = next((n for n in names if "checkerboard" in n or "2-D" in n), names[0])

    @user_errors
    def sample(model: str, num_steps: int = 1, seed: int = 0, batch_size: int = 16, teacher_steps: int = 0):
        return actions.sample(model, num_steps, seed, batch_size, teacher_steps)

    @user_errors
    def likelihood(
        model: str, image=None, sketch=None, points: str = "", points_file=None, reference: bool = True, seed: int = 0
    ):
        return actions.likelihood(model, image, sketch, points, points_file, reference, seed)

    with gr.Blocks(title="F2D2: few-step sampling and likelihood") as demo:
        gr.Markdown(
            "# F2D2: few-step sampling *and* log-likelihood\n"
            "One distilled network gives samples and their log-likelihood in 1–8 network calls, and scores your "
            "own inputs in as few; a flow-matching teacher needs hundreds of calls for the same likelihood."
        )
        status = gr.Markdown(registry.status_markdown())
        with gr.Tabs():
            with gr.Tab("Sample", id="sample"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=260):
                        s_model = gr.Dropdown(names, value=default_model, label="Model")
                        s_steps = Slider(1, MAX_SAMPLE_STEPS, value=2, step=1, label="Sampling steps (network calls)")
                        s_seed = Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                        s_batch = Number(
                            value=16, precision=0, minimum=1, maximum=MAX_VECTOR_BATCH, label="Batch size",
                            info=f"images: up to {MAX_IMAGE_BATCH}; 2-D points: up to {MAX_VECTOR_BATCH}",
                        )
                        s_teacher = Slider(
                            0, MAX_TEACHER_STEPS, value=0, step=1, label="Teacher Euler steps (0 = no comparison)",
                        )
                        s_go = gr.Button("Generate", variant="primary")
                    with gr.Column(scale=2):
                        s_summary = gr.Markdown(elem_id="sample-summary")
                        s_grid = gr.Image(label="F2D2 samples, each with its log p (nats)", type="pil", format="png")
                        s_teacher_image = gr.Image(
                            label="Teacher samples (same noise)", type="pil", format="png", visible=False
                        )
                        s_table = gr.Dataframe(
                            label="Log-likelihood of every sample", interactive=False, max_height=300, elem_id="sample-table"
                        )
                        with gr.Accordion("Raw values (JSON)", open=False):
                            s_details = gr.JSON(label="Details")
                s_go.click(
                    sample,
                    [s_model, s_steps, s_seed, s_batch, s_teacher],
                    [s_grid, s_table, s_summary, s_details, s_teacher_image],
                    api_name="sample",
                    api_description="Few-step samples with the log-likelihood of each (and the teacher's Euler samples).",
                    concurrency_limit=1,
                    concurrency_id="compute",
                ).then(  # show the teacher's panel only when there is a comparison (UI only; the API is unchanged)
                    lambda details: gr.Image(visible=bool(details and details.get("teacher"))),
                    s_details,
                    s_teacher_image,
                    api_visibility="private",
                    queue=False,
                )

            with gr.Tab("Likelihood", id="likelihood"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        l_model = gr.Dropdown(names, value=default_model, label="Model")
                        gr.Markdown(
                            "Image models use the uploaded image if there is one, otherwise the drawing. "
                            "2-D models use the uploaded file if there is one, otherwise the pasted points."
                        )
                        with gr.Tabs():
                            with gr.Tab("Upload image"):
                                l_image = _checked_image(
                                    label="Image (any size; converted for the model)", type="pil", image_mode=None,
                                    height=280, elem_id="likelihood-image",
                                )
                                l_example = gr.Button("Use an example digit", size="sm")
                            with gr.Tab("Draw"):
                                l_sketch = gr.Sketchpad(
                                    label="Draw a digit", type="pil", image_mode="RGB", canvas_size=(256, 256),
                                    brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=20),
                                )
                            with gr.Tab("2-D points"):
                                l_points = gr.Textbox(
                                    value="", label="Points (CSV: one point per line)", lines=6, placeholder="x1, x2\n0.5, -1.2\n1.5, 2.0",
                                )
                                l_points_file = gr.File(label="…or a .csv / .npy file", file_types=[".csv", ".npy", ".txt"], height=120)
                                l_example_points = gr.Button("Use example checkerboard points", size="sm")
                        l_reference = gr.Checkbox(
                            value=True, label="Also run the teacher's reference ODE (dopri5: hundreds of calls, about a minute per digit on a small CPU)"
                        )
                        l_seed = Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Dequantisation seed")
                        l_go = gr.Button("Compute likelihood", variant="primary")
                    with gr.Column(scale=2):
                        l_table = gr.Dataframe(
                            label="Bits per dimension by method", interactive=False, elem_id="likelihood-table",
                            column_widths=["29%", "13%", "11%", "14%", "11%", "22%"], wrap=True,
                        )
                        l_summary = gr.Markdown(elem_id="likelihood-summary")
                        l_preview = gr.Image(label="What the model scored", type="pil", format="png")
                        with gr.Accordion("Raw values (JSON)", open=False):
                            l_details = gr.JSON(label="Details")
                l_go.click(
                    likelihood,
                    [l_model, l_image, l_sketch, l_points, l_points_file, l_reference, l_seed],
                    [l_table, l_summary, l_preview, l_details],
                    api_name="likelihood",
                    api_description="Bits/dim of an image, a drawing or 2-D points at 1, 2, 4, 8 steps, beside the teacher's ODE.",
                    concurrency_limit=1,
                    concurrency_id="compute",
                )
                l_example.click(
                    user_errors(example_digit), None, l_image, api_visibility="private", queue=False
                )
                l_example_points.click(
                    lambda: (example_points(), vector_default), None, [l_points, l_model], api_visibility="private", queue=False
                )

            with gr.Tab("Explain", id="explain"):
                gr.Markdown(METHOD_TEXT)
                e_status = gr.Markdown()
                # The plots are wide (two panels each): shown one at a time, whole, with thumbnails to switch, rather
                # than cropped to square grid tiles.
                e_gallery = gr.Gallery(label="Error against network calls, and per segment", preview=True, height=520,
                                       object_fit="contain", format="png")
                e_refresh = gr.Button("Refresh plots", size="sm")

        def refresh():
            items, text = explain_plots()
            return gr.Gallery(value=items, visible=bool(items)), text, registry.status_markdown()

        e_refresh.click(refresh, None, [e_gallery, e_status, status], api_visibility="private", queue=False)
        demo.load(refresh, None, [e_gallery, e_status, status], api_visibility="private", queue=False)
    demo.queue(max_size=int(os.environ.get("F2D2_QUEUE_SIZE", "16")), default_concurrency_limit=1)
    return demo


demo = build_demo() if os.environ.get("F2D2_SPACE_NO_DEMO") != "1" else None

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    (demo or build_demo()).launch(max_file_size="10mb")
