"""Helpers the tests share (a plain module: several test folders have a conftest.py of their own)."""

import torch


def tiny_unet_config(**overrides):
    config = dict(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
    )
    config.update(overrides)
    return config


def randomise_new_layers(model, seed=0):
    """Give the zero-initialised step embedding and divergence head random weights, so they matter in tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("step_embedding.linear_2", "divergence_out")):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model
