"""``benchmarks/likelihood_gap.py``: the sign of its errors, and its figure drawn from the JSON alone (``--replot``)."""

import json

import numpy as np
import pytest

from benchmarks import likelihood_gap


def fake_report(slope=0.8):
    rng = np.random.default_rng(0)
    report = dict(student="checkpoints/f2d2-digits", teacher="checkpoints/fm-digits", num_per_split=8, steps=[1, 2],
                  splits={}, slope={})
    for split, centre in (("train", 70.0), ("test", 50.0)):
        teacher = centre + 5 * rng.standard_normal(8)
        rows = dict(teacher_log_prob=teacher.tolist(), teacher_bits_per_dim=1.5)
        for k in (1, 2):
            rows[str(k)] = dict(student_log_prob=(slope * teacher + 14).tolist(), error_bits_per_dim=-0.1,
                                abs_error_bits_per_dim=0.1, error_nats=4.0)
        report["splits"][split] = rows
    for k in (1, 2):
        report["slope"][str(k)] = dict(slope=slope, intercept=14.0)
    return report


def test_replot_draws_the_png_beside_the_json(tmp_path):
    path = tmp_path / "likelihood_gap_digits.json"
    path.write_text(json.dumps(fake_report()))
    likelihood_gap.main(likelihood_gap.parse_args(["--replot", str(path)]))
    png = tmp_path / "likelihood_gap_digits.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_report_has_every_split_and_step():
    with open(f"{likelihood_gap.PATHS.results_dir}/likelihood_gap_digits.json") as f:
        report = json.load(f)
    assert set(report["splits"]) == {"train", "test"}
    for split in report["splits"].values():
        assert all(str(k) in split for k in report["steps"])
    assert all(0 < v["slope"] < 2 for v in report["slope"].values())


def test_an_optimistic_student_has_a_negative_bits_per_dim_error():
    from types import SimpleNamespace

    import torch

    teacher_log_p = torch.linspace(40.0, 80.0, 8, dtype=torch.float64)
    states = torch.zeros(8, 9, 1, 8, 8)
    states[:, -1] = 2.0  # end points of norm 16
    reference = SimpleNamespace(log_prob=teacher_log_p, states=states)

    def student(data, num_inference_steps, dequantize):
        # k nats too likely at k steps, on a range compressed to half the teacher's.
        log_p = 60.0 + 0.5 * (teacher_log_p - 60.0) + num_inference_steps
        return SimpleNamespace(log_prob=log_p, latents=torch.ones(8, 1, 8, 8))

    rows = likelihood_gap.score_split(student, torch.zeros(8, 1, 8, 8), reference, steps=(1, 2))
    assert rows["teacher_end_point_norm"] == pytest.approx(16.0)
    for k in (1, 2):
        row = rows[str(k)]
        assert row["error_bits_per_dim"] == pytest.approx(-k / (64 * np.log(2)))
        assert row["log_prob_excess_nats"] == pytest.approx(k)
        assert row["slope_within_split"] == pytest.approx(0.5)
        assert row["end_point_norm"] == pytest.approx(8.0)
