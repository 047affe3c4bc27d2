"""What both F2D2 pipelines share: components, the data's grey levels, the shape of one sample and the checks on
inputs and results."""

from typing import Optional, Tuple, Union

import torch
from diffusers import DiffusionPipeline, ModelMixin, UNet2DModel
from diffusers.utils import logging

from ..dequantization import OVERFLOW_HINT, NonFiniteError, check_finite, check_num_levels, standard_normal_log_prob
from ..flow_map import integrate_flow_map, is_flow_map_model, unwrap_model
from ..models import F2D2MLPModel, F2D2UNet2DModel, FlowMatchingMLPModel, sample_shape
from ..schedulers import F2D2Scheduler
from ..schedulers.interop import FLOW_MAP_SCHEDULERS, as_f2d2_scheduler
from .diffusers_loading import PackageLoadingMixin

logger = logging.get_logger(__name__)

#: ``num_levels`` default: ``None`` (continuous) for vector models, 256 (8-bit images) for image models.
NUM_LEVELS_AUTO = "auto"
# Set by `extract_init_dict` when `from_pretrained` reads a model_index.json without `num_levels`, so that `__init__`
# can say that it assumes 256 levels instead of doing so silently.
_NUM_LEVELS_NOT_IN_MODEL_INDEX = "auto (model_index.json has no num_levels)"


def model_kind(model) -> Optional[str]:
    """``"image"`` (a ``UNet2DModel``, or ``in_channels`` in the config), ``"vector"`` (a ``FlowMatchingMLPModel``, or
    a ``sample_size`` without ``in_channels``) or ``None`` when the model does not tell."""
    model = unwrap_model(model)
    if isinstance(model, FlowMatchingMLPModel):
        return "vector"
    if isinstance(model, UNet2DModel):
        return "image"
    config = getattr(model, "config", None) or {}
    if "in_channels" in config:
        return "image"
    if config.get("sample_size") is not None:
        return "vector"
    return None


def check_flow_map(unet) -> None:
    """A ``TypeError`` that says what to do when ``unet`` is not a joint flow map (e.g. a flow-matching teacher)."""
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"unet must be an F2D2 model (a torch.nn.Module), got {type(unet).__name__}")
    if not is_flow_map_model(unet):
        student = "F2D2MLPModel" if model_kind(unet) == "vector" else "F2D2UNet2DModel"
        raise TypeError(
            f"unet is a {type(unwrap_model(unet)).__name__}, a velocity model (a flow-matching teacher), not a joint "
            "flow map: F2D2 pipelines call forward(sample, timestep, step) for the average velocity and divergence. "
            f"Make a student with {student}.from_teacher(teacher) and distil it (training/train_f2d2.py); the teacher "
            "itself samples with diffusers' FlowMatchEulerDiscreteScheduler."
        )


