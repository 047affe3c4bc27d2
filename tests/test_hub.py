"""The Hub path: what an upload would send, and loading a pipeline back by repo id from the local cache, offline."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingMLPModel
from f2d2_diffusers import hub

from testing_utils import randomise_new_layers


@pytest.fixture
def pipeline_folder(tmp_path):
    torch.manual_seed(0)
    unet = randomise_new_layers(F2D2MLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8))
    folder = tmp_path / "f2d2-tiny"
    F2D2Pipeline(unet=unet, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: diffusers\n---\n# tiny\n")
    (folder / "checkpoint-10" / "unet").mkdir(parents=True)
    (folder / "checkpoint-10" / "optimizer.bin").write_bytes(b"state")
    (folder / "logs").mkdir()
    (folder / "logs" / "train_log.jsonl").write_text("{}\n")
    return folder


def test_upload_sends_the_loadable_folder_without_training_state(pipeline_folder, monkeypatch):
    assert hub.check_checkpoint_folder(str(pipeline_folder)) == "pipeline"
    assert hub.files_to_upload(str(pipeline_folder)) == [  # as save_pretrained wrote it: no shims yet
        "README.md", "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    calls = {}

    class Repo:
        repo_id = "someone/f2d2-tiny"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.setdefault("create", (repo_id, kw)) and Repo())
    monkeypatch.setattr(huggingface_hub, "create_commit", lambda **kw: calls.setdefault("commit", kw))
    before = {name: (pipeline_folder / name).read_bytes() for name in hub.files_to_upload(str(pipeline_folder))}
    assert hub.push_checkpoint(str(pipeline_folder), "someone/f2d2-tiny", private=True) == "someone/f2d2-tiny"
    assert calls["create"][1]["private"] is True
    commit = calls["commit"]
    assert commit["repo_id"] == "someone/f2d2-tiny"
    sent = {op.path_in_repo: op for op in commit["operations"]}
    # One commit: the folder without training state, plus the diffusers-loading layout the folder predates.
    assert sorted(sent) == [
        "README.md", "model_index.json", "pipeline.py", "scheduler/scheduler_config.json", "scheduler/scheduling_f2d2.py",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/mlp_f2d2.py",
    ]
    assert not any(name.startswith(("checkpoint-", "logs/")) for name in sent)
    assert json.loads(sent["model_index.json"].path_or_fileobj)["_class_name"] == ["pipeline", "F2D2Pipeline"]
    # The local folder is not changed by an upload.
    assert {name: (pipeline_folder / name).read_bytes() for name in hub.files_to_upload(str(pipeline_folder))} == before
    assert not (pipeline_folder / "pipeline.py").exists()


def test_upload_rewrites_the_card_for_the_repository(pipeline_folder, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    card = (
        "---\nlibrary_name: diffusers\ntags:\n- f2d2\nmodel-index:\n- name: f2d2-tiny\n  results:\n  - task:\n"
        "      type: other\n    dataset:\n      name: toy\n      type: toy\n    metrics:\n    - type: nll\n"
        "      value: 3.5\n---\n<!-- f2d2-diffusers repo_id: f2d2-tiny -->\n<!-- base_model: not set, the teacher was "
        "a local folder. -->\n\n```python\npipe = DiffusionPipeline.from_pretrained(\"f2d2-tiny\", "
        "trust_remote_code=True)\n```\n\n```bash\naccelerate launch training/train_f2d2.py --output_dir f2d2-tiny\n```\n"
    )
    (pipeline_folder / "README.md").write_text(card)
    contents = hub.upload_contents(str(pipeline_folder), "someone/f2d2-tiny", base_model="someone/fm-tiny")
    sent = contents["README.md"].decode()
    assert 'from_pretrained("someone/f2d2-tiny", trust_remote_code=True)' in sent
    assert "--output_dir f2d2-tiny" in sent  # the training command is what was run, not rewritten
    assert "<!-- f2d2-diffusers repo_id: someone/f2d2-tiny -->" in sent and "base_model: not set" not in sent
    parsed = ModelCard(sent)
    assert parsed.data.base_model == "someone/fm-tiny" and parsed.data.eval_results[0].metric_value == 3.5
    assert parsed.data.model_name == "someone/f2d2-tiny"
    assert (pipeline_folder / "README.md").read_text() == card  # the local card is unchanged
    # The dry run shows what the repository gets.
    assert hub.main([str(pipeline_folder), "someone/f2d2-tiny", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "pipeline.py  (written for the repository)" in out and "checkpoint-10" not in out
    assert hub.main([str(pipeline_folder), "someone/f2d2-tiny", "--dry_run", "--base_model", "not a repo id"]) == 2
    assert "--base_model must be a Hub id" in capsys.readouterr().err


def test_incomplete_folders_are_refused_with_the_reason(pipeline_folder, tmp_path, capsys):
    (pipeline_folder / "README.md").unlink()
    with pytest.raises(ValueError, match="no README.md model card"):
        hub.check_checkpoint_folder(str(pipeline_folder))
    (pipeline_folder / "README.md").write_text("# card\n")
    (pipeline_folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match="does not load as an F2D2Pipeline"):
        hub.check_checkpoint_folder(str(pipeline_folder))
    shutil.rmtree(pipeline_folder / "scheduler")
    with pytest.raises(ValueError, match="scheduler/ is missing"):
        hub.check_checkpoint_folder(str(pipeline_folder))
    # The command line reports it in one line, exit status 2.
    assert hub.main([str(pipeline_folder), "someone/x", "--dry_run"]) == 2
    assert "error: " in capsys.readouterr().err
    assert hub.main([str(tmp_path / "nowhere"), "someone/x"]) == 2
    assert "no checkpoint folder" in capsys.readouterr().err


def test_dry_run_lists_a_teacher_folder(tmp_path, capsys):
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    (tmp_path / "teacher" / "README.md").write_text("# teacher\n")
    assert hub.main([str(tmp_path / "teacher"), "someone/fm-tiny", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "a complete F2D2 teacher" in out and "unet/diffusion_pytorch_model.safetensors" in out
    # A teacher written before model_index.json gets one in the upload (vectors: the package's pipeline, with shims).
    assert "model_index.json  (written for the repository)" in out and "unet/mlp_flow_matching.py" in out


def test_from_pretrained_by_repo_id_from_the_local_cache_offline(pipeline_folder, tmp_path):
    """After a first download the Hub cache holds ``models--org--name/snapshots/<commit>/``; users then load by id."""
    cache = tmp_path / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--f2d2-tiny"
    snapshot = repo / "snapshots" / commit
    for name in hub.files_to_upload(str(pipeline_folder)):
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pipeline_folder / name, snapshot / name)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import torch\n"
        "from f2d2_diffusers import F2D2Pipeline\n"
        "pipe = F2D2Pipeline.from_pretrained('someone/f2d2-tiny')\n"
        "out = pipe(batch_size=3, num_inference_steps=2, output_type='pt', generator=torch.Generator().manual_seed(0))\n"
        "print(type(pipe.unet).__name__, tuple(out.images.shape), bool(torch.isfinite(out.log_prob).all()))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["F2D2MLPModel", "(3,", "2)", "True"]
