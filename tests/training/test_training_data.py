"""f2d2_diffusers.training.data: the training set named on the command line, and the points calibrated on."""

import numpy as np
import pytest
import torch

from f2d2_diffusers import dequantize
from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels, load_toy
from f2d2_diffusers.training import (
    TrainingError, build_parser, calibration_data, generalization_data, load_training_data, parse_args,
)


def test_image_folder_loading_resizes_crops_and_maps_levels(tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((12, 10), 255, dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), mode="RGB").save(folder / "colour.jpg")
    (folder / "notes.txt").write_text("not an image")
    parser = build_parser("test", str(tmp_path / "out"))
    args = parse_args(parser, ["--train_data_dir", str(folder), "--resolution", "8", "--num_levels", "17",
                               "--center_crop"])
    data = load_training_data(args)
    # One colour image makes the whole folder RGB; the 10x12 image is resized to 8x10, then center-cropped.
    assert data.kind == "image" and data.sample_shape == (3, 8, 8) and data.num_levels == 17 and len(data.dataset) == 2
    levels = torch.stack([data.dataset[i] for i in range(2)])
    assert levels.dtype == torch.uint8 and levels.shape == (2, 3, 8, 8)
    assert set(levels.unique().tolist()) == {0, 16}  # 8-bit 255 maps onto the top of 17 levels
    model_space = data.to_model_space(levels)
    assert model_space.min() >= -1 and model_space.max() <= 1

    missing = parse_args(parser, ["--train_data_dir", str(folder / "none"), "--resolution", "8"])
    with pytest.raises(TrainingError, match="no folder"):
        load_training_data(missing)


def test_image_folder_keeps_8_bit_pixels_with_256_levels(tmp_path):
    from PIL import Image

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(pixels, mode="L").save(tmp_path / "ramp.png")
    args = parse_args(build_parser("test", str(tmp_path / "out")), ["--train_data_dir", str(tmp_path), "--center_crop",
                                                                     "--resolution", "8"])
    data = load_training_data(args)
    assert data.num_levels == 256 and data.dataset[0].dtype == torch.uint8
    assert torch.equal(data.dataset[0], torch.from_numpy(pixels)[None])


def test_image_folder_refuses_16_bit_images_instead_of_clipping_them(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    args = parse_args(build_parser("test", str(tmp_path / "out")), ["--train_data_dir", str(tmp_path), "--center_crop",
                                                                     "--resolution", "8", "--num_levels", "256"])
    data = load_training_data(args, channels=1)
    with pytest.raises(TrainingError, match="16-bit, 32-bit or float"):
        data.dataset[0]


def _args(tmp_path, *argv):
    return parse_args(build_parser("test", str(tmp_path / "out")), list(argv))


def test_calibration_points_are_the_embedded_test_splits(tmp_path):
    # Digits: test images (1500 on), dequantised with one draw seeded by `seed`; never the training images.
    args = _args(tmp_path, "--dataset", "digits")
    sample, where = calibration_data(args, load_training_data(args), 5, seed=3)
    expected = dequantize(load_digits_levels("test")[:5], DIGITS_NUM_LEVELS, torch.Generator().manual_seed(3))
    assert torch.equal(sample, expected) and where == "digits test images (images 1500 on)"
    # Toys: the test seed, whatever the training set holds.
    args = _args(tmp_path, "--dataset", "rings", "--num_toy_samples", "10")
    sample, where = calibration_data(args, load_training_data(args), 50)
    assert torch.equal(sample, load_toy("rings", "test", 50)) and where == "'rings' test points (fresh seed)"


def test_calibration_points_without_a_test_split_are_the_first_training_examples(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "vectors.npy", vectors)
    args = _args(tmp_path, "--train_data_file", str(tmp_path / "vectors.npy"))
    sample, where = calibration_data(args, load_training_data(args), 100)
    assert torch.equal(sample, torch.from_numpy(vectors)) and where.startswith("training vectors")


def test_generalization_data_pairs_training_and_held_out_points_of_one_size(tmp_path):
    args = _args(tmp_path, "--dataset", "digits")
    training, held_out = generalization_data(args, load_training_data(args))
    assert training.shape == held_out.shape == (297, 1, 8, 8)
    expected = dequantize(load_digits_levels("train")[:297], DIGITS_NUM_LEVELS, torch.Generator().manual_seed(0))
    assert torch.equal(training, expected)
    assert torch.equal(held_out, calibration_data(args, load_training_data(args), 297)[0])
    # A toy training set smaller than its test split: as many held-out points as training points.
    args = _args(tmp_path, "--dataset", "rings", "--num_toy_samples", "10")
    training, held_out = generalization_data(args, load_training_data(args))
    assert training.shape == held_out.shape == (10, 2)
    # Data with no held-out split here: nothing to compare.
    np.save(tmp_path / "vectors.npy", np.zeros((6, 2), dtype=np.float32))
    args = _args(tmp_path, "--train_data_file", str(tmp_path / "vectors.npy"))
    assert generalization_data(args, load_training_data(args)) is None
