"""Checks every diffusers pipeline should pass, run on both F2D2 pipelines with an image and a vector model.

They cover the same ground as diffusers' own ``PipelineTesterMixin`` (which lives in diffusers' test suite, not in
the installed package) and are written for these pipelines: dtype and device moves, save/load, batch consistency,
model CPU offload, the progress bar, tuple outputs and the ``components`` round trip.
"""

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
from diffusers.utils.torch_utils import get_device

from f2d2_diffusers import (
    F2D2LikelihoodPipeline,
    F2D2LikelihoodPipelineOutput,
    F2D2Pipeline,
    F2D2PipelineOutput,
    F2D2Scheduler,
)

NUM_STEPS = 2
LEVELS = torch.randint(0, 17, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
VECTORS = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
#: Initial noise for the sampling pipeline where it must not depend on the model's dtype (``randn_tensor`` draws in
#: the model's dtype, and float32 and float64 draws from one generator differ, as in every diffusers pipeline).
LATENTS = {"image": torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)), "vector": torch.randn(3, 3)}
ACCELERATOR = get_device()
NO_ACCELERATOR = f"no accelerator on this machine (diffusers' get_device() says {ACCELERATOR!r})"


@dataclass
class Case:
    pipeline_class: type
    output_class: type
    data: str  # "image" (tiny F2D2UNet2DModel, 17 grey levels) or "vector" (tiny F2D2MLPModel, continuous)

    @property
    def num_levels(self) -> Optional[int]:
        return 17 if self.data == "image" else None

    def inputs(self, indices, fixed_noise: bool = False) -> dict:
        """Inputs for the samples ``indices``: sample ``i`` always gets the data row ``i`` and generator seed ``i``.

        ``fixed_noise``: the sampling pipeline starts from the float32 ``LATENTS`` rows instead of its generators.
        """
        indices = list(indices)
        generators = [torch.Generator().manual_seed(i) for i in indices]
        if self.pipeline_class is F2D2Pipeline:
            if fixed_noise:
                return dict(latents=LATENTS[self.data][indices], num_inference_steps=NUM_STEPS, output_type="pt")
            return dict(batch_size=len(indices), generator=generators, num_inference_steps=NUM_STEPS, output_type="pt")
        if self.data == "image":
            return dict(images=LEVELS[indices], generator=generators, num_inference_steps=NUM_STEPS)
        return dict(images=VECTORS[indices], dequantize=False, num_inference_steps=NUM_STEPS)


