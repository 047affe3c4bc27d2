"""Both pipelines, with a tiny image model (8x8, 1 channel, 17 levels) and a tiny vector model (3-D), on random
inputs: shapes, dtypes, ranges, NaN/Inf, empty batches, PIL modes, grids and options."""

import pytest

pytest.importorskip("hypothesis")

import inspect  # noqa: E402

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from fuzz_helpers import FUZZ, STEP_COUNTS, assert_finite, grids, numeric_arrays, run_case  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from testing_utils import randomise_new_layers, tiny_unet_config  # noqa: E402

from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, F2D2UNet2DModel  # noqa: E402

torch.manual_seed(0)
IMAGE_MODEL = randomise_new_layers(F2D2UNet2DModel(**tiny_unet_config())).eval()
VECTOR_MODEL = randomise_new_layers(F2D2MLPModel(sample_size=3, hidden_dim=32, num_layers=2, time_embed_dim=16)).eval()
NUM_LEVELS = {"image": 17, "vector": None}


def pipeline(cls, data):
    pipe = cls(unet=IMAGE_MODEL if data == "image" else VECTOR_MODEL, scheduler=F2D2Scheduler(), num_levels=NUM_LEVELS[data])
    pipe.set_progress_bar_config(disable=True)
    return pipe


PIPES = {
    (cls, data): pipeline(cls, data) for cls in (F2D2Pipeline, F2D2LikelihoodPipeline) for data in ("image", "vector")
}
GOOD = {"image": (1, 8, 8), "vector": (3,)}


def expected_steps(kwargs, end: float) -> int:
    """Network calls: the steps of ``sigmas`` (which may leave out the ``end`` point), else ``num_inference_steps``."""
    if kwargs.get("sigmas") is not None:
        grid = list(kwargs["sigmas"])
        return len(grid) - (grid[-1] == end)
    return kwargs.get("num_inference_steps") or 1


# -- inputs ------------------------------------------------------------------------------------------------------


