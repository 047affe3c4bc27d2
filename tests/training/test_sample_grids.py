"""What training shows while it runs: the sample grids of ``--save_images_steps`` (PNG files and trackers), the
end-of-training calibration on the trackers, the ``--logger`` default, and the warning when ``accelerate launch``
started fewer processes than it was asked for.

The scripts run in this process (``main(parse_args([...]))``) on tiny models, a few steps each.
"""

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from f2d2_diffusers.training import sample_grids
from f2d2_diffusers.training.loop import (
    calibration_metrics, requested_num_processes, warn_if_fewer_processes_than_requested,
)

TINY_MLP = {"hidden_dim": 32, "num_layers": 2, "time_embed_dim": 16}
TINY_UNET = {
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 8,
}
COMMON = ["--lr_warmup_steps", "0", "--seed", "0", "--learning_rate", "1e-3", "--checkpointing_steps", "0"]


def run_script(name, *args):
    import importlib

    module = importlib.import_module(f"training.{name}")
    module.main(module.parse_args([str(a) for a in args]))


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid-configs")
    (root / "mlp.json").write_text(json.dumps(TINY_MLP))
    (root / "unet.json").write_text(json.dumps(TINY_UNET))
    return root


@pytest.fixture(scope="module")
def checkerboard_teacher(configs):
    out = configs / "teacher-checkerboard"
    run_script("train_teacher", "--dataset", "checkerboard", "--num_toy_samples", 128, "--model_config_name_or_path",
               configs / "mlp.json", "--output_dir", out, "--train_batch_size", 32, "--max_train_steps", 2,
               "--logger", "none", *COMMON)
    return out


class Recorder:
    """Records what reaches ``Accelerator.log`` (the real method still runs)."""

    def __init__(self, monkeypatch):
        from accelerate import Accelerator

        self.calls = []
        original = Accelerator.log

        def log(accelerator, values, step=None, log_kwargs=None):
            self.calls.append((dict(values), step))
            return original(accelerator, values, step=step, log_kwargs=log_kwargs)

        monkeypatch.setattr(Accelerator, "log", log)

    def merged(self):
        out = {}
        for values, step in self.calls:
            out.update({k: (v, step) for k, v in values.items()})
        return out


def image_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for folder in {p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}:
        events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        for tag in events.Tags()["images"]:
            found.setdefault(tag, []).extend((e.step, e.width, e.height) for e in events.Images(tag))
    return found


