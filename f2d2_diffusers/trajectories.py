"""Teacher ODE trajectories on a grid: the states and divergence integrals that few-step grids visit.

One solve of the augmented ODE (``docs/method.md`` section 2) from ``sigma = 0`` to ``1`` gives, at each grid point
``sigma_k``, the teacher's state ``x_k`` and the cumulative divergence integral ``I_k = int_0^sigma_k div v``. They
serve two ends: a cached reference for calibration (exact divergence, ``log p(x_0) = log N(x_K) + I_K``) and
direct supervision of the joint map on the segments inference uses (:func:`~f2d2_diffusers.objectives.trajectory_f2d2_loss`).
Saved as safetensors, with what they were computed from in the metadata, so a cache is reused only when it matches.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file

from .dequantization import standard_normal_log_prob
from .reference_likelihood import reference_log_likelihood


@dataclass
class TeacherTrajectories:
    """
    Args:
        sigmas (`torch.Tensor`): the grid, shape ``(K + 1,)``, increasing from 0 to 1.
        states (`torch.Tensor`): the teacher's states at the grid points, shape ``(N, K + 1, *dims)``; ``states[:, 0]``
            is the (dequantised) data.
        integrals (`torch.Tensor`): ``int_0^sigma_k div v`` along each path, shape ``(N, K + 1)``, nats.
        metadata (`dict`): how they were computed (teacher, data, solver, divergence), strings only.
    """

    sigmas: torch.Tensor
    states: torch.Tensor
    integrals: torch.Tensor
    metadata: Dict[str, str]

    @property
    def log_prob(self) -> torch.Tensor:
        """The teacher's ``log p(x_0)`` of each path's start, ``(N,)`` nats (model space, continuous)."""
        return standard_normal_log_prob(self.states[:, -1]) + self.integrals[:, -1]

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        save_file({"sigmas": self.sigmas.contiguous(), "states": self.states.contiguous(),
                   "integrals": self.integrals.contiguous()}, tmp, metadata=self.metadata)
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated cache behind

    @classmethod
    def load(cls, path: str, expected_metadata: Optional[Dict[str, str]] = None) -> "TeacherTrajectories":
        """Load ``path``; with ``expected_metadata`` raise ``ValueError`` when the cache was made differently."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
        if expected_metadata is not None:
            wrong = {k: (metadata.get(k), v) for k, v in expected_metadata.items() if metadata.get(k) != v}
            if wrong:
                raise ValueError(f"{path} was computed with other settings (cached, wanted): {wrong}")
        tensors = load_file(path)
        return cls(tensors["sigmas"], tensors["states"], tensors["integrals"], metadata)


def compute_teacher_trajectories(
    teacher,
    data: torch.Tensor,
    sigmas: Sequence[float],
    batch_size: int = 256,
    divergence: str = "exact",
    num_probes: int = 1,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    generator: Optional[torch.Generator] = None,
    metadata: Optional[Dict[str, str]] = None,
    show_progress: bool = True,
) -> TeacherTrajectories:
    """Solve the teacher's augmented ODE (dopri5) for ``data`` (model space, ``(N, *dims)``) in batches.

    Hutchinson integrals (``divergence="hutchinson"``) are unbiased but noisy per path: fine as regression targets,
    not as a per-sample reference.
    """
    from tqdm.auto import tqdm

    states, integrals = [], []
    for start in tqdm(range(0, data.shape[0], batch_size), desc="teacher trajectories", disable=not show_progress):
        out = reference_log_likelihood(teacher, data[start:start + batch_size], divergence=divergence,
                                       num_probes=num_probes, rtol=rtol, atol=atol, sigmas=sigmas, generator=generator)
        states.append(out.trajectory.transpose(0, 1).float())
        integrals.append(out.divergence_integrals.transpose(0, 1).float())
    info = dict(divergence=divergence, num_probes=str(num_probes), rtol=str(rtol), atol=str(atol),
                num_paths=str(data.shape[0]), sigmas=json.dumps([round(float(s), 6) for s in sigmas]))
    info.update(metadata or {})
    return TeacherTrajectories(torch.as_tensor(list(sigmas), dtype=torch.float32), torch.cat(states),
                               torch.cat(integrals), info)


def teacher_digest(model) -> str:
    """A short hash of ``model``'s weights: the key that ties a trajectory cache to the teacher that made it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_compute_teacher_trajectories(
    path: str,
    teacher,
    data: Union[torch.Tensor, Callable[[], torch.Tensor]],
    sigmas: Sequence[float],
    metadata: Dict[str, str],
    **solver_kwargs,
) -> TeacherTrajectories:
    """The cache at ``path`` when its ``metadata`` matches; otherwise solve (see :func:`compute_teacher_trajectories`,
    ``solver_kwargs``) and save. ``data`` may be a callable, so a cache hit does not build the data at all."""
    if os.path.isfile(path):
        try:
            return TeacherTrajectories.load(path, expected_metadata=metadata)
        except (ValueError, OSError):
            pass  # made by another teacher or with other settings (or unreadable): recompute it
    data = data() if callable(data) else data
    paths = compute_teacher_trajectories(teacher, data, sigmas, metadata=metadata, **solver_kwargs)
    paths.save(path)
    return paths
