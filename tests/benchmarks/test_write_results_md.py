import json

import pytest

from benchmarks import write_results_md


def run(*args):
    write_results_md.main(write_results_md.parse_args([str(a) for a in args]))


def fake_results(root):
    results = root / "benchmarks" / "results"
    results.mkdir(parents=True)

    def row(name, method, nfe, error, seconds, **extra):
        return dict(name=name, method=method, divergence="exact", steps=extra.pop("steps", None), nfe=nfe,
                     num_points=10, seconds=seconds, seconds_full=seconds, value=3.5 + error, error=error,
                     abs_error=abs(error), skipped=False, reason=None, time_ratio_vs_f2d2_2step=seconds / 0.01, **extra)

    rows = [row("reference dopri5 exact (ours)", "reference", 50, 0.0, 2.0),
            row("F2D2 bidirectional 2 steps", "f2d2", 2, 0.02, 0.01, steps=2, evaluation="bidirectional"),
            row("euler 2 steps (exact)", "euler", 2, 0.5, 0.02, steps=2),
            row("euler 512 steps (exact)", "euler", 512, 0.001, 3.0, steps=512),
            row("euler 256 steps (exact)", "euler", 256, 0.01, 1.5, steps=256),
            dict(name="flow_matching dopri5 exact", method="flow_matching", divergence="exact", skipped=True,
                 reason="flow_matching is not importable", num_points=10)]
    targets = {
        "a_100x_less_wall_time_at_equal_or_better_error": {"results": {"bidirectional": {"mean_error": dict(
            f2d2_error=0.02, best_peer="euler 256 steps (exact)", peer_error=0.01, speedup=150.0, met=True)}}},
        "b_10x_lower_error_at_equal_network_calls": {"results": {"bidirectional": {"mean_error": {
            "2": dict(ratio=25.0, met=True), "all_met": True}}}},
    }
    (results / "likelihood_checkerboard.json").write_text(json.dumps(dict(
        dataset="checkerboard", mode="quick", num_points=10, unit="nats", rows=rows, targets=targets)))
    (results / "likelihood_checkerboard.png").write_bytes(b"png")
    # Another benchmark's report under the same prefix (likelihood_gap.py): not a likelihood benchmark section.
    (results / "likelihood_gap_digits.json").write_text(json.dumps(dict(student="s", splits={}, slope={})))
    (results / "scaling.json").write_text(json.dumps(dict(
        markdown_table="| sweep | batch |\n|---|---:|\n| batch | 1 |", memory_method="VmHWM", rows=[])))
    (results / "sampling_digits.json").write_text(json.dumps(dict(rows=[dict(steps=2, fid=1.5, label="F2D2")])))
    return results


def test_table_from_fake_results_and_marker_replacement(tmp_path, capsys):
    results = fake_results(tmp_path)
    readme = tmp_path / "README.md"
    before = "# Title\n\nIntro text.\n\n<!-- results:start -->\nold results\n<!-- results:end -->\n\n## After\nkeep me\n"
    readme.write_text(before)
    run("--results_dir", results, "--readme", readme)
    text = readme.read_text()
    head, rest = text.split("<!-- results:start -->")
    block, tail = rest.split("<!-- results:end -->")
    assert head == "# Title\n\nIntro text.\n\n" and tail == "\n\n## After\nkeep me\n"
    assert "old results" not in block
    assert "| method | network calls | seconds |" in block
    assert "| F2D2 bidirectional 2 steps | 2 |" in block
    assert "euler 256 steps (exact)" in block and "euler 512 steps (exact)" in block  # best peer and longest run
    assert "skipped: flow_matching is not importable" in block
    assert "100x less time" in block and "met" in block
    assert "![likelihood_checkerboard.png](benchmarks/results/likelihood_checkerboard.png)" in block
    assert "likelihood_gap" not in block and "None" not in block
    assert "| batch | 1 |" in block  # scaling's own table
    assert "### Sampling: digits" in block and "| steps | fid | label |" in block
    assert "calibration" not in block.lower()  # missing files are skipped
    # Running again gives the same file (the block is replaced, not appended).
    run("--results_dir", results, "--readme", readme)
    assert readme.read_text() == text
    # Without --readme the section goes to stdout.
    capsys.readouterr()
    run("--results_dir", results)
    assert capsys.readouterr().out.startswith("## Results")


def test_missing_markers_is_a_clear_error(tmp_path):
    results = fake_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="error: the file has no <!-- results:start -->"):
        run("--results_dir", results, "--readme", readme)
    assert readme.read_text() == "# no markers here\n"
