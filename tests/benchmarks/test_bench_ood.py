import json
import math

import pytest
import torch
from diffusers import UNet2DModel
from testing_utils import tiny_unet_config

from benchmarks import bench_ood
from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2MLPModel, F2D2Scheduler, F2D2UNet2DModel, FlowMatchingMLPModel
from f2d2_diffusers.data import load_toy
from f2d2_diffusers.evaluation.metrics import auroc


def run(*argv):
    return bench_ood.main(bench_ood.parse_args([str(a) for a in argv]))


def zero_velocity(model, layer):
    """v = 0: the flow is the identity, so every method's log-density is exactly log N(x; 0, I)."""
    with torch.no_grad():
        for p in getattr(model, layer).parameters():
            p.zero_()
    return model


def test_quick_checkerboard_aurocs_match_the_closed_form(tmp_path):
    torch.manual_seed(0)
    teacher = zero_velocity(FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8), "proj_out")
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    F2D2LikelihoodPipeline(unet=F2D2MLPModel.from_teacher(teacher), scheduler=F2D2Scheduler(),
                           num_levels=None).save_pretrained(tmp_path / "student")
    run("--quick", "--dataset", "checkerboard", "--student", tmp_path / "student", "--teacher",
        tmp_path / "teacher", "--num_points", 300, "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "ood_checkerboard.json").read_text())
    assert [(m["method"], m["steps"]) for m in report["methods"]] == [
        ("F2D2", 1), ("F2D2", 2), ("teacher reference (dopri5)", None)]
    # Under N(0, I) the NLL is |x|^2 / 2 + const: the AUROC follows from the data alone.
    sq = {name: load_toy(name, "test", 300).pow(2).sum(1) for name in ("checkerboard", "eight_gaussians", "two_moons")}
    for m in report["methods"]:
        assert m["points_per_set"]["eight_gaussians"] == 300 and math.isfinite(m["seconds"])
        for name in ("eight_gaussians", "two_moons"):
            assert m["auroc"][name] == pytest.approx(auroc(sq["checkerboard"], sq[name]), abs=1e-9)
    assert "skipped" in report["ranking"]
    assert (tmp_path / "out" / "ood_checkerboard.png").stat().st_size > 0


@pytest.mark.slow
def test_quick_digits_report_with_checkpoint_ranking(tmp_path):
    torch.manual_seed(0)
    teacher = zero_velocity(UNet2DModel(**tiny_unet_config(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))), "conv_out").eval()
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    F2D2LikelihoodPipeline(unet=F2D2UNet2DModel.from_teacher(teacher), scheduler=F2D2Scheduler(),
                           num_levels=17).save_pretrained(tmp_path / "student")
    run("--quick", "--dataset", "digits", "--student", tmp_path / "student", "--teacher", tmp_path / "teacher",
        "--early_student", tmp_path / "student", "--num_points", 12, "--reference_subset", 4, "--hutchinson_probes", 1, "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "ood_digits.json").read_text())
    sets = ("inverted", "rotated", "uniform_noise", "blurred")
    for m in report["methods"]:
        assert set(m["auroc"]) == set(sets) and all(0 <= m["auroc"][s] <= 1 for s in sets)
    f2d2, reference = report["methods"][0], report["methods"][2]
    assert reference["points_per_set"]["rotated"] == 4 and report["reference_settings"]["divergence"] == "hutchinson"
    # Same model-space points for every method, and all of them score log N(x): identical subset AUROCs.
    assert f2d2["auroc_on_reference_subset"] == pytest.approx(reference["auroc"])
    ranking = report["ranking"]
    assert ranking["agree"] is True and set(ranking["checkpoints"]) == {"final", "early"}
    assert ranking["reference_paired_difference"]["final_minus_early"] == pytest.approx(0.0, abs=1e-6)


def test_missing_early_student_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="error: no checkpoint folder"):
        run("--dataset", "digits", "--student", tmp_path / "nope", "--teacher", tmp_path / "nope",
            "--output_dir", tmp_path / "out")


