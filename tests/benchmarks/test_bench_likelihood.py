import importlib.metadata
import importlib.util
import json
import math
import sys

import pytest
import torch

from benchmarks import bench_likelihood
from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, F2D2UNet2DModel, FlowMatchingMLPModel

NOT_INSTALLED = ("flow_matching is not installed: `bash benchmarks/setup.sh` installs it (CI runs that); the "
                 "cross-check against facebookresearch's flow_matching did not run")


def flow_matching_installed() -> bool:
    """Whether the flow_matching package is there at all (on the path or as an installed distribution), importable
    or not: only its absence may skip the cross-check; a broken install must fail it."""
    if importlib.util.find_spec("flow_matching") is not None:
        return True
    try:
        importlib.metadata.distribution("flow_matching")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def flow_matching_row(rows, points):
    """The flow_matching exact row, which must have run on ``points`` points; skips (saying why) only when the
    package is absent."""
    fm = rows["flow_matching dopri5 exact"]
    if not flow_matching_installed():
        assert fm["skipped"] and "not importable" in fm["reason"]
        pytest.skip(NOT_INSTALLED)
    # Installed, so its rows must have run: a failed import or a broken solver is an error, not a skip.
    assert not fm["skipped"], f"flow_matching is installed but its rows were skipped: {fm['reason']}"
    assert fm["num_points"] == points
    return fm


def tiny_2d_checkpoints(root):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(root / "teacher" / "unet")
    student = F2D2MLPModel.from_teacher(teacher)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=None).save_pretrained(root / "student")
    return root / "student", root / "teacher"


def run(*args):
    bench_likelihood.main(bench_likelihood.parse_args([str(a) for a in args]))


def expected_names(config):
    names = {"reference dopri5 exact (ours)", "flow_matching dopri5 exact", "flow_matching dopri5 hutchinson"}
    names |= {f"F2D2 {e} {k} step{'s' * (k > 1)}" for e in ("bidirectional", "paper") for k in (1, 2, 4, 8)}
    for method in ("euler", "midpoint"):
        for k in config[method]:
            nfe = k * (2 if method == "midpoint" else 1)
            exact = config["exact_max_nfe"] is None or nfe <= config["exact_max_nfe"]
            names.add(f"{method} {k} step{'s' * (k > 1)} ({'exact' if exact else 'hutchinson'})")
    return names


def check_report(report):
    rows = {r["name"]: r for r in report["rows"]}
    assert len(rows) == len(report["rows"])
    assert set(rows) == expected_names(report["config"])
    assert report["complete"] is True
    ref = rows["reference dopri5 exact (ours)"]
    assert ref["error"] == 0.0 and ref["abs_error"] == 0.0
    for r in report["rows"]:
        if r["skipped"]:
            assert r["method"] == "flow_matching" and r["reason"]
            continue
        for key in ("value", "error", "abs_error", "seconds", "seconds_full", "time_ratio_vs_f2d2_2step"):
            assert math.isfinite(r[key]), (r["name"], key)
        assert r["nfe"] >= 1
    for r in report["rows"]:
        if r["method"] == "f2d2":
            assert r["nfe"] == r["steps"]
        if r["method"] in ("euler", "midpoint"):
            assert r["nfe"] == r["steps"] * (2 if r["method"] == "midpoint" else 1)
    # Every row's time ratio is its wall time over 2-step bidirectional F2D2's (whole-set seconds).
    base = rows["F2D2 bidirectional 2 steps"]
    for r in report["rows"]:
        if not r["skipped"]:
            assert r["time_ratio_vs_f2d2_2step"] == pytest.approx(r["seconds_full"] / base["seconds_full"]), r["name"]
    assert base["time_ratio_vs_f2d2_2step"] == 1.0
    targets = report["targets"]
    for evaluation in ("bidirectional", "paper"):
        a = targets["a_100x_less_wall_time_at_equal_or_better_error"]["results"][evaluation]["mean_error"]
        b = targets["b_10x_lower_error_at_equal_network_calls"]["results"][evaluation]["mean_error"]
        # The reference has zero error, so some peer always reaches F2D2's error.
        assert a["best_peer"] is not None and isinstance(a["met"], bool) and a["speedup"] > 0
        assert set(b) == {"2", "4", "8", "all_met"} and all(isinstance(b[k]["met"], bool) for k in ("2", "4", "8"))
    return rows


