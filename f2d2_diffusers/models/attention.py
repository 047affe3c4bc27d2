"""Attention that forward-mode AD (``torch.func.jvp``, MeanFlow-F2D2's targets) can differentiate."""

import functools

from diffusers.models.attention_processor import AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel


class ForwardADAttnProcessor(AttnProcessor2_0):
    r"""diffusers' default [`AttnProcessor2_0`], with a fallback for forward-mode AD.

    PyTorch's fused ``scaled_dot_product_attention`` kernels (``_scaled_dot_product_flash_attention_for_cpu`` on CPU,
    flash / memory-efficient on CUDA) have no forward-mode derivative (torch 2.13), so a JVP through a
    ``UNet2DModel`` with attention blocks raises ``NotImplementedError``. Ordinary calls keep the fused kernels; only
    a call that fails that way is redone with the math backend, which is composed of differentiable ops. The output
    is made contiguous: the forward-mode derivative of ``group_norm`` (the next block's first op) views its input and
    fails on the transposed layout the processor returns.
    """

    # The parent's signature, spelled out: diffusers drops (with a warning) keyword arguments a processor does not name.
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        call = functools.partial(
            super().__call__, attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
        )
        try:
            return call().contiguous()
        except NotImplementedError as err:
            if "forward AD" not in str(err):
                raise
        with sdpa_kernel([SDPBackend.MATH]):
            return call().contiguous()
