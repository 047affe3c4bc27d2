import json

import pytest
import torch

from benchmarks import calibration
from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingMLPModel
from f2d2_diffusers.data import EMBEDDED_DATASETS


def run(*args):
    calibration.main(calibration.parse_args([str(a) for a in args]))


def test_calibration_report_for_a_2d_checkpoint(tmp_path):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2MLPModel.from_teacher(teacher)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(tmp_path / "student")
    run("--student", tmp_path / "student", "--teacher", tmp_path / "teacher", "--dataset", "checkerboard",
        "--num_samples", "40", "--rtol", "1e-3", "--atol", "1e-3", "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "calibration_checkerboard.json").read_text())
    assert (tmp_path / "out" / "calibration_checkerboard.png").stat().st_size > 0
    rows = {(r["evaluation"], r["steps"]): r for r in report["rows"]}
    assert set(rows) == {("reference", None)} | {(e, k) for e in ("bidirectional", "paper") for k in (1, 2, 4, 8)}
    assert report["unit"] == "nats" and report["num_points"] == 40
    # A fresh student has a zero divergence head: its NLL misses the teacher's whole divergence integral.
    teacher_integral = sum(report["segments"]["1-likelihood"]["teacher_integral"])
    assert rows[("bidirectional", 1)]["error"] == pytest.approx(teacher_integral, rel=0.05, abs=0.05)
    assert set(report["segments"]) == {f"{k}-{d}" for k in (1, 2, 4, 8) for d in ("likelihood", "sample")}
    # The sampling-path rows: the fresh map's samples, scored by itself and by the teacher's ODE.
    assert [r["steps"] for r in report["sampling_path"]] == [1, 2, 4]
    for r in report["sampling_path"]:
        assert r["unit"] == "nats" and r["nfe"] == r["steps"] and r["abs_error"] >= abs(r["error"]) - 1e-9


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint folder"):
        run("--student", tmp_path / "nope", "--teacher", tmp_path / "nope", "--dataset", "checkerboard",
            "--output_dir", tmp_path / "out")


def test_dataset_choices_are_the_embedded_data_sets(capsys):
    for dataset in EMBEDDED_DATASETS:
        assert calibration.parse_args(["--student", "s", "--teacher", "t", "--dataset", dataset]).dataset == dataset
    with pytest.raises(SystemExit):
        calibration.parse_args(["--student", "s", "--teacher", "t", "--dataset", "cifar"])
    assert "invalid choice: 'cifar'" in capsys.readouterr().err


def test_update_card_rewrites_only_the_calibration_section(tmp_path):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    F2D2Pipeline(unet=F2D2MLPModel.from_teacher(teacher), scheduler=F2D2Scheduler(),
                 num_levels=None).save_pretrained(tmp_path / "student")
    card = tmp_path / "student" / "README.md"
    head, tail = "# tiny\n\n## Calibration\n\n", "\n\n## Usage\nkeep me\n"
    card.write_text(head + "<!-- calibration:start -->\nold table\n<!-- calibration:end -->" + tail)
    run("--student", tmp_path / "student", "--teacher", tmp_path / "teacher", "--dataset", "checkerboard",
        "--num_samples", "16", "--rtol", "1e-3", "--atol", "1e-3", "--output_dir", tmp_path / "out", "--update_card")
    text = card.read_text()
    assert text.startswith(head + "<!-- calibration:start -->\n") and text.endswith("<!-- calibration:end -->" + tail)
    assert "old table" not in text
    assert "Measured by `benchmarks/calibration.py` on 16 'checkerboard' test points" in text
    report = json.loads((tmp_path / "out" / "calibration_checkerboard.json").read_text())
    assert sum(line.startswith("| F2D2 ") for line in text.splitlines()) == len(report["rows"]) - 1
