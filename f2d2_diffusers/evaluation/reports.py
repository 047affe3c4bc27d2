"""What the benchmark scripts share: where a checkout keeps checkpoints and results, timing, report files.

The scripts in ``benchmarks/`` run as files and import as modules (``benchmarks.bench_likelihood``) without touching
``sys.path``: each computes its paths once with :func:`benchmark_paths` from its own location
(``Path(__file__).resolve().parents[1]``, the repository root) and takes everything else from the library.

Full runs write the committed results (``benchmarks/results/``); ``--quick`` runs write under
``outputs/benchmarks-quick/`` (git-ignored) unless ``--output_dir`` says otherwise, so a quick check never
overwrites the numbers the README quotes.
"""

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Tuple, Union

#: Data sets with shipped checkpoints: the (F2D2 student, teacher) folder names under ``checkpoints/``.
SHIPPED_CHECKPOINTS = {
    "digits": ("f2d2-digits", "fm-digits"),
    "checkerboard": ("f2d2-checkerboard", "fm-checkerboard"),
}
#: The shipped digits classifier's folder under ``checkpoints/`` (``benchmarks/train_digits_classifier.py``): its
#: features score generated digits.
DIGITS_CLASSIFIER_FOLDER = "digits-classifier"
#: Committed full-run results and quick-run outputs, relative to the repository root.
RESULTS_SUBDIR = os.path.join("benchmarks", "results")
QUICK_RESULTS_SUBDIR = os.path.join("outputs", "benchmarks-quick")


@dataclass(frozen=True)
class BenchmarkPaths:
    """Folders of one checkout (absolute strings, as the reports record them)."""

    repo_root: str
    #: Committed full-run results (``benchmarks/results``).
    results_dir: str
    #: Where ``--quick`` runs write by default (``outputs/benchmarks-quick``, git-ignored).
    quick_results_dir: str
    #: ``{dataset: (student folder, teacher folder)}`` of the shipped checkpoints.
    shipped: Dict[str, Tuple[str, str]]
    #: The shipped digits classifier folder.
    digits_classifier: str

    def output_dir(self, quick: bool) -> str:
        """The default ``--output_dir``: quick runs never write into the committed results."""
        return self.quick_results_dir if quick else self.results_dir


def benchmark_paths(repo_root: Union[str, os.PathLike]) -> BenchmarkPaths:
    """The checkout's benchmark folders, from its root (``Path(__file__).resolve().parents[1]`` in a script)."""
    root = os.path.abspath(os.fspath(repo_root))
    checkpoints = os.path.join(root, "checkpoints")
    return BenchmarkPaths(
        repo_root=root,
        results_dir=os.path.join(root, RESULTS_SUBDIR),
        quick_results_dir=os.path.join(root, QUICK_RESULTS_SUBDIR),
        shipped={name: (os.path.join(checkpoints, student), os.path.join(checkpoints, teacher))
                 for name, (student, teacher) in SHIPPED_CHECKPOINTS.items()},
        digits_classifier=os.path.join(checkpoints, DIGITS_CLASSIFIER_FOLDER),
    )


def require_folders(*paths: Union[str, os.PathLike]) -> None:
    """Exit with one clear line when a checkpoint folder is missing."""
    for path in paths:
        if not os.path.isdir(path):
            raise SystemExit(f"error: no checkpoint folder at {path}")


def timed(fn: Callable):
    """``(fn(), wall seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def write_json(path: Union[str, os.PathLike], payload: dict) -> None:
    """Write a benchmark report (indented JSON), creating the folder if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def redraw_from_json(json_path: Union[str, os.PathLike], plot: Callable[[dict, str], object], png_path=None) -> str:
    """Redraw a benchmark's figure with ``plot(report, png_path)`` from the JSON report it wrote; nothing is measured.

    ``png_path`` defaults to the ``.png`` beside the JSON. Returns the PNG's path.
    """
    json_path = os.fspath(json_path)
    png_path = os.fspath(png_path) if png_path else os.path.splitext(json_path)[0] + ".png"
    with open(json_path, encoding="utf-8") as f:
        report = json.load(f)
    plot(report, png_path)
    return png_path
