from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class F2D2ModelOutput(BaseOutput):
    """Output of a joint flow-map model.

    Args:
        sample (`torch.Tensor` of shape `(batch, *dims)`): average velocity ``u(x, sigma, h)`` over the interval.
        divergence (`torch.Tensor` of shape `(batch,)`): average divergence ``D(x, sigma, h)`` over the interval,
            full scale (summed over dimensions, not per dimension).
    """

    sample: torch.Tensor
    divergence: torch.Tensor


@dataclass
class FlowMatchingModelOutput(BaseOutput):
    """Output of a velocity model: ``sample`` is ``v(x, sigma) = dx/dsigma``, shape ``(batch, *dims)``."""

    sample: torch.Tensor
