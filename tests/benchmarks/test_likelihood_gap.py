"""``benchmarks/likelihood_gap.py``: its figure is drawn from the JSON alone (``--replot``)."""

import json

import numpy as np

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
