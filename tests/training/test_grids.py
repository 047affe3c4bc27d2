"""``f2d2_diffusers.training.grids``: which grids a run trains, and where a run that leaves them out finds them."""

import json

import numpy as np
import pytest
import torch

from f2d2_diffusers import F2D2Scheduler
from f2d2_diffusers.flow_map import check_shift
from f2d2_diffusers.training import MANIFEST_NAME, TrainingError
from f2d2_diffusers.training.grids import (
    DEFAULT_LIKELIHOOD_GRID_SHIFT, UNIFORM_GRIDS, default_likelihood_grid_shift, grid_shift_conflict,
    recorded_grid_shifts, resolve_grid_shifts, trained_scheduler,
)


def test_the_grid_is_found_beside_the_student_wherever_it_was_saved(tmp_path):
    pipeline = tmp_path / "pipeline"
    F2D2Scheduler(shift=0.5, likelihood_shift=0.125).save_pretrained(pipeline / "scheduler")
    (pipeline / "unet").mkdir()
    expected = {"shift": 0.5, "likelihood_shift": 0.125}
    assert recorded_grid_shifts(str(pipeline)) == expected
    assert recorded_grid_shifts(str(pipeline / "unet")) == expected  # a bare unet/ folder of that pipeline
    checkpoint = tmp_path / "run" / "checkpoint-5"
    (checkpoint / "unet").mkdir(parents=True)
    (checkpoint / MANIFEST_NAME).write_text(json.dumps(
        {"step": 5, "files": {}, "settings": {"grid_shift": 0.25, "likelihood_grid_shift": 0.25}}))
    assert recorded_grid_shifts(str(checkpoint)) == {"shift": 0.25, "likelihood_shift": 0.25}
    assert recorded_grid_shifts(str(checkpoint / "unet")) == {"shift": 0.25, "likelihood_shift": 0.25}
    (tmp_path / "old").mkdir()
    assert recorded_grid_shifts(str(tmp_path / "old")) is None  # nothing recorded: the caller says so
    assert recorded_grid_shifts("someone/some-repo") is None
    broken = tmp_path / "broken"
    (broken / "scheduler").mkdir(parents=True)
    (broken / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(TrainingError, match="cannot read the grid recorded in"):
        recorded_grid_shifts(str(broken))


def test_given_flags_win_then_the_record_then_the_uniform_grids():
    recorded = {"shift": 0.5, "likelihood_shift": 0.125}
    assert resolve_grid_shifts(None, None, None) == (1.0, 1.0)
    assert resolve_grid_shifts(0.25, None, None) == (0.25, 0.25)
    assert resolve_grid_shifts(None, None, recorded) == (0.5, 0.125)
    assert resolve_grid_shifts(1.0, None, recorded) == (1.0, 0.125)  # each flag on its own
    assert resolve_grid_shifts(None, 0.2, recorded) == (0.5, 0.2)
    assert resolve_grid_shifts(None, None, {"shift": 0.5, "likelihood_shift": None}) == (0.5, 0.5)
    with pytest.raises(ValueError, match="grid_shift must be a positive finite number"):
        resolve_grid_shifts(None, None, {"shift": -1.0})


def test_the_default_likelihood_grid_applies_only_where_nothing_is_given_or_recorded():
    c = DEFAULT_LIKELIHOOD_GRID_SHIFT
    assert c == pytest.approx(1 / 3) and trained_scheduler(1.0, c).shift_for("likelihood") == c
    assert resolve_grid_shifts(None, None, None, c) == (1.0, c)  # a fresh run with no grid flag
    assert resolve_grid_shifts(1.0, None, None, c) == (1.0, 1.0)  # --grid_shift 1: both directions uniform
    assert resolve_grid_shifts(0.25, None, None, c) == (0.25, 0.25)
    assert resolve_grid_shifts(None, 0.5, None, c) == (1.0, 0.5)
    assert resolve_grid_shifts(None, None, UNIFORM_GRIDS, c) == (1.0, 1.0)  # a fine-tune stays on its grids
    # Only the shortcut objective without the trajectory loss trains a shifted grid (grid_shift_conflict).
    assert default_likelihood_grid_shift("shortcut", trajectory=False) == c
    assert default_likelihood_grid_shift("shortcut", trajectory=True) == 1.0
    assert default_likelihood_grid_shift("meanflow", trajectory=False) == 1.0


def test_only_the_shortcut_objective_trains_a_shifted_grid():
    assert grid_shift_conflict(1.0, 1.0, "meanflow", trajectory=True) is None
    assert grid_shift_conflict(0.5, 0.5, "shortcut", trajectory=False) is None
    assert "MeanFlow-F2D2" in grid_shift_conflict(1.0, 0.5, "meanflow", trajectory=False)
    assert "--grid_shift 1 --likelihood_grid_shift 1" in grid_shift_conflict(0.5, 0.5, "shortcut", trajectory=True)


def test_shift_values_are_checked_once_for_every_caller():
    assert check_shift(np.float32(0.5)) == 0.5 and check_shift(torch.tensor(0.25)) == 0.25 and check_shift(2) == 2.0
    assert check_shift(None, allow_none=True) is None
    for bad in (None, True, 0, -1.0, float("nan"), float("inf"), "0.5"):
        with pytest.raises(ValueError, match="shift must be a positive finite number"):
            check_shift(bad)


def test_the_saved_scheduler_records_a_likelihood_shift_only_where_it_differs():
    assert trained_scheduler(0.5, 0.5).config.likelihood_shift is None
    decoupled = trained_scheduler(1.0, 0.125)
    assert decoupled.shift_for("sample") == 1.0 and decoupled.shift_for("likelihood") == 0.125


def _grids_of(tmp_path, *flags):
    """``(grid_shift, likelihood_grid_shift)`` that ``train_f2d2.py`` resolves for these flags, before any training."""
    import importlib

    module = importlib.import_module("training.train_f2d2")
    args = module.parse_args(["--dataset", "checkerboard", "--output_dir", str(tmp_path / "run"), *map(str, flags)])
    module.resolve_grid_shift(args)
    return args.grid_shift, args.likelihood_grid_shift


def _checkpoint(tmp_path, settings):
    checkpoint = tmp_path / "run" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / MANIFEST_NAME).write_text(json.dumps({"step": 5, "files": {}, "settings": settings}))


