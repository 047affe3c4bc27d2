from .digits import DIGITS_NUM_LEVELS, DIGITS_TEST_START, load_digits_levels
from .files import load_vectors
from .toys import TOY_DATASETS, load_toy, sample_toy

__all__ = [
    "DIGITS_NUM_LEVELS", "DIGITS_TEST_START", "TOY_DATASETS", "load_digits_levels", "load_toy", "load_vectors",
    "sample_toy",
]
