"""End-to-end tests of training/train_teacher.py and training/train_f2d2.py under `accelerate launch` (CPU), and
their answers to bad input.

Tiny models and a handful of steps: the point is the plumbing (data, Accelerate, checkpoints, resume, output
folders that load and sample), not the quality of the models. The shared library, ``f2d2_diffusers.training``, has
its own tests beside this file (data, checkpoints, model card).
"""

import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from f2d2_diffusers.training import MANIFEST_NAME
from f2d2_diffusers.training.grids import DEFAULT_LIKELIHOOD_GRID_SHIFT

REPO = Path(__file__).resolve().parents[2]
TRAINING = REPO / "training"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))

TINY_MLP = {"hidden_dim": 32, "num_layers": 2, "time_embed_dim": 16}
TINY_UNET = {
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 8,
}
COMMON = ["--lr_warmup_steps", "0", "--seed", "0", "--learning_rate", "1e-3"]


def _env():
    # One thread per process: on a busy 2-core machine, 2 OpenMP threads per process made a tiny UNet ~100x slower.
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def _check(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    return proc


def launch(config_file, script, *args, num_processes=1, timeout=300):
    """`accelerate launch --config_file ... training/<script> args`; 2 processes on CPU need --multi_gpu."""
    cmd = [ACCELERATE, "launch", "--config_file", str(config_file)]
    if num_processes > 1:
        cmd += ["--multi_gpu", "--num_processes", str(num_processes)]
    cmd += [str(TRAINING / script), *map(str, args)]
    return _check(subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True,
                                 text=True, timeout=timeout))


