"""Inputs users got wrong answers or bare tracebacks for: each now gets the right answer or a clear error."""

import io
import json
import logging
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import UNet2DModel

from testing_utils import tiny_unet_config
from f2d2_diffusers import (
    F2D2LikelihoodPipeline, F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingMLPModel,
)


def make(cls, model, **kwargs):
    pipe = cls(unet=model, scheduler=F2D2Scheduler(), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- shapes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 7])
def test_latents_of_another_size_than_the_models_config_are_rejected(tiny_f2d2_unet, size):
    """16x16 latents used to sample silently on an 8x8 model; 7x7 ones failed deep inside the UNet."""
    with pytest.raises(ValueError, match=r"latents must have shape \(batch, 1, 8, 8\) as the model's config says \(sample_size=8"):
        make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17)(latents=torch.randn(1, 1, size, size), output_type="pt")


def test_empty_latents_are_rejected(tiny_f2d2_unet):
    with pytest.raises(ValueError, match="latents is empty"):
        make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17)(latents=torch.randn(0, 1, 8, 8), output_type="pt")


def test_an_edited_sample_size_is_caught_where_it_can_be(tiny_f2d2_unet, tiny_f2d2_mlp, tmp_path):
    """A UNet runs at any size, so an edited ``sample_size`` cannot be told from its weights: latents of the size it
    was trained at are then refused with the config's value in the message. An MLP's weights fix its size, so an
    edited config fails to load, naming the checkpoint."""
    make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17).save_pretrained(tmp_path / "image")
    config_path = tmp_path / "image" / "unet" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "sample_size": 16}))
    edited = F2D2Pipeline.from_pretrained(tmp_path / "image")
    edited.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match=r"\(batch, 1, 16, 16\) as the model's config says \(sample_size=16"):
        edited(latents=torch.randn(1, 1, 8, 8), output_type="pt")

    make(F2D2Pipeline, tiny_f2d2_mlp).save_pretrained(tmp_path / "vector")
    config_path = tmp_path / "vector" / "unet" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "sample_size": 5}))
    with pytest.raises(ValueError, match=r"cannot load F2D2MLPModel from .*vector/unet: its weights do not match its config\.json"):
        F2D2Pipeline.from_pretrained(tmp_path / "vector")


# -- grids -------------------------------------------------------------------------------------------------------


def test_custom_grids_must_reach_the_prior(tiny_f2d2_unet):
    """``sigmas=[0.5, 0]`` used the N(0, I) prior at sigma 0.5 and reported a bits/dim for it."""
    sampler = make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17)
    with pytest.raises(ValueError, match=r"sigmas for direction='sample' must start at 1 and end at 0.*prior"):
        sampler(sigmas=[0.5, 0.0], output_type="pt")
    likelihood = make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)
    with pytest.raises(ValueError, match=r"sigmas for direction='likelihood' must start at 0 and end at 1"):
        likelihood(torch.zeros(1, 1, 8, 8, dtype=torch.long), sigmas=[0.5, 1.0])


def test_custom_sigmas_set_the_number_of_steps(tiny_f2d2_unet):
    """With ``sigmas`` alone the grid gives the number of steps (it used to clash with the default of 1)."""
    sampler = make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    custom = sampler(latents=noise, sigmas=[1.0, 0.5, 0.0], output_type="pt")
    uniform = sampler(latents=noise, num_inference_steps=2, output_type="pt")
    assert custom.nfe == 2
    torch.testing.assert_close(custom.log_prob, uniform.log_prob)
    with pytest.raises(ValueError, match="num_inference_steps=3 does not match 2 steps"):
        sampler(latents=noise, sigmas=[1.0, 0.5, 0.0], num_inference_steps=3, output_type="pt")


# -- grey levels -------------------------------------------------------------------------------------------------


def test_num_levels_defaults_to_continuous_for_vector_models(tiny_f2d2_mlp):
    """A vector pipeline built in code applied 8-bit grey-level offsets to continuous data."""
    for cls in (F2D2Pipeline, F2D2LikelihoodPipeline):
        assert make(cls, tiny_f2d2_mlp).config.num_levels is None
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    default = make(F2D2LikelihoodPipeline, tiny_f2d2_mlp)(x, dequantize=False)
    continuous = make(F2D2LikelihoodPipeline, tiny_f2d2_mlp, num_levels=None)(x, dequantize=False)
    torch.testing.assert_close(default.bits_per_dim, continuous.bits_per_dim)


