"""Instruments the benchmarks measure with: sample-quality distances, AUROC and the digits feature classifier.

Not part of the package's top-level API: ``from f2d2_diffusers.evaluation import DigitsClassifier, metrics``.
"""

from . import metrics
from .digits_classifier import DigitsClassifier

__all__ = ["DigitsClassifier", "metrics"]
