"""training/train_sampler.py end to end (CPU, tiny budgets): a run that saves, resumes and loads; user-file targets;
the errors a user sees before training starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "train_sampler.py"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ["--train_batch_size", "8", "--num_fine_steps", "4", "--lr_warmup_steps", "0", "--seed", "0",
        "--learning_rate", "1e-3", "--eval_samples", "16", "--steps_per_epoch", "3", "--distill_warmup_steps", "2"]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def run(*args, launcher=False, timeout=300):
    cmd = ([ACCELERATE, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no"] if launcher else [sys.executable]) + [str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_train_save_resume_and_load(tmp_path):
    from f2d2_diffusers import EnergySamplerPipeline

    out = tmp_path / "sampler"
    ok(run("--target", "gmm40", "--output_dir", out, "--max_train_steps", "2", "--checkpointing_steps", "2",
           "--use_ema", *TINY, launcher=True))
    assert (out / "checkpoint-2" / "checkpoint_complete.json").is_file()
    ok(run("--target", "gmm40", "--output_dir", out, "--max_train_steps", "4", "--checkpointing_steps", "2",
           "--use_ema", "--resume_from_checkpoint", "latest", *TINY))
    steps = [json.loads(line)["step"] for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert json.loads((out / "logs" / "train_log.jsonl").read_text().splitlines()[-1])["distill_weight"] == 0.25
    card = (out / "README.md").read_text()
    assert "deterministic flow | 1 |" in card and "Euler-Maruyama" in card and "gmm40" in card
    pipe = EnergySamplerPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.target.name == "gmm40"
    result = pipe(batch_size=4, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (4, 2)


USER_TARGET = '''
import torch
from f2d2_diffusers.targets import EnergyTarget

class Tilted(EnergyTarget):
    dim = 3
    log_Z = 0.0

    def log_prob(self, x):
        return -0.5 * ((x - 1.0) ** 2).sum(-1) - 1.5 * torch.log(torch.tensor(2 * 3.141592653589793))
'''


@pytest.mark.slow
def test_user_file_target_trains_and_travels_with_the_folder(tmp_path):
    from f2d2_diffusers import EnergySamplerPipeline

    path = tmp_path / "user_target.py"
    path.write_text(USER_TARGET)
    out = tmp_path / "sampler"
    ok(run("--target", f"{path}:Tilted", "--output_dir", out, "--max_train_steps", "2", "--checkpointing_steps", "0",
           *TINY))
    assert (out / "target" / "user_target.py").is_file()
    index = json.loads((out / "model_index.json").read_text())
    assert index["target"] == "target/user_target.py:Tilted"
    path.unlink()  # the copy in the folder is what loads
    pipe = EnergySamplerPipeline.from_pretrained(out)
    assert pipe.target.dim == 3


def test_bad_targets_and_data_flags_are_refused_before_training(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom f2d2_diffusers.targets import EnergyTarget\n"
                   "class Bad(EnergyTarget):\n    dim = 2\n    def log_prob(self, x):\n        return x.sum(-1) * float('nan')\n")
    proc = run("--target", f"{bad}:Bad", "--output_dir", tmp_path / "o", "--max_train_steps", "1")
    assert proc.returncode == 2 and "error: --target" in proc.stderr and "NaN" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = run("--target", "nope", "--output_dir", tmp_path / "o")
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr
    proc = run("--target", "gmm40", "--dataset", "digits")
    assert proc.returncode == 2 and "not data; drop --dataset" in proc.stderr
    proc = run("--target", "gmm40", "--num_fine_steps", "6")
    assert proc.returncode == 2 and "power of 2" in proc.stderr
