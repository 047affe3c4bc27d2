"""f2d2_diffusers.training.checkpointing and .atomic: checkpoint-N folders, oldest first, which of them are complete,
what a resume starts from, and the crash-safe writes behind them."""

import logging
import os
from pathlib import Path

import pytest
import torch

from f2d2_diffusers.training import (
    MANIFEST_NAME, EpochShuffle, TrainingError, build_parser, checkpoint_problem, checkpoint_step, list_checkpoints,
    parse_args, remove_unfinished, resolve_resume_path, staged_output,
)
from f2d2_diffusers.training.checkpointing import write_manifest

#: The files ``accelerator.save_state`` and the save hooks write (contents do not matter here, only presence and size).
CHECKPOINT_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "optimizer.bin", "scheduler.bin",
                    "random_states_0.pkl", "custom_checkpoint_0.pkl")


def make_checkpoint(output_dir, step, complete=True):
    """A ``checkpoint-{step}`` folder holding every file; with its manifest when ``complete``."""
    folder = output_dir / f"checkpoint-{step}"
    for name in CHECKPOINT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * 64)
    if complete:
        write_manifest(str(folder), step)
    return folder


def resume_args(output_dir, resume):
    return parse_args(build_parser("test", str(output_dir)), ["--dataset", "rings", "--resume_from_checkpoint", resume])


def test_checkpoint_listing_and_resume_paths(tmp_path):
    for step in (10, 2, 100):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-final").mkdir()
    (tmp_path / ".incomplete-checkpoint-200" / "unet").mkdir(parents=True)  # a save that never finished
    assert list_checkpoints(str(tmp_path)) == ["checkpoint-2", "checkpoint-10", "checkpoint-100"]
    args = resume_args(tmp_path, "latest")
    assert resolve_resume_path(args) == str(tmp_path / "checkpoint-100")
    args.output_dir = str(tmp_path / "empty")
    assert resolve_resume_path(args) is None  # 'latest' with nothing saved yet starts afresh


def test_resume_from_a_named_folder_checks_it(tmp_path):
    make_checkpoint(tmp_path, 4)
    (tmp_path / "weights").mkdir()
    args = resume_args(tmp_path, str(tmp_path / "checkpoint-4") + "/")
    assert resolve_resume_path(args) == str(tmp_path / "checkpoint-4") and checkpoint_step(resolve_resume_path(args)) == 4
    args.resume_from_checkpoint = str(tmp_path / "weights")
    with pytest.raises(TrainingError, match="is not a checkpoint-N folder"):
        resolve_resume_path(args)


def _empty_folder(folder):
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def _empty_optimizer(folder):
    (folder / "optimizer.bin").write_bytes(b"")


def _no_random_states(folder):
    (folder / "random_states_0.pkl").unlink()


def _cut_short_without_manifest(folder):
    # What a kill left with the earlier save code: unet/ complete, optimizer.bin empty, the rest never written.
    for name in ("scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl", MANIFEST_NAME):
        (folder / name).unlink()
    _empty_optimizer(folder)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (_empty_folder, "the folder is empty"),
        (_empty_optimizer, "optimizer.bin has 0 bytes, expected 64"),
        (_no_random_states, "missing random_states_0.pkl"),
        (_cut_short_without_manifest, "missing scheduler.bin, random_states_0.pkl; optimizer.bin is empty"),
    ],
)
def test_incomplete_checkpoints_are_skipped_by_latest_and_refused_by_name(tmp_path, caplog, damage, expected):
    make_checkpoint(tmp_path, 2)
    damage(make_checkpoint(tmp_path, 4))
    problem = checkpoint_problem(str(tmp_path / "checkpoint-4"))
    assert problem is not None and expected in problem, problem
    assert checkpoint_problem(str(tmp_path / "checkpoint-2")) is None

    with caplog.at_level(logging.WARNING, logger="f2d2_training"):
        assert resolve_resume_path(resume_args(tmp_path, "latest")) == str(tmp_path / "checkpoint-2")
    assert f"skipping {tmp_path / 'checkpoint-4'}, incomplete or corrupt: {problem}" in caplog.text

    with pytest.raises(TrainingError) as err:
        resolve_resume_path(resume_args(tmp_path, str(tmp_path / "checkpoint-4")))
    message = str(err.value)
    assert str(tmp_path / "checkpoint-4") in message and expected in message and "Hub" not in message


