"""What ``train_teacher.py`` and ``train_f2d2.py`` share: the command line, the data, Accelerate, checkpoints,
the training loop, the model card and the Hub upload.

The command line follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``
(``--dataset_name``, ``--train_data_dir``, ``--resolution``, ``--train_batch_size``, ``--lr_scheduler``,
``--use_ema``, ``--checkpointing_steps``, ``--resume_from_checkpoint`` ...), plus vector data
(``--train_data_file``) and the data sets embedded in ``f2d2_diffusers.data`` (``--dataset``).

Time convention everywhere (METHOD.md): ``sigma = 0`` is data, ``sigma = 1`` is noise, models receive
``timestep = 1000 * sigma``. Images live in [-1, 1]; discrete images are uniformly dequantised per batch.
"""

import argparse
import json
import logging
import math
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

TOY_CHOICES = ("checkerboard", "eight_gaussians", "two_moons", "rings")
EMBEDDED_DATASETS = ("digits",) + TOY_CHOICES
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
DIGITS_RESOLUTION = 8
DEFAULT_RESOLUTION = 64
DEFAULT_MAX_TRAIN_STEPS = 2000
CHECKPOINT_PREFIX = "checkpoint-"

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

logger = logging.getLogger("f2d2_training")


class TrainingError(Exception):
    """A problem with the user's input: reported as one clear line, never as a traceback."""


