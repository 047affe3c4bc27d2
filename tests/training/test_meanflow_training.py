"""``train_f2d2.py --objective meanflow``: trains, resumes, warm-starts from a Shortcut-F2D2 student, and refuses
what does not belong to it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_f2d2.py"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TEACHER = REPO / "checkpoints" / "fm-checkerboard"
SHORTCUT_STUDENT = REPO / "checkpoints" / "f2d2-checkerboard"
COMMON = ["--dataset", "checkerboard", "--num_toy_samples", "64", "--train_batch_size", "16", "--lr_warmup_steps", "0",
          "--seed", "0", "--learning_rate", "1e-3", "--objective", "meanflow", "--calibration_samples", "20",
          "--logger", "none"]


def launch(config_file, *args, expect=0):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([ACCELERATE, "launch", "--config_file", str(config_file), str(SCRIPT), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    from accelerate.utils import write_basic_config

    path = tmp_path_factory.mktemp("meanflow") / "accelerate_config.json"
    write_basic_config(mixed_precision="no", save_location=str(path))
    return path


def test_meanflow_trains_resumes_and_writes_a_pipeline(config_file, tmp_path):
    from f2d2_diffusers import F2D2Pipeline

    out = tmp_path / "mf"
    args = [*COMMON, "--teacher_model_name_or_path", TEACHER, "--output_dir", out, "--checkpointing_steps", 2,
            "--step_distribution", "logit_normal", "--use_ema"]
    launch(config_file, *args, "--max_train_steps", 2)
    launch(config_file, *args, "--max_train_steps", 4, "--resume_from_checkpoint", "latest")
    logs = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logs] == [1, 2, 3, 4]
    assert {"tangent_loss", "step_loss", "velocity_loss", "divergence_loss"} <= set(logs[-1])
    card = (out / "README.md").read_text()
    assert "distilled with MeanFlow-F2D2" in card and "Objective: meanflow" in card and "logit_normal steps" in card
    pipe = F2D2Pipeline.from_pretrained(out)
    result = pipe(batch_size=3, num_inference_steps=2, output_type="pt", ml_guidance_scale=0.1,
                  generator=torch.Generator().manual_seed(0))
    assert result.nfe == 4 and torch.isfinite(result.log_prob).all()


def test_the_tangent_warmup_resumes_where_it_stopped(config_file, tmp_path):
    out = tmp_path / "mf-warmup"
    args = [*COMMON, "--teacher_model_name_or_path", TEACHER, "--output_dir", out, "--checkpointing_steps", 2,
            "--step_distribution", "dyadic", "--tangent_warmup_steps", 8, "--calibration_samples", 0,
            "--gradient_accumulation_steps", 2]
    launch(config_file, *args, "--max_train_steps", 2)
    # The ramp counts optimisation steps, not the accumulated micro-batches (4 loss calls here).
    counter = torch.load(out / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False)
    assert counter == {"step": 2}
    launch(config_file, *args, "--max_train_steps", 4, "--resume_from_checkpoint", "latest")
    assert torch.load(out / "checkpoint-4" / "custom_checkpoint_0.pkl", weights_only=False) == {"step": 4}


def test_meanflow_fine_tunes_a_shortcut_student(config_file, tmp_path):
    from f2d2_diffusers import F2D2MLPModel

    out = tmp_path / "mf-from-shortcut"
    # A vanishing learning rate: the saved student must be the Shortcut-F2D2 student it started from.
    launch(config_file, *COMMON, "--teacher_model_name_or_path", TEACHER, "--init_student_from", SHORTCUT_STUDENT,
           "--output_dir", out, "--max_train_steps", 1, "--learning_rate", 1e-12, "--checkpointing_steps", 0,
           "--calibration_samples", 0)
    start = F2D2MLPModel.from_pretrained(SHORTCUT_STUDENT, subfolder="unet")
    saved = F2D2MLPModel.from_pretrained(out, subfolder="unet")
    for (name, a), b in zip(start.state_dict().items(), saved.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert "started from `checkpoints/f2d2-checkerboard`" in (out / "README.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--init_student_from", TEACHER], "not an F2D2 joint flow map"),
    (["--teacher_finest_level"], "belongs to --objective shortcut"),
    (["--adaptive_weight_eps", "0"], "adaptive_weight_eps"),
    (["--tangent_warmup_steps", "-1"], "--tangent_warmup_steps must be >= 0"),
    (["--objective", "shortcut", "--tangent_warmup_steps", "5"], "belongs to --objective meanflow"),
])
def test_meanflow_bad_input_gives_a_clear_error(extra, message, tmp_path, capsys):
    import importlib

    from f2d2_diffusers.training import run_main

    module = importlib.import_module("training.train_f2d2")
    argv = [*COMMON, "--teacher_model_name_or_path", str(TEACHER), "--output_dir", str(tmp_path / "o"), *map(str, extra)]
    with pytest.raises(SystemExit) as exit_:
        run_main(module.main, module.parse_args(argv))
    assert exit_.value.code == 2 and message in capsys.readouterr().err