def test_quick_run_on_tiny_2d_checkpoints(tmp_path):
    student, teacher = tiny_2d_checkpoints(tmp_path)
    run("--quick", "--dataset", "checkerboard", "--student", student, "--teacher", teacher,
        "--num_samples", "40", "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "likelihood_checkerboard.json").read_text())
    assert (tmp_path / "out" / "likelihood_checkerboard.png").stat().st_size > 0
    assert report["unit"] == "nats" and report["num_points"] == 40 and report["mode"] == "quick"
    rows = check_report(report)
    # A fresh student has a zero divergence head: its few-step NLL misses the teacher's divergence integral, so
    # its error is far from zero, while fixed-step midpoint at 16 steps is close to the reference.
    assert abs(rows["midpoint 16 steps (exact)"]["error"]) < abs(rows["F2D2 bidirectional 2 steps"]["error"])
    # Same teacher, same data, same dopri5 tolerances, opposite time convention: the two solvers agree.
    fm = flow_matching_row(rows, 40)
    assert abs(fm["error"]) < 1e-3 and fm["abs_error"] < 1e-3
    assert fm["nfe"] == rows["reference dopri5 exact (ours)"]["nfe"]


def test_flow_matching_is_usable_when_installed():
    """A broken flow_matching install fails here, loudly; only a missing one skips."""
    if not flow_matching_installed():
        pytest.skip(NOT_INSTALLED)
    available, version, reason = bench_likelihood.flow_matching_status()
    assert available, f"flow_matching is installed but not usable: {reason}"
    assert reason is None and version


def test_flow_matching_missing_marks_rows_skipped(tmp_path, monkeypatch, capsys):
    student, teacher = tiny_2d_checkpoints(tmp_path)
    monkeypatch.setitem(sys.modules, "flow_matching", None)  # import flow_matching -> ImportError
    run("--quick", "--dataset", "checkerboard", "--student", student, "--teacher", teacher,
        "--num_samples", "20", "--output_dir", tmp_path / "out")
    assert "flow_matching is not importable" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "likelihood_checkerboard.json").read_text())
    rows = check_report(report)
    assert report["flow_matching"]["available"] is False
    for name in ("flow_matching dopri5 exact", "flow_matching dopri5 hutchinson"):
        assert rows[name]["skipped"] and "benchmarks/setup.sh" in rows[name]["reason"]
        assert rows[name]["error"] is None


@pytest.mark.slow
def test_quick_run_on_tiny_digits_checkpoints(tmp_path):
    torch.manual_seed(0)
    from diffusers import UNet2DModel

    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                  norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"))
    teacher = UNet2DModel(**config).eval()
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2UNet2DModel.from_teacher(teacher, divergence_head_channels=4, divergence_head_hidden_dim=16)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=17).save_pretrained(tmp_path / "student")
    run("--quick", "--dataset", "digits", "--student", tmp_path / "student", "--teacher",
        tmp_path / "teacher", "--num_samples", "4", "--rtol", "0.1", "--atol", "0.1", "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "likelihood_digits.json").read_text())
    assert report["unit"] == "bits/dim" and report["num_dims"] == 64
    rows = check_report(report)
    assert rows["euler 32 steps (hutchinson)"]["probes"] == 1
    fm = flow_matching_row(rows, 4)
    assert abs(fm["error"]) < 1e-3


def test_bad_input_is_one_clear_error(tmp_path):
    out = ["--output_dir", tmp_path / "out"]
    with pytest.raises(SystemExit, match="error: no checkpoint folder"):
        run("--quick", "--dataset", "checkerboard", "--student", tmp_path / "nope", "--teacher", tmp_path, *out)
    with pytest.raises(SystemExit, match="error: unknown dataset 'cifar'"):
        run("--quick", "--dataset", "cifar", *out)
    with pytest.raises(SystemExit, match="error: --student/--teacher need a single --dataset"):
        run("--quick", "--student", tmp_path, *out)


def test_reuse_teacher_rows_recomputes_only_f2d2(tmp_path, capsys):
    student, teacher = tiny_2d_checkpoints(tmp_path)
    common = ["--quick", "--dataset", "checkerboard", "--teacher", teacher, "--num_samples", "20",
              "--output_dir", tmp_path / "out"]
    run(*common, "--student", student, "--reuse_teacher_rows")  # no cache yet: computes everything
    assert "no cache" in capsys.readouterr().out
    # The cache is safetensors (per-point scores) plus JSON (rows, key): nothing unpickled.
    cache = sorted(p.name for p in (tmp_path / "out" / "cache").iterdir())
    assert cache == ["likelihood_checkerboard_teacher_rows.json", "likelihood_checkerboard_teacher_rows.safetensors"]
    first = {r["name"]: r for r in json.loads((tmp_path / "out" / "likelihood_checkerboard.json").read_text())["rows"]}
    # A retrained student: same teacher, new divergence head.
    pipe = F2D2Pipeline.from_pretrained(student)
    with torch.no_grad():
        pipe.unet.divergence_out.bias.fill_(0.5)
    pipe.save_pretrained(tmp_path / "student2")
    run(*common, "--student", tmp_path / "student2", "--reuse_teacher_rows")
    assert "reusing" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "likelihood_checkerboard.json").read_text())
    second = check_report(report)
    assert any("reused" in note for note in report["notes"])
    for name, row in first.items():
        if row["method"] == "f2d2":
            assert second[name]["value"] != pytest.approx(row["value"], abs=1e-6)
            assert "reused_from_cache" not in second[name]
        elif not row["skipped"]:
            assert second[name]["value"] == row["value"] and second[name]["reused_from_cache"]
    # Another teacher does not match the cache.
    other = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    other.save_pretrained(tmp_path / "teacher2" / "unet")
    common[common.index(teacher)] = tmp_path / "teacher2"
    run(*common, "--student", student, "--reuse_teacher_rows")
    assert "recomputing every row" in capsys.readouterr().out


