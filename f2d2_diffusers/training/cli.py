"""The command line both training scripts share, and how they report a user's mistake.

It follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` (``--dataset_name``,
``--train_data_dir``, ``--resolution``, ``--train_batch_size``, ``--lr_scheduler``, ``--use_ema``,
``--checkpointing_steps``, ``--resume_from_checkpoint`` ...), plus vector data (``--train_data_file``) and the data
sets embedded in ``f2d2_diffusers.data`` (``--dataset``). Each script adds its own argument group to
:func:`build_parser`'s parser, then calls :func:`parse_args`.
"""

import argparse
import importlib.util
import os
import shlex
import sys
from typing import Callable, Optional, Sequence

from ..data import EMBEDDED_DATASETS, TOY_DATASETS

#: Side of the scikit-learn digits, which cannot be resized.
DIGITS_RESOLUTION = 8
#: Image side when neither ``--resolution`` nor the model config gives one.
DEFAULT_RESOLUTION = 64
#: Optimiser steps when neither ``--max_train_steps`` nor ``--num_epochs`` is given.
DEFAULT_MAX_TRAIN_STEPS = 2000
#: ``--save_images_steps`` default: as often as the default ``--checkpointing_steps``.
DEFAULT_SAVE_IMAGES_STEPS = 500
#: The trackers ``--logger`` offers, and the package each one needs.
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


class TrainingError(Exception):
    """A problem with the user's input: reported as one clear line, never as a traceback."""


def run_main(main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run ``main(args)``; a :class:`TrainingError` ends the process with ``error: ...`` and exit status 2."""
    try:
        main(args)
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


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
                     help="A checkpoint-N folder, or 'latest' for the newest complete one in output_dir.")
    run.add_argument("--logger", type=str, default=None, choices=["none", "tensorboard", "wandb"],
                     help="Experiment tracker, as in diffusers' examples: losses, sample grids (--save_images_steps) "
                          "and the end-of-training calibration. Default: 'tensorboard' (a dependency of this package; "
                          "'none' if it is not installed). Losses also go to output_dir/logs/train_log.jsonl.")
    run.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to output_dir.")
    run.add_argument("--save_images_steps", type=int, default=DEFAULT_SAVE_IMAGES_STEPS,
                     help="Every N optimisation steps write a sample grid to output_dir/samples/step-NNNNNN.png and log it "
                          "to the tracker (EMA weights with --use_ema; fixed noise, so grids compare across steps): the "
                          "teacher's Euler samples, or F2D2's 1/2/4-step samples with each one's log-likelihood. Images "
                          "and 2-D vectors only. 0: never. Like train_unconditional.py's --save_images_epochs, in steps.")
    run.add_argument("--eval_batch_size", type=int, default=8,
                     help="Images in the --save_images_steps grids (per row for F2D2, in rows of 8 for the teacher; "
                          "2-D scatter plots draw 1000 points).")
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
    if args.num_levels is not None and not uses_image_data(args):
        parser.error("--num_levels applies to image data only; vectors are continuous")

    from diffusers.optimization import SchedulerType

    names = [s.value for s in SchedulerType]
    if args.lr_scheduler not in names:
        parser.error(f"--lr_scheduler must be one of {', '.join(names)}; got {args.lr_scheduler!r}")
    if args.logger is None:
        # The default follows diffusers' examples; without the package (a trimmed install) training still runs.
        args.logger = "tensorboard" if tracker_installed("tensorboard") else "none"
        if args.logger == "none":
            print("warning: the `tensorboard` package is not installed, so nothing goes to a tracker "
                  "(pip install tensorboard, or pass --logger none to silence this)", file=sys.stderr, flush=True)
    elif args.logger != "none" and not tracker_installed(args.logger):
        package = TRACKER_PACKAGES[args.logger][0]
        parser.error(f"--logger {args.logger} needs the `{package}` package, which is not installed "
                     f"(pip install {package}; or --logger none)")
    if args.save_images_steps < 0:
        parser.error(f"--save_images_steps must be >= 0, got {args.save_images_steps}")
    if args.eval_batch_size < 1:
        parser.error(f"--eval_batch_size must be a positive integer, got {args.eval_batch_size}")
    if args.dataset_name and not _importable("datasets"):
        parser.error("--dataset_name needs the `datasets` package (pip install datasets); or use --train_data_dir")
    if args.push_to_hub and not _importable("huggingface_hub"):
        parser.error("--push_to_hub needs the `huggingface_hub` package")
    if args.resume_from_checkpoint is not None and args.resume_from_checkpoint != "latest":
        if not os.path.isdir(args.resume_from_checkpoint):
            parser.error(f"--resume_from_checkpoint: no checkpoint folder at {args.resume_from_checkpoint}")
    return args


def uses_image_data(args: argparse.Namespace) -> bool:
    """Whether the data source on the command line gives images (else vectors: a toy or ``--train_data_file``)."""
    return not (args.train_data_file or args.dataset in TOY_DATASETS)


def tracker_installed(logger: str) -> bool:
    """Whether the package ``--logger logger`` needs is importable."""
    return any(_importable(package) for package in TRACKER_PACKAGES[logger])


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def training_command(script: str) -> str:
    """The command that launched this run, for the model card."""
    return "accelerate launch " + shlex.join([f"training/{script}"] + sys.argv[1:])
