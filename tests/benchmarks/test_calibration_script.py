import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingMLPModel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration.py"


def test_calibration_report_for_a_2d_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2MLPModel.from_teacher(teacher)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(tmp_path / "student")
    argv = ["calibration.py", "--student", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
            "--dataset", "checkerboard", "--num_samples", "40", "--rtol", "1e-3", "--atol", "1e-3",
            "--output_dir", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    report = json.loads((tmp_path / "out" / "calibration_checkerboard.json").read_text())
    assert (tmp_path / "out" / "calibration_checkerboard.png").stat().st_size > 0
    rows = {(r["evaluation"], r["steps"]): r for r in report["rows"]}
    assert set(rows) == {("reference", None)} | {(e, k) for e in ("bidirectional", "paper") for k in (1, 2, 4, 8)}
    assert report["unit"] == "nats" and report["num_points"] == 40
    # A fresh student has a zero divergence head: its NLL misses the teacher's whole divergence integral.
    teacher_integral = sum(report["segments"]["1-likelihood"]["teacher_integral"])
    assert rows[("bidirectional", 1)]["error"] == pytest.approx(teacher_integral, rel=0.05, abs=0.05)
    assert set(report["segments"]) == {f"{k}-{d}" for k in (1, 2, 4, 8) for d in ("likelihood", "sample")}


def test_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["calibration.py", "--student", str(tmp_path / "nope"), "--teacher",
                                      str(tmp_path / "nope"), "--dataset", "checkerboard"])
    with pytest.raises(SystemExit, match="no checkpoint folder"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