def run_plain(script, *args, timeout=120):
    """The script without the launcher, for argument and input errors."""
    return subprocess.run([sys.executable, str(TRAINING / script), *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def checkpoints(folder):
    return sorted((p.name for p in Path(folder).glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def logged_steps(folder):
    lines = (Path(folder) / "logs" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from accelerate.utils import write_basic_config

    root = tmp_path_factory.mktemp("training")
    config_file = root / "accelerate_config.json"
    write_basic_config(mixed_precision="no", save_location=str(config_file))
    (root / "tiny_mlp.json").write_text(json.dumps(TINY_MLP))
    (root / "tiny_unet.json").write_text(json.dumps(TINY_UNET))
    images = root / "images" / "class_a"
    images.mkdir(parents=True)
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(images / f"img_{i}.png")
    return root


@pytest.fixture(scope="module")
def checkerboard_teacher(workdir):
    out = workdir / "teacher-checkerboard"
    launch(
        workdir / "accelerate_config.json", "train_teacher.py", "--dataset", "checkerboard", "--num_toy_samples", 256,
        "--model_config_name_or_path", workdir / "tiny_mlp.json", "--output_dir", out, "--train_batch_size", 32,
        "--max_train_steps", 4, "--checkpointing_steps", 2, "--checkpoints_total_limit", 1, "--use_ema", *COMMON,
    )
    return out


@pytest.fixture(scope="module")
def image_teacher(workdir):
    out = workdir / "teacher-images"
    launch(
        workdir / "accelerate_config.json", "train_teacher.py", "--train_data_dir", workdir / "images",
        "--resolution", 8, "--model_config_name_or_path", workdir / "tiny_unet.json", "--output_dir", out,
        "--train_batch_size", 4, "--max_train_steps", 2, "--checkpointing_steps", 0, "--random_flip", *COMMON,
    )
    return out


def test_teacher_on_checkerboard(checkerboard_teacher):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from f2d2_diffusers import FlowMatchingMLPModel

    out = checkerboard_teacher
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    # checkpoints_total_limit=1 keeps only the newest of checkpoint-2 and checkpoint-4.
    assert checkpoints(out) == ["checkpoint-4"]
    assert {p.name for p in (out / "checkpoint-4").iterdir()} >= {"unet", "unet_ema"}
    assert logged_steps(out) == [1, 2, 3, 4]
    card = (out / "README.md").read_text()
    assert "sigma = 0" in card and "1000 * sigma" in card and "train_teacher.py" in card and "checkerboard" in card
    # The checkerboard has a held-out split: the card compares the loss on it with the training loss.
    assert re.search(r"Flow-matching loss on \d+ training and \d+ held-out points, sigma in 0-0.05 / 0.05-0.2 / 0.2-0.5 / "
                     r"0.5-1: training [\d.]+ / [\d.]+ / [\d.]+ / [\d.]+, held-out [\d.]+", card)
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == ["pipeline", "FlowMatchingEulerPipeline"]

    model = FlowMatchingMLPModel.from_pretrained(out, subfolder="unet")
    assert model.config.sample_size == 2 and model.config.hidden_dim == 32
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(out, subfolder="scheduler")
    scheduler.set_timesteps(4)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
    assert x.shape == (5, 2) and torch.isfinite(x).all()


def test_teacher_on_image_folder_samples_with_diffusers_alone(image_teacher):
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(image_teacher, subfolder="unet")
    assert (unet.config.sample_size, unet.config.in_channels) == (8, 1)
    assert tuple(unet.config.block_out_channels) == (8, 16)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(image_teacher, subfolder="scheduler")
    scheduler.set_timesteps(3)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    assert torch.isfinite(x).all()
    card = (image_teacher / "README.md").read_text()
    assert "image folder" in card and "held-out points" not in card  # no held-out split to compare with
    # The folder is a stock diffusers pipeline too.
    from diffusers import DDPMPipeline, DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(image_teacher)
    assert type(pipe) is DDPMPipeline and type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler


def test_f2d2_from_teacher_checkpoints_resume_and_pipeline(workdir, checkerboard_teacher):
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2MLPModel, F2D2Pipeline

    out = workdir / "f2d2-checkerboard"
    args = [
        "--dataset", "checkerboard", "--num_toy_samples", 64, "--teacher_model_name_or_path", checkerboard_teacher,
        "--output_dir", out, "--train_batch_size", 16, "--checkpointing_steps", 2, "--checkpoints_total_limit", 2,
        "--use_ema", "--divergence", "exact", "--bootstrap_fraction", 0.5, "--anchor_starts_to_grid",
        "--calibration_samples", 40, *COMMON,
    ]
    config_file = workdir / "accelerate_config.json"
    launch(config_file, "train_f2d2.py", *args, "--max_train_steps", 6)
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-6"]
    ckpt_unet = F2D2MLPModel.from_pretrained(out / "checkpoint-6", subfolder="unet")
    assert ckpt_unet.config.hidden_dim == 32  # the student copied the teacher's architecture

    # Resume: 64 points / 16 = 4 batches per epoch, so step 6 resumes in the middle of epoch 1.
    proc = launch(config_file, "train_f2d2.py", *args, "--max_train_steps", 8, "--resume_from_checkpoint", "latest")
    assert "checkpoint-6" in proc.stdout + proc.stderr
    assert logged_steps(out) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert checkpoints(out) == ["checkpoint-6", "checkpoint-8"]
    ema_config = json.loads((out / "checkpoint-8" / "unet_ema" / "config.json").read_text())
    assert ema_config["optimization_step"] == 8  # the EMA state came back with the checkpoint
    # No grid flag: the encoding steps train the default likelihood grid, recorded for the resumed run and saved.
    manifest = json.loads((out / "checkpoint-8" / MANIFEST_NAME).read_text())
    assert manifest["settings"] == {"grid_shift": 1.0, "likelihood_grid_shift": DEFAULT_LIKELIHOOD_GRID_SHIFT}
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["shift"] == 1.0 and scheduler_config["likelihood_shift"] == DEFAULT_LIKELIHOOD_GRID_SHIFT

    model_index = json.loads((out / "model_index.json").read_text())
    # Loadable by diffusers' DiffusionPipeline (trust_remote_code) through the pipeline.py shim: tests/pipelines/test_diffusers_loading.py
    assert model_index["_class_name"] == ["pipeline", "F2D2Pipeline"] and model_index["num_levels"] is None
    assert (out / "pipeline.py").is_file() and model_index["unet"] == ["mlp_f2d2", "F2D2MLPModel"]
    pipe = F2D2Pipeline.from_pretrained(out)
    assert isinstance(pipe.unet, F2D2MLPModel)
    result = pipe(batch_size=5, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert result.images.shape == (5, 2) and torch.isfinite(result.log_prob).all() and result.nfe == 2
    likelihood = F2D2LikelihoodPipeline.from_pretrained(out)
    scored = likelihood(result.images, num_inference_steps=2, dequantize=False)
    assert torch.isfinite(scored.log_prob).all()
    card = (out / "README.md").read_text()
    assert "F2D2Pipeline.from_pretrained" in card and "Optimisation steps: 8" in card and "timestep = 1000 * sigma" in card
    # The card is the repository's template, filled in: front matter, conventions, measured calibration, citation.
    assert card.startswith("---\nlibrary_name: diffusers") and "2512.02636" in card
    assert "on 40 'checkerboard' test points" in card and "| F2D2 bidirectional | 2 | 2 |" in card
    assert "| teacher ODE (reference) | - |" in card and "| F2D2 paper | 8 | 8 |" in card


def distil_on_images(workdir, image_teacher, out, *flags):
    """``train_f2d2.py`` on the six-image folder from ``image_teacher``: Hutchinson targets, no checkpoints."""
    launch(
        workdir / "accelerate_config.json", "train_f2d2.py", "--train_data_dir", workdir / "images",
        "--teacher_model_name_or_path", image_teacher, "--output_dir", out, "--train_batch_size", 4,
        "--checkpointing_steps", 0, "--divergence", "hutchinson", "--hutchinson_probes", 1,
        "--calibration_samples", 0, *flags, *COMMON,
    )


def test_f2d2_from_image_teacher(workdir, image_teacher):
    from f2d2_diffusers import F2D2Pipeline, F2D2UNet2DModel

    out = workdir / "f2d2-images"
    distil_on_images(workdir, image_teacher, out, "--max_train_steps", 2, "--directions", "forward")
    assert checkpoints(out) == []
    pipe = F2D2Pipeline.from_pretrained(out)
    assert isinstance(pipe.unet, F2D2UNet2DModel) and pipe.config.num_levels == 256
    result = pipe(batch_size=2, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np")
    assert result.images.shape == (2, 8, 8, 1) and torch.isfinite(result.bits_per_dim).all()


def test_f2d2_weight_anchor_is_logged_and_named_in_the_card(workdir, image_teacher):
    out = workdir / "f2d2-images-anchored"
    distil_on_images(workdir, image_teacher, out, "--max_train_steps", 3, "--teacher_weight_anchor", 0.5)
    rows = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    distance = [row["teacher_weight_distance"] for row in rows]
    penalty = [row["teacher_weight_penalty"] for row in rows]
    # The student starts as the teacher, so the first step sees no distance; the optimiser then moves the weights.
    # That the penalty pulls them back is tests/objectives/test_weight_anchor.py's business.
    assert distance[0] == 0.0 == penalty[0] and 0.0 < distance[-1] < 1.0 and penalty[-1] > 0.0
    assert all(row["loss"] >= row["teacher_weight_penalty"] for row in rows)  # the logged loss includes it
    assert "weights pulled toward the teacher (L2-SP, 0.5)" in (out / "README.md").read_text()


def test_f2d2_grid_shift_is_saved_with_the_pipeline_and_named_in_the_card(workdir, image_teacher):
    from f2d2_diffusers import F2D2LikelihoodPipeline

    out = workdir / "f2d2-images-shifted"
    distil_on_images(workdir, image_teacher, out, "--max_train_steps", 2, "--grid_shift", 0.25)
    pipe = F2D2LikelihoodPipeline.from_pretrained(out)
    assert pipe.scheduler.config.shift == 0.25
    pipe.scheduler.set_timesteps(2, direction="likelihood")
    # The 2-step grid of the trained map: its midpoint tau = 1/2 lands at shift / (1 + shift) = 0.2.
    torch.testing.assert_close(pipe.scheduler.sigmas.double(), torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64))
    assert "on the grids of `F2D2Scheduler(shift=0.25)`" in (out / "README.md").read_text()


def test_f2d2_likelihood_grid_shift_is_saved_as_the_schedulers_likelihood_shift(workdir, image_teacher):
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Pipeline

    out = workdir / "f2d2-images-likelihood-shifted"
    distil_on_images(workdir, image_teacher, out, "--max_train_steps", 2, "--likelihood_grid_shift", 0.25)
    sampler = F2D2Pipeline.from_pretrained(out)
    assert sampler.scheduler.config.shift == 1.0 and sampler.scheduler.config.likelihood_shift == 0.25
    sampler.scheduler.set_timesteps(2, direction="sample")
    assert sampler.scheduler.sigmas.tolist() == [1.0, 0.5, 0.0]  # sampling keeps the uniform grids
    likelihood = F2D2LikelihoodPipeline.from_pretrained(out)
    likelihood.scheduler.set_timesteps(2, direction="likelihood")
    torch.testing.assert_close(likelihood.scheduler.sigmas.double(), torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64))
    assert "on the grids of `F2D2Scheduler(shift=1.0, likelihood_shift=0.25)`" in (out / "README.md").read_text()


def test_f2d2_student_deepened_from_the_digits_teacher(workdir):
    from f2d2_diffusers import F2D2Pipeline

    out = workdir / "f2d2-digits-deepened"
    launch(
        workdir / "accelerate_config.json", "train_f2d2.py", "--dataset", "digits", "--max_train_samples", 16,
        "--teacher_model_name_or_path", REPO / "checkpoints" / "fm-digits", "--output_dir", out,
        "--train_batch_size", 4, "--max_train_steps", 1, "--checkpointing_steps", 0, "--divergence", "hutchinson",
        "--hutchinson_probes", 1, "--calibration_samples", 0, "--student_layers_per_block", 2, *COMMON,
    )
    assert F2D2Pipeline.from_pretrained(out).unet.config.layers_per_block == 2  # the shipped teacher has 1
    assert "deepened to 2 resnets per block" in (out / "README.md").read_text()


def test_f2d2_student_deepening_names_blocks_it_cannot_deepen(workdir, image_teacher):
    proc = run_plain("train_f2d2.py", "--train_data_dir", workdir / "images", "--teacher_model_name_or_path",
                     image_teacher, "--output_dir", workdir / "never", "--max_train_steps", 1,
                     "--student_layers_per_block", 2, *COMMON)
    assert proc.returncode != 0 and "--student_layers_per_block: deepen_unet handles DownBlock2D" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_f2d2_self_distillation_on_digits(workdir):
    from f2d2_diffusers import F2D2Pipeline

    out = workdir / "f2d2-digits"
    launch(
        workdir / "accelerate_config.json", "train_f2d2.py", "--dataset", "digits", "--max_train_samples", 32,
        "--model_config_name_or_path", workdir / "tiny_unet.json", "--output_dir", out, "--train_batch_size", 8,
        "--max_train_steps", 2, "--checkpointing_steps", 0, "--divergence", "hutchinson", "--calibration_samples", 0,
        *COMMON,
    )
    pipe = F2D2Pipeline.from_pretrained(out)
    assert pipe.config.num_levels == 17
    assert "none (self-distillation" in (out / "README.md").read_text()
    images = pipe(batch_size=1, num_inference_steps=1, output_type="pil").images
    assert images[0].size == (8, 8)


def run_in_process(script, *args):
    """Parse and run ``script`` in this process (fast: no new interpreter); returns its exit code."""
    from f2d2_diffusers.training import run_main

    module = importlib.import_module(f"training.{Path(script).stem}")
    try:
        run_main(module.main, module.parse_args([str(a) for a in args]))
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_scripts_import_as_modules_without_editing_sys_path():
    before = list(sys.path)
    for name in ("training.train_teacher", "training.train_f2d2"):
        module = importlib.reload(importlib.import_module(name))
        assert callable(module.main) and callable(module.parse_args)
    assert sys.path == before
    args = importlib.import_module("training.train_f2d2").parse_args(["--dataset", "rings"])
    assert args.output_dir == "f2d2-model" and args.objective == "shortcut" and args.max_train_steps is None


BAD_INPUTS = [
    ("train_teacher.py", ["--dataset", "checkerboard", "--train_data_dir", "x"], "exactly one data source"),
    ("train_teacher.py", ["--train_data_dir", "/nonexistent/images"], "no folder"),
    ("train_teacher.py", ["--dataset", "digits", "--resolution", "16"], "8x8"),
    ("train_teacher.py", ["--dataset", "checkerboard", "--model_config_name_or_path", "/nonexistent.json"],
     "model_config_name_or_path"),
    ("train_teacher.py", ["--dataset", "rings", "--logger", "no-such-tracker"], "invalid choice"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--teacher_model_name_or_path", "/nonexistent/teacher"],
     "no teacher folder"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--bootstrap_fraction", "1.5"], "bootstrap_fraction"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--teacher_weight_anchor", "0.1"], "needs --teacher_model_name_or_path"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--teacher_model_name_or_path", "t", "--teacher_weight_anchor", "-1"],
     "--teacher_weight_anchor must be >= 0"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--student_layers_per_block", "2"], "needs --teacher_model_name_or_path"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--teacher_model_name_or_path", "t", "--student_layers_per_block", "0"],
     "--student_layers_per_block must be >= 1"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--grid_shift", "0"], "--grid_shift must be a positive finite number"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--grid_shift", "nan"], "--grid_shift must be a positive finite number"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--likelihood_grid_shift", "-1"],
     "--likelihood_grid_shift must be a positive finite number"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--objective", "meanflow", "--grid_shift", "0.5"],
     "only the shortcut objective's dyadic steps follow a shifted grid"),
    ("train_f2d2.py", ["--dataset", "checkerboard", "--resume_from_checkpoint", "/nonexistent/checkpoint-3"],
     "no checkpoint folder"),
]


@pytest.mark.parametrize("script, args, message", BAD_INPUTS)
def test_bad_input_gives_a_clear_error(script, args, message, tmp_path, capsys):
    code = run_in_process(script, *args, "--output_dir", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train_teacher.py", [], "no training data given"),  # argparse's error
        ("train_teacher.py", ["--train_data_file", "/nonexistent/data.npy"], "no data file"),  # the scripts' own
    ],
)
def test_bad_input_under_a_real_interpreter_has_no_traceback(script, args, message, tmp_path):
    proc = run_plain(script, *args, "--output_dir", tmp_path / "out")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_bad_teacher_folders_give_a_clear_error(checkerboard_teacher, tmp_path, capsys):
    cases = []
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", empty], "not a saved teacher"))
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"")
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", a_file], "is a file"))
    # A student pipeline is not a teacher.
    student = tmp_path / "student"
    (student / "unet").mkdir(parents=True)
    (student / "unet" / "config.json").write_text(json.dumps({"_class_name": "F2D2MLPModel", "sample_size": 2}))
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", student], "F2D2 student"))
    # Nor is any other model.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", other], "must be a UNet2DModel"))
    # A teacher folder whose weights are missing.
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "unet" / "config.json").write_text((checkerboard_teacher / "unet" / "config.json").read_text())
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", broken], "cannot load"))
    # A vector teacher cannot distil image data, nor vectors of another length.
    cases.append((["--dataset", "digits", "--teacher_model_name_or_path", checkerboard_teacher], "vector"))
    bad_file = tmp_path / "vectors.npy"
    np.save(bad_file, np.zeros((10, 3), dtype=np.float32))
    cases.append((["--train_data_file", bad_file, "--teacher_model_name_or_path", checkerboard_teacher], "length 2"))
    # With a teacher, a model config may only shape the new divergence head.
    head = tmp_path / "head.json"
    head.write_text(json.dumps({"hidden_dim": 64}))
    cases.append((["--dataset", "checkerboard", "--teacher_model_name_or_path", checkerboard_teacher,
                   "--model_config_name_or_path", head], "copies the teacher's architecture"))
    for args, message in cases:
        code = run_in_process("train_f2d2.py", *args, "--output_dir", tmp_path / "out")
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err)


