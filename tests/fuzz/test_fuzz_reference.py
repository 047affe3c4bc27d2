"""``reference_log_likelihood`` (the teacher's ODE likelihood) on random inputs, with a tiny vector teacher."""

import inspect

import pytest

pytest.importorskip("hypothesis")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fuzz_helpers import FUZZ, assert_finite, grids, numeric_arrays, run_case  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from f2d2_diffusers import FlowMatchingMLPModel, reference_log_likelihood  # noqa: E402

torch.manual_seed(0)
TEACHER = FlowMatchingMLPModel(sample_size=3, hidden_dim=16, num_layers=1, time_embed_dim=8).eval()
SHAPES = st.one_of(st.integers(1, 3).map(lambda b: (b, 3)), st.integers(1, 3).map(lambda b: (b, 3)),
                   st.sampled_from([(0, 3), (3,), (2, 4), (2, 3, 1), ()]))
SOLVERS = st.sampled_from([
    dict(method="euler", num_steps=2), dict(method="rk4", num_steps=1), dict(method="dopri5", rtol=1e-2, atol=1e-2),
    dict(method="euler"), dict(method="leapfrog"), dict(method="dopri5", num_steps=3),
])


@FUZZ
@given(
    sample=SHAPES.flatmap(lambda shape: numeric_arrays(
        shape, dtypes=(np.float32, np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64))),
    solver=SOLVERS,
    divergence=st.sampled_from(["exact", "exact", "hutchinson", "guess"]),
    num_levels=st.one_of(st.none(), st.none(), st.sampled_from([17, 1, "x"])),
    sigmas=st.one_of(st.none(), st.none(), grids(0.0, 1.0)),
)
def test_reference_log_likelihood(sample, solver, divergence, num_levels, sigmas):
    sample = torch.from_numpy(sample)
    kwargs = dict(solver, divergence=divergence, num_levels=num_levels, sigmas=sigmas)
    if divergence == "hutchinson":
        kwargs["generator"] = torch.Generator().manual_seed(0)

    def check(out):
        batch = sample.shape[0]
        assert_finite(out.log_prob, "log_prob", (batch,))
        assert_finite(out.bits_per_dim, "bits_per_dim", (batch,))
        assert_finite(out.latents, "latents", sample.shape)

    names = list(inspect.signature(reference_log_likelihood).parameters)
    run_case("reference_log_likelihood", lambda: reference_log_likelihood(TEACHER, sample, **kwargs), names, check)
