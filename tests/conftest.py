import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread: the test models are tiny, and with two threads OpenMP's busy-waiting made small calls up to
# 100x slower whenever anything else ran on a 2-core machine (training subprocesses, the demo's server thread).
torch.set_num_threads(1)

from testing_utils import randomise_new_layers, tiny_unet_config  # noqa: E402


@pytest.fixture
def tiny_f2d2_unet():
    from f2d2_diffusers import F2D2UNet2DModel

    torch.manual_seed(0)
    return randomise_new_layers(F2D2UNet2DModel(**tiny_unet_config())).eval()


@pytest.fixture
def tiny_f2d2_mlp():
    from f2d2_diffusers import F2D2MLPModel

    torch.manual_seed(0)
    return randomise_new_layers(F2D2MLPModel(sample_size=3, hidden_dim=32, num_layers=2, time_embed_dim=16)).eval()
