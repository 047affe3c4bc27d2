"""Model configs: the defaults, the user's ``--model_config_name_or_path``, and their fit to the data."""

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from .cli import TrainingError

if TYPE_CHECKING:
    from .data import TrainingData

#: Default UNet, small enough for a CPU (``sample_size`` and channels come from the data).
DEFAULT_UNET_CONFIG = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
#: Default vector model (``sample_size`` = the vectors' length ``d``).
DEFAULT_MLP_CONFIG = dict(hidden_dim=256, num_layers=4)


def load_model_config(name_or_path: str) -> dict:
    """Model config kwargs from a JSON file, a folder (``config.json`` or ``unet/config.json``) or a Hub repo."""
    path = Path(name_or_path)
    if path.is_dir():
        for candidate in (path / "config.json", path / "unet" / "config.json"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise TrainingError(f"--model_config_name_or_path: {name_or_path} holds no config.json or unet/config.json")
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise TrainingError(f"--model_config_name_or_path: {path} is not valid JSON ({err})") from None
    else:
        try:
            from diffusers import UNet2DModel

            config = UNet2DModel.load_config(name_or_path)
        except Exception as err:  # noqa: BLE001  (any loading failure is the user's input)
            raise TrainingError(
                f"--model_config_name_or_path: {name_or_path} is not a JSON file, a folder or a reachable Hub repo ({err})"
            ) from None
    if not isinstance(config, dict):
        raise TrainingError(
            f"--model_config_name_or_path: expected a JSON object of model kwargs, got {type(config).__name__}"
        )
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_model(model_cls, config: dict):
    """``model_cls(**config)`` with a clear error for unknown or bad kwargs."""
    accepted = set(inspect.signature(model_cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise TrainingError(f"{model_cls.__name__} does not take config keys {unknown}")
    try:
        return model_cls(**config)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise TrainingError(f"cannot build {model_cls.__name__} from the model config: {err}") from None


def resolve_image_geometry(args, config: dict) -> Tuple[Optional[int], Optional[int]]:
    """``(channels, resolution)`` the model config fixes (``None`` where it says nothing), checked against the CLI."""
    channels = config.get("in_channels")
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise TrainingError(f"only square images are supported, the model config has sample_size={size}")
        size = size[0]
    if size is not None and args.resolution is not None and size != args.resolution:
        raise TrainingError(f"--resolution {args.resolution} does not match the model's sample_size {size}")
    if channels is not None and channels not in (1, 3):
        raise TrainingError(f"image data has 1 or 3 channels; the model config has in_channels={channels}")
    return channels, size


def image_model_config(config: dict, data: "TrainingData") -> dict:
    """An image model config: defaults, then the user's config, with ``sample_size``/channels set from the data."""
    channels, height, width = data.sample_shape
    merged = dict(DEFAULT_UNET_CONFIG)
    merged.update(config)
    for key, value in (("sample_size", height), ("in_channels", channels), ("out_channels", channels)):
        if merged.get(key) is None:
            merged[key] = value
    if merged.get("sample_size") != height or merged["in_channels"] != channels or merged["out_channels"] != channels:
        raise TrainingError(
            f"the model config (sample_size={merged.get('sample_size')}, in_channels={merged['in_channels']}, "
            f"out_channels={merged['out_channels']}) does not match the data, images of shape {data.sample_shape}"
        )
    if merged.get("time_embedding_type", "positional") != "positional":
        raise TrainingError(
            "F2D2 needs time_embedding_type='positional' (timesteps are 1000 * sigma, floats, and the student adds a "
            f"signed step); the model config has {merged['time_embedding_type']!r}"
        )
    return merged


def vector_model_config(config: dict, data: "TrainingData") -> dict:
    """A vector model config: defaults, then the user's config, with ``sample_size`` set from the data."""
    merged = dict(DEFAULT_MLP_CONFIG)
    merged.update(config)
    d = data.sample_shape[0]
    if merged.get("sample_size") is None:
        merged["sample_size"] = d
    if merged["sample_size"] != d:
        raise TrainingError(f"the model config has sample_size={merged['sample_size']} but the vectors have d={d}")
    return merged
