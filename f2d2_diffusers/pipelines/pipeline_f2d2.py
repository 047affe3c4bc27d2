"""``F2D2Pipeline``: few-step sampling, with the log-density of every sample accumulated along the way."""

from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..dequantization import bits_per_dim, check_finite, standard_normal_log_prob
from ..guidance import check_guidance, maximum_likelihood_guidance
from .pipeline_utils import F2D2BasePipeline


@dataclass
class F2D2PipelineOutput(BaseOutput):
    """
    Args:
        images: generated samples: a list of PIL images, a numpy array (images ``(B, H, W, C)`` in [0, 1]; vectors
            ``(B, d)`` in model space) or a torch tensor (images ``(B, C, H, W)`` in [0, 1]; vectors ``(B, d)``).
        log_prob (`torch.Tensor` of shape `(batch,)`): model-space log-density of each sample (nats): from the same
            network calls that generated it, or, with ``log_prob_steps``, from encoding the returned sample.
        bits_per_dim (`torch.Tensor` of shape `(batch,)`): the same on the data's grey-level scale (continuous for
            vector data).
        nfe (`int`): network passes: the ``num_inference_steps`` calls, plus a forward and a backward pass per
            self-guidance step, plus ``log_prob_steps``.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int


class F2D2Pipeline(F2D2BasePipeline):
    r"""
    Few-step sampling from noise (``sigma = 1``) to data (``sigma = 0``) with a joint flow map. Each step
    ``x <- x + h u(x, sigma, h)`` also adds ``-h D(x, sigma, h)`` to the log-density, so the "free" log-density
    ``log N(eps) + sum_k (-h_k D_k)`` costs no extra network call. It follows the divergence along the path the map
    was trained to take, so it estimates the log-density of the teacher's sample from ``eps``; where the map's
    sample is off that path (few steps, images) it was measured too optimistic. ``log_prob_steps=k`` instead scores
    the returned model-space sample with ``k`` encoding steps (``k`` more calls; ``docs/method.md`` section 6.2).

    ``ml_guidance_scale > 0`` turns on maximum-likelihood self-guidance (``docs/method.md`` section 6): before
    sampling, ``ml_guidance_steps`` normalised gradient steps raise the one-step map's log-likelihood of the sample
    each noise would make (:func:`f2d2_diffusers.guidance.maximum_likelihood_guidance`).

    ``num_levels`` (grey levels of the data, for bits/dim) defaults to ``"auto"``: ``None`` (continuous) for vector
    models, 256 (8-bit images) for image models; see [`F2D2BasePipeline`]. Each call works on its own copy of the
    scheduler, so one pipeline can serve several threads at once.
    """

    @torch.no_grad()
    def __call__(
        self,
        batch_size: Optional[int] = None,
        num_inference_steps: Optional[int] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        sigmas: Optional[List[float]] = None,
        num_levels: Optional[int] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        ml_guidance_scale: float = 0.0,
        ml_guidance_steps: int = 1,
        log_prob_steps: Optional[int] = None,
    ) -> Union[F2D2PipelineOutput, tuple]:
        r"""
        Args:
            batch_size (`int`, *optional*): number of samples; defaults to 1, or to the batch of ``latents``.
            num_inference_steps (`int`, *optional*): network calls on the uniform grid ``sigma_k = 1 - k/N``; defaults
                to 1, or to the number of steps in ``sigmas``.
            generator: a ``torch.Generator`` or one per sample, for the initial noise.
            latents (`torch.Tensor`, *optional*): the initial noise, shape ``(batch, *sample_shape)``, finite, with
                the sample shape of the model's config (``(in_channels, sample_size, sample_size)`` for images).
            sigmas (`List[float]`, *optional*): a custom decreasing grid from 1 (noise, where the ``N(0, I)`` prior
                holds) to 0, instead of the uniform one; a final 0 may be left out.
            num_levels (`int`, *optional*): grey levels for ``bits_per_dim``; defaults to ``config.num_levels``
                (refused for vector models, whose data are continuous).
            output_type (`str`): ``"pil"``, ``"np"`` or ``"pt"`` (vectors: ``"np"`` or ``"pt"``), or ``"latent"``: the
                model-space samples themselves (images in [-1, 1], not clipped), the points ``log_prob`` refers to.
            return_dict (`bool`): return an [`F2D2PipelineOutput`] instead of a tuple.
            ml_guidance_scale (`float`, defaults to 0): size of each self-guidance step on the initial noise, per
                dimension in units of the noise's standard deviation (``eps <- eps + scale * g / rms(g)``, ``g`` the
                gradient of the one-step log-likelihood); 0 turns guidance off.
            ml_guidance_steps (`int`, defaults to 1): self-guidance steps (one forward and one backward pass each).
            log_prob_steps (`int`, *optional*): score the returned model-space samples (``output_type="latent"``;
                other output types are clipped and rounded from them) with this many encoding steps, at that many
                more calls, exactly as [`F2D2LikelihoodPipeline`] with ``dequantize=False`` would: on the
                scheduler's likelihood grid (``shift_for("likelihood")``), whatever ``sigmas`` sampling took. By
                default the free log-density of the sampling calls is returned.

        Returns:
            [`F2D2PipelineOutput`] or ``(images, log_prob, bits_per_dim, nfe)``. A sample or log-density that comes
            out NaN or infinite (inputs far outside the model's range) raises a ``ValueError`` instead.
        """
        self._check_steps(num_inference_steps, sigmas)
        self._check_steps(log_prob_steps, None, "log_prob_steps")
        check_guidance(ml_guidance_scale, ml_guidance_steps)
        num_levels = self._resolve_num_levels(num_levels)
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        device, dtype = self._execution_device, self.unet.dtype

        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
                raise ValueError(f"latents must be a floating-point torch.Tensor, got {getattr(latents, 'dtype', type(latents).__name__)}")
            self._check_batch(latents, "latents")
            if batch_size is not None and batch_size != latents.shape[0]:
                raise ValueError(f"batch_size={batch_size} does not match latents with batch {latents.shape[0]}")
            check_finite(latents, "latents")
            sample = latents.to(device=device, dtype=dtype)
        else:
            batch_size = 1 if batch_size is None else batch_size
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            if isinstance(generator, list) and len(generator) != batch_size:
                raise ValueError(f"got a list of {len(generator)} generators for batch_size={batch_size}")
            shape = self._model_sample_shape()
            if shape is None:
                raise ValueError("the model's config has no sample_size; pass `latents` to fix the sample shape")
            sample = randn_tensor((batch_size, *shape), generator=generator, device=device, dtype=dtype)
        if output_type == "pil" and sample.ndim != 4:
            raise ValueError(f"output_type='pil' needs image samples, got shape {tuple(sample.shape)}; use 'np' or 'pt'")

        scheduler = self._scheduler_for_call(num_inference_steps, sigmas, "sample")
        guidance_nfe = 0
        if ml_guidance_scale:
            sample = maximum_likelihood_guidance(self.unet, sample, ml_guidance_scale, ml_guidance_steps)
            guidance_nfe = 2 * ml_guidance_steps
        log_prior = standard_normal_log_prob(sample.float())
        source = "latents" if latents is not None else "the generated noise"
        sample, delta_log_prob, nfe = self._integrate(scheduler, sample, source)
        nfe += guidance_nfe
        log_prob = log_prior + delta_log_prob
        if log_prob_steps is not None:
            log_prob, _, encode_nfe = self._encode(sample, log_prob_steps, None, f"the samples from {source}")
            nfe += encode_nfe
        self._check_result(sample, log_prob, source)
        bpd = bits_per_dim(log_prob, sample[0].numel(), num_levels)

        if output_type == "latent":
            images = sample
        elif sample.ndim == 4:
            images = VaeImageProcessor(do_resize=False, do_normalize=True).postprocess(sample.float(), output_type)
        else:
            images = sample.float().cpu().numpy() if output_type == "np" else sample
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, log_prob, bpd, nfe)
        return F2D2PipelineOutput(images=images, log_prob=log_prob, bits_per_dim=bpd, nfe=nfe)
