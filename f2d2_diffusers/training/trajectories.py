"""Teacher trajectories of the training set, for ``train_f2d2.py --trajectory_weight`` (``docs/method.md`` 5.3).

Computed once per output folder by the main process (the teacher's dopri5 ODE on up to ``--trajectory_samples``
training examples, ``--trajectory_draws`` dequantisation draws each for images), saved as
``<output_dir>/trajectories/teacher_paths.safetensors`` and reused on resume; every process then loads the file.
"""

import hashlib
import os
from typing import Optional

import torch

from ..dequantization import dequantize
from ..divergence import resolve_divergence_method
from ..trajectories import TeacherTrajectories, compute_teacher_trajectories
from .data import TrainingData

#: The grid the states are stored on: every segment of the uniform 1-, 2-, 4- and 8-step grids.
TRAJECTORY_GRID = tuple(k / 8 for k in range(9))
TRAJECTORY_FILE = os.path.join("trajectories", "teacher_paths.safetensors")


def _teacher_digest(teacher) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def training_trajectories(args, data: TrainingData, teacher, accelerator, seed: Optional[int] = None) -> TeacherTrajectories:
    """The cached teacher paths of this run's training data (computed on the main process when missing)."""
    path = os.path.join(args.output_dir, TRAJECTORY_FILE)
    count = min(len(data.dataset), args.trajectory_samples)
    draws = args.trajectory_draws if data.kind == "image" else 1
    num_dims = 1
    for size in data.sample_shape:
        num_dims *= size
    divergence = resolve_divergence_method(args.divergence, num_dims)
    expected = dict(teacher=_teacher_digest(teacher), examples=str(count), draws=str(draws), divergence=divergence)
    if accelerator.is_main_process and not _matches(path, expected):
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        examples = torch.stack([torch.as_tensor(data.dataset[i]) for i in range(count)])
        if data.kind == "image":
            model_space = torch.cat([dequantize(examples, data.num_levels, generator) for _ in range(draws)])
        else:
            model_space = examples.float()
        accelerator.print(f"teacher trajectories: {model_space.shape[0]} paths on the grid {list(TRAJECTORY_GRID)} "
                          f"({divergence} divergence), saved to {path}")
        paths = compute_teacher_trajectories(
            teacher, model_space.to(accelerator.device), TRAJECTORY_GRID, divergence=divergence, num_probes=1,
            generator=generator, metadata=expected, show_progress=True)
        paths.save(path)
    accelerator.wait_for_everyone()
    return TeacherTrajectories.load(path, expected_metadata=expected)


def _matches(path: str, expected: dict) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        TeacherTrajectories.load(path, expected_metadata=expected)
    except (ValueError, OSError):
        return False
    return True
