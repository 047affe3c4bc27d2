"""Teacher trajectories of the training set, for ``train_f2d2.py --trajectory_weight`` (``docs/method.md`` 5.3).

Computed once per output folder by the main process (the teacher's dopri5 ODE on up to ``--trajectory_samples``
training examples, ``--trajectory_draws`` dequantisation draws each for images), saved as
``<output_dir>/trajectories/teacher_paths.safetensors`` and reused on resume; every process then loads the file.
"""

import math
import os
from typing import Optional

import torch

from ..dequantization import dequantize
from ..divergence import resolve_divergence_method
from ..trajectories import TeacherTrajectories, load_or_compute_teacher_trajectories, teacher_digest
from .data import TrainingData

#: The grid the states are stored on: every segment of the uniform 1-, 2-, 4- and 8-step grids.
TRAJECTORY_GRID = tuple(k / 8 for k in range(9))
TRAJECTORY_FILE = os.path.join("trajectories", "teacher_paths.safetensors")


def training_trajectories(args, data: TrainingData, teacher, accelerator, seed: Optional[int] = None) -> TeacherTrajectories:
    """The cached teacher paths of this run's training data (computed on the main process when missing)."""
    path = os.path.join(args.output_dir, TRAJECTORY_FILE)
    count = min(len(data.dataset), args.trajectory_samples)
    draws = args.trajectory_draws if data.kind == "image" else 1
    divergence = resolve_divergence_method(args.divergence, math.prod(data.sample_shape))
    expected = dict(teacher=teacher_digest(teacher), examples=str(count), draws=str(draws), divergence=divergence)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)

    def model_space_examples() -> torch.Tensor:
        examples = torch.stack([torch.as_tensor(data.dataset[i]) for i in range(count)])
        accelerator.print(f"teacher trajectories: {count * draws} paths on the grid {list(TRAJECTORY_GRID)} "
                          f"({divergence} divergence), saved to {path}")
        if data.kind == "image":
            return torch.cat([dequantize(examples, data.num_levels, generator) for _ in range(draws)])
        return examples.float()

    paths = None
    if accelerator.is_main_process:
        paths = load_or_compute_teacher_trajectories(
            path, teacher, lambda: model_space_examples().to(accelerator.device), TRAJECTORY_GRID, expected,
            divergence=divergence, num_probes=1, generator=generator, show_progress=True)
    accelerator.wait_for_everyone()
    return paths if paths is not None else TeacherTrajectories.load(path, expected_metadata=expected)
