"""``F2D2LikelihoodPipeline``: log-likelihood and bits per dimension in a few network calls."""

from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from ..data.images import pil_to_pixels
from ..dequantization import (
    bits_per_dim, check_finite, dequantize, levels_to_model_space, pixels_to_levels,
)
from .pipeline_utils import F2D2BasePipeline

EVALUATIONS = ("bidirectional", "paper")


@dataclass
class F2D2LikelihoodPipelineOutput(BaseOutput):
    """
    Args:
        log_prob (`torch.Tensor` of shape `(batch,)`): model-space log-density of the (dequantised) input, nats.
        bits_per_dim (`torch.Tensor` of shape `(batch,)`): ``-log P / (d ln 2)`` on the data's grey-level scale
            (``log P = log_prob + d log 2 - d log L``), or of the continuous density for continuous data.
        nfe (`int`): network calls.
        latents (`torch.Tensor`): the input carried to ``sigma = 1``.
    """

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    latents: torch.Tensor


class F2D2LikelihoodPipeline(F2D2BasePipeline):
    r"""
    Few-step log-likelihood: data (``sigma = 0``) to noise (``sigma = 1``) with the joint map's encoding steps
    (``h > 0``), ``log p(x0) = log N(x_K) + sum_k h_k D_k``, then the dequantisation terms.

    ``evaluation="paper"`` instead steps the sampling map (``h < 0``) backwards from the data end with Euler, as
    the F2D2 paper's evaluation does, so the two can be compared on the same inputs; it walks the sampling grid's
    points in reverse (the scheduler's ``shift``, not its ``likelihood_shift``), whose backward steps are trained
    sampling steps only on the uniform grid.

    ``num_levels`` (grey levels of the data) defaults to ``"auto"``: ``None`` (continuous) for vector models, 256
    (8-bit images) for image models; see [`F2D2BasePipeline`]. Each call works on its own copy of the scheduler, so
    one pipeline can serve several threads at once.
    """

    def _pil_to_levels(self, images, shape, num_levels: Optional[int]) -> torch.Tensor:
        """PIL images as a ``(batch, C, H, W)`` tensor of grey levels ``0..L-1`` (see :func:`pil_to_pixels`)."""
        if shape is None or len(shape) != 3:
            raise ValueError("PIL images need an image model with in_channels and sample_size in its config")
        if shape[0] not in (1, 3):
            raise ValueError(f"PIL images need a 1- or 3-channel model, this one has {shape[0]} channels")
        levels = []
        for image in images:
            if image.size != (shape[2], shape[1]):
                raise ValueError(
                    f"images: image size {image.size[0]}x{image.size[1]} does not match the model's "
                    f"{shape[2]}x{shape[1]}; resize it first"
                )
            try:
                pixels, max_value = pil_to_pixels(image, shape[0])
            except ValueError as err:
                raise ValueError(f"images: {err}") from None
            # 8- or 16-bit pixels onto the model's grey levels; without levels (continuous data) onto 256, which
            # _model_space then refuses with its own message.
            levels.append(pixels_to_levels(pixels, num_levels or 256, max_value))
        return torch.from_numpy(np.stack(levels).transpose(0, 3, 1, 2).copy())

    def _to_batch(self, images, num_levels: Optional[int]) -> torch.Tensor:
        """Any accepted input as a ``(batch, *sample_shape)`` tensor (``int64`` levels or floats), on the CPU.

        Without a shape in the model's config, arrays and tensors are taken as batches as they are.
        """
        shape = self._model_sample_shape()
        is_image_model = shape is not None and len(shape) == 3
        if isinstance(images, PIL.Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)) and images and all(isinstance(i, PIL.Image.Image) for i in images):
            return self._pil_to_levels(images, shape, num_levels)
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("images is an empty list: no input was given")
            if all(isinstance(i, np.ndarray) for i in images):
                if len({i.shape for i in images}) > 1:
                    raise ValueError(f"images: the arrays in the list differ in shape: {[i.shape for i in images]}")
                images = np.stack(images)
            elif all(isinstance(i, torch.Tensor) for i in images):
                if len({tuple(i.shape) for i in images}) > 1:
                    raise ValueError(f"images: the tensors in the list differ in shape: {[tuple(i.shape) for i in images]}")
                images = torch.stack(images)
            else:
                raise ValueError(
                    f"images: a list must hold only PIL images, numpy arrays or tensors; got {[type(i).__name__ for i in images]}"
                )
        if isinstance(images, np.ndarray):
            if images.dtype == np.bool_ or not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
                raise ValueError(f"numpy images must hold integer grey levels or floats, got dtype {images.dtype}")
            array = images
            if is_image_model:
                # numpy images are channels-last, as PIL and diffusers' image processor give them.
                c, h, w = shape
                if array.ndim == 2 and c == 1:
                    array = array[None, :, :, None]
                elif array.ndim == 3 and array.shape == (h, w, c):
                    array = array[None]
                elif array.ndim == 3 and c == 1 and array.shape[1:] == (h, w):
                    array = array[..., None]
                if array.ndim != 4 or array.shape[1:] != (h, w, c):
                    raise ValueError(f"numpy images must have shape (batch, {h}, {w}, {c}) or (H, W[, C]); got {images.shape}")
                array = array.transpose(0, 3, 1, 2)
            if np.issubdtype(array.dtype, np.unsignedinteger) and array.size and array.max() > np.iinfo(np.int64).max:
                raise ValueError(f"images hold integers up to {array.max()}, far beyond any number of grey levels")
            images = torch.from_numpy(np.ascontiguousarray(array))
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"unsupported input type {type(images).__name__} for images; pass PIL images, numpy arrays or tensors")
        if images.dtype == torch.bool or images.is_complex():
            raise ValueError(f"images: unsupported tensor dtype {images.dtype}; pass integer grey levels or floats")
        if not images.is_floating_point():
            images = images.to(torch.int64)  # min/max have no kernels for uint16/uint32; the values are unchanged
        if shape is not None and images.ndim == len(shape):
            images = images[None]
        self._check_batch(images, "images")
        return images.cpu()

    def _model_space(self, data: torch.Tensor, dequantize_input: bool, num_levels: Optional[int], generator) -> torch.Tensor:
        if data.is_floating_point():
            check_finite(data, "images")
            if not dequantize_input:
                return data.float()
            if num_levels is None:
                raise ValueError("dequantize=True needs num_levels; continuous data needs dequantize=False")
            # Floats on the L-level grid 2k/(L-1) - 1 (e.g. uint8/127.5 - 1) are discrete data in disguise.
            levels = (data.double() + 1) / 2 * (num_levels - 1)
            if data.min() < -1 or data.max() > 1 or (levels - levels.round()).abs().max() > 1e-3:
                raise ValueError(
                    f"float images with dequantize=True must lie on the {num_levels}-level grid 2k/{num_levels - 1} - 1 "
                    "in [-1, 1]; pass integer levels, or dequantize=False for continuous model-space data"
                )
            data = levels.round().long()
        if num_levels is None:
            raise ValueError("integer images need num_levels (the pipeline's config has none)")
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= num_levels:
            raise ValueError(
                f"integer images must hold levels in [0, {num_levels - 1}] for num_levels={num_levels}; got [{low}, {high}]."
                " Integer arrays and tensors are grey levels, not pixel values: pass 8- or 16-bit pixels as PIL images, "
                "or map them with pixels_to_levels(pixels, num_levels, max_value)"
            )
        return dequantize(data, num_levels, generator) if dequantize_input else levels_to_model_space(data, num_levels)

    @torch.no_grad()
    def __call__(
        self,
        images,
        num_inference_steps: Optional[int] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        dequantize: bool = True,
        num_levels: Optional[int] = None,
        sigmas: Optional[List[float]] = None,
        evaluation: str = "bidirectional",
        return_dict: bool = True,
    ) -> Union[F2D2LikelihoodPipelineOutput, tuple]:
        r"""
        Args:
            images: what to score. Images: PIL images; numpy arrays channels-last ``(B, H, W, C)``, ``(H, W, C)``
                or ``(H, W)``; torch tensors ``(B, C, H, W)`` or ``(C, H, W)``. Vectors: ``(B, d)`` or ``(d,)``.
                Integer arrays/tensors are grey levels ``0..L-1`` (any integer dtype); floats are model-space values
                (``[-1, 1]`` for images). PIL images: 8-bit pixels (and 16-bit ``"I;16"`` ones, e.g. 16-bit PNGs) are
                mapped onto the ``L`` levels; transparent images (RGBA, LA, ...) are composited onto black; ``"I"``
                (32-bit) and ``"F"`` (float) images have no fixed range and are refused.
            num_inference_steps (`int`, *optional*): network calls on the grid ``sigma_k = k/N`` (warped by the
                scheduler's likelihood shift, ``shift_for("likelihood")``); defaults to 1, or
                to the number of steps in ``sigmas``.
            generator: a ``torch.Generator`` or one per sample, for the dequantisation noise.
            dequantize (`bool`, defaults to True): add uniform noise within each grey level. With False, floats are
                scored exactly as given and integer levels at their bin centres.
            num_levels (`int`, *optional*): grey levels ``L``; defaults to ``config.num_levels`` (17 for digits;
                refused for vector models, whose data are continuous).
            sigmas (`List[float]`, *optional*): a custom increasing grid from 0 (data) to 1 (noise, where the
                ``N(0, I)`` prior holds); a final 1 may be left out.
            evaluation (`str`): ``"bidirectional"`` (encoding steps ``h > 0``) or ``"paper"``.
            return_dict (`bool`): return an [`F2D2LikelihoodPipelineOutput`] instead of a tuple.

        Returns:
            [`F2D2LikelihoodPipelineOutput`] or ``(log_prob, bits_per_dim, nfe, latents)``. A log-likelihood that
            comes out NaN or infinite (inputs far outside the model's range) raises a ``ValueError`` instead.
        """
        self._check_steps(num_inference_steps, sigmas)
        if evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
        num_levels = self._resolve_num_levels(num_levels)
        data = self._to_batch(images, num_levels)
        if isinstance(generator, list) and len(generator) != data.shape[0]:
            raise ValueError(f"got a list of {len(generator)} generators for a batch of {data.shape[0]} images")
        sample = self._model_space(data, dequantize, num_levels, generator)
        device, dtype = self._execution_device, self.unet.dtype
        sample = sample.to(device=device, dtype=dtype)

        # The paper's evaluation steps the sampling map, so it walks the sampling grid (backwards).
        log_prob, latents, nfe = self._encode(sample, num_inference_steps, sigmas, "images", evaluation)
        bpd = bits_per_dim(log_prob, sample[0].numel(), num_levels)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (log_prob, bpd, nfe, latents)
        return F2D2LikelihoodPipelineOutput(log_prob=log_prob, bits_per_dim=bpd, nfe=nfe, latents=latents)