def run_main(main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run ``main(args)``; a :class:`TrainingError` ends the process with ``error: ...`` and exit status 2."""
    try:
        main(args)
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def build_parser(description: str, default_output_dir: str) -> argparse.ArgumentParser:
    """The arguments both scripts take. Each script adds its own, then calls :func:`parse_args`."""
    parser = argparse.ArgumentParser(description=description)
    data = parser.add_argument_group("data (give exactly one source)")
    data.add_argument("--dataset_name", type=str, default=None,
                      help="A Hugging Face Hub image dataset (needs the `datasets` package and internet).")
    data.add_argument("--dataset_config_name", type=str, default=None, help="Config of --dataset_name.")
    data.add_argument("--image_column", type=str, default=None,
                      help="Image column of --dataset_name (default: 'image', 'img' or the first image feature).")
    data.add_argument("--cache_dir", type=str, default=None, help="Where `datasets` caches downloads.")
    data.add_argument("--train_data_dir", type=str, default=None,
                      help="A folder of images (searched recursively; read with PIL).")
    data.add_argument("--train_data_file", type=str, default=None,
                      help="Vectors, one per row: a 2-D .npy array or a .csv of numbers (optional header row).")
    data.add_argument("--dataset", type=str, default=None, choices=EMBEDDED_DATASETS,
                      help="An embedded data set: 'digits' (scikit-learn 8x8 digits, 17 grey levels) or a 2-D toy.")
    data.add_argument("--num_toy_samples", type=int, default=20000, help="Training points drawn for a 2-D toy.")
    data.add_argument("--max_train_samples", type=int, default=None,
                      help="Keep only the first N training examples (debugging, quick runs).")
    data.add_argument("--resolution", type=int, default=None,
                      help=f"Image side after resizing (default: the model config's sample_size, else {DEFAULT_RESOLUTION}; "
                           "digits are always 8).")
    data.add_argument("--center_crop", action="store_true",
                      help="Center-crop images to --resolution (default: random crop), as in train_unconditional.py.")
    data.add_argument("--random_flip", action="store_true", help="Randomly flip images horizontally.")
    data.add_argument("--num_levels", type=int, default=None,
                      help="Grey levels of image data, for dequantisation and bits/dim: 256 for image folders and Hub "
                           "datasets (8-bit pixels are mapped onto this many levels), 17 for digits.")

    model = parser.add_argument_group("model")
    model.add_argument("--model_config_name_or_path", type=str, default=None,
                       help="A JSON file of model config kwargs, or a folder holding config.json (or unet/config.json).")

    out = parser.add_argument_group("output")
    out.add_argument("--output_dir", type=str, default=default_output_dir,
                     help="Where the final pipeline, the checkpoints and the logs are written.")
    out.add_argument("--push_to_hub", action="store_true", help="Upload the output folder to the Hub at the end.")
    out.add_argument("--hub_model_id", type=str, default=None, help="Hub repository (default: the output folder's name).")
    out.add_argument("--hub_token", type=str, default=None, help="Hub token (default: the logged-in user's).")
    out.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repository as private.")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    opt.add_argument("--dataloader_num_workers", type=int, default=0)
    opt.add_argument("--num_epochs", type=int, default=None,
                     help="Train this many epochs when --max_train_steps is not given.")
    opt.add_argument("--max_train_steps", type=int, default=None,
                     help=f"Optimiser steps (overrides --num_epochs; default {DEFAULT_MAX_TRAIN_STEPS}).")
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--learning_rate", type=float, default=1e-4)
    opt.add_argument("--lr_scheduler", type=str, default="cosine",
                     help="Any name diffusers.optimization.get_scheduler knows: linear, cosine, cosine_with_restarts, "
                          "polynomial, constant, constant_with_warmup, piecewise_constant.")
    opt.add_argument("--lr_warmup_steps", type=int, default=500)
    opt.add_argument("--adam_beta1", type=float, default=0.95)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--adam_weight_decay", type=float, default=1e-6)
    opt.add_argument("--adam_epsilon", type=float, default=1e-8)
    opt.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping (0 or less: none).")
    opt.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights; the output uses it.")
    opt.add_argument("--ema_inv_gamma", type=float, default=1.0)
    opt.add_argument("--ema_power", type=float, default=3 / 4)
    opt.add_argument("--ema_max_decay", type=float, default=0.9999)
    opt.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                     help="Default: what `accelerate config` / `accelerate launch` says.")
    opt.add_argument("--seed", type=int, default=None, help="Seed for the model's initialisation and the training noise.")

    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--checkpointing_steps", type=int, default=500,
                     help="Save the training state in output_dir/checkpoint-N every N steps (0: never).")
    run.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most this many checkpoints.")
    run.add_argument("--resume_from_checkpoint", type=str, default=None,
                     help="A checkpoint-N folder, or 'latest' for the newest one in output_dir.")
    run.add_argument("--logger", type=str, default="none", choices=["none", "tensorboard", "wandb"],
                     help="Experiment tracker (needs the tracker's package). Losses also go to "
                          "output_dir/logs/train_log.jsonl.")
    run.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to output_dir.")
    run.add_argument("--local_rank", type=int, default=-1, help="Set by the launcher; LOCAL_RANK in the environment wins.")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse and check the common arguments; problems end with ``parser.error`` (usage and one line)."""
    args = parser.parse_args(argv)
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1:
        args.local_rank = env_local_rank

    sources = [name for name in ("dataset_name", "train_data_dir", "train_data_file", "dataset") if getattr(args, name)]
    if not sources:
        parser.error(
            "no training data given: pass --dataset (digits, checkerboard, eight_gaussians, two_moons, rings), "
            "--train_data_dir (a folder of images), --train_data_file (.npy/.csv vectors) or --dataset_name (Hub)"
        )
    if len(sources) > 1:
        parser.error(f"give exactly one data source, got {', '.join('--' + s for s in sources)}")
    positive = ["train_batch_size", "gradient_accumulation_steps", "num_toy_samples"]
    for name in positive + ["max_train_steps", "num_epochs", "resolution", "max_train_samples", "checkpoints_total_limit"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    for name in ("checkpointing_steps", "lr_warmup_steps", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.num_levels is not None and not 2 <= args.num_levels <= 256:
        parser.error(f"--num_levels must lie in [2, 256], got {args.num_levels}")
    if args.dataset == "digits":
        if args.num_levels not in (None, 17):
            parser.error(f"digits have 17 grey levels; got --num_levels {args.num_levels}")
        if args.resolution not in (None, DIGITS_RESOLUTION):
            parser.error(f"digits are 8x8 images; got --resolution {args.resolution}")
    if args.num_levels is not None and (args.train_data_file or args.dataset in TOY_CHOICES):
        parser.error("--num_levels applies to image data only; vectors are continuous")

    from diffusers.optimization import SchedulerType

    names = [s.value for s in SchedulerType]
    if args.lr_scheduler not in names:
        parser.error(f"--lr_scheduler must be one of {', '.join(names)}; got {args.lr_scheduler!r}")
    if args.logger == "tensorboard" and not _importable("tensorboard") and not _importable("tensorboardX"):
        parser.error("--logger tensorboard needs the `tensorboard` package (pip install tensorboard)")
    if args.logger == "wandb" and not _importable("wandb"):
        parser.error("--logger wandb needs the `wandb` package (pip install wandb)")
    if args.dataset_name and not _importable("datasets"):
        parser.error("--dataset_name needs the `datasets` package (pip install datasets); or use --train_data_dir")
    if args.push_to_hub and not _importable("huggingface_hub"):
        parser.error("--push_to_hub needs the `huggingface_hub` package")
    if args.resume_from_checkpoint is not None and args.resume_from_checkpoint != "latest":
        if not os.path.isdir(args.resume_from_checkpoint):
            parser.error(f"--resume_from_checkpoint: no checkpoint folder at {args.resume_from_checkpoint}")
    return args


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def training_command(script: str) -> str:
    """The command that launched this run, for the model card."""
    return "accelerate launch " + shlex.join([f"training/{script}"] + sys.argv[1:])


# --------------------------------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------------------------------


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
    import inspect

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
    merged = dict(DEFAULT_MLP_CONFIG)
    merged.update(config)
    d = data.sample_shape[0]
    if merged.get("sample_size") is None:
        merged["sample_size"] = d
    if merged["sample_size"] != d:
        raise TrainingError(f"the model config has sample_size={merged['sample_size']} but the vectors have d={d}")
    return merged


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The training set and how to turn one of its batches into model-space data.

    ``kind``: ``"image"`` (batches of integer levels ``(B, C, H, W)``, uint8, dequantised per batch into [-1, 1])
    or ``"vector"`` (batches of float vectors ``(B, d)``, used as they are).
    """

    dataset: torch.utils.data.Dataset
    kind: str
    sample_shape: Tuple[int, ...]
    num_levels: Optional[int]
    description: str
    card_datasets: List[str] = field(default_factory=list)

    def to_model_space(self, batch: torch.Tensor) -> torch.Tensor:
        from f2d2_diffusers import dequantize

        if self.kind == "image":
            return dequantize(batch, self.num_levels)
        return batch.float()


class LevelsTensorDataset(torch.utils.data.Dataset):
    """Images already held as integer levels ``(N, C, H, W)``; optional random horizontal flip."""

    def __init__(self, levels: torch.Tensor, random_flip: bool = False):
        self.levels = levels
        self.random_flip = random_flip

    def __len__(self):
        return self.levels.shape[0]

    def __getitem__(self, index):
        image = self.levels[index]
        if self.random_flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class VectorDataset(torch.utils.data.Dataset):
    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def __len__(self):
        return self.vectors.shape[0]

    def __getitem__(self, index):
        return self.vectors[index]


class PILImageDataset(torch.utils.data.Dataset):
    """Images read lazily with PIL and made into integer levels, like ``train_unconditional.py``'s transforms
    (resize the shorter side, center or random crop, random flip) without torchvision."""

    def __init__(self, get_image: Callable[[int], "object"], length: int, channels: int, resolution: int,
                 num_levels: int, center_crop: bool, random_flip: bool):
        self.get_image = get_image
        self.length = length
        self.mode = "L" if channels == 1 else "RGB"
        self.resolution = resolution
        self.num_levels = num_levels
        self.center_crop = center_crop
        self.random_flip = random_flip

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        from PIL import Image

        image = self.get_image(index).convert(self.mode)
        res = self.resolution
        width, height = image.size
        if min(width, height) != res:
            scale = res / min(width, height)
            new_size = (max(res, round(width * scale)), max(res, round(height * scale)))
            image = image.resize(new_size, resample=Image.BILINEAR)
            width, height = image.size
        if self.center_crop:
            left, top = (width - res) // 2, (height - res) // 2
        else:
            left = int(torch.randint(0, width - res + 1, ()))
            top = int(torch.randint(0, height - res + 1, ()))
        image = image.crop((left, top, left + res, top + res))
        array = np.asarray(image, dtype=np.uint8).reshape(res, res, -1).transpose(2, 0, 1)
        if self.num_levels != 256:
            array = np.rint(array.astype(np.float64) * (self.num_levels - 1) / 255.0).astype(np.uint8)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.random_flip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        return tensor


def _is_grayscale(image) -> bool:
    return image.mode in ("1", "L", "LA", "I", "I;16", "F")


def _image_folder_files(folder: str) -> List[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise TrainingError(f"--train_data_dir: no folder at {folder}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise TrainingError(f"--train_data_dir: {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise TrainingError(f"cannot read image {path}: {err}") from None
    return image


def load_training_data(args, channels: Optional[int] = None, resolution: Optional[int] = None) -> TrainingData:
    """The training set named on the command line.

    ``channels``/``resolution``: what the model (config or teacher) needs, ``None`` to infer from the data.
    """
    from f2d2_diffusers.data import load_digits_levels, load_toy, load_vectors

    limit = args.max_train_samples
    if args.dataset == "digits":
        if channels not in (None, 1):
            raise TrainingError(f"digits have 1 channel; the model wants {channels}")
        if resolution not in (None, DIGITS_RESOLUTION):
            raise TrainingError(f"digits are 8x8; the model wants {resolution}x{resolution}")
        levels = load_digits_levels("train")[:limit]
        return TrainingData(
            LevelsTensorDataset(levels, args.random_flip), "image", tuple(levels.shape[1:]), 17,
            f"scikit-learn 8x8 digits, train split ({levels.shape[0]} images, 17 grey levels)", ["sklearn-digits"],
        )
    if args.dataset in TOY_CHOICES:
        if channels is not None:
            raise TrainingError(f"{args.dataset} is 2-D vector data; the model is an image model")
        vectors = load_toy(args.dataset, "train", args.num_toy_samples)[:limit]
        return TrainingData(VectorDataset(vectors), "vector", (2,), None,
                            f"2-D toy '{args.dataset}', train split ({vectors.shape[0]} points)")
    if args.train_data_file:
        if channels is not None:
            raise TrainingError("--train_data_file holds vectors; the model is an image model")
        try:
            vectors = load_vectors(args.train_data_file)
        except (FileNotFoundError, ValueError) as err:
            raise TrainingError(f"--train_data_file: {err}") from None
        vectors = vectors[:limit]
        return TrainingData(VectorDataset(vectors), "vector", (vectors.shape[1],), None,
                            f"vectors from {Path(args.train_data_file).name} ({vectors.shape[0]} x {vectors.shape[1]})")

    num_levels = args.num_levels or 256
    resolution = resolution or args.resolution or DEFAULT_RESOLUTION
    if args.train_data_dir:
        files = _image_folder_files(args.train_data_dir)[:limit]
        if channels is None:
            grey = True
            for path in files:
                image = _open_image(path)
                grey = grey and _is_grayscale(image)
                if not grey:
                    break
            channels = 1 if grey else 3
        get_image = lambda i: _open_image(files[i])  # noqa: E731
        length = len(files)
        description = f"image folder {Path(args.train_data_dir).name} ({length} images)"
        card_datasets = []
    else:
        hf_dataset, column = _load_hub_dataset(args)
        if limit is not None:
            hf_dataset = hf_dataset.select(range(min(limit, len(hf_dataset))))
        if channels is None:
            probe = [hf_dataset[i][column] for i in range(min(len(hf_dataset), 100))]
            channels = 1 if all(_is_grayscale(image) for image in probe) else 3
        get_image = lambda i: hf_dataset[i][column]  # noqa: E731
        length = len(hf_dataset)
        description = f"Hub dataset {args.dataset_name} ({length} images)"
        card_datasets = [args.dataset_name]
    dataset = PILImageDataset(get_image, length, channels, resolution, num_levels, args.center_crop, args.random_flip)
    description += f", {resolution}x{resolution}, {channels} channel{'s' if channels > 1 else ''}, {num_levels} grey levels"
    return TrainingData(dataset, "image", (channels, resolution, resolution), num_levels, description, card_datasets)


def calibration_data(args, data: TrainingData, num_samples: int, seed: int = 0) -> Tuple[torch.Tensor, str]:
    """Up to ``num_samples`` model-space points to calibrate on, and what they are.

    Embedded data sets have test splits (digits: images 1500 on; toys: the test seed); other data have none here, so
    the first training examples are used, dequantised with a seeded draw.
    """
    from f2d2_diffusers import dequantize
    from f2d2_diffusers.data import DIGITS_NUM_LEVELS, load_digits_levels, load_toy

    generator = torch.Generator().manual_seed(seed)
    if args.dataset == "digits":
        levels = load_digits_levels("test")[:num_samples]
        return dequantize(levels, DIGITS_NUM_LEVELS, generator), "digits test images (images 1500 on)"
    if args.dataset in TOY_CHOICES:
        return load_toy(args.dataset, "test", num_samples), f"'{args.dataset}' test points (fresh seed)"
    count = min(num_samples, len(data.dataset))
    batch = torch.stack([torch.as_tensor(data.dataset[i]) for i in range(count)])
    if data.kind == "image":
        return dequantize(batch, data.num_levels, generator), "training images (this data has no held-out split here)"
    return batch.float(), "training vectors (this data has no held-out split here)"


def _load_hub_dataset(args):
    import datasets

    try:
        dataset = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, split="train")
    except Exception as err:  # noqa: BLE001
        raise TrainingError(f"--dataset_name: cannot load {args.dataset_name!r} ({type(err).__name__}: {err})") from None
    column = args.image_column
    if column is None:
        image_columns = [n for n, f in dataset.features.items() if isinstance(f, datasets.Image)]
        for name in ("image", "img"):
            if name in dataset.column_names:
                column = name
                break
        else:
            column = image_columns[0] if image_columns else None
    if column is None or column not in dataset.column_names:
        raise TrainingError(
            f"--dataset_name: no image column {'named ' + repr(column) + ' ' if column else ''}in {args.dataset_name} "
            f"(columns: {dataset.column_names}); pass --image_column"
        )
    if len(dataset) == 0:
        raise TrainingError(f"--dataset_name: {args.dataset_name} has no training examples")
    return dataset, column


# --------------------------------------------------------------------------------------------------------------
# Accelerate
# --------------------------------------------------------------------------------------------------------------


def _no_accelerator_available() -> bool:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return not accel.is_available()
    return not torch.cuda.is_available()


def create_accelerator(args):
    """An ``Accelerator`` set up like ``train_unconditional.py``'s, plus multi-process CPU runs.

    ``accelerate launch --multi_gpu --num_processes N`` on a machine with no GPU starts N processes that Accelerate
    would each run alone; here they join one gloo process group (MULTI_CPU) instead.
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = multi_process and _no_accelerator_available()
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=7200))],
        cpu=cpu,
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        level=logging.INFO if accelerator.is_local_main_process else logging.ERROR,
    )
    import diffusers

    if accelerator.is_local_main_process:
        diffusers.utils.logging.set_verbosity_warning()
    else:
        diffusers.utils.logging.set_verbosity_error()
    return accelerator


