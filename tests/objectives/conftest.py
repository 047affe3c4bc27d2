import pytest
import torch

from analytic import GaussianVelocity, gaussian_params


@pytest.fixture
def gaussian_batch():
    """``(params, teacher, batch)``: 64 draws of 4-D Gaussian data and its exact flow-matching teacher."""
    params = gaussian_params((4,))
    teacher = GaussianVelocity(**params)
    batch = teacher.mean + teacher.std * torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return params, teacher, batch