CASES = {
    "sampling-image": Case(F2D2Pipeline, F2D2PipelineOutput, "image"),
    "sampling-vector": Case(F2D2Pipeline, F2D2PipelineOutput, "vector"),
    "likelihood-image": Case(F2D2LikelihoodPipeline, F2D2LikelihoodPipelineOutput, "image"),
    "likelihood-vector": Case(F2D2LikelihoodPipeline, F2D2LikelihoodPipelineOutput, "vector"),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture
def pipe(case, request):
    model = request.getfixturevalue("tiny_f2d2_unet" if case.data == "image" else "tiny_f2d2_mlp")
    pipe = case.pipeline_class(unet=model, scheduler=F2D2Scheduler(), num_levels=case.num_levels)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_outputs_close(actual, expected, atol=0.0, rtol=0.0, rows=None):
    """Every field of two pipeline outputs agrees (tensors on the CPU, any dtype); ``rows`` selects ``expected``'s."""
    assert type(actual) is type(expected)
    for field in dataclasses.fields(expected):
        a, b = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(b, torch.Tensor):
            b = b[rows] if rows is not None else b
            torch.testing.assert_close(
                a.cpu(), b.cpu(), atol=atol, rtol=rtol, check_dtype=False, msg=lambda m: f"{field.name}: {m}"
            )
        else:
            assert a == b, field.name


def saved_config(component) -> dict:
    """A component's public config as JSON would store it (tuples as lists, no ``_`` bookkeeping entries)."""
    return {k: json.loads(json.dumps(v)) for k, v in component.config.items() if not k.startswith("_")}


def module_components(pipe):
    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def test_to_float64_and_back(case, pipe):
    inputs = lambda: case.inputs(range(2), fixed_noise=True)  # noqa: E731  (fresh generators for every call)
    reference = pipe(**inputs())
    assert all(c.dtype == torch.float32 for c in module_components(pipe).values())

    pipe.to(torch.float64)
    assert pipe.dtype == torch.float64
    assert all(c.dtype == torch.float64 for c in module_components(pipe).values())
    in_float64 = pipe(**inputs())
    assert_outputs_close(in_float64, reference, atol=1e-3, rtol=1e-4)

    pipe.to(dtype=torch.float32)
    assert all(c.dtype == torch.float32 for c in module_components(pipe).values())
    # float32 -> float64 -> float32 is lossless for the weights, so the outputs come back bit for bit.
    assert_outputs_close(pipe(**inputs()), reference)


@pytest.mark.parametrize("device", ["cpu", ACCELERATOR if ACCELERATOR != "cpu" else "accelerator"])
def test_to_device(case, pipe, device):
    if device == "accelerator":
        pytest.skip(NO_ACCELERATOR)
    reference = pipe(**case.inputs(range(2)))
    pipe.to(device)
    assert pipe.device.type == device and pipe._execution_device.type == device
    assert all(c.device.type == device for c in module_components(pipe).values())
    moved = pipe(**case.inputs(range(2)))
    assert_outputs_close(moved, reference, atol=1e-4, rtol=1e-4)
    pipe.to("cpu")
    assert all(c.device.type == "cpu" for c in module_components(pipe).values())


def test_save_pretrained_from_pretrained_round_trip(case, pipe, tmp_path):
    reference = pipe(**case.inputs(range(2)))
    pipe.save_pretrained(tmp_path)
    loaded = case.pipeline_class.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.num_levels == case.num_levels
    for name, component in pipe.components.items():
        assert type(loaded.components[name]) is type(component), name
    for name in ("unet", "scheduler"):
        assert saved_config(loaded.components[name]) == saved_config(pipe.components[name]), name
    saved, restored = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    # The weights are bit-identical; outputs are compared to float32 rounding only because safetensors memory-maps
    # the loaded weights at unaligned addresses, where CPU kernels may round the last bit differently (aligned
    # copies of the same weights reproduce the outputs exactly).
    assert_outputs_close(loaded(**case.inputs(range(2))), reference, atol=1e-6, rtol=1e-6)


def test_each_sample_is_independent_of_the_rest_of_the_batch(case, pipe):
    batch = pipe(**case.inputs(range(3)))
    assert isinstance(batch, case.output_class)
    for i in range(3):
        single = pipe(**case.inputs([i]))
        assert_outputs_close(single, batch, atol=1e-5, rtol=1e-5, rows=slice(i, i + 1))
    # The per-sample outputs really differ, so the comparison above could tell them apart.
    first = dataclasses.fields(batch)[0].name
    assert not torch.allclose(getattr(batch, first)[0].float(), getattr(batch, first)[1].float())


@pytest.mark.parametrize("device", ["cpu", "accelerator"])
def test_model_cpu_offload_sequence(case, pipe, device):
    """``enable_model_cpu_offload``: the pipelines declare ``model_cpu_offload_seq = "unet"`` and free the hooks at the
    end of ``__call__``. With ``device="cpu"`` the accelerate hooks run the same sequence on any machine; the real
    offload to an accelerator runs where there is one."""
    pytest.importorskip("accelerate", reason="enable_model_cpu_offload needs accelerate")
    if device == "accelerator" and ACCELERATOR == "cpu":
        pytest.skip(NO_ACCELERATOR)
    assert case.pipeline_class.model_cpu_offload_seq == "unet"
    reference = pipe(**case.inputs(range(2)))
    pipe.enable_model_cpu_offload(device="cpu" if device == "cpu" else None)
    try:
        assert len(pipe._all_hooks) == 1
        execution_type = "cpu" if device == "cpu" else ACCELERATOR
        assert pipe._execution_device.type == execution_type
        for _ in range(2):  # the hooks are reinstalled after each call, so a second call works the same
            out = pipe(**case.inputs(range(2)))
            assert_outputs_close(out, reference, atol=1e-4, rtol=1e-4)
            assert all(c.device.type == "cpu" for c in module_components(pipe).values())
    finally:
        pipe.remove_all_hooks()


def test_progress_bar_can_be_disabled(case, pipe, capsys):
    pipe.set_progress_bar_config(disable=False)
    pipe(**case.inputs(range(1)))
    shown = capsys.readouterr().err
    assert f"{NUM_STEPS}/{NUM_STEPS}" in shown
    pipe.set_progress_bar_config(disable=True)
    pipe(**case.inputs(range(1)))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_return_dict_false_gives_the_fields_in_order(case, pipe):
    as_dict = pipe(**case.inputs(range(2)))
    as_tuple = pipe(**case.inputs(range(2)), return_dict=False)
    assert isinstance(as_dict, case.output_class) and type(as_tuple) is tuple
    fields = [f.name for f in dataclasses.fields(case.output_class)]
    assert len(as_tuple) == len(fields)
    assert_outputs_close(case.output_class(**dict(zip(fields, as_tuple))), as_dict)


def test_components_round_trip(case, pipe):
    components = pipe.components
    assert set(components) == {"unet", "scheduler"}
    assert components["unet"] is pipe.unet and components["scheduler"] is pipe.scheduler
    # num_levels is a config value, not a component (as diffusers' test_components_function has it): pass it along.
    rebuilt = case.pipeline_class(**components, num_levels=pipe.config.num_levels)
    rebuilt.set_progress_bar_config(disable=True)
    assert rebuilt.unet is pipe.unet and rebuilt.scheduler is pipe.scheduler
    assert_outputs_close(rebuilt(**case.inputs(range(2))), pipe(**case.inputs(range(2))))
    # Without it the pipeline is still built, with the model's default: 256 grey levels for images, continuous
    # (None) for vectors.
    assert case.pipeline_class(**components).config.num_levels == (256 if case.data == "image" else None)
    # The other pipeline takes the same components.
    other = F2D2LikelihoodPipeline if case.pipeline_class is F2D2Pipeline else F2D2Pipeline
    assert other(**components, num_levels=case.num_levels).unet is pipe.unet
