import json

import numpy as np
import pytest
import torch

from benchmarks import bench_new_data
from f2d2_diffusers.training.grids import DEFAULT_LIKELIHOOD_GRID_SHIFT


@pytest.mark.parametrize("name", bench_new_data.DATASETS)
def test_generated_data_sets_are_deterministic_and_split(name):
    train = bench_new_data.make_split(name, "train", 500)
    again = bench_new_data.make_split(name, "train", 500)
    test = bench_new_data.make_split(name, "test", 500)
    assert torch.equal(train, again) and not torch.equal(train, test)
    assert torch.isfinite(train).all() and train.shape[1] == {"pinwheel": 2, "warped_mixture_5d": 5}[name]


@pytest.mark.slow
def test_quick_run_trains_with_the_default_flags_and_reports_every_grid(tmp_path):
    args = bench_new_data.parse_args(["--quick", "--datasets", "pinwheel", "--work_dir", str(tmp_path / "work"),
                                      "--output_dir", str(tmp_path / "out")])
    bench_new_data.main(args)
    report = json.loads((tmp_path / "out" / "new_data.json").read_text())
    assert (tmp_path / "out" / "new_data.png").stat().st_size > 0
    (result,) = report["results"]
    assert result["dataset"] == "pinwheel" and result["dims"] == 2 and result["student_flags"] == ""
    # The defaults' grids, as the saved scheduler records them: uniform sampling, shifted encoding steps.
    assert result["grid_shifts"] == {"sample": 1.0, "likelihood": DEFAULT_LIKELIHOOD_GRID_SHIFT}
    assert [r["steps"] for r in result["rows"]] == [None, 1, 2, 4, 8]
    for row in result["rows"][1:]:
        assert np.isfinite(row["error"]) and row["abs_error"] >= abs(row["error"]) - 1e-9
    assert result["target_met"] == all(abs(r["error"]) <= report["target_nats"] for r in result["rows"][1:3])
    # The student was trained by train_f2d2.py with its defaults, which the card records.
    card = (tmp_path / "work" / "pinwheel" / "f2d2" / "README.md").read_text()
    assert "starts anchored to the grid" in card and "finest level from teacher midpoint steps" in card
