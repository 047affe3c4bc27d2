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
    assert (report["rtol"], report["atol"], report["seed"]) == (1e-3, 1e-3, 0)  # the run can be repeated
    # A fresh student has a zero divergence head: its NLL misses the teacher's whole divergence integral.
    teacher_integral = sum(report["segments"]["1-likelihood"]["teacher_integral"])
    assert rows[("bidirectional", 1)]["error"] == pytest.approx(teacher_integral, rel=0.05, abs=0.05)
    assert set(report["segments"]) == {f"{k}-{d}" for k in (1, 2, 4, 8) for d in ("likelihood", "sample")}
    # The sampling-path rows: the fresh map's samples, scored by itself and by the teacher's ODE.
    assert [r["steps"] for r in report["sampling_path"]] == [1, 2, 4]
    for r in report["sampling_path"]:
        assert r["unit"] == "nats" and r["nfe"] == r["steps"] and r["abs_error"] >= abs(r["error"]) - 1e-9
        assert r["rescored_nfe"] == r["steps"] and r["rescored_abs_error"] >= abs(r["rescored_error"]) - 1e-9

    # --sampling_path_only re-measures those rows into the same report and keeps the others...
    path = tmp_path / "out" / "calibration_checkerboard.json"
    report["sampling_path"], report["rows"][0]["marker"] = [], "kept"
    path.write_text(json.dumps(report))
    common = ["--student", tmp_path / "student", "--teacher", tmp_path / "teacher", "--dataset", "checkerboard",
              "--atol", "1e-3", "--output_dir", tmp_path / "out", "--sampling_path_only"]
    run(*common, "--rtol", "1e-3")
    again = json.loads(path.read_text())
    assert again["rows"][0]["marker"] == "kept" and [r["steps"] for r in again["sampling_path"]] == [1, 2, 4]
    assert again["sampling_path_settings"] == dict(samples=64, rtol=1e-3, atol=1e-3, seed=0, divergence="exact")
    # ... and refuses other settings than the report's, a card update, or a report that is not there.
    with pytest.raises(SystemExit, match="rtol: 0.0001 here, 0.001 in the report"):
        run(*common, "--rtol", "1e-4")
    with pytest.raises(SystemExit, match="drop --update_card"):
        run(*common, "--rtol", "1e-3", "--update_card")
    path.unlink()
    with pytest.raises(SystemExit, match="updates an existing report"):
        run(*common, "--rtol", "1e-3")


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

    # --replot --update_card rewrites the card from the rows a report recorded, with the report's own settings.
    path = tmp_path / "out" / "calibration_checkerboard.json"
    report["rows"][1]["error"] = -0.4321
    report.pop("rtol")  # a report written before the tolerance was recorded: the command line supplies it
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit, match="does not record --rtol: give the values it was measured with"):
        run("--replot", path, "--update_card")
    with pytest.raises(SystemExit, match=r"measured with other settings: --atol 0.01 \(the report says 0.001\)"):
        run("--replot", path, "--update_card", "--rtol", "2e-4", "--atol", "1e-2")
    run("--replot", path, "--update_card", "--rtol", "2e-4")
    text = card.read_text()
    assert "| -0.4321 |" in text and "rtol = 0.0002, atol = 0.001" in text and text.endswith(tail)


def synthetic_report(teacher_integral=(-0.19, -0.08, -0.05, -0.15, -0.25, -0.22, -0.05, 0.16),
                     integral_error=(-4e-4, -6e-4, 8e-4, 1.1e-3, -9e-4, -6e-6, -9e-4, 2e-4)):
    """A calibration report shaped like the shipped checkerboard one: per-segment errors ~100x below the integrals."""
    rows = [dict(method="teacher dopri5", evaluation="reference", steps=None, nfe=400, value=2.0, error=0.0,
                 abs_error=0.0, seconds=9.0)]
    for evaluation, scale in (("bidirectional", 1e-3), ("paper", 0.3)):
        rows += [dict(method="F2D2", evaluation=evaluation, steps=k, nfe=k, value=2.0 - scale / k, error=-scale / k,
                      abs_error=scale / k + 1e-3, seconds=0.01 * k) for k in (1, 2, 4, 8)]
    sigmas = [k / 8 for k in range(9)]
    segment = dict(sigmas=sigmas, teacher_integral=list(teacher_integral), integral_error=list(integral_error),
                   integral_abs_error=[abs(e) + 1e-2 for e in integral_error], state_error=[0.004] * 8,
                   direction="likelihood")
    return dict(student="/somewhere/checkpoints/f2d2-checkerboard", teacher="/somewhere/checkpoints/fm-checkerboard",
                dataset="checkerboard", num_points=2000, unit="nats", reference_divergence="exact", rows=rows,
                segments={"8-likelihood": segment}, sampling_path=[])


def test_replot_redraws_the_figure_from_the_json_alone(tmp_path, monkeypatch):
    """``--replot`` reads the JSON and writes the PNG, loading no model; the figure says what it compares and its
    per-segment bars are readable (own axis scaled to them, values written out)."""
    import matplotlib.figure

    path = tmp_path / "calibration_checkerboard.json"
    path.write_text(json.dumps(synthetic_report()))
    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    monkeypatch.setattr(calibration, "torch", None)  # nothing that needs torch (a model) runs
    calibration.main(calibration.parse_args(["--replot", str(path)]))
    assert (tmp_path / "calibration_checkerboard.png").stat().st_size > 10_000
    fig = figures[-1]
    title = fig._suptitle.get_text()
    for words in ("f2d2-checkerboard", "fm-checkerboard", "checkerboard test points", "2000", "reference", "dopri5"):
        assert words in title, words
    error_axis = fig.axes[2]
    bars = [patch.get_height() for patch in error_axis.patches]
    assert len(bars) == 8
    low, high = error_axis.get_ylim()
    # The largest bar covers a visible part of its own axis (on the integrals' scale it would be ~0.5%).
    assert max(abs(b) for b in bars) / (high - low) > 0.05
    ticks = " ".join(t.get_text() for t in error_axis.get_xticklabels())
    assert "+0.0011" in ticks and "-0.0009" in ticks and "-6e-06" in ticks  # each segment's value is written out


def test_replot_needs_no_checkpoint_arguments_but_a_run_does():
    assert calibration.parse_args(["--replot", "a.json"]).replot == ["a.json"]
    with pytest.raises(SystemExit):
        calibration.parse_args(["--dataset", "digits"])