def test_train_f2d2_resolves_the_grids_of_fresh_resumed_and_warm_started_runs(tmp_path):
    c = DEFAULT_LIKELIHOOD_GRID_SHIFT
    assert _grids_of(tmp_path) == (1.0, c)
    assert _grids_of(tmp_path, "--directions", "forward") == (1.0, 1.0)  # no encoding step is trained
    assert _grids_of(tmp_path, "--objective", "meanflow") == (1.0, 1.0)
    bare = tmp_path / "bare"  # a student folder saved before grids were recorded: its uniform grids
    (bare / "unet").mkdir(parents=True)
    assert _grids_of(tmp_path, "--init_student_from", bare) == (1.0, 1.0)


def test_a_resumed_run_keeps_its_recorded_grids_or_the_uniform_ones_of_an_older_checkpoint(tmp_path):
    _checkpoint(tmp_path, {"grid_shift": 1.0, "likelihood_grid_shift": 1 / 3})
    # The value given to 12 digits is the recorded one, not a clash.
    assert _grids_of(tmp_path, "--resume_from_checkpoint", "latest", "--likelihood_grid_shift", 0.333333333333) == (1.0, 1 / 3)
    with pytest.raises(TrainingError, match="it was trained with --likelihood_grid_shift"):
        _grids_of(tmp_path, "--resume_from_checkpoint", "latest", "--likelihood_grid_shift", 0.25)
    older = tmp_path / "older"
    _checkpoint(older, {})
    assert _grids_of(older, "--resume_from_checkpoint", "latest") == (1.0, 1.0)
