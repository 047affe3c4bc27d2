"""Two-dimensional toy distributions, sampled deterministically from a seed."""

import math

import torch

TOY_DATASETS = ("checkerboard", "eight_gaussians", "two_moons", "rings")
#: Seeds that make the splits disjoint and reproducible.
SPLIT_SEEDS = {"train": 0, "test": 1}


def sample_toy(name: str, num_samples: int, generator: torch.Generator = None) -> torch.Tensor:
    """``num_samples`` points of toy ``name``, shape ``(num_samples, 2)``, float32, roughly within [-4, 4]."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    n, g = num_samples, generator
    if name == "checkerboard":
        x1 = torch.rand(n, generator=g) * 4 - 2
        x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
        x2 = x2 + torch.floor(x1) % 2
        return torch.stack([x1, x2], dim=1) * 2
    if name == "eight_gaussians":
        angles = torch.randint(0, 8, (n,), generator=g) * (2 * math.pi / 8)
        centres = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 2.828
        return centres + 0.2 * torch.randn(n, 2, generator=g)
    if name == "two_moons":
        upper = torch.randint(0, 2, (n,), generator=g).bool()
        angle = torch.rand(n, generator=g) * math.pi
        x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
        y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
        points = torch.stack([x - 0.5, y - 0.25], dim=1) * 2
        return points + 0.1 * torch.randn(n, 2, generator=g)
    if name == "rings":
        radius = (torch.randint(1, 5, (n,), generator=g).float()) * 0.75
        angle = torch.rand(n, generator=g) * 2 * math.pi
        points = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * radius[:, None]
        return points + 0.08 * torch.randn(n, 2, generator=g)
    raise ValueError(f"unknown toy dataset {name!r}; choose from {TOY_DATASETS}")


def load_toy(name: str, split: str = "train", num_samples: int = 2000) -> torch.Tensor:
    """A deterministic split of toy ``name``: the same points every call, train and test drawn from different seeds."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {split!r}")
    return sample_toy(name, num_samples, torch.Generator().manual_seed(SPLIT_SEEDS[split]))