def test_latest_with_only_incomplete_checkpoints_starts_afresh(tmp_path, caplog):
    (tmp_path / "checkpoint-2").mkdir()
    with caplog.at_level(logging.WARNING, logger="f2d2_training"):
        assert resolve_resume_path(resume_args(tmp_path, "latest")) is None
    assert "skipping" in caplog.text and "no complete checkpoint" in caplog.text


def test_manifest_lists_every_file_with_its_size(tmp_path):
    folder = make_checkpoint(tmp_path, 6)
    (folder / "unet_ema").mkdir()
    (folder / "unet_ema" / "config.json").write_text("{}")
    write_manifest(str(folder), 6)
    assert checkpoint_problem(str(folder)) is None
    (folder / "unet_ema" / "config.json").write_text("{\"decay\": 1}")  # a changed size is corruption too
    assert "unet_ema/config.json has 12 bytes, expected 2" in checkpoint_problem(str(folder))
    (folder / MANIFEST_NAME).write_text("{\"files\": ")
    assert "unreadable" in checkpoint_problem(str(folder))


def test_leftovers_of_interrupted_saves_are_removed(tmp_path, caplog):
    make_checkpoint(tmp_path, 2)
    (tmp_path / ".incomplete-checkpoint-4" / "unet").mkdir(parents=True)
    (tmp_path / ".incomplete-removed-checkpoint-0").mkdir()
    (tmp_path / ".incomplete-README.md").write_text("half a card")
    with caplog.at_level(logging.WARNING, logger="f2d2_training"):
        removed = remove_unfinished(str(tmp_path))
    assert removed == [".incomplete-README.md", ".incomplete-checkpoint-4", ".incomplete-removed-checkpoint-0"]
    assert ".incomplete-checkpoint-4" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2"]


def test_staged_output_replaces_whole_folders_or_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "unet").mkdir()
    (out / "unet" / "old.txt").write_text("old")
    with staged_output(str(out)) as staging:
        (Path(staging) / "unet").mkdir()
        (Path(staging) / "unet" / "config.json").write_text("new")
        (Path(staging) / "model_index.json").write_text("{}")
    assert sorted(os.listdir(out)) == ["checkpoint-2", "model_index.json", "unet"]
    assert os.listdir(out / "unet") == ["config.json"]  # replaced whole, nothing of the old folder left

    # A failure while saving (or a kill: the staging folder is never renamed) leaves the previous output as it was.
    with pytest.raises(RuntimeError):
        with staged_output(str(out)) as staging:
            (Path(staging) / "unet").mkdir()
            raise RuntimeError("disk full")
    assert sorted(os.listdir(out)) == ["checkpoint-2", "model_index.json", "unet"]
    assert (out / "unet" / "config.json").read_text() == "new"


def test_epoch_shuffle_depends_on_seed_and_epoch_only():
    def order(shuffle, epoch):
        shuffle.set_epoch(epoch)
        return list(torch.utils.data.RandomSampler(range(20), generator=shuffle.generator))

    first = EpochShuffle(seed=3)
    orders = [order(first, epoch) for epoch in range(3)]
    torch.rand(5)  # the global RNG, which the training noise uses, plays no part
    resumed = EpochShuffle(seed=0)
    resumed.load_state_dict(first.state_dict())
    assert order(resumed, 1) == orders[1] and orders[0] != orders[1]
    assert order(EpochShuffle(seed=4), 1) != orders[1]


def test_resume_settings_are_recorded_adopted_and_checked(tmp_path):
    from argparse import Namespace

    from f2d2_diffusers.training import check_resume_settings

    folder = make_checkpoint(tmp_path, 5, complete=False)
    write_manifest(str(folder), 5, {"grid_shift": 0.25})
    assert checkpoint_problem(str(folder)) is None  # the record does not count as a file of the checkpoint
    left_out = Namespace(grid_shift=None)
    check_resume_settings(left_out, str(folder))
    assert left_out.grid_shift == 0.25  # a flag left out takes the value the run was trained with
    check_resume_settings(Namespace(grid_shift=0.25), str(folder))
    with pytest.raises(TrainingError, match="trained with --grid_shift 0.25, this run has --grid_shift 1.0"):
        check_resume_settings(Namespace(grid_shift=1.0), str(folder))
    check_resume_settings(Namespace(), str(folder))  # a script without the flag (the teacher's) is not concerned
    older = make_checkpoint(tmp_path / "old", 3)  # written before the record existed: nothing to check
    untouched = Namespace(grid_shift=None)
    check_resume_settings(untouched, str(older))
    assert untouched.grid_shift is None
