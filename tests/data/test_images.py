import io

import numpy as np
import PIL.Image
import pytest

from f2d2_diffusers.data import pil_to_pixels


def test_8_and_16_bit_images_keep_their_range():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    pixels, max_value = pil_to_pixels(PIL.Image.fromarray(grey, mode="L"), 1)
    assert max_value == 255 and pixels.dtype == np.uint8 and pixels.shape == (8, 8, 1)
    np.testing.assert_array_equal(pixels[..., 0], grey)
    sixteen = PIL.Image.fromarray(grey.astype(np.uint16) * 257)
    png = io.BytesIO()
    sixteen.save(png, format="PNG")
    for image in (sixteen, PIL.Image.open(io.BytesIO(png.getvalue()))):
        pixels, max_value = pil_to_pixels(image, 3)
        assert max_value == 65535 and pixels.shape == (8, 8, 3)
        np.testing.assert_array_equal(pixels[..., 2], grey.astype(np.uint16) * 257)


def test_transparency_is_composited_onto_black():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, 0, 3] = 255, 128, 0
    pixels, _ = pil_to_pixels(PIL.Image.fromarray(rgba, mode="RGBA"), 1)
    assert pixels[..., 0].tolist() == [[255, 128], [0, 0]]
    palette = PIL.Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.info["transparency"] = 1
    assert pil_to_pixels(palette, 1)[0].max() == 0


@pytest.mark.parametrize("mode", ["I", "F"])
def test_modes_without_a_fixed_range_are_refused(mode):
    with pytest.raises(ValueError, match=f"PIL mode '{mode}'.*range is not fixed"):
        pil_to_pixels(PIL.Image.new(mode, (2, 2)), 1)


def test_other_bad_calls():
    with pytest.raises(TypeError, match="image must be a PIL image"):
        pil_to_pixels(np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        pil_to_pixels(PIL.Image.new("L", (2, 2)), 4)
    with pytest.raises(ValueError, match="cannot read an image of PIL mode 'LAB'"):
        pil_to_pixels(PIL.Image.new("LAB", (2, 2)), 1)
