"""``f2d2_diffusers.training.grids``: which grids a run trains, and where a run that leaves them out finds them."""

import json

import numpy as np
import pytest
import torch

from f2d2_diffusers import F2D2Scheduler
from f2d2_diffusers.flow_map import check_shift
from f2d2_diffusers.training import MANIFEST_NAME, TrainingError
from f2d2_diffusers.training.grids import (
    grid_shift_conflict, recorded_grid_shifts, resolve_grid_shifts, trained_scheduler,
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
