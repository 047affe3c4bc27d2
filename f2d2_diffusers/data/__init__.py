from .digits import DIGITS_NUM_LEVELS, DIGITS_TEST_START, load_digits_levels
from .files import load_vectors
from .images import pil_to_pixels
from .splits import EMBEDDED_DATASETS, load_test_split
from .toys import TOY_DATASETS, load_toy, sample_toy

__all__ = [
    "DIGITS_NUM_LEVELS", "DIGITS_TEST_START", "EMBEDDED_DATASETS", "TOY_DATASETS", "load_digits_levels", "load_test_split",
    "load_toy", "load_vectors", "pil_to_pixels", "sample_toy",
]
