"""scikit-learn's 8x8 digits (shipped with scikit-learn, no download): 17 grey levels, 1 channel."""

import numpy as np
import torch

#: Grey levels of the digits: pixel values are the integers 0..16.
DIGITS_NUM_LEVELS = 17
#: Images before this index form the train split; the remaining 297 the test split.
DIGITS_TEST_START = 1500


def load_digits_levels(split: str = "train") -> torch.Tensor:
    """Digits as integer levels, shape ``(N, 1, 8, 8)``, dtype ``torch.uint8``, values ``0..16``.

    ``split``: ``"train"`` (the first 1500 images), ``"test"`` (images 1500 on, 297 images, never trained on)
    or ``"all"``.
    """
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8)[:, None]
    if split == "train":
        images = images[:DIGITS_TEST_START]
    elif split == "test":
        images = images[DIGITS_TEST_START:]
    elif split != "all":
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return torch.from_numpy(np.ascontiguousarray(images))