def synthetic_ood_report(student, with_scores=True):
    sets = ["in (checkerboard test)", "eight_gaussians", "two_moons"]
    methods = [dict(method="F2D2", steps=k, nfe=k, seconds=0.1, points_per_set={s: 300 for s in sets},
                    mean_score={s: 3.0 + i for i, s in enumerate(sets)}, auroc={"eight_gaussians": 0.99, "two_moons": 0.97},
                    auroc_on_reference_subset={"eight_gaussians": 0.99, "two_moons": 0.97}) for k in (1, 2)]
    methods.append(dict(method="teacher reference (dopri5)", steps=None, nfe=400, seconds=9.0,
                        points_per_set={s: 50 for s in sets}, mean_score={s: 3.0 + i for i, s in enumerate(sets)},
                        auroc={"eight_gaussians": 1.0, "two_moons": 0.98},
                        auroc_on_reference_subset={"eight_gaussians": 1.0, "two_moons": 0.98}))
    report = dict(dataset="checkerboard", quick=False, student=str(student), teacher="/x/checkpoints/fm-checkerboard",
                  score="NLL (nats)", in_distribution=sets[0], dequantisation_seed=None,
                  reference_settings=dict(method="dopri5", divergence="exact", probes=None, rtol=1e-5, points_per_set=50),
                  methods=methods, ranking=dict(skipped="test"))
    if with_scores:
        rng = torch.Generator().manual_seed(0)
        report["histogram_scores"] = {bench_ood.HISTOGRAM_METHOD: {
            s: (torch.randn(300, generator=rng) + 3 + i).tolist() for i, s in enumerate(sets)}}
    return report


def _capture_figures(monkeypatch):
    import matplotlib.figure

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    return figures


@pytest.mark.parametrize("with_scores", [True, False])
def test_replot_from_json_keeps_the_legend_off_the_bars(tmp_path, monkeypatch, with_scores):
    """AUROCs near 1 fill the axes: the legend goes under them. Without stored scores and without the checkpoint,
    the figure still draws (mean scores instead of histograms)."""
    path = tmp_path / "ood_checkerboard.json"
    path.write_text(json.dumps(synthetic_ood_report(tmp_path / "no-such-student", with_scores)))
    figures = _capture_figures(monkeypatch)
    run("--replot", path)
    assert (tmp_path / "ood_checkerboard.png").stat().st_size > 10_000
    fig = figures[-1]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    axes_box, legend_box = ax.get_window_extent(), legend.get_window_extent()
    assert legend_box.y1 <= axes_box.y0 + 1, "the legend overlaps the AUROC bars"
    title = fig._suptitle.get_text()
    assert "no-such-student" in title and "fm-checkerboard" in title and "checkerboard" in title
    assert "first 50 of 300 points per set" in title


def test_the_report_keeps_the_scores_the_histograms_show(tmp_path):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8)
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    F2D2LikelihoodPipeline(unet=F2D2MLPModel.from_teacher(teacher), scheduler=F2D2Scheduler(),
                           num_levels=None).save_pretrained(tmp_path / "student")
    run("--quick", "--dataset", "checkerboard", "--student", tmp_path / "student", "--teacher",
        tmp_path / "teacher", "--num_points", 40, "--reference_subset", 8, "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "ood_checkerboard.json").read_text())
    stored = report["histogram_scores"][bench_ood.HISTOGRAM_METHOD]
    assert set(stored) == {report["in_distribution"], "eight_gaussians", "two_moons"}
    assert all(len(v) == 40 for v in stored.values())
    means = report["methods"][0]["mean_score"]
    assert all(sum(v) / len(v) == pytest.approx(means[k], abs=1e-4) for k, v in stored.items())
    # Redrawn from the JSON: the same figure, without running anything.
    (tmp_path / "out" / "ood_checkerboard.png").unlink()
    run("--replot", tmp_path / "out" / "ood_checkerboard.json")
    assert (tmp_path / "out" / "ood_checkerboard.png").stat().st_size > 10_000
