"""``FlowMatchingMLPModel``: a velocity network for vector data, called like a ``UNet2DModel``."""

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

from .modeling_outputs import FlowMatchingModelOutput
from .utils import explain_mismatched_checkpoint, timesteps_per_sample


class ResidualMLPBlock(nn.Module):
    """Pre-norm residual block whose hidden layer receives the time embedding."""

    def __init__(self, hidden_dim: int, embed_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.fc1 = nn.Linear(hidden_dim, hidden_dim)
        self.emb = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = F.silu(self.fc1(self.norm(h)) + self.emb(F.silu(emb)))
        return h + self.fc2(z)


class FlowMatchingMLPModel(ModelMixin, ConfigMixin):
    r"""
    Velocity ``v(x, sigma) = dx/dsigma`` for vectors of length ``sample_size``, trained by flow matching.

    ``forward(sample, timestep)`` mirrors [`UNet2DModel`]: ``timestep = 1000 * sigma`` (float, per sample or
    scalar), output ``.sample`` of shape ``(batch, sample_size)``.

    Parameters:
        sample_size (`int`): number of dimensions ``d`` of one sample.
        hidden_dim (`int`, defaults to 256): width of the residual trunk.
        num_layers (`int`, defaults to 4): number of residual blocks.
        time_embed_dim (`int`, defaults to 64): sinusoidal features of the timestep.
    """

    #: A velocity model, not a joint flow map (see :func:`f2d2_diffusers.flow_map.is_flow_map_model`).
    is_flow_map = False

    @register_to_config
    def __init__(self, sample_size: int = 2, hidden_dim: int = 256, num_layers: int = 4, time_embed_dim: int = 64):
        super().__init__()
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_embed_dim, hidden_dim)
        self.proj_in = nn.Linear(sample_size, hidden_dim)
        self.blocks = nn.ModuleList([ResidualMLPBlock(hidden_dim, hidden_dim) for _ in range(num_layers)])
        self.norm_out = nn.LayerNorm(hidden_dim)
        self.proj_out = nn.Linear(hidden_dim, sample_size)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        with explain_mismatched_checkpoint(cls, pretrained_model_name_or_path, kwargs.get("subfolder")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def _check_sample(self, sample: torch.Tensor) -> None:
        if sample.ndim != 2 or sample.shape[1] != self.config.sample_size:
            raise ValueError(f"expected a sample of shape (batch, {self.config.sample_size}), got {tuple(sample.shape)}")

    def _embed(self, value: torch.Tensor, embedding: nn.Module) -> torch.Tensor:
        return embedding(self.time_proj(value).to(dtype=self.dtype))

    def _trunk(self, sample: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(sample)
        for block in self.blocks:
            h = block(h, emb)
        return F.silu(self.norm_out(h))

    def forward(
        self, sample: torch.Tensor, timestep: Union[torch.Tensor, float], return_dict: bool = True
    ) -> Union[FlowMatchingModelOutput, Tuple[torch.Tensor]]:
        self._check_sample(sample)
        emb = self._embed(timesteps_per_sample(timestep, sample, "timestep"), self.time_embedding)
        velocity = self.proj_out(self._trunk(sample, emb))
        if not return_dict:
            return (velocity,)
        return FlowMatchingModelOutput(sample=velocity)
