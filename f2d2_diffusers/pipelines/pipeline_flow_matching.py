"""``FlowMatchingEulerPipeline``: a flow-matching teacher sampled with Euler, as a diffusers pipeline.

Image teachers (``UNet2DModel``) are saved as diffusers' stock ``DDPMPipeline``, whose loop with a
``FlowMatchEulerDiscreteScheduler`` is exactly this Euler sampler. Vector teachers (``FlowMatchingMLPModel``) are the
package's class, so their folders name this pipeline (loadable with ``DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)`` through the folder's ``pipeline.py`` shim, or ``FlowMatchingEulerPipeline.from_pretrained``).
"""

from typing import List, Optional, Union

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput, ModelMixin, UNet2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..models import FlowMatchingMLPModel, sample_shape
from ..sampling import teacher_euler_sample
from .diffusers_loading import PackageLoadingMixin


class FlowMatchingEulerPipeline(PackageLoadingMixin, DiffusionPipeline):
    r"""
    Euler sampling of a flow-matching velocity field ``v(x, sigma) = dx/dsigma`` from noise (``sigma = 1``) to data
    (``sigma = 0``) on the uniform grid ``sigma_k = 1 - k/N``, stepped by the ``FlowMatchEulerDiscreteScheduler``
    (``f2d2_diffusers.teacher_euler_sample``, the baseline the benchmarks compare F2D2 with).

    Components: ``unet``, a ``FlowMatchingMLPModel`` (vectors) or ``UNet2DModel`` (images); ``scheduler``, a
    ``FlowMatchEulerDiscreteScheduler`` (its ``shift`` is honoured).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Union[FlowMatchingMLPModel, UNet2DModel, ModelMixin], scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 100,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        Args:
            batch_size (`int`): number of samples (ignored when ``latents`` are given).
            num_inference_steps (`int`): Euler steps, one network call each.
            generator: a ``torch.Generator`` or one per sample, for the initial noise.
            latents (`torch.Tensor`, *optional*): the initial noise, shape ``(batch, *sample_shape)``.
            output_type (`str`): ``"np"`` or ``"pt"``; ``"pil"`` too for image models. Vectors come back in model
                space, images in [0, 1].

        Returns:
            ``ImagePipelineOutput(images=...)`` or ``(images,)``.
        """
        if output_type not in ("np", "pt", "pil"):
            raise ValueError(f"output_type must be 'np', 'pt' or 'pil', got {output_type!r}")
        device, dtype = self._execution_device, self.unet.dtype
        if latents is None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            shape = sample_shape(self.unet.config)
            if shape is None:
                raise ValueError("the model's config has no sample_size; pass `latents` to fix the sample shape")
            latents = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=dtype)
        sample = teacher_euler_sample(self.unet, latents.to(device=device, dtype=dtype), num_inference_steps, self.scheduler)
        if sample.ndim == 4:
            images = VaeImageProcessor(do_resize=False, do_normalize=True).postprocess(sample.float(), output_type)
        elif output_type == "pil":
            raise ValueError(f"output_type='pil' needs image samples, got shape {tuple(sample.shape)}; use 'np' or 'pt'")
        else:
            images = sample.float().cpu().numpy() if output_type == "np" else sample
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