class F2D2BasePipeline(PackageLoadingMixin, DiffusionPipeline):
    r"""
    Components: ``unet``, any ``ModelMixin`` with ``forward(sample, timestep, step, return_dict)`` returning the
    average velocity (``.sample``) and average divergence (``.divergence``): [`F2D2UNet2DModel`] for images,
    [`F2D2MLPModel`] for vectors; ``scheduler``, an [`F2D2Scheduler`]. A plain velocity model (a teacher
    ``UNet2DModel`` or ``FlowMatchingMLPModel``) is refused with a ``TypeError``.

    ``num_levels`` (saved in ``model_index.json``) is the number of grey levels of the data the model was trained
    on, used for bits per dimension: 256 for 8-bit images, 17 for scikit-learn's digits, ``None`` for continuous
    data. The default, ``"auto"``, depends on the model:

    - vector models (``F2D2MLPModel``): ``None``, continuous; an integer ``num_levels`` is refused (``ValueError``);
    - image models: 256, 8-bit images. A checkpoint whose ``model_index.json`` has no ``num_levels`` also gets 256,
      with a warning that names the assumption (pass ``num_levels=`` to ``from_pretrained`` to set it).
    """

    model_cpu_offload_seq = "unet"

    # diffusers' from_pipe hands a model over only when its exact type is named in this annotation.
    def __init__(
        self,
        unet: Union[F2D2UNet2DModel, F2D2MLPModel, ModelMixin],
        scheduler: Union[FLOW_MAP_SCHEDULERS],  # F2D2Scheduler, or diffusers' FlowMapEulerDiscreteScheduler
        num_levels: Union[int, str, None] = NUM_LEVELS_AUTO,
    ):
        super().__init__()
        check_flow_map(unet)
        num_levels = self._default_num_levels(unet, num_levels)
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(num_levels=num_levels)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        init_dict, unused_kwargs, hidden_dict = super().extract_init_dict(config_dict, **kwargs)
        # Only from_pretrained reads model_index.json through here: mark a missing num_levels for __init__.
        init_dict.setdefault("num_levels", _NUM_LEVELS_NOT_IN_MODEL_INDEX)
        return init_dict, unused_kwargs, hidden_dict

    @staticmethod
    def _default_num_levels(unet, num_levels) -> Optional[int]:
        kind = model_kind(unet)
        if num_levels in (NUM_LEVELS_AUTO, _NUM_LEVELS_NOT_IN_MODEL_INDEX):
            if kind == "vector":
                return None
            if num_levels == _NUM_LEVELS_NOT_IN_MODEL_INDEX or kind is None:
                where = "model_index.json has no num_levels" if kind else f"{type(unet).__name__} is not a known image model"
                logger.warning(
                    f"{where}: assuming 8-bit images, num_levels=256, for bits_per_dim. Pass num_levels= to the "
                    "pipeline (or to from_pretrained), e.g. 17 for scikit-learn's digits or None for continuous data."
                )
            return 256
        if isinstance(num_levels, str):
            raise ValueError(f"num_levels must be an integer >= 2, None or 'auto', got {num_levels!r}")
        return F2D2BasePipeline._check_levels_for(unet, check_num_levels(num_levels))

    @staticmethod
    def _check_levels_for(unet, num_levels: Optional[int]) -> Optional[int]:
        if num_levels is not None and model_kind(unet) == "vector":
            raise ValueError(
                f"num_levels={num_levels} was given for a vector model ({type(unwrap_model(unet)).__name__}): vector "
                "data are continuous, so there are no grey levels to score; use num_levels=None"
            )
        return num_levels

    def _model_sample_shape(self) -> Optional[Tuple[int, ...]]:
        """Shape of one sample from the model's config: ``(C, H, W)`` for image models (``in_channels`` and
        ``sample_size``), ``(d,)`` for vector models (``sample_size``), ``None`` when the config does not say."""
        return sample_shape(self.unet.config)

    def _resolve_num_levels(self, num_levels: Optional[int]) -> Optional[int]:
        if num_levels is None:
            return self.config.num_levels
        return self._check_levels_for(self.unet, check_num_levels(num_levels, allow_none=False))

    def _check_batch(self, batch: torch.Tensor, name: str) -> None:
        """``batch`` (an input) must be ``(batch, *sample_shape)``, non-empty, with the sample shape the model's
        config gives (``in_channels`` and ``sample_size``): a UNet runs at other sizes, but not as it was trained."""
        if batch.ndim < 2:
            raise ValueError(f"{name} must have shape (batch, *sample_shape), got {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            raise ValueError(f"{name} is empty: its batch has no samples (shape {tuple(batch.shape)})")
        shape = self._model_sample_shape()
        if shape is None:
            if batch[0].numel() == 0:
                raise ValueError(f"{name} has empty samples (shape {tuple(batch.shape)})")
            return
        if tuple(batch.shape[1:]) != shape:
            config = self.unet.config
            says = f"sample_size={config['sample_size']}" + (
                f", in_channels={config['in_channels']}" if "in_channels" in config else ""
            )
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, shape))}) as the model's config says ({says}), "
                f"got {tuple(batch.shape)}"
            )

    def _integrate(self, scheduler: F2D2Scheduler, sample: torch.Tensor, name: str, query_step_sign: float = 1.0):
        """:func:`integrate_flow_map` along ``scheduler``'s grid with a progress bar. A NaN or infinite value on the
        way (the network overflowing on an input far outside its range) is an error about the input ``name``."""
        try:
            with self.progress_bar(total=scheduler.num_inference_steps) as progress_bar:
                return integrate_flow_map(self.unet, scheduler, sample, progress_bar, query_step_sign)
        except NonFiniteError as err:
            raise NonFiniteError(f"{name} led to NaN or infinite values in the flow map ({err}){OVERFLOW_HINT}") from None

    def _encode(self, sample: torch.Tensor, num_inference_steps, sigmas, name: str, evaluation: str = "bidirectional"):
        """``(log_prob, latents, nfe)`` of model-space ``sample`` on the likelihood grid (``docs/method.md`` 6):
        ``log p(x0) = log N(x_K) + sum_k h_k D_k``. ``evaluation="paper"`` steps the sampling map backwards, on the
        sampling grid."""
        scheduler = self._scheduler_for_call(num_inference_steps, sigmas, "likelihood",
                                             sampling_grid=evaluation == "paper")
        sign = 1.0 if evaluation == "bidirectional" else -1.0
        latents, delta_log_prob, nfe = self._integrate(scheduler, sample, name, sign)
        # delta_log_prob = log p_1(x_K) - log p_0(x_0), so log p_0(x_0) = log N(x_K) - delta_log_prob.
        log_prob = standard_normal_log_prob(latents.float()) - delta_log_prob
        self._check_result(latents, log_prob, name)
        return log_prob, latents, nfe

    @staticmethod
    def _check_result(sample: torch.Tensor, log_prob: torch.Tensor, name: str) -> None:
        """A NaN or infinite end point or log-density is an error naming the input ``name``, never a number."""
        values = torch.cat([sample.reshape(sample.shape[0], -1).float(), log_prob.reshape(-1, 1).float()], dim=1)
        check_finite(values, f"the result computed from {name}", OVERFLOW_HINT)

    def _scheduler_for_call(self, num_inference_steps, sigmas, direction: str,
                            sampling_grid: bool = False) -> F2D2Scheduler:
        """A copy of the scheduler with this call's grid: calls from several threads never share grid state.
        ``sampling_grid``: a ``"likelihood"`` grid with the sampling grids' shift (the points of the sampling steps,
        in reverse), for stepping the sampling map backwards."""
        scheduler = as_f2d2_scheduler(self.scheduler)  # a copy; diffusers' FlowMapEulerDiscreteScheduler as an F2D2Scheduler
        if sampling_grid and scheduler.config.get("likelihood_shift") is not None:
            scheduler = F2D2Scheduler.from_config(scheduler.config, likelihood_shift=None)
        # With custom sigmas the grid sets the number of steps (as in diffusers' retrieve_timesteps).
        steps = (1 if num_inference_steps is None else num_inference_steps) if sigmas is None else num_inference_steps
        scheduler.set_timesteps(steps, device=self._execution_device, sigmas=sigmas, direction=direction)
        return scheduler

    @staticmethod
    def _check_steps(num_inference_steps, sigmas, name: str = "num_inference_steps") -> None:
        if num_inference_steps is None:
            return
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"{name} must be a positive integer, got {num_inference_steps!r}")
