"""benchmarks/bench_samplers.py on a tiny untrained sampler: the report's layout, quick mode and the dynesty peer."""

import importlib.util
import json

import pytest
import torch

from benchmarks import bench_samplers
from f2d2_diffusers import EnergySamplerMLPModel, EnergySamplerPipeline, F2D2Scheduler
from f2d2_diffusers.targets import load_target


def test_quick_run_writes_json_and_png(tmp_path):
    torch.manual_seed(0)
    model = EnergySamplerMLPModel(sample_size=2, hidden_dim=8, num_fourier=4, prior_scale=40.0)
    EnergySamplerPipeline(model=model, scheduler=F2D2Scheduler(), target="gmm40").save_pretrained(
        tmp_path / "ck" / "sampler-gmm40")
    out = tmp_path / "out"
    results = bench_samplers.main(["--quick", "--checkpoints", str(tmp_path / "ck"), "--output_dir", str(out),
                                   "--targets", "gmm40", "funnel", "--num_samples", "64", "--steps", "1", "2"])
    report = json.loads((out / "samplers.json").read_text())
    assert report == json.loads(json.dumps(results)) and report["quick"]
    gmm = report["targets"]["gmm40"]
    assert [r["steps"] for r in gmm["rows"]["deterministic_flow"]] == [1, 2]
    expected = {"abs_error", "elbo", "ess", "mmd", "nfe"} | ({"sinkhorn"} if importlib.util.find_spec("ot") else set())
    assert expected <= set(gmm["rows"]["euler_maruyama"][0])
    assert gmm["goals"]["1"]["goal"] == 0.5 and "dynesty" not in gmm
    assert "no checkpoint" in report["targets"]["funnel"]["skipped"]
    assert report["targets"]["many_well_32"]["goals_not_measured"] == {4: 2.0} or \
        report["targets"]["many_well_32"]["goals_not_measured"] == {"4": 2.0}
    assert (out / "samplers.png").stat().st_size > 0 and (out / "samplers_gmm40_samples.png").stat().st_size > 0
    assert bench_samplers.PATHS.output_dir(True).endswith("outputs/benchmarks-quick")


@pytest.mark.slow
def test_dynesty_peer_finds_a_2d_log_z():
    pytest.importorskip("dynesty")  # benchmark-only (benchmarks/setup.sh)
    result = bench_samplers.run_dynesty(load_target("gmm_grid"), max_calls=20000)
    assert result["target_evaluations"] > 0 and abs(result["log_Z"]) < 1.0
