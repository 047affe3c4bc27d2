"""What both F2D2 pipelines share: components, the data's grey levels and the shape of one sample."""

from typing import Optional, Tuple, Union

from diffusers import DiffusionPipeline, ModelMixin

from ..models import F2D2MLPModel, F2D2UNet2DModel, sample_shape
from ..schedulers import F2D2Scheduler


class F2D2BasePipeline(DiffusionPipeline):
    r"""
    Components: ``unet``, any ``ModelMixin`` with ``forward(sample, timestep, step, return_dict)`` returning the
    average velocity (``.sample``) and average divergence (``.divergence``): [`F2D2UNet2DModel`] for images,
    [`F2D2MLPModel`] for vectors; ``scheduler``, an [`F2D2Scheduler`].

    ``num_levels`` (saved in ``model_index.json``) is the number of grey levels of the data the model was trained
    on, used for bits per dimension: 256 for 8-bit images, 17 for scikit-learn's digits, ``None`` for continuous
    data (vectors).
    """

    model_cpu_offload_seq = "unet"

    # diffusers' from_pipe hands a model over only when its exact type is named in this annotation.
    def __init__(
        self,
        unet: Union[F2D2UNet2DModel, F2D2MLPModel, ModelMixin],
        scheduler: F2D2Scheduler,
        num_levels: Optional[int] = 256,
    ):
        super().__init__()
        if num_levels is not None and (isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2):
            raise ValueError(f"num_levels must be an integer >= 2 or None, got {num_levels!r}")
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(num_levels=num_levels)

    def _model_sample_shape(self) -> Optional[Tuple[int, ...]]:
        """Shape of one sample from the model's config: ``(C, H, W)`` for image models (``in_channels`` and
        ``sample_size``), ``(d,)`` for vector models (``sample_size``), ``None`` when the config does not say."""
        return sample_shape(self.unet.config)

    def _resolve_num_levels(self, num_levels: Optional[int]) -> Optional[int]:
        if num_levels is None:
            return self.config.num_levels
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        return num_levels

    @staticmethod
    def _check_steps(num_inference_steps, sigmas) -> None:
        if sigmas is None and (
            isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
