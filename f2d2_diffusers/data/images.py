"""Reading PIL images as pixel arrays without losing or inventing range: 8-bit, 16-bit and transparent images."""

from typing import Tuple

import numpy as np
import PIL.Image

#: PIL modes of 16-bit grey images (a 16-bit greyscale PNG opens as ``"I;16"``).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes with an alpha channel.
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def has_transparency(image: PIL.Image.Image) -> bool:
    """Whether ``image`` has an alpha channel or a transparent palette / colour key (``info["transparency"]``)."""
    return image.mode in ALPHA_MODES or "transparency" in image.info


def pil_to_pixels(image: PIL.Image.Image, channels: int) -> Tuple[np.ndarray, int]:
    """The pixels of ``image`` with ``channels`` channels (1: grey, 3: RGB) and the largest value they can take.

    - 16-bit grey images (``"I;16"`` modes, and ``"I"`` read from a PNG, as older Pillow opens 16-bit PNGs) keep
      their 16 bits: ``max_value = 65535``.
    - Transparent images (RGBA, LA, a palette with a transparent entry, ...) are composited onto **black**:
      transparent areas count as value 0, partly transparent pixels are scaled by their opacity.
    - Every other mode PIL can convert is read as 8-bit ``"L"`` or ``"RGB"``: ``max_value = 255``.
    - ``"I"`` (32-bit integer) and ``"F"`` (float) images have no fixed range, so they are rejected.

    Returns:
        ``(pixels, max_value)``: ``pixels`` of shape ``(H, W, channels)``, ``uint8`` or ``uint16``.
    """
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    if channels not in (1, 3):
        raise ValueError(f"images are read with 1 (grey) or 3 (RGB) channels, not {channels}")
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):
        grey = np.asarray(image).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise ValueError(f"a 16-bit image (PIL mode {mode!r}) holds values outside [0, 65535]")
        return np.repeat(grey.astype(np.uint16)[..., None], channels, axis=-1), 65535
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ValueError(
            f"image has PIL mode {mode!r} ({kind} pixels), whose range is not fixed: convert it to 'L' or 'RGB' "
            "(8-bit) or 'I;16' (16-bit) with the range you mean, or pass a numpy array of grey levels"
        )
    target = "L" if channels == 1 else "RGB"
    try:
        if has_transparency(image):
            # Composite onto black rather than drop the alpha channel: dropping it scores whatever colour the
            # transparent pixels happen to hold (often white).
            rgba = image.convert("RGBA")
            background = PIL.Image.new("RGBA", image.size, (0, 0, 0, 255))
            background.alpha_composite(rgba)
            image = background
        converted = image.convert(target)
    except ValueError as err:  # PIL has no conversion for a few modes (e.g. "LAB", "La")
        raise ValueError(f"cannot read an image of PIL mode {mode!r} as {target!r} ({err})") from None
    return np.asarray(converted, dtype=np.uint8).reshape(image.size[1], image.size[0], channels), 255
