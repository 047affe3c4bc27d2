"""``F2D2MLPModel``: the joint flow map for vector data."""

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding

from .mlp_flow_matching import FlowMatchingMLPModel
from .modeling_outputs import F2D2ModelOutput
from .utils import check_teacher, copy_teacher_weights, init_kwargs_from, match_device_and_dtype, timesteps_per_sample, zero_module


class F2D2MLPModel(FlowMatchingMLPModel):
    r"""
    Joint flow map on vectors: a [`FlowMatchingMLPModel`] trunk plus a signed-step embedding (output layer
    zero-initialised) and a divergence head that predicts the average divergence per dimension from the trunk's
    features; ``forward`` returns it multiplied by ``d``.

    ``forward(sample, timestep, step)`` with ``timestep = 1000 * sigma`` and ``step = 1000 * h``.

    Parameters:
        sample_size, hidden_dim, num_layers, time_embed_dim: as in [`FlowMatchingMLPModel`].
        divergence_hidden_dim (`int`, defaults to 256): width of the divergence head.
        step_embedding_scale (`float`, defaults to 1): multiplies ``step`` before the sinusoidal projection; below 1
            it lowers the embedding's highest frequency in ``h`` (MeanFlow-F2D2's JVP targets contain ``d/dh``).
    """

    #: Marks a joint flow map (``forward(sample, timestep, step)``) for :func:`f2d2_diffusers.flow_map.is_flow_map_model`.
    is_flow_map = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 2,
        hidden_dim: int = 256,
        num_layers: int = 4,
        time_embed_dim: int = 64,
        divergence_hidden_dim: int = 256,
        step_embedding_scale: float = 1.0,
    ):
        if not step_embedding_scale > 0:
            raise ValueError(f"step_embedding_scale must be > 0 (it scales the step input), got {step_embedding_scale}")
        super().__init__(sample_size=sample_size, hidden_dim=hidden_dim, num_layers=num_layers, time_embed_dim=time_embed_dim)
        self.step_embedding = TimestepEmbedding(time_embed_dim, hidden_dim)
        zero_module(self.step_embedding.linear_2)
        self.divergence_in = nn.Linear(hidden_dim, divergence_hidden_dim)
        self.divergence_emb = nn.Linear(hidden_dim, divergence_hidden_dim)
        self.divergence_out = zero_module(nn.Linear(divergence_hidden_dim, 1))

    @classmethod
    def from_teacher(cls, teacher: FlowMatchingMLPModel, **head_config) -> "F2D2MLPModel":
        """A student whose trunk copies ``teacher``; the step embedding and divergence head start at zero.

        ``teacher`` must be a loaded [`FlowMatchingMLPModel`] (not a path, an image model or an F2D2 student).
        """
        check_teacher(cls, teacher, FlowMatchingMLPModel, "for images use F2D2UNet2DModel.from_teacher(UNet2DModel)")
        student = cls(**init_kwargs_from(cls, teacher.config), **head_config)
        copy_teacher_weights(student, teacher, ("step_embedding.", "divergence_"))
        return match_device_and_dtype(student, teacher)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float],
        step: Union[torch.Tensor, float] = 0.0,
        return_dict: bool = True,
    ) -> Union[F2D2ModelOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """``sample``: ``(batch, sample_size)``; ``timestep``/``step``: numbers or one float per sample."""
        self._check_sample(sample)
        emb = self._embed(timesteps_per_sample(timestep, sample, "timestep"), self.time_embedding)
        steps = timesteps_per_sample(step, sample, "step") * self.config.step_embedding_scale
        emb = emb + self._embed(steps, self.step_embedding)
        features = self._trunk(sample, emb)
        velocity = self.proj_out(features)
        h = F.silu(self.divergence_in(features) + self.divergence_emb(F.silu(emb)))
        divergence = self.divergence_out(h).squeeze(-1) * sample.shape[1]
        if not return_dict:
            return (velocity, divergence)
        return F2D2ModelOutput(sample=velocity, divergence=divergence)
