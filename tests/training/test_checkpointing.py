"""f2d2_diffusers.training.checkpointing: checkpoint-N folders, oldest first, and what a resume starts from."""

import pytest

from f2d2_diffusers.training import (
    TrainingError, build_parser, checkpoint_step, list_checkpoints, parse_args, resolve_resume_path,
)


def test_checkpoint_listing_and_resume_paths(tmp_path):
    for step in (10, 2, 100):
        (tmp_path / f"checkpoint-{step}" / "unet").mkdir(parents=True)
    (tmp_path / "checkpoint-final").mkdir()
    assert list_checkpoints(str(tmp_path)) == ["checkpoint-2", "checkpoint-10", "checkpoint-100"]
    parser = build_parser("test", str(tmp_path))
    args = parse_args(parser, ["--dataset", "rings", "--resume_from_checkpoint", "latest"])
    assert resolve_resume_path(args) == str(tmp_path / "checkpoint-100")
    args.output_dir = str(tmp_path / "empty")
    assert resolve_resume_path(args) is None  # 'latest' with nothing saved yet starts afresh


def test_resume_from_a_named_folder_checks_it(tmp_path):
    (tmp_path / "checkpoint-4" / "unet").mkdir(parents=True)
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "weights").mkdir()
    parser = build_parser("test", str(tmp_path))
    args = parse_args(parser, ["--dataset", "rings", "--resume_from_checkpoint", str(tmp_path / "checkpoint-4") + "/"])
    assert resolve_resume_path(args) == str(tmp_path / "checkpoint-4") and checkpoint_step(resolve_resume_path(args)) == 4
    args.resume_from_checkpoint = str(tmp_path / "checkpoint-6")
    with pytest.raises(TrainingError, match="no unet/ folder"):
        resolve_resume_path(args)
    args.resume_from_checkpoint = str(tmp_path / "weights")
    with pytest.raises(TrainingError, match="is not a checkpoint-N folder"):
        resolve_resume_path(args)
