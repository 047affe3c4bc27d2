"""``F2D2UNet2DModel``: a ``UNet2DModel`` with a signed-step input and an average-divergence head."""

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel  # noqa: F401  (diffusers finds the loading class by name here)
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding

from .attention import ForwardADAttnProcessor
from .modeling_outputs import F2D2ModelOutput
from .utils import (
    check_teacher, copy_teacher_weights, explain_mismatched_checkpoint, init_kwargs_from, match_device_and_dtype,
    timesteps_per_sample, zero_module,
)


class F2D2UNet2DModel(UNet2DModel):
    r"""
    Joint flow map on images: average velocity ``u(x, sigma, h)`` and average divergence ``D(x, sigma, h)``.

    Takes every [`UNet2DModel`] argument plus the ones below. The signed step ``h`` enters as ``step = 1000 * h``
    through the parent's sinusoidal projection and its own [`TimestepEmbedding`], whose output layer starts at
    zero: a student made by :meth:`from_teacher` starts out equal to its teacher at every ``h``.

    The divergence head reads the last decoder feature map (the trunk's richest features), pools it to
    ``divergence_head_resolution`` squared, adds the time/step embedding and predicts the divergence per
    dimension, which ``forward`` multiplies by ``d = C*H*W``: its raw output stays O(1) at any resolution.

    Parameters:
        divergence_head_channels (`int`, defaults to 16): channels of the head's convolution.
        divergence_head_resolution (`int`, defaults to 8): side of the pooled feature map fed to the head's MLP.
        divergence_head_hidden_dim (`int`, defaults to 256): width of the head's MLP.
        step_embedding_scale (`float`, defaults to 1): multiplies ``step`` before the sinusoidal projection; below 1
            it lowers the embedding's highest frequency in ``h`` (MeanFlow-F2D2's JVP targets contain ``d/dh``).

    Attention blocks use [`~f2d2_diffusers.models.attention.ForwardADAttnProcessor`], so ``torch.func.jvp`` runs
    through the model (MeanFlow-F2D2).
    """

    #: Marks a joint flow map (``forward(sample, timestep, step)``) for :func:`f2d2_diffusers.flow_map.is_flow_map_model`.
    is_flow_map = True

    @register_to_config
    def __init__(
        self,
        sample_size: Optional[Union[int, Tuple[int, int]]] = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: Optional[int] = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: Tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        mid_block_type: Optional[str] = "UNetMidBlock2D",
        up_block_types: Tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: Tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: Optional[int] = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: Optional[int] = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: Optional[str] = None,
        num_class_embeds: Optional[int] = None,
        num_train_timesteps: Optional[int] = None,
        divergence_head_channels: int = 16,
        divergence_head_resolution: int = 8,
        divergence_head_hidden_dim: int = 256,
        step_embedding_scale: float = 1.0,
    ):
        if not step_embedding_scale > 0:
            raise ValueError(f"step_embedding_scale must be > 0 (it scales the step input), got {step_embedding_scale}")
        if time_embedding_type != "positional":
            # Fourier features divide by t (log t) and learned ones index integers: neither takes a signed float step.
            raise ValueError(
                f"F2D2UNet2DModel needs time_embedding_type='positional' for its signed step input, got {time_embedding_type!r}"
            )
        if out_channels != in_channels:
            raise ValueError(f"a velocity field needs out_channels == in_channels, got {out_channels} and {in_channels}")
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            center_input_sample=center_input_sample, time_embedding_type=time_embedding_type,
            time_embedding_dim=time_embedding_dim, freq_shift=freq_shift, flip_sin_to_cos=flip_sin_to_cos,
            down_block_types=down_block_types, mid_block_type=mid_block_type, up_block_types=up_block_types,
            block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            mid_block_scale_factor=mid_block_scale_factor, downsample_padding=downsample_padding,
            downsample_type=downsample_type, upsample_type=upsample_type, dropout=dropout, act_fn=act_fn,
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
            attn_norm_num_groups=attn_norm_num_groups, norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift, add_attention=add_attention,
            class_embed_type=class_embed_type, num_class_embeds=num_class_embeds,
            num_train_timesteps=num_train_timesteps,
        )
        base_channels = block_out_channels[0]
        time_embed_dim = time_embedding_dim or base_channels * 4
        self.step_embedding = TimestepEmbedding(base_channels, time_embed_dim)
        zero_module(self.step_embedding.linear_2)

        self.divergence_norm = nn.GroupNorm(norm_num_groups, base_channels, eps=norm_eps)
        self.divergence_conv = nn.Conv2d(base_channels, divergence_head_channels, kernel_size=3, padding=1)
        self.divergence_in = nn.Linear(divergence_head_channels * divergence_head_resolution**2, divergence_head_hidden_dim)
        self.divergence_emb = nn.Linear(time_embed_dim, divergence_head_hidden_dim)
        self.divergence_out = zero_module(nn.Linear(divergence_head_hidden_dim, 1))
        # MeanFlow-F2D2 differentiates the map forward-mode; diffusers' default SDPA processor cannot be.
        for module in self.modules():
            if isinstance(module, Attention):
                module.set_processor(ForwardADAttnProcessor())

    @classmethod
    def from_teacher(cls, teacher: UNet2DModel, **head_config) -> "F2D2UNet2DModel":
        """A student whose trunk is a copy of ``teacher``'s; step embedding and divergence head start at zero.

        The student is built with its constructor (not ``from_pretrained``), so the new layers are properly
        initialised rather than left on the ``meta`` device. ``teacher`` must be a loaded [`UNet2DModel`] (not a path,
        a vector model or an F2D2 student). ``head_config`` sets the new layers' arguments, and ``dropout``.

        The student's dropout is 0 whatever the teacher's: the teacher's dropout regularised its own training, the
        student regresses on the teacher's eval-mode function, and dropout in the student noises the bootstrap
        targets it computes itself (digits: -0.48 against -0.10 bits/dim at 1 step after 3,000 steps,
        ``benchmarks/results/ablations_digits.md``).
        """
        check_teacher(cls, teacher, UNet2DModel, "for vectors use F2D2MLPModel.from_teacher(FlowMatchingMLPModel)")
        student = cls(**{**init_kwargs_from(cls, teacher.config), "dropout": 0.0, **head_config})
        copy_teacher_weights(student, teacher, ("step_embedding.", "divergence_"))
        return match_device_and_dtype(student, teacher)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        init_dict, unused_kwargs, hidden_dict = super().extract_init_dict(config_dict, **kwargs)
        # A config with one of in_channels/out_channels but not the other would build the missing one at its default
        # (3), and __init__ would then blame the one that is there.
        given = [k for k in ("in_channels", "out_channels") if k in init_dict]
        if len(given) == 1:
            missing = "out_channels" if given[0] == "in_channels" else "in_channels"
            raise ValueError(
                f"the model config has no {missing}: add \"{missing}\": {init_dict[given[0]]} to config.json (a velocity "
                f"field has as many output channels as input channels, and {given[0]}={init_dict[given[0]]})"
            )
        return init_dict, unused_kwargs, hidden_dict

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        with explain_mismatched_checkpoint(cls, pretrained_model_name_or_path, kwargs.get("subfolder")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def _divergence_head(self, features: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        res = self.config.divergence_head_resolution
        h = self.divergence_conv(F.silu(self.divergence_norm(features)))
        h = F.adaptive_avg_pool2d(F.silu(h), (res, res)).flatten(1)
        h = F.silu(self.divergence_in(h) + self.divergence_emb(F.silu(emb)))
        return self.divergence_out(h).squeeze(-1)

    # Adapted from diffusers' `UNet2DModel.forward` (diffusers 0.42.1, models/unets/unet_2d.py). Differences:
    # - a `step` argument (1000 * h), embedded by `self.step_embedding` and added to the time embedding;
    # - float timesteps are kept as floats (`timesteps_per_sample`), where the parent casts a Python float to long;
    # - the last decoder feature map also feeds the divergence head, and the output is (velocity, divergence);
    # - no division by the timestep for `time_embedding_type="fourier"` (only "positional" is accepted);
    # - the input's shape is checked.
    # Everything else (centring, class embedding, down/mid/up blocks, skip blocks, post-processing) must stay identical:
    # tests/models/test_unet_f2d2.py compares outputs with UNet2DModel over several configurations and fingerprints
    # UNet2DModel.forward's code, so a change in diffusers fails there first.
    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float],
        step: Union[torch.Tensor, float] = 0.0,
        class_labels: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ) -> Union[F2D2ModelOutput, Tuple[torch.Tensor, torch.Tensor]]:
        r"""
        Args:
            sample (`torch.Tensor`): ``x`` at ``sigma``, shape ``(batch, in_channels, height, width)``.
            timestep (`torch.Tensor` or `float`): ``1000 * sigma``, a number or one float per sample.
            step (`torch.Tensor` or `float`): ``1000 * h``, signed, a number or one float per sample.
            class_labels (`torch.Tensor`, *optional*): as in [`UNet2DModel`].
            return_dict (`bool`): return an [`F2D2ModelOutput`] instead of ``(sample, divergence)``.
        """
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected a sample of shape (batch, {self.config.in_channels}, height, width), got {tuple(sample.shape)}"
            )
        # Each down block but the last halves the size and the up path doubles it back: other sizes fail deep inside.
        factor = 2 ** (len(self.down_blocks) - 1)
        if sample.shape[2] % factor or sample.shape[3] % factor:
            raise ValueError(
                f"sample height and width must be multiples of {factor} for this UNet ({len(self.down_blocks)} down "
                f"blocks), got {sample.shape[2]}x{sample.shape[3]}"
            )
        timesteps = timesteps_per_sample(timestep, sample, "timestep")
        steps = timesteps_per_sample(step, sample, "step")
        x = 2 * sample - 1.0 if self.config.center_input_sample else sample

        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=self.dtype))
        emb = emb + self.step_embedding(self.time_proj(steps * self.config.step_embedding_scale).to(dtype=self.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when doing class conditioning")
            if self.config.class_embed_type == "timestep":
                class_labels = self.time_proj(class_labels)
            emb = emb + self.class_embedding(class_labels).to(dtype=self.dtype)
        elif class_labels is not None:
            raise ValueError("class_embedding needs to be initialized in order to use class conditioning")

        skip_sample = x
        h = self.conv_in(x)
        down_block_res_samples = (h,)
        for downsample_block in self.down_blocks:
            if hasattr(downsample_block, "skip_conv"):
                h, res_samples, skip_sample = downsample_block(hidden_states=h, temb=emb, skip_sample=skip_sample)
            else:
                h, res_samples = downsample_block(hidden_states=h, temb=emb)
            down_block_res_samples += res_samples
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
        skip_sample = None
        for upsample_block in self.up_blocks:
            res_samples = down_block_res_samples[-len(upsample_block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(upsample_block.resnets)]
            if hasattr(upsample_block, "skip_conv"):
                h, skip_sample = upsample_block(h, res_samples, emb, skip_sample)
            else:
                h = upsample_block(h, res_samples, emb)

        velocity = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        if skip_sample is not None:
            velocity = velocity + skip_sample
        num_dims = sample[0].numel()
        divergence = self._divergence_head(h, emb) * num_dims

        if not return_dict:
            return (velocity, divergence)
        return F2D2ModelOutput(sample=velocity, divergence=divergence)
