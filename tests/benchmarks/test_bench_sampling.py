import json
import math

import pytest
import torch
from diffusers import UNet2DModel
from testing_utils import tiny_unet_config

from benchmarks import bench_sampling
from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, F2D2UNet2DModel, FlowMatchingMLPModel
from f2d2_diffusers.evaluation import DigitsClassifier


def run(*argv):
    return bench_sampling.main(bench_sampling.parse_args([str(a) for a in argv]))


def check_report(report, names):
    rows = {(r["method"], r["steps"]): r for r in report["rows"]}
    expected = {("data", None)} | {("teacher Euler", k) for k in (1, 2, 4, 8, 100)} | {("F2D2", k) for k in (1, 2, 4, 8)}
    assert set(rows) == expected
    for r in report["rows"]:
        assert all(math.isfinite(r[n]) for n in names) and r["seconds"] >= 0
    # A fresh student (zero step embedding) is the teacher's velocity at every step size, so K F2D2 steps are K
    # Euler steps on the same uniform grid: from the same noise, the samples and scores must coincide.
    for k in (1, 2, 4, 8):
        for n in names:
            assert rows[("F2D2", k)][n] == pytest.approx(rows[("teacher Euler", k)][n], rel=1e-4, abs=1e-6)
    assert rows[("F2D2", 2)]["nfe"] == 2
    return rows


def test_quick_checkerboard_report(tmp_path):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2MLPModel.from_teacher(teacher)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(tmp_path / "student")
    run("--quick", "--dataset", "checkerboard", "--student", tmp_path / "student", "--teacher",
        tmp_path / "teacher", "--num_samples", 100, "--reference_points", 400, "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "sampling_checkerboard.json").read_text())
    rows = check_report(report, ("energy_distance", "mmd"))
    assert report["num_samples"] == 100
    target = report["target"]["energy_distance"]
    assert target["ratio"] == pytest.approx(rows[("F2D2", 2)]["energy_distance"] / rows[("teacher Euler", 100)]["energy_distance"])
    assert isinstance(target["within_20_percent"], bool)
    for name in ("samples_checkerboard.png", "sampling_checkerboard.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


@pytest.mark.slow
def test_quick_digits_report_through_the_diffusers_scheduler(tmp_path):
    torch.manual_seed(0)
    teacher = UNet2DModel(**tiny_unet_config(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))).eval()
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2UNet2DModel.from_teacher(teacher)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=17).save_pretrained(tmp_path / "student")
    DigitsClassifier(channels=(4, 8), feature_dim=6).save_pretrained(tmp_path / "clf")
    run("--quick", "--dataset", "digits", "--student", tmp_path / "student", "--teacher", tmp_path / "teacher",
        "--classifier", tmp_path / "clf", "--num_samples", 24, "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "sampling_digits.json").read_text())
    check_report(report, ("fd_test", "fd_train"))
    assert "FlowMatchEulerDiscreteScheduler" in report["teacher_sampler"]
    assert (tmp_path / "out" / "samples_digits.png").stat().st_size > 0


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="error: no checkpoint folder"):
        run("--dataset", "checkerboard", "--student", tmp_path / "nope", "--teacher", tmp_path / "nope",
            "--output_dir", tmp_path / "out")


@pytest.mark.parametrize("f2d2, teacher, within", [(1.0, 1.0, True), (1.19, 1.0, True), (1.21, 1.0, False),
                                                   (0.3, 2.0, True), (5.0, 2.0, False), (0.0, 0.0, True)])
def test_target_is_within_20_percent_of_100_step_euler(f2d2, teacher, within):
    """The verdict against hand-picked scores: 2-step F2D2 at most 1.2x the 100-step teacher (lower is better)."""
    rows = [dict(method="F2D2", steps=2, fd=f2d2), dict(method="F2D2", steps=1, fd=9.0),
            dict(method="teacher Euler", steps=100, fd=teacher), dict(method="teacher Euler", steps=2, fd=9.0)]
    target = bench_sampling.sampling_target(rows, ["fd"])["fd"]
    assert target["within_20_percent"] is within
    assert target["f2d2_2_steps"] == f2d2 and target["teacher_euler_100_steps"] == teacher
    if teacher:
        assert target["ratio"] == pytest.approx(f2d2 / teacher)
