"""The benchmark scripts, importable as modules (``benchmarks.bench_likelihood``) from the repository root.

Each script also runs as a file (``python benchmarks/bench_likelihood.py --quick``). None imports another: what they
share lives in the library (``f2d2_diffusers.data.load_test_split``, ``f2d2_diffusers.calibration.likelihood_score``,
``f2d2_diffusers.evaluation.reports``). Not part of the installed package.
"""
