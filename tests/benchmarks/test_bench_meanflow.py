import json

import pytest

from benchmarks import bench_meanflow


@pytest.mark.slow
def test_quick_run_writes_every_measurement(tmp_path):
    bench_meanflow.main(bench_meanflow.parse_args(["--quick", "--dataset", "checkerboard", "--output_dir", str(tmp_path)]))
    report = json.loads((tmp_path / "meanflow_checkerboard.json").read_text())
    assert (tmp_path / "meanflow_checkerboard.png").stat().st_size > 10_000
    calibration = report["calibration"]["rows"]
    assert set(calibration) == {"Shortcut-F2D2", "MeanFlow-F2D2"}
    assert [r["steps"] for r in calibration["MeanFlow-F2D2"]] == [None, 1, 2, 4, 8]
    sweep = report["guidance_sweep"]["rows"]
    assert [r["scale"] for r in sweep[:len(bench_meanflow.SCALES)]] == list(bench_meanflow.SCALES)
    # Guidance passes are counted: 2 sampling calls + a forward and a backward per guidance step.
    assert all(r["nfe"] == 2 + 2 * r["guidance_steps"] for r in sweep)
    methods = {r["method"] for r in report["sampling"]["rows"]}
    assert {"data", "teacher Euler", "Shortcut-F2D2", "MeanFlow-F2D2"} <= methods
    cost = report["training_cost_seconds_per_step"]
    assert cost["meanflow"] > 0 and cost["shortcut"] > 0 and set(report["target"]) >= {"met", "teacher_euler"}
