import json

import pytest
import torch

from benchmarks import bench_scaling
from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler, F2D2UNet2DModel


def run(*args):
    bench_scaling.main(bench_scaling.parse_args([str(a) for a in args]))


def test_quick_scaling_rows_for_every_batch_and_image_size(tmp_path):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    teacher = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                          norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    teacher.save_pretrained(tmp_path / "teacher" / "unet")
    student = F2D2UNet2DModel.from_teacher(teacher, divergence_head_channels=4, divergence_head_hidden_dim=16)
    F2D2Pipeline(unet=student, scheduler=F2D2Scheduler(), num_levels=17).save_pretrained(tmp_path / "student")
    run("--quick", "--student", tmp_path / "student", "--teacher", tmp_path / "teacher",
        "--output_dir", tmp_path / "out")
    report = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 0
    cfg = report["config"]
    rows = report["rows"]
    for sweep, key, values in (("batch", "batch_size", cfg["batch_sizes"]), ("image", "image_size", cfg["image_sizes"])):
        for value in values:
            same = [r for r in rows if r["sweep"] == sweep and r[key] == value]
            assert len(same) == 2, (sweep, value)
            f2d2 = next(r for r in same if r["method"].startswith("F2D2"))
            ref = next(r for r in same if r["method"].startswith("reference"))
            assert f2d2["nfe"] == 2 and ref["nfe"] > 2
            for r in same:
                assert r["seconds"] > 0
                assert r["peak_memory_mib"] is None or r["peak_memory_mib"] > -1.0
    # The image sweep builds models of the student's family with only sample_size changed.
    assert {r["image_size"] for r in rows if r["sweep"] == "image"} == set(cfg["image_sizes"])
    table = report["markdown_table"].splitlines()
    assert len(table) == 2 + len(cfg["batch_sizes"]) + len(cfg["image_sizes"])
    assert table[0].startswith("| sweep | batch | image |")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="error: no checkpoint folder"):
        run("--quick", "--student", tmp_path / "nope", "--teacher", tmp_path / "nope", "--output_dir", tmp_path / "out")
