"""Instruments the benchmarks measure with: sample-quality distances, AUROC and the digits feature classifier, and
what the benchmark scripts share (``reports``: checkout paths, timing, report files).

Not part of the package's top-level API: ``from f2d2_diffusers.evaluation import DigitsClassifier, metrics, reports``.
"""

from . import metrics, reports
from .digits_classifier import DigitsClassifier

__all__ = ["DigitsClassifier", "metrics", "reports"]