def seed_everything(args, accelerator, device_specific: bool) -> None:
    if args.seed is not None:
        from accelerate.utils import set_seed

        set_seed(args.seed, device_specific=device_specific)


def create_ema(args, model):
    """An ``EMAModel`` of ``model`` (``train_unconditional.py``'s warm-up settings), or ``None`` without ``--use_ema``."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
        power=args.ema_power, model_cls=type(model), model_config=model.config,
    )


def register_checkpoint_hooks(accelerator, model_cls, ema_model) -> None:
    """Make ``accelerator.save_state``/``load_state`` write and read diffusers folders inside ``checkpoint-N``:
    ``unet/`` (the model, loadable with ``model_cls.from_pretrained``) and ``unet_ema/`` (with ``--use_ema``)."""

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_model is not None:
                ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, "unet"))
        # Accelerate must not save the same weights a second time.
        while weights:
            weights.pop()

    def load_model_hook(models, input_dir):
        if ema_model is not None:
            load_ema(ema_model, os.path.join(input_dir, "unet_ema"), model_cls, accelerator.unwrap_model(models[0]))
            ema_model.to(accelerator.device)
        while models:
            model = models.pop()
            loaded = model_cls.from_pretrained(input_dir, subfolder="unet")
            target = accelerator.unwrap_model(model)
            target.register_to_config(**loaded.config)
            target.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


EMA_STATE_KEYS = ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")


def load_ema(ema_model, folder: str, model_cls, model) -> None:
    """Load the ``unet_ema/`` folder ``EMAModel.save_pretrained`` wrote into ``ema_model``.

    Same result as ``EMAModel.from_pretrained`` without its deprecated ``from_config(path)`` call and its warning
    about the EMA keys in the config: the weights are read by name and ordered like ``model.parameters()``.
    """
    config = model_cls.load_config(folder)
    weights_file = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(weights_file):
        from safetensors.torch import load_file

        state = load_file(weights_file)
    else:
        state = model_cls.from_pretrained(folder).state_dict()
    names = [name for name, _ in model.named_parameters()]
    missing = [name for name in names if name not in state]
    if missing:
        raise TrainingError(f"{folder} lacks EMA weights for {missing[:3]}; it does not match the model")
    ema_state = {key: config[key] for key in EMA_STATE_KEYS if key in config}
    ema_state["shadow_params"] = [state[name] for name in names]
    ema_model.load_state_dict(ema_state)


def list_checkpoints(output_dir: str) -> List[str]:
    """``checkpoint-N`` folder names in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [d for d in os.listdir(output_dir) if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", d)]
    return sorted(names, key=lambda d: int(d[len(CHECKPOINT_PREFIX):]))


def save_checkpoint(args, accelerator, global_step: int) -> str:
    """Prune old checkpoints to make room (``--checkpoints_total_limit``), then save ``checkpoint-{global_step}``."""
    if accelerator.is_main_process and args.checkpoints_total_limit is not None:
        checkpoints = list_checkpoints(args.output_dir)
        if len(checkpoints) >= args.checkpoints_total_limit:
            to_remove = checkpoints[: len(checkpoints) - args.checkpoints_total_limit + 1]
            logger.info(f"removing {len(to_remove)} old checkpoint(s): {', '.join(to_remove)}")
            for name in to_remove:
                shutil.rmtree(os.path.join(args.output_dir, name))
    accelerator.wait_for_everyone()
    save_path = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    accelerator.save_state(save_path)
    logger.info(f"saved state to {save_path}")
    return save_path


def resolve_resume_path(args) -> Optional[str]:
    """The checkpoint to resume from, or ``None`` to start afresh (``latest`` with no checkpoint yet)."""
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(args.output_dir)
        if not checkpoints:
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {args.output_dir}; starting a new run")
            return None
        return os.path.join(args.output_dir, checkpoints[-1])
    path = args.resume_from_checkpoint.rstrip("/")
    if not re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", os.path.basename(path)):
        raise TrainingError(f"--resume_from_checkpoint: {path} is not a {CHECKPOINT_PREFIX}N folder")
    if not os.path.isdir(os.path.join(path, "unet")):
        raise TrainingError(f"--resume_from_checkpoint: {path} holds no unet/ folder; was it written by these scripts?")
    return path


# --------------------------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    global_step: int
    last_logs: Dict[str, float]
    batch_description: str = ""
    #: Wall time of this run's training loop (a resumed run counts from its resume).
    seconds: float = 0.0
    device_description: str = ""


def train(
    args,
    accelerator,
    model,
    data: TrainingData,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], Tuple[torch.Tensor, Dict[str, float]]],
    ema_model=None,
    tracker_name: str = "f2d2",
) -> TrainingResult:
    """Optimise ``model`` on ``data`` with ``loss_fn(prepared_model, model_space_batch) -> (loss, logs)``.

    AdamW, ``get_scheduler``, ``accelerator.accumulate``, gradient clipping, EMA, ``checkpoint-N`` folders with
    pruning, resuming (``--resume_from_checkpoint``) with the batches of the interrupted epoch skipped,
    ``accelerator.log`` and a progress bar on the main process.
    """
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )
    dataloader = torch.utils.data.DataLoader(
        data.dataset, batch_size=args.train_batch_size, shuffle=True, num_workers=args.dataloader_num_workers,
    )
    if len(data.dataset) == 0:
        raise TrainingError("the training set is empty")
    # Steps per epoch as each process will see them after `prepare` shards the data.
    batches_per_process = math.ceil(len(dataloader) / accelerator.num_processes)
    updates_per_epoch = max(1, math.ceil(batches_per_process / args.gradient_accumulation_steps))
    if args.max_train_steps is not None:
        max_train_steps = args.max_train_steps
    elif args.num_epochs is not None:
        max_train_steps = args.num_epochs * updates_per_epoch
    else:
        max_train_steps = DEFAULT_MAX_TRAIN_STEPS
    # The prepared scheduler steps once per process for every optimiser step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    if ema_model is not None:
        ema_model.to(accelerator.device)
    updates_per_epoch = max(1, math.ceil(len(dataloader) / args.gradient_accumulation_steps))
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        tracker_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(tracker_name, config=tracker_config)

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Data = {data.description}")
    logger.info(f"  Num examples = {len(data.dataset)}")
    logger.info(f"  Num epochs = {num_epochs}")
    logger.info(f"  Batch size per process = {args.train_batch_size}")
    logger.info(f"  Total batch size (parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimisation steps = {max_train_steps}")

    global_step, first_epoch, resume_batches = 0, 0, 0
    resume_path = resolve_resume_path(args)
    if resume_path is not None:
        accelerator.print(f"resuming from {resume_path}")
        try:
            accelerator.load_state(resume_path)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise TrainingError(f"cannot resume from {resume_path}: {type(err).__name__}: {err}") from None
        global_step = int(os.path.basename(resume_path)[len(CHECKPOINT_PREFIX):])
        first_epoch = global_step // updates_per_epoch
        resume_batches = (global_step % updates_per_epoch) * args.gradient_accumulation_steps

    log_file = None
    if accelerator.is_main_process:
        os.makedirs(os.path.join(args.output_dir, "logs"), exist_ok=True)
        log_file = open(os.path.join(args.output_dir, "logs", "train_log.jsonl"), "a")

    start_time = time.perf_counter()
    progress_bar = tqdm(range(max_train_steps), initial=global_step, disable=not accelerator.is_local_main_process,
                        desc="Steps")
    logs: Dict[str, float] = {}
    try:
        for epoch in range(first_epoch, num_epochs):
            if global_step >= max_train_steps:
                break
            model.train()
            loader = dataloader
            if epoch == first_epoch and resume_batches > 0:
                loader = accelerator.skip_first_batches(dataloader, resume_batches)
            for batch in loader:
                clean = data.to_model_space(batch.to(accelerator.device))
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, extra = loss_fn(model, clean)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"the loss became {loss.item()} at step {global_step}; lower --learning_rate")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    if ema_model is not None:
                        ema_model.step(model.parameters())
                    progress_bar.update(1)
                    global_step += 1
                    logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step,
                            "epoch": epoch, "elapsed_seconds": round(time.perf_counter() - start_time, 2), **extra}
                    if ema_model is not None:
                        logs["ema_decay"] = ema_model.cur_decay_value
                    progress_bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2g}")
                    accelerator.log(logs, step=global_step)
                    if log_file is not None:
                        log_file.write(json.dumps(logs) + "\n")
                        log_file.flush()
                    if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
                        save_checkpoint(args, accelerator, global_step)
                    if global_step >= max_train_steps:
                        break
    finally:
        progress_bar.close()
        if log_file is not None:
            log_file.close()
    accelerator.wait_for_everyone()
    batch_description = (
        f"{args.train_batch_size} per process x {accelerator.num_processes} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation step(s) = {total_batch_size}"
    )
    device = accelerator.device.type
    device_description = f"{accelerator.num_processes} process(es) on {device}" + (
        f", {torch.get_num_threads()} CPU thread(s) each" if device == "cpu" else ""
    )
    return TrainingResult(global_step=global_step, last_logs=logs, batch_description=batch_description,
                          seconds=time.perf_counter() - start_time, device_description=device_description)


class ema_weights:
    """Context manager: the unwrapped model holds the EMA weights inside, its own weights again after."""

    def __init__(self, model, ema_model):
        self.model, self.ema_model = model, ema_model

    def __enter__(self):
        if self.ema_model is not None:
            self.ema_model.store(self.model.parameters())
            self.ema_model.copy_to(self.model.parameters())
        return self.model

    def __exit__(self, *exc):
        if self.ema_model is not None:
            self.ema_model.restore(self.model.parameters())
        return False


# --------------------------------------------------------------------------------------------------------------
# Model card and Hub
# --------------------------------------------------------------------------------------------------------------

def push_to_hub(args, commit_message: str) -> None:
    """Upload ``output_dir`` (without checkpoints and logs) to ``--hub_model_id``; only called with ``--push_to_hub``."""
    from f2d2_diffusers.hub import push_checkpoint

    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    try:
        repo_id = push_checkpoint(args.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                                  commit_message=commit_message)
    except Exception as err:  # noqa: BLE001  (network, auth: report, the trained model stays on disk)
        raise TrainingError(f"--push_to_hub: upload to {repo_id} failed ({type(err).__name__}: {err}); "
                            f"the model is saved in {args.output_dir}") from None
    logger.info(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