def test_teacher_grid_png_at_every_n_steps_and_in_tensorboard(configs, tmp_path):
    """Grids at steps 2 and 4 of 5 (not 1, 3, 5), as PNG files and as TensorBoard images at those steps; the default
    --logger is tensorboard. With --use_ema they come from the EMA weights."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "teacher-digits"
    run_script("train_teacher", "--dataset", "digits", "--max_train_samples", 16, "--model_config_name_or_path",
               configs / "unet.json", "--output_dir", out, "--train_batch_size", 8, "--max_train_steps", 5,
               "--save_images_steps", 2, "--eval_batch_size", 3, "--eval_num_inference_steps", 2, "--use_ema", *COMMON)
    samples = out / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["step-000002.png", "step-000004.png"]
    from PIL import Image

    grid = Image.open(samples / "step-000004.png")
    assert grid.mode == "RGB" and grid.width >= 3 * sample_grids.MIN_TILE and grid.height >= sample_grids.MIN_TILE
    events = image_events(out / "logs")
    assert [step for step, _, _ in events["samples"]] == [2, 4]
    assert events["samples"][0][1:] == grid.size


def test_teacher_grid_comes_from_the_ema_weights(monkeypatch, tmp_path):
    """The grid function sees the EMA weights, in eval mode; the model is back to its own weights, in training mode."""
    from f2d2_diffusers import FlowMatchingMLPModel

    model = FlowMatchingMLPModel(sample_size=2, hidden_dim=8, num_layers=1).train()
    ema_params = [torch.full_like(p, 0.5) for p in model.parameters()]

    class FakeEMA:
        def store(self, params):
            self.saved = [p.detach().clone() for p in params]

        def copy_to(self, params):
            for p, e in zip(params, ema_params):
                p.data.copy_(e)

        def restore(self, params):
            for p, s in zip(params, self.saved):
                p.data.copy_(s)

    seen = {}

    def make(m):
        seen["training"] = m.training
        seen["weight"] = next(m.parameters()).flatten()[0].item()
        seen["grad"] = torch.is_grad_enabled()
        return sample_grids.SampleGrid(sample_grids.render_image_grid([torch.zeros(1, 1, 4, 4)]), "caption")

    before = [p.detach().clone() for p in model.parameters()]
    accelerator = types.SimpleNamespace(is_main_process=True, unwrap_model=lambda m: m, trackers=[],
                                        log=lambda *a, **k: None)
    args = types.SimpleNamespace(output_dir=str(tmp_path))
    path = sample_grids.save_sample_grid(args, accelerator, model, FakeEMA(), 7, make)
    assert path == str(tmp_path / "samples" / "step-000007.png") and Path(path).is_file()
    assert seen == {"training": False, "weight": 0.5, "grad": False}
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step-000007.png"]  # no .incomplete-* left
    # Another process writes nothing.
    accelerator.is_main_process = False
    assert sample_grids.save_sample_grid(args, accelerator, model, None, 8, make) is None


def test_f2d2_image_grid_has_a_row_per_step_count_and_bits_per_dim(tiny_f2d2_unet):
    """1/2/4-step rows from F2D2Pipeline on the same noise, each sample's bits/dim under it, means for the trackers;
    the same model gives the same grid twice (fixed noise)."""
    from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler
    from f2d2_diffusers.training import TrainingData

    config = tiny_f2d2_unet.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    data = TrainingData(dataset=[], kind="image", sample_shape=shape, num_levels=256, description="")
    make = sample_grids.f2d2_grid(data, 3)
    with torch.no_grad():
        grid = make(tiny_f2d2_unet)
        again = make(tiny_f2d2_unet)
    assert set(grid.metrics) == {f"samples/bits_per_dim_{k}_step" for k in (1, 2, 4)}
    assert np.array_equal(np.asarray(grid.image), np.asarray(again.image))
    # The numbers are the pipeline's own.
    pipe = F2D2Pipeline(unet=tiny_f2d2_unet, scheduler=F2D2Scheduler(), num_levels=256)
    noise = sample_grids.fixed_noise(3, shape)
    for k in (1, 2, 4):
        expected = pipe(latents=noise, num_inference_steps=k, output_type="latent").bits_per_dim.mean().item()
        assert grid.metrics[f"samples/bits_per_dim_{k}_step"] == pytest.approx(expected, rel=1e-5)
    tile = max(sample_grids.MIN_TILE, shape[1])
    assert grid.image.height >= 3 * (tile + 10) and grid.image.width >= 3 * tile
    assert "bits/dim" in grid.caption


def test_vectors_other_than_2d_have_no_grid(caplog):
    from f2d2_diffusers.training import TrainingData

    data = TrainingData(dataset=[], kind="vector", sample_shape=(5,), num_levels=None, description="")
    with caplog.at_level(logging.INFO, logger="f2d2_training"):
        assert sample_grids.teacher_grid(data, 4) is None and sample_grids.f2d2_grid(data, 4) is None
    assert "5-D vectors have no picture" in caplog.text


def test_log_grid_sends_images_to_tensorboard_and_wandb_and_skips_other_trackers(monkeypatch):
    logged = []

    class Writer:
        def add_image(self, tag, image, step, dataformats):
            logged.append(("tensorboard", tag, image.shape, step, dataformats))

        def add_text(self, tag, text, step):
            logged.append(("tensorboard-text", tag, text, step))

    class WandbTracker:
        name = "wandb"

        def log(self, values, step):
            logged.append(("wandb", values, step))

    fake_wandb = types.ModuleType("wandb")
    fake_wandb.Image = lambda image, caption=None: ("wandb.Image", image.size, caption)
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    tensorboard = types.SimpleNamespace(name="tensorboard", writer=Writer())
    other = types.SimpleNamespace(name="mlflow")  # no image API used: skipped silently
    metrics = []
    accelerator = types.SimpleNamespace(trackers=[tensorboard, WandbTracker(), other],
                                        log=lambda values, step=None: metrics.append((values, step)))
    image = sample_grids.render_image_grid([torch.zeros(2, 3, 8, 8)])
    grid = sample_grids.SampleGrid(image, "the caption", {"samples/bits_per_dim_1_step": 3.5})
    sample_grids.log_grid(accelerator, grid, 12)
    assert logged[0] == ("tensorboard", "samples", (image.height, image.width, 3), 12, "HWC")
    assert logged[1] == ("tensorboard-text", "samples/caption", "the caption", 12)
    assert logged[2] == ("wandb", {"samples": ("wandb.Image", image.size, "the caption")}, 12)
    assert len(logged) == 3 and metrics == [({"samples/bits_per_dim_1_step": 3.5}, 12)]


def test_f2d2_run_writes_grids_and_sends_calibration_to_the_trackers(checkerboard_teacher, tmp_path, monkeypatch):
    """A 2-D F2D2 run: the scatter grid at step 2 with the mean log-density per step count, and the end-of-training
    calibration table as calibration/... scalars, both through accelerator.log."""
    recorder = Recorder(monkeypatch)
    out = tmp_path / "f2d2-checkerboard"
    run_script("train_f2d2", "--dataset", "checkerboard", "--num_toy_samples", 64, "--teacher_model_name_or_path",
               checkerboard_teacher, "--output_dir", out, "--train_batch_size", 16, "--max_train_steps", 3,
               "--save_images_steps", 2, "--calibration_samples", 30, "--logger", "none", *COMMON)
    assert [p.name for p in (out / "samples").iterdir()] == ["step-000002.png"]
    logged = recorder.merged()
    for k in (1, 2, 4):
        value, step = logged[f"samples/log_prob_nats_{k}_step"]
        assert step == 2 and np.isfinite(value)
    card = (out / "README.md").read_text()
    for k in (1, 2, 4, 8):
        for key in (f"calibration/nll_nats_{k}_step", f"calibration/error_nll_nats_{k}_step",
                    f"calibration/abs_error_nll_nats_{k}_step", f"calibration/paper_error_nll_nats_{k}_step"):
            value, step = logged[key]
            assert step == 3 and np.isfinite(value), key
    reference, _ = logged["calibration/reference_nll_nats"]
    # The same numbers as the card's table.
    assert f"| teacher ODE (reference) | - |" in card and f"{reference:.4f}" in card
    assert f"{logged['calibration/error_nll_nats_1_step'][0]:+.4f}" in card


def test_calibration_metric_names():
    rows = [
        dict(evaluation="reference", steps=None, nfe=50, value=1.5, error=0.0, abs_error=0.0),
        dict(evaluation="bidirectional", steps=1, nfe=1, value=1.75, error=0.25, abs_error=0.5),
        dict(evaluation="paper", steps=2, nfe=2, value=1.25, error=-0.25, abs_error=0.3),
    ]
    assert calibration_metrics(rows, "bits/dim") == {
        "calibration/reference_bits_per_dim": 1.5,
        "calibration/bits_per_dim_1_step": 1.75, "calibration/error_bits_per_dim_1_step": 0.25,
        "calibration/abs_error_bits_per_dim_1_step": 0.5,
        "calibration/paper_bits_per_dim_2_step": 1.25, "calibration/paper_error_bits_per_dim_2_step": -0.25,
        "calibration/paper_abs_error_bits_per_dim_2_step": 0.3,
    }
    assert "calibration/error_nll_nats_1_step" in calibration_metrics(rows, "nats")


def test_grids_and_checkpoints_do_not_change_training(configs, tmp_path):
    """Grids draw from their own generator, and saving a checkpoint (EMA included) draws from none: the losses of a
    run with a grid every step and checkpoints equal those of a run with neither. A run resumed with grids writes
    each grid again from its checkpoint on, and clears what a write cut short left."""
    def losses(folder):
        return [json.loads(line)["loss"] for line in (folder / "logs" / "train_log.jsonl").read_text().splitlines()]

    base = ["--dataset", "checkerboard", "--num_toy_samples", 64, "--model_config_name_or_path", configs / "mlp.json",
            "--train_batch_size", 16, "--use_ema", "--logger", "none", *COMMON, "--eval_num_inference_steps", 3,
            "--lr_scheduler", "constant"]  # the same rates whether a run is told 3 or 4 steps
    run_script("train_teacher", *base, "--output_dir", tmp_path / "plain", "--max_train_steps", 4,
               "--save_images_steps", 0)
    run_script("train_teacher", *base, "--output_dir", tmp_path / "grids", "--max_train_steps", 4,
               "--save_images_steps", 1, "--checkpointing_steps", 2)
    assert losses(tmp_path / "grids") == losses(tmp_path / "plain")
    assert not (tmp_path / "plain" / "samples").exists()
    # Resumed from checkpoint-2 after the run ended: steps 3 and 4 again, the same losses, grid 4 written again.
    resumed = tmp_path / "resumed"
    args = [*base, "--output_dir", resumed, "--max_train_steps", 4, "--save_images_steps", 2, "--checkpointing_steps", 2]
    run_script("train_teacher", *args)
    first = losses(resumed)
    import shutil

    shutil.rmtree(resumed / "checkpoint-4")
    (resumed / "samples" / "step-000004.png").unlink()
    (resumed / "samples" / ".incomplete-output").mkdir()  # what a kill during a grid's write leaves
    (resumed / "samples" / ".incomplete-output" / "step-000004.png").write_bytes(b"cut short")
    run_script("train_teacher", *args, "--resume_from_checkpoint", "latest")
    assert sorted(p.name for p in (resumed / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    assert losses(resumed) == pytest.approx(first, abs=1e-6) and len(first) == 4


# --- --logger ---------------------------------------------------------------------------------------------------


def test_logger_defaults_to_tensorboard_and_names_a_missing_package(monkeypatch, capsys):
    from f2d2_diffusers.training import cli
    from training import train_teacher

    assert train_teacher.parse_args(["--dataset", "rings"]).logger == (
        "tensorboard" if cli.tracker_installed("tensorboard") else "none")
    assert train_teacher.parse_args(["--dataset", "rings", "--logger", "none"]).logger == "none"
    assert train_teacher.parse_args(["--dataset", "rings"]).save_images_steps == cli.DEFAULT_SAVE_IMAGES_STEPS
    monkeypatch.setattr(cli, "_importable", lambda name: False)
    with pytest.raises(SystemExit):
        train_teacher.parse_args(["--dataset", "rings", "--logger", "wandb"])
    assert "--logger wandb needs the `wandb` package, which is not installed (pip install wandb" in capsys.readouterr().err
    # The default without tensorboard installed: no tracker, one warning line, training goes on.
    assert train_teacher.parse_args(["--dataset", "rings"]).logger == "none"
    assert "`tensorboard` package is not installed" in capsys.readouterr().err
    for bad in (["--save_images_steps", "-1"], ["--eval_batch_size", "0"], ["--eval_num_inference_steps", "0"]):
        with pytest.raises(SystemExit):
            train_teacher.parse_args(["--dataset", "rings", "--logger", "none", *bad])
        assert bad[0] in capsys.readouterr().err


# --- the process-count warning ------------------------------------------------------------------------------------

#: What `accelerate launch --num_processes 2 script.py` (no --multi_gpu, no GPU) puts in its one child's environment.
SIMPLE_LAUNCHER_ENV = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500", "ACCELERATE_DYNAMO_BACKEND": "NO"}


@pytest.mark.parametrize("command_line, expected", [
    (["python", "accelerate", "launch", "--num_processes", "2", "train.py"], 2),
    (["python", "accelerate", "launch", "--num-processes=4", "train.py"], 4),
    (["python", "accelerate", "launch", "--config_file", "c.yaml", "train.py"], 0),  # the count came from the config
    ([], 0),  # the parent's command line could not be read
])
def test_requested_num_processes(command_line, expected):
    assert requested_num_processes(SIMPLE_LAUNCHER_ENV, command_line) == expected
    # Not under the launcher's simple path: a plain `python train.py`, one process asked for, or a real group.
    assert requested_num_processes({}, command_line) is None
    assert requested_num_processes({"ACCELERATE_MIXED_PRECISION": "no"}, command_line) is None
    assert requested_num_processes(dict(SIMPLE_LAUNCHER_ENV, WORLD_SIZE="2"), command_line) is None


def test_process_count_warning(caplog):
    one = types.SimpleNamespace(num_processes=1, is_main_process=True)
    command_line = ["accelerate", "launch", "--num_processes", "2", "train.py"]
    with caplog.at_level(logging.WARNING, logger="f2d2_training"):
        message = warn_if_fewer_processes_than_requested(one, SIMPLE_LAUNCHER_ENV, command_line)
    assert message and message in caplog.text
    assert "asked for 2 processes but started 1" in message and "--multi_gpu" in message
    if not torch.cuda.is_available():
        assert "OMP_NUM_THREADS" in message
    two = types.SimpleNamespace(num_processes=2, is_main_process=True)
    assert warn_if_fewer_processes_than_requested(two, SIMPLE_LAUNCHER_ENV, command_line) is None
    assert warn_if_fewer_processes_than_requested(one, {}, command_line) is None


@pytest.mark.slow
def test_process_count_warning_under_accelerate_launch(configs, tmp_path):
    """The real thing: `accelerate launch --num_processes 2` without --multi_gpu on this CPU machine runs one process,
    and the script says so."""
    import os
    import subprocess

    from accelerate.utils import write_basic_config

    config_file = tmp_path / "accelerate.json"
    write_basic_config(mixed_precision="no", save_location=str(config_file))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config_file),
         "--num_processes", "2", str(repo / "training" / "train_teacher.py"), "--dataset", "checkerboard",
         "--num_toy_samples", "64", "--model_config_name_or_path", str(configs / "mlp.json"), "--output_dir",
         str(tmp_path / "out"), "--train_batch_size", "16", "--max_train_steps", "1", "--logger", "none", *COMMON],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if torch.cuda.device_count() < 2:
        assert "`accelerate launch` was asked for 2 processes but started 1" in proc.stderr, proc.stderr[-3000:]
        assert "--multi_gpu" in proc.stderr
