import pytest
import torch
from diffusers import UNet2DModel

from f2d2_diffusers import F2D2UNet2DModel
from f2d2_diffusers.models.deepen import deepen_unet
from testing_utils import randomise_new_layers, tiny_unet_config

PLAIN = dict(down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D",) * 3,
             block_out_channels=(8, 16, 16))


def randomised(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("layers, deeper", [(1, 2), (1, 3), (2, 3)])
def test_a_deepened_unet_computes_the_same_function(layers, deeper):
    model = randomised(UNet2DModel(**tiny_unet_config(layers_per_block=layers, **PLAIN)))
    wider = deepen_unet(model, deeper).eval()
    assert wider.config.layers_per_block == deeper
    assert sum(p.numel() for p in wider.parameters()) > sum(p.numel() for p in model.parameters())
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10.0, 500.0, 990.0])
    torch.testing.assert_close(wider(x, t).sample, model(x, t).sample, rtol=0, atol=1e-6)


def test_a_deepened_student_keeps_both_heads_and_survives_save_and_load(tmp_path):
    teacher = UNet2DModel(**tiny_unet_config(**PLAIN))
    student = randomise_new_layers(F2D2UNet2DModel.from_teacher(teacher)).eval()
    deeper = deepen_unet(student, 2).eval()
    x, t, h = torch.randn(3, 1, 8, 8), torch.tensor([0.0, 300.0, 700.0]), torch.tensor([1000.0, -250.0, 125.0])
    expected, got = student(x, t, h), deeper(x, t, h)
    torch.testing.assert_close(got.sample, expected.sample, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.divergence, expected.divergence, rtol=0, atol=1e-5)
    deeper.save_pretrained(tmp_path)
    reloaded = F2D2UNet2DModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(x, t, h).sample, expected.sample, rtol=0, atol=1e-6)


def test_the_new_layers_learn():
    model = randomised(UNet2DModel(**tiny_unet_config(**PLAIN)))
    deeper = deepen_unet(model, 2)
    deeper(torch.randn(2, 1, 8, 8), torch.tensor([100.0, 800.0])).sample.pow(2).mean().backward()
    # The zero last convolutions of the new pass-through resnets get a gradient: training moves them at once.
    assert deeper.down_blocks[0].resnets[1].conv2.weight.grad.abs().sum() > 0
    assert deeper.up_blocks[0].resnets[1].conv2.weight.grad.abs().sum() > 0


def test_unsupported_models_are_refused():
    with pytest.raises(ValueError, match="DownBlock2D / UpBlock2D"):
        deepen_unet(UNet2DModel(**tiny_unet_config()), 2)  # attention blocks
    with pytest.raises(ValueError, match="shallower"):
        deepen_unet(UNet2DModel(**tiny_unet_config(layers_per_block=2, **PLAIN)), 1)


def test_same_depth_is_a_copy_and_the_mode_is_kept():
    model = randomised(UNet2DModel(**tiny_unet_config(layers_per_block=2, **PLAIN)))
    same = deepen_unet(model, 2)
    assert not same.training and same is not model
    for (name, a), (_, b) in zip(model.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), name
    assert deepen_unet(model.train(), 3).training
