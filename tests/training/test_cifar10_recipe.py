"""The CIFAR-10 recipe (README, "Training on CIFAR-10"): ``configs/cifar10_unet.json`` builds the DDPM-scale UNet with
attention at 16x16, forward-mode JVPs (what MeanFlow objectives need) run through its attention blocks, one training
step of each script runs on random 32x32 RGB images with the full config, and ``--dataset_name`` reads a dataset
through ``datasets.load_dataset`` (a local image folder here: no network in tests)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from testing_utils import randomise_new_layers

REPO = Path(__file__).resolve().parents[2]
CIFAR10_CONFIG = REPO / "configs" / "cifar10_unet.json"
COMMON = ["--lr_warmup_steps", "0", "--seed", "0", "--checkpointing_steps", "0", "--logger", "none"]


def run_script(name, *args):
    import importlib

    module = importlib.import_module(f"training.{name}")
    module.main(module.parse_args([str(a) for a in args]))


def cifar10_config():
    from f2d2_diffusers.training import load_model_config

    return load_model_config(str(CIFAR10_CONFIG))


def random_images(folder, count, size=(32, 32), seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


def test_cifar10_config_is_the_ddpm_unet_with_attention_at_16x16():
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention

    config = cifar10_config()
    assert (config["sample_size"], config["in_channels"], config["out_channels"]) == (32, 3, 3)
    model = UNet2DModel(**config).eval()
    assert 35e6 < sum(p.numel() for p in model.parameters()) < 36e6  # google/ddpm-cifar10-32: 35.7M
    sides = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: sides.append(tuple(inputs[0].shape[-2:])))
             for m in model.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), torch.tensor([500.0])).sample
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 3, 32, 32)
    # Two attention layers at 16x16 going down, three coming up, one in the 4x4 middle block.
    assert sorted(sides) == [(4, 4)] + [(16, 16)] * 5


@pytest.mark.slow
def test_jvp_through_the_cifar10_flow_map_matches_finite_differences():
    """torch.func.jvp of F2D2UNet2DModel (built from the CIFAR-10 config, attention on) matches central finite
    differences in float64, and gives the same numbers when the caller is under torch.no_grad().

    In the sample direction the match is tight. In the (timestep, step) direction the difference quotient is only as
    good as diffusers' sinusoidal embedding, which is computed in float32 whatever the model's dtype: there the
    tolerance is 0.5% of the largest tangent entry, with steps of 1/16 timestep (exact in float32)."""
    from f2d2_diffusers import F2D2UNet2DModel

    torch.manual_seed(0)
    model = randomise_new_layers(F2D2UNet2DModel(**cifar10_config())).eval().double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64)
    t, s = torch.tensor([600.0], dtype=torch.float64), torch.tensor([-250.0], dtype=torch.float64)

    def f(x, t, s):
        out = model(x, t, s)
        return out.sample, out.divergence

    def central_difference(tangents, eps):
        with torch.no_grad():
            plus = f(*(p + eps * d for p, d in zip((x, t, s), tangents)))
            minus = f(*(p - eps * d for p, d in zip((x, t, s), tangents)))
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]

    dx = torch.randn(x.shape, generator=g, dtype=torch.float64)
    zero_t = torch.zeros_like(t)
    directions = [
        ((dx, zero_t, zero_t), 1e-4, 1e-6),  # the sample
        ((torch.zeros_like(x), torch.ones_like(t), torch.full_like(s, 0.5)), 1 / 16, 5e-3),  # timestep and step
    ]
    for tangents, eps, tolerance in directions:
        (u, div), (du, ddiv) = torch.func.jvp(f, (x, t, s), tangents)
        for jvp, fd in zip((du, ddiv), central_difference(tangents, eps)):
            scale = jvp.detach().abs().max()
            assert scale > 1e-3  # not trivially zero: the attention blocks and the divergence head are in the path
            torch.testing.assert_close(jvp, fd, rtol=0, atol=float(tolerance * scale))
        with torch.no_grad():
            (u_ng, div_ng), (du_ng, ddiv_ng) = torch.func.jvp(f, (x, t, s), tangents)
        for a, b in ((u_ng, u), (div_ng, div), (du_ng, du), (ddiv_ng, ddiv)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)  # float64 rounding of other kernels at most


@pytest.mark.slow
def test_one_step_of_each_script_with_the_cifar10_config(tmp_path):
    """The full config (35.7M parameters), random 32x32 RGB images, one optimisation step of train_teacher.py and then
    of train_f2d2.py distilling it, sample grids included; both outputs load and sample."""
    from f2d2_diffusers import F2D2Pipeline, F2D2UNet2DModel

    images = random_images(tmp_path / "images", 4)
    teacher = tmp_path / "teacher"
    run_script("train_teacher", "--train_data_dir", images, "--model_config_name_or_path", CIFAR10_CONFIG,
               "--output_dir", teacher, "--train_batch_size", 4, "--max_train_steps", 1, "--random_flip",
               "--save_images_steps", 1, "--eval_batch_size", 2, "--eval_num_inference_steps", 2, *COMMON)
    assert json.loads((teacher / "unet" / "config.json").read_text())["block_out_channels"] == [128, 256, 256, 256]
    assert (teacher / "samples" / "step-000001.png").is_file()
    student = tmp_path / "f2d2"
    run_script("train_f2d2", "--train_data_dir", images, "--teacher_model_name_or_path", teacher, "--output_dir", student,
               "--train_batch_size", 4, "--max_train_steps", 1, "--calibration_samples", 0, "--save_images_steps", 1,
               "--eval_batch_size", 2, *COMMON)
    assert (student / "samples" / "step-000001.png").is_file()
    pipe = F2D2Pipeline.from_pretrained(student)
    assert isinstance(pipe.unet, F2D2UNet2DModel) and pipe.config.num_levels == 256
    out = pipe(batch_size=1, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3) and torch.isfinite(out.bits_per_dim).all()


def test_dataset_name_reads_through_datasets_load_dataset(tmp_path, monkeypatch):
    """--dataset_name goes through datasets.load_dataset (here a local folder, which datasets reads as an
    `imagefolder`; cifar10 is the same call with a Hub id), with the image column found by itself, resized and
    cropped to --resolution like train_unconditional.py."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from f2d2_diffusers.training import load_training_data
    from training import train_teacher

    folder = random_images(tmp_path / "hub-like", 5, size=(24, 20))
    tiny = tmp_path / "tiny_unet.json"
    tiny.write_text(json.dumps({
        "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    }))
    argv = ["--dataset_name", folder, "--cache_dir", tmp_path / "cache", "--resolution", 16, "--center_crop",
            "--random_flip", "--model_config_name_or_path", tiny, "--output_dir", tmp_path / "out",
            "--train_batch_size", 4, "--max_train_steps", 1, *COMMON]
    args = train_teacher.parse_args([str(a) for a in argv])
    data = load_training_data(args)
    assert data.kind == "image" and data.sample_shape == (3, 16, 16) and data.num_levels == 256
    assert len(data.dataset) == 5 and f"Hub dataset {folder}" in data.description
    item = data.dataset[0]
    assert item.dtype == torch.uint8 and item.shape == (3, 16, 16)
    train_teacher.main(args)
    assert (tmp_path / "out" / "unet" / "config.json").is_file()
