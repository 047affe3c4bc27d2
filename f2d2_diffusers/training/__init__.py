"""What ``training/train_teacher.py`` and ``training/train_f2d2.py`` share, like diffusers' ``training_utils`` but
split by concern:

- :mod:`.cli`: the common command line (``build_parser``, ``parse_args``), ``TrainingError`` and ``run_main``;
- :mod:`.configs`: default model configs, ``--model_config_name_or_path``, building a model that fits the data;
- :mod:`.data`: the training set (embedded, image folder, Hub dataset or vector file) and calibration points;
- :mod:`.loop`: Accelerate, seeding, EMA and the training loop; the process-count warning; calibration to the trackers;
- :mod:`.sample_grids`: the sample grids of ``--save_images_steps`` (PNG files and trackers);
- :mod:`.checkpointing`: ``checkpoint-N`` folders (save hooks, completeness, pruning, resuming);
- :mod:`f2d2_diffusers.atomic` (shared with the pipelines' loading layout): crash-safe writes, for checkpoints and the final model;
- :mod:`.model_card`: the repository's ``model_card.md`` template filled in, and its calibration section;
- :mod:`.hub`: ``--push_to_hub``.

Time convention everywhere (``docs/method.md`` section 1): ``sigma = 0`` is data, ``sigma = 1`` is noise, models
receive ``timestep = 1000 * sigma``.
"""

from ..atomic import remove_unfinished, staged_output
from .checkpointing import (
    CHECKPOINT_PREFIX, MANIFEST_NAME, StepCounter, check_resume_settings, checkpoint_problem, checkpoint_step,
    list_checkpoints, load_ema, register_checkpoint_hooks, resolve_resume_path, save_checkpoint,
)
from .cli import (
    DEFAULT_MAX_TRAIN_STEPS, DEFAULT_RESOLUTION, DIGITS_RESOLUTION, TrainingError, build_parser, parse_args, run_main,
    training_command, uses_image_data,
)
from .configs import (
    DEFAULT_MLP_CONFIG, DEFAULT_UNET_CONFIG, build_model, image_model_config, load_model_config, resolve_image_geometry,
    vector_model_config,
)
from .data import (
    IMAGE_EXTENSIONS, LevelsTensorDataset, PILImageDataset, TrainingData, VectorDataset, calibration_data,
    generalization_data, load_training_data,
)
from .hub import push_to_hub
from .loop import (
    EpochShuffle, TrainingResult, calibration_metrics, create_accelerator, create_ema, ema_weights, log_calibration,
    requested_num_processes, seed_everything, train, warn_if_fewer_processes_than_requested,
)
from .sample_grids import SampleGrid, f2d2_grid, grid_path, save_sample_grid, teacher_grid
from .model_card import calibration_markdown, hub_base_model, render_model_card, update_calibration

__all__ = [
    "SampleGrid", "calibration_metrics", "f2d2_grid", "grid_path", "log_calibration", "requested_num_processes",
    "save_sample_grid", "teacher_grid", "warn_if_fewer_processes_than_requested",
    "CHECKPOINT_PREFIX", "DEFAULT_MAX_TRAIN_STEPS", "DEFAULT_MLP_CONFIG", "DEFAULT_RESOLUTION", "DEFAULT_UNET_CONFIG",
    "DIGITS_RESOLUTION", "EpochShuffle", "IMAGE_EXTENSIONS", "LevelsTensorDataset", "MANIFEST_NAME", "PILImageDataset",
    "StepCounter",
    "TrainingData", "TrainingError", "TrainingResult", "VectorDataset", "build_model", "build_parser",
    "calibration_data", "calibration_markdown", "checkpoint_problem", "checkpoint_step", "create_accelerator",
    "create_ema", "ema_weights", "generalization_data", "hub_base_model", "image_model_config", "list_checkpoints", "load_ema",
    "load_model_config", "load_training_data", "parse_args", "push_to_hub", "register_checkpoint_hooks",
    "remove_unfinished", "render_model_card", "resolve_image_geometry", "resolve_resume_path", "run_main",
    "check_resume_settings",
    "save_checkpoint", "seed_everything", "staged_output", "train", "training_command", "update_calibration",
    "uses_image_data", "vector_model_config",
]
