"""Function-preserving deepening of a ``UNet2DModel``-family network: more layers per block, the same function.

A student limited by its capacity cannot start a wider or deeper run from its teacher's weights; this makes the deeper
network start as exactly the shallower one, so a longer run keeps what the shallow one learnt. The new resnets of a
down block come after its old ones with their last convolution at zero (a ``ResnetBlock2D`` then passes its input
through), and their skip outputs are copies of the last old one. In the decoder, each new resnet consumes one of those
copies: its last convolution is zero and its 1x1 shortcut takes the hidden state and drops the skip, so it too passes
its input through, and the old resnets meet the same skips as before.
"""

from typing import List

import torch

from ..flow_map import unwrap_model
from .utils import init_kwargs_from, match_device_and_dtype, zero_module


def _up_resnet_sources(layers: int, new_layers: int) -> List[int]:
    """For each resnet of a deepened up block, the index of the old up resnet it copies, or ``-1`` for a new one.

    Up block ``j`` consumes, last first, the skips of down block ``b = num_blocks - 1 - j`` and then one more (the
    downsampler of block ``b - 1``, or ``conv_in``). The deepened down block ends with ``new_layers - layers`` copies
    of its last old resnet's output, so in consumption order the first ``new_layers - layers + 1`` skips are equal:
    the first goes to old resnet 0 (which may change the channel count), the copies to the new pass-through
    resnets, and the rest to old resnets 1..layers as before.
    """
    return [0] + [-1] * (new_layers - layers) + list(range(1, layers + 1))


def deepen_unet(model, layers_per_block: int):
    """A copy of ``model`` (``UNet2DModel`` or a subclass such as ``F2D2UNet2DModel``) with ``layers_per_block``
    resnets per down block (and one more per up block), computing exactly the same function.

    Args:
        model: the network to deepen; its blocks must be ``DownBlock2D`` / ``UpBlock2D`` (no attention blocks).
        layers_per_block: the new depth, at least the model's own.
    """
    model = unwrap_model(model)
    config = dict(model.config)
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("deepen_unet needs one layers_per_block for every block")
    if layers_per_block < layers:
        raise ValueError(f"layers_per_block={layers_per_block} is shallower than the model's {layers}")
    kinds = set(config["down_block_types"]) | set(config["up_block_types"])
    if not kinds <= {"DownBlock2D", "UpBlock2D"}:
        raise ValueError(f"deepen_unet handles DownBlock2D / UpBlock2D blocks only, this model has {sorted(kinds)}")
    config["layers_per_block"] = layers_per_block
    deeper = match_device_and_dtype(type(model)(**init_kwargs_from(type(model), config)), model)
    deeper.train(model.training)
    if layers_per_block == layers:
        deeper.load_state_dict(model.state_dict())
        return deeper

    num_blocks = len(config["down_block_types"])
    old_state, new_state = model.state_dict(), deeper.state_dict()
    renamed = {}
    up_sources = _up_resnet_sources(layers, layers_per_block)
    for name, value in old_state.items():
        parts = name.split(".")
        if parts[0] == "up_blocks" and parts[2] == "resnets":
            old_index = int(parts[3])
            parts[3] = str(up_sources.index(old_index))
        renamed[".".join(parts)] = value
    for name, value in renamed.items():
        if name not in new_state or new_state[name].shape != value.shape:
            raise AssertionError(f"deepen_unet: no place for {name}")  # never: old resnets keep their shapes
        new_state[name] = value
    deeper.load_state_dict(new_state)

    with torch.no_grad():
        for block in range(num_blocks):
            for k in range(layers, layers_per_block):
                zero_module(deeper.down_blocks[block].resnets[k].conv2)
            for k, source in enumerate(up_sources):
                if source >= 0:
                    continue
                resnet = deeper.up_blocks[block].resnets[k]
                zero_module(resnet.conv2)
                # The input is cat(hidden, skip); keep the hidden channels, drop the skip.
                weight = torch.zeros_like(resnet.conv_shortcut.weight)
                channels = weight.shape[0]
                weight[:, :channels, 0, 0] = torch.eye(channels, dtype=weight.dtype, device=weight.device)
                resnet.conv_shortcut.weight.copy_(weight)
                resnet.conv_shortcut.bias.zero_()
    return deeper
