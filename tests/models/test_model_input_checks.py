"""Wrong configs, checkpoints, teachers and input sizes get a message that names the problem."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from testing_utils import tiny_unet_config
from f2d2_diffusers import F2D2MLPModel, F2D2UNet2DModel, FlowMatchingMLPModel


def test_a_config_without_in_channels_is_named(tiny_f2d2_unet, tmp_path):
    """It used to say "out_channels == in_channels, got 1 and 3", blaming the out_channels that was there."""
    tiny_f2d2_unet.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["in_channels"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r'the model config has no in_channels: add "in_channels": 1 to config\.json'):
        F2D2UNet2DModel.from_pretrained(tmp_path)


def test_weights_that_do_not_match_the_config_name_the_checkpoint(tiny_f2d2_unet, tiny_f2d2_mlp, tmp_path):
    tiny_f2d2_mlp.save_pretrained(tmp_path / "mlp")
    config = json.loads((tmp_path / "mlp" / "config.json").read_text())
    (tmp_path / "mlp" / "config.json").write_text(json.dumps({**config, "sample_size": 5}))
    with pytest.raises(ValueError, match=r"cannot load F2D2MLPModel from .*mlp: its weights do not match its config\.json "
                                         r"\(proj_in\.weight expected shape .*\)\. Was config\.json edited"):
        F2D2MLPModel.from_pretrained(tmp_path / "mlp")
    tiny_f2d2_unet.save_pretrained(tmp_path / "unet")
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**config, "block_out_channels": [8, 32]}))
    with pytest.raises(ValueError, match=r"cannot load F2D2UNet2DModel from .*unet: its weights do not match"):
        F2D2UNet2DModel.from_pretrained(tmp_path / "unet")


def test_from_teacher_with_the_wrong_kind_of_teacher():
    torch.manual_seed(0)
    unet_teacher = UNet2DModel(**tiny_unet_config())
    mlp_teacher = FlowMatchingMLPModel(sample_size=3, hidden_dim=8, num_layers=1, time_embed_dim=8)
    with pytest.raises(TypeError, match=r"F2D2UNet2DModel\.from_teacher needs a UNet2DModel teacher .*got FlowMatchingMLPModel; "
                                        r"for vectors use F2D2MLPModel\.from_teacher"):
        F2D2UNet2DModel.from_teacher(mlp_teacher)
    with pytest.raises(TypeError, match=r"F2D2MLPModel\.from_teacher needs a FlowMatchingMLPModel teacher .*got UNet2DModel"):
        F2D2MLPModel.from_teacher(unet_teacher)
    student = F2D2UNet2DModel.from_teacher(unet_teacher)
    with pytest.raises(TypeError, match=r"an F2D2 student already \(F2D2UNet2DModel\)"):
        F2D2UNet2DModel.from_teacher(student)
    with pytest.raises(TypeError, match=r"an F2D2 student already \(F2D2MLPModel\)"):
        F2D2MLPModel.from_teacher(F2D2MLPModel.from_teacher(mlp_teacher))
    with pytest.raises(TypeError, match=r"takes the loaded teacher model, not a path.*load_teacher\('checkpoints/fm-digits'\)"):
        F2D2UNet2DModel.from_teacher("checkpoints/fm-digits")


def test_unet_sizes_its_down_blocks_cannot_halve_are_rejected(tiny_f2d2_unet):
    """A 7x7 input failed with "Sizes of tensors must match" deep in the up blocks."""
    with pytest.raises(ValueError, match=r"sample height and width must be multiples of 2 for this UNet \(2 down blocks\), got 7x7"):
        tiny_f2d2_unet(torch.randn(1, 1, 7, 7), 500.0, -500.0)
    with torch.no_grad():  # other multiples of 2 still run: a UNet is convolutional
        assert tiny_f2d2_unet(torch.randn(1, 1, 6, 6), 500.0, -500.0).sample.shape == (1, 1, 6, 6)
