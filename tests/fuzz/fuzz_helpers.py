"""What the fuzz tests share: the one property every case must have, its outcome counter, settings and strategies.

The property: a call either returns a valid finite result, or raises a ``ValueError``/``TypeError`` whose message is
non-empty and names one of the arguments of the call. Any other exception (an ``IndexError``, a ``RuntimeError``
from deep inside torch, ...) fails the test, and hypothesis shrinks it to a small example.
"""

import collections
import os
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: Cases per test; the whole suite stays well under a minute on one core at the default.
MAX_EXAMPLES = int(os.environ.get("F2D2_FUZZ_EXAMPLES", "60"))
#: Derandomised (the same cases on every run, so CI is reproducible); F2D2_FUZZ_RANDOM=1 explores new ones.
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("F2D2_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

#: target -> Counter of outcomes ("ok", "ValueError", "TypeError"), read by conftest.py at the end of the session.
OUTCOMES = collections.defaultdict(collections.Counter)
#: target -> the first distinct error messages (at most MAX_MESSAGES), written to the report for a reader to judge.
MESSAGES = collections.defaultdict(list)
MAX_MESSAGES = 25


def run_case(target: str, call: Callable, names: Iterable[str], check: Optional[Callable] = None):
    """Run ``call()`` and hold it to the property; ``names`` are the argument names (or values, such as a file
    path) a message may name, ``check`` validates a result. Returns the result, or ``None`` after an error."""
    try:
        result = call()
    except (ValueError, TypeError) as err:
        message = str(err).strip()
        kind = "ValueError" if isinstance(err, ValueError) else "TypeError"
        assert message, f"{target}: {type(err).__name__} with an empty message"
        names = [str(n) for n in names]
        assert any(n.lower() in message.lower() for n in names), (
            f"{target}: {type(err).__name__} names none of the arguments {names}: {message!r}"
        )
        OUTCOMES[target][kind] += 1
        line = f"{type(err).__name__}: {message}"
        if len(MESSAGES[target]) < MAX_MESSAGES and line not in MESSAGES[target]:
            MESSAGES[target].append(line)
        return None
    if check is not None:
        check(result)
    OUTCOMES[target]["ok"] += 1
    return result


def assert_finite(tensor: torch.Tensor, what: str, shape=None) -> None:
    assert isinstance(tensor, torch.Tensor), f"{what} is a {type(tensor).__name__}, not a tensor"
    assert torch.isfinite(tensor).all(), f"{what} is not finite: {tensor}"
    if shape is not None:
        assert tuple(tensor.shape) == tuple(shape), f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}"


# -- strategies --------------------------------------------------------------------------------------------------

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
INT_DTYPES = (np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64)
ODD_DTYPES = (np.bool_, np.complex64)

#: Floats of every kind: ordinary, tiny, huge, signed zeros, NaN and infinities.
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, -1e30, 3e38, 1e300, float("nan"), float("inf"), -float("inf")])


#: Value regimes of :func:`numeric_arrays`, ordinary values the most often.
REGIMES = ("range", "range", "range", "levels", "any", "special")


def _cast(value, dtype):
    with np.errstate(over="ignore", invalid="ignore"):  # 1e30 as float16 is meant to become inf
        return float(np.array(value).astype(dtype))


@st.composite
def numeric_arrays(draw, shape, dtypes=FLOAT_DTYPES + INT_DTYPES + ODD_DTYPES, low=-3.0, high=3.0, levels=17, regimes=REGIMES):
    """Arrays of ``shape`` and a drawn dtype, their values from one drawn regime: in ``[low, high]``, integer levels
    around ``[0, levels)``, any value of the dtype, or a few special values (NaN, infinities, huge)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    regime = draw(st.sampled_from(regimes))
    if dtype.kind == "b":
        elements = st.booleans()
    elif dtype.kind == "c":
        elements = st.complex_numbers(max_magnitude=10, allow_nan=False, width=64)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        if regime == "any":
            elements = st.integers(int(info.min), int(info.max))
        else:
            elements = st.integers(max(int(info.min), -2), min(int(info.max), levels + 1 if regime != "range" else int(high)))
    else:
        width = 8 * dtype.itemsize
        if regime == "range":
            elements = st.floats(low, high, width=width)
        elif regime == "levels":
            elements = st.integers(0, levels - 1).map(float)
        elif regime == "any":
            elements = st.floats(allow_nan=True, allow_infinity=True, width=width)
        else:
            elements = SPECIAL_FLOATS.map(lambda v: _cast(v, dtype))
    return draw(hnp.arrays(dtype, shape, elements=elements))


#: ``num_inference_steps`` values, valid ones the most often.
STEP_COUNTS = st.one_of(st.integers(1, 4), st.integers(1, 4), st.none(), st.sampled_from([0, -1, 2.0, "2", True, 0.5]))


def grids(start: float, end: float):
    """Custom grids for one direction: valid ones from ``start`` to ``end`` (end sometimes left out), and bad ones
    (wrong start, wrong order, out of range, NaN, empty, not numbers)."""
    interior = st.lists(st.floats(0.01, 0.99), min_size=0, max_size=3, unique=True).map(
        lambda xs: sorted(xs, reverse=start > end)
    )
    valid = st.tuples(interior, st.booleans()).map(lambda t: [start, *t[0]] + ([end] if t[1] or not t[0] else []))
    bad = st.one_of(
        st.lists(ANY_FLOAT, min_size=0, max_size=4),
        st.sampled_from([[0.5, end], [end, start], [start, 1.5, end], ["a", "b"], [[start, end]], [start, float("nan")]]),
    )
    return st.one_of(st.none(), valid, valid, bad)
