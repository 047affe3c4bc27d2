"""The benchmark scripts import as modules and run as files, and quick runs never touch the committed results."""

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_likelihood, bench_ood, bench_sampling, bench_scaling
from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler, FlowMatchingMLPModel
from f2d2_diffusers.evaluation.reports import benchmark_paths

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
QUICK_SCRIPTS = (bench_likelihood, bench_ood, bench_sampling, bench_scaling)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: size, modification time and content hash."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_scripts_import_no_sibling_and_leave_sys_path_alone():
    siblings = {p.stem for p in BENCHMARKS.glob("*.py")}
    for path in BENCHMARKS.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [(node.module or "").split(".")[0]]
                assert not node.level, f"{path.name}: relative import"
            else:
                if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                    pytest.fail(f"{path.name}:{node.lineno} uses sys.path")
                continue
            assert not set(names) & siblings, f"{path.name}:{node.lineno} imports a sibling script {names}"
            # ``benchmarks.<script>`` resolves only with the repository root on sys.path (pytest), not in
            # ``python benchmarks/<script>.py``: shared code belongs in the library.
            assert "benchmarks" not in names, f"{path.name}:{node.lineno} imports the benchmarks package"
    assert not (BENCHMARKS / "bench_common.py").exists()


@pytest.mark.parametrize("script", QUICK_SCRIPTS, ids=lambda m: m.__name__)
def test_quick_runs_default_outside_the_committed_results(script):
    paths = script.PATHS
    assert paths.repo_root == str(REPO)
    assert paths.results_dir == str(REPO / "benchmarks" / "results")
    assert paths.quick_results_dir == str(REPO / "outputs" / "benchmarks-quick")
    assert script.parse_args(["--quick"]).output_dir == paths.quick_results_dir
    assert script.parse_args([]).output_dir == paths.results_dir
    assert script.parse_args(["--quick", "--output_dir", "elsewhere"]).output_dir == "elsewhere"
    # The quick folder is git-ignored, so a quick run leaves the checkout clean.
    assert "/outputs/" in (REPO / ".gitignore").read_text().split()


def test_quick_run_without_output_dir_leaves_results_untouched(tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    F2D2Pipeline(unet=F2D2MLPModel.from_teacher(teacher), scheduler=F2D2Scheduler(),
                 num_levels=None).save_pretrained(tmp_path / "student")
    committed = REPO / "benchmarks" / "results"
    before = snapshot(committed)
    # A checkout at tmp_path/repo with its own (committed) results folder.
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "results" / "likelihood_checkerboard.json").write_text('{"committed": true}')
    monkeypatch.setattr(bench_likelihood, "PATHS", benchmark_paths(root))
    args = bench_likelihood.parse_args(["--quick", "--dataset", "checkerboard", "--student", str(tmp_path / "student"),
                                        "--teacher", str(tmp_path / "teacher"), "--num_samples", "20"])
    assert args.output_dir == str(root / "outputs" / "benchmarks-quick")
    bench_likelihood.main(args)
    report = json.loads((root / "outputs" / "benchmarks-quick" / "likelihood_checkerboard.json").read_text())
    assert report["mode"] == "quick" and report["num_points"] == 20
    assert (root / "outputs" / "benchmarks-quick" / "likelihood_checkerboard.png").stat().st_size > 0
    assert [p.name for p in (root / "benchmarks" / "results").iterdir()] == ["likelihood_checkerboard.json"]
    assert json.loads((root / "benchmarks" / "results" / "likelihood_checkerboard.json").read_text()) == {"committed": True}
    assert snapshot(committed) == before


@pytest.mark.slow
def test_a_script_still_runs_as_a_file(tmp_path):
    """``python benchmarks/<script>.py`` from anywhere, with no package path set up."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "scaling.json").write_text(json.dumps(dict(markdown_table="| sweep | batch |\n|---|---:|\n| batch | 1 |")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(BENCHMARKS / "write_results_md.py"), "--results_dir", str(results)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("## Results") and "| batch | 1 |" in out.stdout