def test_num_levels_is_refused_for_vector_models(tiny_f2d2_mlp):
    with pytest.raises(ValueError, match=r"num_levels=256 was given for a vector model \(F2D2MLPModel\).*num_levels=None"):
        make(F2D2Pipeline, tiny_f2d2_mlp, num_levels=256)
    with pytest.raises(ValueError, match="vector model"):
        make(F2D2LikelihoodPipeline, tiny_f2d2_mlp)(torch.randn(2, 3), dequantize=False, num_levels=17)
    with pytest.raises(ValueError, match="'auto'"):
        make(F2D2Pipeline, tiny_f2d2_mlp, num_levels="eight-bit")


def test_image_models_default_to_256_levels_and_say_so_for_a_checkpoint_without_them(tiny_f2d2_unet, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert make(F2D2Pipeline, tiny_f2d2_unet).config.num_levels == 256
    assert "num_levels" not in caplog.text  # built in code: 8-bit images are the norm, no warning

    make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    del index["num_levels"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = F2D2LikelihoodPipeline.from_pretrained(tmp_path)
    assert loaded.config.num_levels == 256
    assert "model_index.json has no num_levels: assuming 8-bit images, num_levels=256" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert F2D2LikelihoodPipeline.from_pretrained(tmp_path, num_levels=17).config.num_levels == 17
    assert "assuming" not in caplog.text


def test_a_vector_checkpoint_without_num_levels_loads_as_continuous(tiny_f2d2_mlp, tmp_path, caplog):
    make(F2D2Pipeline, tiny_f2d2_mlp).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    del index["num_levels"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with caplog.at_level(logging.WARNING):
        assert F2D2Pipeline.from_pretrained(tmp_path).config.num_levels is None
    assert "assuming" not in caplog.text


# -- images ------------------------------------------------------------------------------------------------------


def _digit_pixels():
    levels = np.random.default_rng(3).integers(0, 17, (8, 8))
    return levels, np.rint(levels * 255 / 16).astype(np.uint8)


def test_16_bit_images_and_png_files_score_like_their_8_bit_version(tiny_f2d2_unet):
    """16-bit images were clipped to 8 bits: a 16-bit digit scored 6.0 bits/dim against 2.8 in 8 bits."""
    pipe = make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)
    levels, pixels = _digit_pixels()
    eight = PIL.Image.fromarray(pixels, mode="L")
    sixteen = PIL.Image.fromarray(pixels.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    png = io.BytesIO()
    sixteen.save(png, format="PNG")
    from_png = PIL.Image.open(io.BytesIO(png.getvalue()))
    scores = [pipe(image, generator=torch.Generator().manual_seed(0)).bits_per_dim for image in (eight, sixteen, from_png)]
    torch.testing.assert_close(scores[1], scores[0])
    torch.testing.assert_close(scores[2], scores[0])
    torch.testing.assert_close(pipe(levels, generator=torch.Generator().manual_seed(0)).bits_per_dim, scores[0])


@pytest.mark.parametrize("mode, values", [("I", np.int32), ("F", np.float32)])
def test_images_without_a_fixed_range_are_refused(tiny_f2d2_unet, mode, values):
    image = PIL.Image.fromarray(np.full((8, 8), 100, dtype=values))
    assert image.mode == mode
    with pytest.raises(ValueError, match=f"mode '{mode}'.*range is not fixed"):
        make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)(image)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_images_are_composited_onto_black(tiny_f2d2_unet, mode):
    """A fully transparent white image used to be scored as white."""
    pipe = make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)
    transparent_white = PIL.Image.new(mode, (8, 8), (255,) * (len(mode) - 1) + (0,))
    black = PIL.Image.new("L", (8, 8), 0)
    torch.testing.assert_close(
        pipe(transparent_white, generator=torch.Generator().manual_seed(0)).log_prob,
        pipe(black, generator=torch.Generator().manual_seed(0)).log_prob,
    )


def test_uint16_numpy_levels_are_read_and_pixel_values_get_a_hint(tiny_f2d2_unet):
    pipe = make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)
    levels, _ = _digit_pixels()
    expected = pipe(levels.astype(np.int64), generator=torch.Generator().manual_seed(0)).log_prob
    for dtype in (np.uint16, np.uint32, np.int8):
        got = pipe(levels.astype(dtype), generator=torch.Generator().manual_seed(0)).log_prob
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(pipe(torch.from_numpy(levels.astype(np.uint16))[None], generator=torch.Generator().manual_seed(0)).log_prob, expected)
    with pytest.raises(ValueError, match=r"levels in \[0, 16\].*got \[0, 65520\].*pixels_to_levels"):
        pipe((levels * 4095).astype(np.uint16))