@pytest.mark.slow
def test_two_processes_on_cpu(workdir, checkerboard_teacher):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPU: one gloo group (MULTI_CPU)."""
    from f2d2_diffusers import F2D2Pipeline

    out = workdir / "f2d2-two-processes"
    args = [
        "--dataset", "checkerboard", "--num_toy_samples", 64, "--teacher_model_name_or_path", checkerboard_teacher,
        "--output_dir", out, "--train_batch_size", 8, "--checkpointing_steps", 2, "--use_ema", "--calibration_samples", 0,
        *COMMON,
    ]
    config_file = workdir / "accelerate_config.json"
    launch(config_file, "train_f2d2.py", *args, "--max_train_steps", 2, num_processes=2)
    # Each process saved its own random state: two processes really ran in one group.
    states = {p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")}
    assert states == {"random_states_0.pkl", "random_states_1.pkl"}
    launch(config_file, "train_f2d2.py", *args, "--max_train_steps", 4, "--resume_from_checkpoint", "latest",
           num_processes=2)
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-4"]
    assert logged_steps(out) == [1, 2, 3, 4]
    pipe = F2D2Pipeline.from_pretrained(out)
    result = pipe(batch_size=3, num_inference_steps=2, output_type="pt")
    assert torch.isfinite(result.log_prob).all()


CRASH_RUN = ["--dataset", "checkerboard", "--num_toy_samples", 48, "--train_batch_size", 16, "--max_train_steps", 9,
             "--checkpointing_steps", 2, "--use_ema", *COMMON]


def logged_losses(folder):
    lines = (Path(folder) / "logs" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_killed_runs_resume_from_the_last_complete_checkpoint_exactly(workdir):
    """SIGKILL while a checkpoint is written, with --checkpoints_total_limit 1, and from outside between saves: each
    run resumes with 'latest' from its last complete checkpoint and ends as the uninterrupted run does."""
    from f2d2_diffusers.training import checkpoint_problem
    from f2d2_diffusers.training.checkpointing import TEST_CRASH_DURING_SAVE

    def command(out, *args):
        script = [sys.executable, str(TRAINING / "train_teacher.py")]
        return script + [str(a) for a in (*CRASH_RUN, "--model_config_name_or_path", workdir / "tiny_mlp.json",
                                          "--output_dir", out, *args)]

    def run(out, *args, crash_during_save=None):
        env = _env() if crash_during_save is None else dict(_env(), **{TEST_CRASH_DURING_SAVE: str(crash_during_save)})
        return subprocess.run(command(out, *args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    reference = workdir / "crash-reference"
    _check(run(reference))
    # 48 points in batches of 16: checkpoints 2, 4 and 8 fall inside an epoch, 6 on an epoch boundary.
    assert logged_steps(reference) == list(range(1, 10))

    def resume_and_compare(out, resumed_from, *args):
        proc = _check(run(out, *args, "--resume_from_checkpoint", "latest"))
        assert f"resuming from {out / resumed_from}" in proc.stdout, proc.stdout
        assert logged_steps(out) == list(range(1, 10))  # each step once
        # The first resumed step's loss, and every later one, are the uninterrupted run's.
        assert logged_losses(out) == pytest.approx(logged_losses(reference), rel=0, abs=1e-6)
        for sub in ("unet", "checkpoint-8/unet", "checkpoint-8/unet_ema"):
            expected, got = weights(reference / sub), weights(out / sub)
            assert expected.keys() == got.keys()
            for name in expected:
                torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=f"{sub}: {name}")
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
        return proc

    # Killed half-way through writing checkpoint-6: unet/ written, the optimiser and random states not yet.
    out = workdir / "crash-during-save"
    assert run(out, crash_during_save=6).returncode == -9
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-4"]
    partial = out / ".incomplete-checkpoint-6"
    assert (partial / "unet").is_dir() and not (partial / "optimizer.bin").exists()
    assert logged_steps(out) == [1, 2, 3, 4, 5, 6]
    proc = resume_and_compare(out, "checkpoint-4")
    assert ".incomplete-checkpoint-6" in proc.stderr  # the leftover is named, then removed

    # A named checkpoint that is corrupt is refused in one line, before anything is loaded.
    (out / "checkpoint-8" / "optimizer.bin").write_bytes(b"")
    proc = run(out, "--resume_from_checkpoint", out / "checkpoint-8")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out / 'checkpoint-8'} is incomplete or corrupt" in proc.stderr
    assert "optimizer.bin has 0 bytes" in proc.stderr

    # With --checkpoints_total_limit 1 the older checkpoint goes only once the new one is complete.
    out = workdir / "crash-with-limit"
    assert run(out, "--checkpoints_total_limit", 1, crash_during_save=4).returncode == -9
    assert checkpoints(out) == ["checkpoint-2"]
    resume_and_compare(out, "checkpoint-2", "--checkpoints_total_limit", 1)
    assert checkpoints(out) == ["checkpoint-8"]

    # Killed from outside once checkpoint-2 is there: wherever the kill lands, 'latest' is complete.
    out = workdir / "crash-from-outside"
    with open(workdir / "crash-from-outside.log", "w") as log:
        proc = subprocess.Popen(command(out), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and not (out / "checkpoint-2").is_dir():
                time.sleep(0.005)
        finally:
            proc.kill()
            proc.wait()
    last = checkpoints(out)[-1]
    assert checkpoint_problem(str(out / last)) is None
    resume_and_compare(out, last)