def mixed_subset_report():
    """Rows as in the shipped digits report: fixed-step rows with exact divergence on the first 64 test points,
    longer ones with Hutchinson on all 297, and a flow_matching row on 16."""
    n = 297

    def row(name, method, divergence, steps, nfe, points, error, seconds, evaluation=None):
        r = dict(name=name, method=method, divergence=divergence, steps=steps, nfe=nfe, num_points=points,
                 seconds=seconds, seconds_full=seconds * n / points, value=2.0 + error, skipped=False, reason=None,
                 error=error, abs_error=abs(error) + 0.01, reference_value=2.0)
        if evaluation:
            r["evaluation"] = evaluation
        return r

    rows = [row("reference dopri5 exact (ours)", "reference", "exact", None, 62, n, 0.0, 1400.0)]
    rows += [row(f"F2D2 bidirectional {k} steps", "f2d2", "bidirectional", k, k, n, -0.17 + 0.01 * k, 0.1 * k,
                 "bidirectional") for k in (1, 2, 4, 8)]
    rows += [row(f"euler {k} steps (exact)", "euler", "exact", k, k, 64, e, 7.0 * k) for k, e in ((2, 0.48), (4, 0.05), (8, -0.24))]
    rows += [row(f"euler {k} steps (hutchinson)", "euler", "hutchinson", k, k, n, e, 0.6 * k)
             for k, e in ((16, -0.36), (32, -0.26), (64, -0.14))]
    rows += [row("flow_matching dopri5 exact", "flow_matching", "exact", None, 62, 16, 0.0018, 53.0)]
    rows.append(dict(name="flow_matching dopri5 hutchinson", method="flow_matching", divergence="hutchinson",
                     steps=None, nfe=None, num_points=n, seconds=None, seconds_full=None, value=None, skipped=True,
                     reason="not installed", error=None, abs_error=None, reference_value=None))
    return dict(dataset="digits", mode="full", num_points=n, unit="bits/dim", rows=rows)


def test_plot_never_joins_rows_measured_on_different_subsets(tmp_path):
    report = mixed_subset_report()
    groups = bench_likelihood.plot_groups(report)
    labels = [label for _, label, _ in groups]
    for _, label, rows in groups:
        assert len({r["num_points"] for r in rows}) == 1, label  # one line = one set of test points
        assert [r["nfe"] for r in rows] == sorted(r["nfe"] for r in rows)
    assert "Euler (torchdiffeq), exact div., first 64 of 297 points" in labels
    assert "Euler (torchdiffeq), Hutchinson, all 297 points" in labels
    assert "F2D2 bidirectional, all 297 points" in labels
    assert "flow_matching dopri5, exact div., first 16 of 297 points" in labels
    assert not any("hutchinson" in label.lower() and "flow_matching" in label for label in labels)  # skipped row


def test_replot_rewrites_the_png_from_the_json(tmp_path, monkeypatch):
    import matplotlib.figure

    path = tmp_path / "likelihood_digits.json"
    path.write_text(json.dumps(mixed_subset_report()))
    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    run("--replot", path)
    assert (tmp_path / "likelihood_digits.png").stat().st_size > 10_000
    ax = figures[-1].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    # The two Euler lines stay apart: each has the markers of its own rows only.
    assert len(lines["Euler (torchdiffeq), exact div., first 64 of 297 points"].get_xdata()) == 3
    assert len(lines["Euler (torchdiffeq), Hutchinson, all 297 points"].get_xdata()) == 3
    assert all(line.get_marker() not in (None, "None", "") for line in lines.values() if "reference" not in line.get_label())