def shapes(data, channels_last: bool):
    """Batch shapes: the right one (batched or not) the most often, and empty, wrong-size and wrong-rank ones."""
    good = GOOD[data]
    if data == "image" and channels_last:
        good = (8, 8, 1)
    right = st.integers(1, 3).map(lambda b: (b, *good))
    odd = [(0, *good), good, (2, 4, 4, 1) if channels_last else (2, 1, 7, 7), (2, 16, 16, 1) if channels_last else (1, 1, 16, 16)]
    odd += [(2, 8, 8, 3) if channels_last else (2, 3, 8, 8), (8, 8), (), (2,), (2, 4)]
    return st.one_of(right, right, right, st.sampled_from(odd))


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(["L", "L", "I;16", "RGB", "RGBA", "LA", "P", "1", "I", "F"]))
    size = draw(st.sampled_from([(8, 8), (8, 8), (8, 8), (16, 16), (7, 8)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode, 1)
    if mode == "I;16":
        return PIL.Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    if mode in ("I", "F"):
        return PIL.Image.fromarray(rng.integers(0, 256, size[::-1]).astype(np.int32 if mode == "I" else np.float32))
    pixels = rng.integers(0, 256, (*size[::-1], channels), dtype=np.uint8)
    image = PIL.Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode="L" if channels == 1 else mode)
    return image.convert(mode) if mode in ("P", "1") else image


#: Input dtypes: integer levels and floats for images, floats (continuous data) the most often for vectors.
INPUT_DTYPES = {
    "image": (np.uint8, np.int64, np.uint16, np.float32, np.float64, np.int8, np.uint64, np.float16, np.bool_, np.complex64),
    "vector": (np.float32, np.float32, np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64),
}


@st.composite
def likelihood_inputs(draw, data):
    kinds = ["numpy", "tensor", "tensor", "list", "pil", "other"] + (["tensor", "numpy"] if data == "vector" else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "pil":
        images = draw(st.lists(pil_images(), min_size=1, max_size=2))
        return images[0] if len(images) == 1 and draw(st.booleans()) else images
    if kind == "other":
        return draw(st.sampled_from([[], "digit.png", None, 3, [np.zeros(3), torch.zeros(3)], [np.zeros((8, 8)), np.zeros((4, 4))]]))
    shape = draw(shapes(data, channels_last=kind == "numpy" and data == "image"))
    array = draw(numeric_arrays(shape, dtypes=INPUT_DTYPES[data], low=-1.0, high=1.0))
    if kind == "numpy":
        return array
    tensor = torch.from_numpy(array if array.dtype != np.uint64 else array.astype(np.int64))
    return list(tensor) if kind == "list" and tensor.ndim > 1 and tensor.shape[0] else tensor


@st.composite
def likelihood_calls(draw, data):
    kwargs = dict(images=draw(likelihood_inputs(data)))
    options = {
        "num_inference_steps": STEP_COUNTS,
        "dequantize": st.booleans(),
        "num_levels": st.one_of(st.none(), st.sampled_from([17, 256, 2, 1, 2.5, "17"])),
        "sigmas": grids(0.0, 1.0),
        "evaluation": st.sampled_from(["bidirectional", "paper", "euler"]),
        "generator": st.one_of(st.just(torch.Generator().manual_seed(0)), st.integers(0, 3).map(
            lambda n: [torch.Generator().manual_seed(i) for i in range(n)])),
    }
    for name, strategy in options.items():
        if draw(st.integers(0, 3)) == 0:  # each option now and then, so that most calls can succeed
            kwargs[name] = draw(strategy)
    if data == "vector" and "dequantize" not in kwargs and draw(st.integers(0, 3)):
        kwargs["dequantize"] = False  # continuous data, the usual call
    return kwargs


@st.composite
def sampling_calls(draw, data):
    kwargs = {}
    if draw(st.booleans()):
        shape = draw(shapes(data, channels_last=False))
        array = draw(numeric_arrays(shape, dtypes=(np.float32, np.float32, np.float64, np.float16, np.int64)))
        kwargs["latents"] = torch.from_numpy(array)
    options = {
        "batch_size": st.one_of(st.integers(1, 3), st.sampled_from([0, -1, "2", 2.0, True])),
        "num_inference_steps": STEP_COUNTS,
        "sigmas": grids(1.0, 0.0),
        "num_levels": st.one_of(st.none(), st.sampled_from([17, 256, 1, "x"])),
        "output_type": st.sampled_from(["pt", "np", "pil", "latent"]),
        "generator": st.one_of(st.just(torch.Generator().manual_seed(0)), st.integers(0, 3).map(
            lambda n: [torch.Generator().manual_seed(i) for i in range(n)])),
    }
    for name, strategy in options.items():
        if draw(st.integers(0, 3)) == 0:  # each option now and then, so that most calls can succeed
            kwargs[name] = draw(strategy)
    kwargs.setdefault("output_type", "pt" if data == "vector" else draw(st.sampled_from(["pt", "np", "pil"])))
    return kwargs


# -- the property ------------------------------------------------------------------------------------------------


def argument_names(pipe) -> list:
    """What an error may name: any argument of ``__call__`` (a default such as ``dequantize=True`` can be at fault)."""
    return [name for name in inspect.signature(pipe.__call__).parameters if name != "return_dict"]


def _likelihood_check(kwargs):
    def check(out):
        batch = out.log_prob.shape[0]
        assert batch >= 1
        assert_finite(out.log_prob, "log_prob", (batch,))
        assert_finite(out.bits_per_dim, "bits_per_dim", (batch,))
        assert_finite(out.latents, "latents")
        assert out.nfe == expected_steps(kwargs, end=1.0)

    return check


def _sampling_check(kwargs, data):
    def check(out):
        batch = out.log_prob.shape[0]
        assert_finite(out.log_prob, "log_prob", (batch,))
        assert_finite(out.bits_per_dim, "bits_per_dim", (batch,))
        assert out.nfe == expected_steps(kwargs, end=0.0)
        if "latents" in kwargs:
            assert batch == kwargs["latents"].shape[0]
        images = out.images
        if isinstance(images, list):
            assert len(images) == batch and all(isinstance(i, PIL.Image.Image) for i in images)
        else:
            images = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
            assert_finite(images, "images")
            assert images.shape[0] == batch

    return check


@FUZZ
@given(kwargs=likelihood_calls("image"))
def test_likelihood_pipeline_on_images(kwargs):
    pipe = PIPES[F2D2LikelihoodPipeline, "image"]
    run_case("F2D2LikelihoodPipeline(image)", lambda: pipe(**kwargs), argument_names(pipe), _likelihood_check(kwargs))


@FUZZ
@given(kwargs=likelihood_calls("vector"))
def test_likelihood_pipeline_on_vectors(kwargs):
    pipe = PIPES[F2D2LikelihoodPipeline, "vector"]
    run_case("F2D2LikelihoodPipeline(vector)", lambda: pipe(**kwargs), argument_names(pipe), _likelihood_check(kwargs))


@FUZZ
@given(kwargs=sampling_calls("image"))
def test_sampling_pipeline_on_images(kwargs):
    pipe = PIPES[F2D2Pipeline, "image"]
    run_case("F2D2Pipeline(image)", lambda: pipe(**kwargs), argument_names(pipe), _sampling_check(kwargs, "image"))


@FUZZ
@given(kwargs=sampling_calls("vector"))
def test_sampling_pipeline_on_vectors(kwargs):
    pipe = PIPES[F2D2Pipeline, "vector"]
    run_case("F2D2Pipeline(vector)", lambda: pipe(**kwargs), argument_names(pipe), _sampling_check(kwargs, "vector"))
