"""``load_vectors`` on generated ``.npy``/``.csv`` files, ``dequantize`` and ``bits_per_dim`` on random inputs."""

import csv
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fuzz_helpers import (  # noqa: E402
    ANY_FLOAT, FLOAT_DTYPES, FUZZ, INT_DTYPES, ODD_DTYPES, assert_finite, numeric_arrays, run_case,
)
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from f2d2_diffusers.data import load_vectors  # noqa: E402
from f2d2_diffusers.dequantization import bits_per_dim, dequantize  # noqa: E402

#: Array shapes for .npy files: (samples, dims) the most often, and any other.
NPY_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4),
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _check_vectors(result):
    assert result.dtype == torch.float32 and result.ndim == 2 and result.shape[0] > 0 and result.shape[1] > 0
    assert_finite(result, "vectors")


@FUZZ
@given(array=NPY_SHAPES.flatmap(numeric_arrays))
def test_load_vectors_npy(array):
    def check(result):
        _check_vectors(result)
        np.testing.assert_array_equal(result.numpy(), array.astype(np.float32))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npy"
        np.save(path, array)
        run_case("load_vectors(.npy)", lambda: load_vectors(path), [str(path), "path"], check)


NUMBERS = st.one_of(st.floats(-1e6, 1e6).map(repr), st.integers(-100, 100).map(str))
ODD_CELLS = st.one_of(
    st.sampled_from(["", " ", "x", "nan", "inf", "-inf", "1e400", "# note", "1 2", '"3"', "0x1A", "1_000"]),
    st.text(alphabet="ab,;# \t-.eE0123456789", max_size=6),
)


@st.composite
def csv_rows(draw):
    """Rows of one width, numbers the most often; now and then an odd cell or a row of another width."""
    width = draw(st.integers(1, 4))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row_width = width if draw(st.integers(0, 9)) else draw(st.integers(1, 5))
        rows.append([draw(ODD_CELLS) if draw(st.integers(0, 14)) == 0 else draw(NUMBERS) for _ in range(row_width)])
    return rows


@FUZZ
@given(
    header=st.one_of(st.none(), st.lists(st.sampled_from(["x", "y", "z", "label"]), min_size=1, max_size=4)),
    rows=csv_rows(),
    blank_lines=st.booleans(),
)
def test_load_vectors_csv(header, rows, blank_lines):
    lines = ([",".join(header)] if header else []) + [",".join(row) for row in rows]
    text = ("\n\n" if blank_lines else "\n").join(lines) + "\n"

    def check(result):
        _check_vectors(result)
        # Every data row is kept: all non-blank rows but a first one without any number (the header).
        rows_read = [r for r in csv.reader(line.split("#")[0] for line in lines) if any(c.strip() for c in r)]
        has_header = not any(_is_number(c.strip()) for c in rows_read[0])
        assert result.shape[0] == len(rows_read) - has_header

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_text(text)
        run_case("load_vectors(.csv)", lambda: load_vectors(path), [str(path), "path"], check)


GENERATORS = st.one_of(
    st.none(), st.just("one"), st.integers(0, 4).map(lambda n: [torch.Generator().manual_seed(i) for i in range(n)]),
    st.sampled_from([0, "seed"]),
)
LEVEL_COUNTS = st.one_of(st.integers(2, 300), st.integers(2, 300), st.sampled_from([1, 0, -5, 2.5, True, None, "17"]))
LEVEL_ARRAYS = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3).flatmap(
    lambda shape: numeric_arrays(
        shape, dtypes=INT_DTYPES + INT_DTYPES + FLOAT_DTYPES + ODD_DTYPES, levels=20,
        regimes=("levels", "levels", "levels", "range", "any", "special"),
    )
)


@FUZZ
@given(
    levels=st.one_of(LEVEL_ARRAYS, LEVEL_ARRAYS, st.sampled_from([[1, 2], 3, "levels", None])),
    num_levels=LEVEL_COUNTS,
    generator=GENERATORS,
)
def test_dequantize(levels, num_levels, generator):
    if isinstance(levels, np.ndarray):  # torch has no uint64 tensors: give it the values as int64
        levels = torch.from_numpy(levels if levels.dtype != np.uint64 else levels.astype(np.int64))
    if generator == "one":
        generator = torch.Generator().manual_seed(0)

    def check(z):
        assert_finite(z, "dequantised levels", levels.shape)
        assert z.min() >= -1 and z.max() <= 1

    run_case("dequantize", lambda: dequantize(levels, num_levels, generator), ["levels", "num_levels", "generator"], check)


LOG_PROBS = st.one_of(
    hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=4).flatmap(
        lambda shape: numeric_arrays(shape, dtypes=(np.float32, np.float64), low=-1e4, high=1e4, regimes=("range",))
    ),
    hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4).flatmap(
        lambda shape: numeric_arrays(shape, dtypes=(np.float32, np.float64, np.int64), low=-1e4, high=1e4)
    ),
    st.one_of(ANY_FLOAT, st.just("x")),
)


@FUZZ
@given(
    log_prob=LOG_PROBS,
    num_dims=st.one_of(st.integers(1, 4096), st.integers(1, 4096), st.sampled_from([0, -1, 2.0, True, None])),
    num_levels=LEVEL_COUNTS,
)
def test_bits_per_dim(log_prob, num_dims, num_levels):
    if isinstance(log_prob, np.ndarray):
        log_prob = torch.from_numpy(log_prob)

    def check(bpd):
        assert_finite(bpd, "bits_per_dim", log_prob.shape)

    names = ["log_prob", "num_dims", "num_levels"]
    run_case("bits_per_dim", lambda: bits_per_dim(log_prob, num_dims, num_levels), names, check)