# -- non-finite results ------------------------------------------------------------------------------------------


def test_huge_finite_inputs_give_an_error_not_nan(tiny_f2d2_unet, tiny_f2d2_mlp):
    with pytest.raises(ValueError, match=r"images led to NaN or infinite values.*far outside the range"):
        make(F2D2LikelihoodPipeline, tiny_f2d2_mlp)(torch.full((2, 3), 1e30), dequantize=False)
    with pytest.raises(ValueError, match=r"latents led to NaN or infinite values"):
        make(F2D2Pipeline, tiny_f2d2_unet, num_levels=17)(latents=torch.full((1, 1, 8, 8), 1e30), output_type="pt")
    with pytest.raises(ValueError, match="far outside the range"):
        make(F2D2LikelihoodPipeline, tiny_f2d2_unet, num_levels=17)(torch.full((1, 1, 8, 8), -1e30), dequantize=False)


# -- components --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [F2D2Pipeline, F2D2LikelihoodPipeline])
def test_a_teacher_passed_as_the_unet_is_refused_with_how_to_make_a_student(cls):
    torch.manual_seed(0)
    with pytest.raises(TypeError, match=r"UNet2DModel, a velocity model \(a flow-matching teacher\).*F2D2UNet2DModel\.from_teacher"):
        cls(unet=UNet2DModel(**tiny_unet_config()), scheduler=F2D2Scheduler())
    teacher = FlowMatchingMLPModel(sample_size=3, hidden_dim=8, num_layers=1, time_embed_dim=8)
    with pytest.raises(TypeError, match=r"FlowMatchingMLPModel.*F2D2MLPModel\.from_teacher"):
        cls(unet=teacher, scheduler=F2D2Scheduler())
    assert cls(unet=F2D2MLPModel.from_teacher(teacher), scheduler=F2D2Scheduler()).config.num_levels is None


def test_loading_a_teacher_folder_as_an_f2d2_pipeline_says_what_it_is(tmp_path):
    """A folder whose unet is a teacher (a UNet2DModel) fails to load with the same message, not further on."""
    torch.manual_seed(0)
    UNet2DModel(**tiny_unet_config()).save_pretrained(tmp_path / "unet")
    F2D2Scheduler().save_pretrained(tmp_path / "scheduler")
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "F2D2Pipeline", "num_levels": 17, "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["f2d2_diffusers.schedulers.scheduling_f2d2", "F2D2Scheduler"],
    }))
    with pytest.raises(TypeError, match="velocity model.*from_teacher"):
        F2D2Pipeline.from_pretrained(tmp_path)


# -- threads -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [F2D2Pipeline, F2D2LikelihoodPipeline])
def test_one_pipeline_serves_two_threads(tiny_f2d2_mlp, cls):
    """The scheduler's grid was shared: a 1-step call next to an 8-step one ran 8 steps, or stopped with "timestep
    not on the grid". Each call now has its own copy; two threads x many calls give the single-threaded results."""
    pipe = make(cls, tiny_f2d2_mlp)
    data = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def call(steps):
        if cls is F2D2Pipeline:
            return pipe(latents=data, num_inference_steps=steps, output_type="pt")
        return pipe(data, num_inference_steps=steps, dequantize=False)

    expected = {steps: call(steps) for steps in (1, 8)}
    problems = []

    def work(steps):
        for _ in range(40):
            try:
                out = call(steps)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                problems.append(f"{steps} steps: {type(err).__name__}: {err}")
                continue
            if out.nfe != steps or not torch.equal(out.log_prob, expected[steps].log_prob):
                problems.append(f"{steps} steps: nfe {out.nfe}, log_prob {out.log_prob.tolist()}")

    threads = [threading.Thread(target=work, args=(steps,)) for steps in (1, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert pipe.scheduler.sigmas.numel() == 2  # the pipeline's own scheduler is left as it was built
