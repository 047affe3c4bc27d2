"""Checking and converting what users send: numbers, images and drawings, 2-D points as text or files.

Every problem raises :class:`errors.InputError` with a message meant for the user.
"""

import math
import re
from pathlib import Path
from typing import List, Tuple

import numpy as np
import PIL.Image
import PIL.ImageOps

from f2d2_diffusers import pixels_to_levels
from f2d2_diffusers.data.images import SIXTEEN_BIT_MODES, has_transparency, pil_to_pixels
from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels, load_test_split, load_toy

from content import MAX_POINTS, MAX_UPLOAD_MB, MAX_UPLOAD_PIXELS
from errors import InputError


def _number(value, name: str, kind: str, low, high) -> float:
    """``value`` (a number or numeric string from a form or the API) as a ``float``; missing or non-numeric input is
    an ``InputError`` asking for ``kind`` (``"a whole number"``, ``"a number"``) in ``[low, high]``."""
    span = f"from {low:g} to {high:g}" if isinstance(low, float) else f"from {low} to {high}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} is missing: give {kind} {span}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {kind} {span}, got {value!r}.") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be {kind} {span}, got {value!r}.")
    return number


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` (a number or numeric string from a form or the API) as an ``int`` in ``[low, high]``."""
    number = _number(value, name, "a whole number", low, high)
    if number != int(number):
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    number = int(number)
    if not low <= number <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {number}.")
    return number


def real_number(value, name: str, low: float, high: float) -> float:
    """``value`` (a number or numeric string from a form or the API) as a finite ``float`` in ``[low, high]``."""
    low, high = float(low), float(high)
    number = _number(value, name, "a number", low, high)
    if not low <= number <= high:
        raise InputError(f"{name} must be from {low:g} to {high:g}, got {value!r}.")
    return number


# -- images ---------------------------------------------------------------------------------------------------


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
    """Convert any PIL image to the model's format.

    Args:
        shape: the model's sample shape ``(C, H, W)``, ``C`` 1 (grey) or 3 (RGB).
        num_levels: the model's grey levels ``L``.

    Returns:
        ``(levels, notes)``: integer levels ``0..L-1`` of shape ``(H, W, C)``, and what was done, step by step.
    """
    channels, height, width = shape
    if channels not in (1, 3):
        raise InputError(f"This model takes {channels}-channel images; the demo handles 1 (grey) or 3 (RGB) channels.")
    notes = [f"Read a {image.width}x{image.height} {image.mode} image."]
    if image.width * image.height > MAX_UPLOAD_PIXELS:
        raise InputError(f"The image is too large ({image.width}x{image.height}); use one under 16 megapixels.")
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        # PIL would clip these to 8 bits when converting; the library reads their range (or refuses an unknown one).
        try:
            pixels, max_value = pil_to_pixels(image, 1)
        except ValueError:
            kind = "32-bit integer" if image.mode == "I" else "floating-point"
            raise InputError(
                f"This image has {kind} pixels (mode {image.mode}), whose brightness range is not fixed; "
                "save it as an 8- or 16-bit PNG."
            ) from None
        image = PIL.Image.fromarray(pixels_to_levels(pixels[..., 0], 256, max_value).astype(np.uint8), mode="L")
        notes.append("Scaled its 16-bit grey values 0-65535 to 8 bits (0-255).")
    if has_transparency(image):
        try:
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
        except ValueError:
            raise InputError(f"Cannot read a {image.mode} image; upload a PNG, JPEG, WebP or BMP in RGB(A) or grey.") from None
        if (alpha < 255).any():
            fill = _contrast_fill(image)
            background = PIL.Image.new("RGBA", image.size, fill + (255,))
            background.alpha_composite(image.convert("RGBA"))
            image = background
            notes.append(f"Filled transparent areas with {'white' if fill[0] else 'black'}.")
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        was_colour = image.mode not in ("L", "1", "I", "I;16", "F", "LA")
        try:
            if mode == "L" and was_colour:
                rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
                grey_already = bool((np.abs(rgb - rgb[..., :1]) <= 2).all())
                notes.append("Converted to one grey channel." if grey_already else "Converted colour to greyscale.")
            image = image.convert(mode)
        except ValueError:  # a colour space PIL cannot convert (e.g. LAB)
            raise InputError(f"Cannot read a {image.mode} image; upload a PNG, JPEG, WebP or BMP in RGB(A) or grey.") from None
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
    levels = pixels_to_levels(np.asarray(image).reshape(height, width, channels), num_levels)
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
    except Exception as err:  # noqa: BLE001 - whatever PIL raises, the file is not a readable image
        raise InputError(f"Could not read the file as an image ({type(err).__name__}); upload a PNG, JPEG, WebP or BMP.") from None


def _as_pil(value):
    """An image as gradio may pass it (a PIL image, a file path or an array) as a PIL image; ``None`` stays."""
    if isinstance(value, (str, Path)):
        return open_image_file(value)
    if isinstance(value, np.ndarray):
        return PIL.Image.fromarray(value)
    return value


def pick_image(image, sketch) -> Tuple[str, PIL.Image.Image]:
    """``(source, image)``: the uploaded ``image`` if there is one, else the ``sketch``'s drawing if it is not blank.

    ``sketch`` is a gradio ``ImageEditor`` value, a dict whose ``"composite"`` is the drawing.
    """
    if image is not None:
        return "uploaded image", _as_pil(image)
    if isinstance(sketch, dict):
        composite = _as_pil(sketch.get("composite"))
        if composite is not None:
            extrema = composite.convert("L").getextrema()
            if extrema[0] != extrema[1]:
                return "drawing", composite
    raise InputError("No image: upload an image or draw a digit on the sketchpad.")


# -- 2-D points -----------------------------------------------------------------------------------------------

_NUMBER_SPLIT = re.compile(r"[,;\s]+")


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def parse_points(text: str, dim: int) -> Tuple[np.ndarray, List[str]]:
    """Points from CSV-like text: one point per line, numbers separated by commas, semicolons or spaces.

    A first line that is not numeric is taken as a header; ``#`` starts a comment line.

    Returns:
        ``(points, notes)``: ``float32`` points of shape ``(N, dim)``, and what was read.
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


def load_points_file(path, dim: int) -> Tuple[np.ndarray, List[str]]:
    """Points from a ``.npy`` array ``(N, dim)`` or a ``.csv`` / ``.txt`` / ``.tsv`` file (as :func:`parse_points`)."""
    path = Path(path)
    name = path.name
    if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
        raise InputError(f"{name} is too large; upload at most {MAX_UPLOAD_MB} MB of points.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - whatever numpy raises, the file is not a readable array
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


def uploaded_file_path(value) -> str:
    """The local path of a gradio file value (a path, a ``{"path": ...}`` dict or a tempfile wrapper)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    if hasattr(value, "name") and not isinstance(value, (str, Path)):
        value = value.name
    if not value or not Path(value).is_file():
        raise InputError("The uploaded points file could not be found; upload it again.")
    return str(value)


# -- examples -------------------------------------------------------------------------------------------------


# All examples come from data embedded in the installed packages (scikit-learn's digits, the 2-D toy generators):
# nothing is downloaded.


def _digit_image(index: int = 3, dark_on_light: bool = False, rotate: bool = False) -> PIL.Image.Image:
    levels = load_digits_levels("test")[index, 0].numpy().astype(np.float64)
    if rotate:
        levels = np.rot90(levels)
    if dark_on_light:
        levels = (DIGITS_NUM_LEVELS - 1) - levels
    image = PIL.Image.fromarray((levels * 255 / (DIGITS_NUM_LEVELS - 1)).round().astype(np.uint8), mode="L")
    return image.resize((256, 256), PIL.Image.Resampling.NEAREST)


def example_digit() -> PIL.Image.Image:
    """A test-split digit from scikit-learn (never trained on), as a 256x256 light-on-dark ``L`` image."""
    return _digit_image(3)


#: The Likelihood tab's example images: ``(file name, label, how it is made)`` from the digits test split.
EXAMPLE_IMAGES = (
    ("digit-test-3.png", "a test digit (never trained on)", dict(index=3)),
    ("digit-test-10-dark-on-light.png", "a test digit, dark on light (the app inverts it)", dict(index=10, dark_on_light=True)),
    ("digit-test-3-rotated.png", "a rotated digit (out of distribution: higher bits/dim)", dict(index=3, rotate=True)),
)


def write_example_images(folder) -> List[Tuple[str, str]]:
    """Write the example digits of :data:`EXAMPLE_IMAGES` as PNGs into ``folder``; returns ``[(path, label)]``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, label, how in EXAMPLE_IMAGES:
        path = folder / name
        if not path.is_file():
            _digit_image(**how).save(path)
        written.append((str(path), label))
    return written


def example_points(count: int = 12) -> str:
    """``count`` test-split checkerboard points (never trained on) as CSV text with a header."""
    points, _ = load_test_split("checkerboard", count)
    return "x1, x2\n" + "\n".join(f"{a:.3f}, {b:.3f}" for a, b in points.numpy())


def example_ood_points(count: int = 12) -> str:
    """``count`` points of another 2-D data set (eight Gaussians, test split): out of distribution for the
    checkerboard, so they score lower log-likelihoods."""
    points = load_toy("eight_gaussians", "test", count)
    return "x1, x2\n" + "\n".join(f"{a:.3f}, {b:.3f}" for a, b in points.numpy())


#: The Likelihood tab's 2-D examples: ``(label, CSV text)``.
def example_point_sets() -> List[Tuple[str, str]]:
    return [
        ("12 checkerboard test points (never trained on)", example_points(12)),
        ("12 eight-Gaussians points (out of distribution)", example_ood_points(12)),
    ]
