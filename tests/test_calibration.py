import pytest
import torch

from analytic import GaussianFlowMap, GaussianVelocity, gaussian_params
from f2d2_diffusers.calibration import segment_calibration
from f2d2_diffusers.reference_likelihood import reference_log_likelihood

GRID = [0.0, 0.25, 0.5, 1.0]


class OffsetDivergence(GaussianFlowMap):
    """The exact map with its average divergence raised by 2 nats per unit of sigma."""

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        out = super().forward(sample, timestep, step)
        out.divergence = out.divergence + 2.0
        return out


@pytest.fixture(scope="module")
def setup():
    params = gaussian_params((3,))
    teacher = GaussianVelocity(**params)
    x0 = teacher.mean + teacher.std * torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return params, reference_log_likelihood(teacher, x0, sigmas=GRID)


@pytest.mark.parametrize("direction", ["likelihood", "sample"])
def test_the_exact_map_has_no_segment_error(setup, direction):
    params, reference = setup
    cal = segment_calibration(GaussianFlowMap(**params), reference, GRID, direction=direction)
    assert cal.integral_abs_error.max() < 1e-4 and cal.state_error.max() < 1e-4
    assert cal.teacher_integral.shape == (3,) and (cal.teacher_integral.abs() > 1e-3).all()


@pytest.mark.parametrize("direction", ["likelihood", "sample"])
def test_a_divergence_offset_shows_up_in_proportion_to_the_segment_length(setup, direction):
    params, reference = setup
    cal = segment_calibration(OffsetDivergence(**params), reference, GRID, direction=direction)
    torch.testing.assert_close(cal.integral_error, torch.tensor([0.5, 0.5, 1.0]), atol=1e-4, rtol=0)
    assert cal.state_error.max() < 1e-4


def test_reference_without_the_grid_is_rejected(setup):
    params, _ = setup
    teacher = GaussianVelocity(**params)
    reference = reference_log_likelihood(teacher, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="same `sigmas`"):
        segment_calibration(GaussianFlowMap(**params), reference, GRID)


def test_sampling_path_log_density_of_the_exact_map_matches_the_teacher():
    # The exact Gaussian map's free log-density of its own samples equals the teacher's ODE at those samples.
    from analytic import GaussianFlowMap, GaussianVelocity, gaussian_params

    from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler
    from f2d2_diffusers.calibration import sampling_path_calibration

    params = gaussian_params((3,))
    pipe = F2D2Pipeline(unet=GaussianFlowMap(**params), scheduler=F2D2Scheduler(), num_levels=None)
    pipe.set_progress_bar_config(disable=True)
    rows = sampling_path_calibration(pipe, GaussianVelocity(**params), 16, steps=(1, 2), sample_shape=(3,),
                                     generator=torch.Generator().manual_seed(0), rtol=1e-6, atol=1e-6)
    assert [r["steps"] for r in rows] == [1, 2] and all(r["unit"] == "nats" for r in rows)
    for row in rows:
        assert abs(row["error"]) < 1e-3 and row["abs_error"] < 1e-3 and row["nfe"] == row["steps"]
        assert abs(row["rescored_error"]) < 1e-3 and row["rescored_nfe"] == row["steps"]


def test_rescored_log_density_is_measured_at_the_returned_sample():
    # A map whose sampling steps land off the teacher's path but whose encoding steps are exact: the free
    # log-density belongs to the teacher's sample, so it is off; re-scoring the returned sample is not.
    from analytic import GaussianFlowMap, GaussianVelocity, gaussian_params

    from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler
    from f2d2_diffusers.calibration import sampling_path_calibration

    class OffWhenSampling(GaussianFlowMap):
        def forward(self, sample, timestep, step=0.0, return_dict=True):
            out = super().forward(sample, timestep, step)
            going_to_data = torch.as_tensor(step).reshape(-1, *[1] * (sample.ndim - 1)) < 0
            out.sample = out.sample + going_to_data * torch.tensor([0.6, -0.4, 0.2], dtype=out.sample.dtype)
            return out

    params = gaussian_params((3,))
    pipe = F2D2Pipeline(unet=OffWhenSampling(**params), scheduler=F2D2Scheduler(), num_levels=None)
    pipe.set_progress_bar_config(disable=True)
    rows = sampling_path_calibration(pipe, GaussianVelocity(**params), 16, steps=(1, 2), sample_shape=(3,),
                                     generator=torch.Generator().manual_seed(0), rtol=1e-6, atol=1e-6)
    for row in rows:
        assert row["abs_error"] > 0.05
        assert row["rescored_abs_error"] < 1e-3


class ShiftedEndPoint(GaussianFlowMap):
    """The exact map with its average velocity off by a constant: a K-step encoding ends ``OFFSET`` past the truth."""

    OFFSET = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        out = super().forward(sample, timestep, step)
        out.sample = out.sample + self.OFFSET
        return out


def _budget(flow_map, params, steps=(1, 2), **kwargs):
    from f2d2_diffusers.calibration import likelihood_error_budget

    teacher = GaussianVelocity(**params)
    x0 = teacher.mean + teacher.std * torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = reference_log_likelihood(teacher, x0)
    integral = ref.log_prob - _standard_normal(ref.latents)
    return x0, ref, likelihood_error_budget(flow_map, x0, ref.latents, integral, steps=steps, **kwargs)


def _standard_normal(x):
    from f2d2_diffusers.dequantization import standard_normal_log_prob

    return standard_normal_log_prob(x)


def test_the_exact_map_has_an_empty_error_budget_and_a_consistent_jacobian():
    params = gaussian_params((3,))
    _, ref, budget = _budget(GaussianFlowMap(**params), params, map_log_det=True)
    for row in budget.rows:
        for key in ("error", "radial", "spread", "divergence", "end_point_error", "self_consistent_error"):
            assert abs(row[key]) < 1e-4, (key, row)
        # The affine Gaussian map's log-determinant is the teacher's divergence integral.
        assert abs(row["map_log_det"] - (ref.log_prob - _standard_normal(ref.latents)).mean().item()) < 1e-4


def test_the_budget_splits_an_end_point_offset_into_radial_and_spread_parts():
    from f2d2_diffusers import F2D2LikelihoodPipeline, F2D2Scheduler

    params = gaussian_params((3,))
    flow_map = ShiftedEndPoint(**params)
    x0, ref, budget = _budget(flow_map, params, map_log_det=True)
    pipe = F2D2LikelihoodPipeline(unet=flow_map, scheduler=F2D2Scheduler(), num_levels=None)
    pipe.set_progress_bar_config(disable=True)
    offset = ShiftedEndPoint.OFFSET
    # One step lands exactly OFFSET past the teacher's end point.
    one = budget.rows[0]
    assert abs(one["spread"] - offset.pow(2).sum().item() / 2) < 1e-4
    assert abs(one["radial"] + ((ref.latents + offset) * offset).sum(dim=1).mean().item()) < 1e-4
    for row in budget.rows:
        assert abs(row["divergence"]) < 1e-4 and row["spread"] > 0.01
        # The parts add up to the error the likelihood pipeline itself makes.
        log_prob = pipe(x0, num_inference_steps=row["steps"], dequantize=False).log_prob
        assert abs(row["error"] - (log_prob - ref.log_prob).mean().item()) < 1e-4
        # A constant shift keeps the Jacobian: the state-update density moves by the prior term only.
        assert abs(row["self_consistent_error"] - (row["radial"] + row["spread"])) < 1e-4


def test_the_budget_rejects_mismatched_teacher_states():
    from f2d2_diffusers.calibration import likelihood_error_budget

    params = gaussian_params((3,))
    with pytest.raises(ValueError, match="teacher_end"):
        likelihood_error_budget(GaussianFlowMap(**params), torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4))


def test_the_map_log_det_of_an_image_map_matches_one_jacobian_per_sample():
    from diffusers import UNet2DModel

    from f2d2_diffusers import F2D2UNet2DModel
    from f2d2_diffusers.calibration import likelihood_error_budget
    from f2d2_diffusers.flow_map import evaluate_flow_map
    from testing_utils import randomise_new_layers, tiny_unet_config

    teacher = UNet2DModel(**tiny_unet_config(sample_size=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                                             up_block_types=("UpBlock2D", "UpBlock2D")))
    student = randomise_new_layers(F2D2UNet2DModel.from_teacher(teacher)).eval()
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    budget = likelihood_error_budget(student, x, torch.zeros_like(x), torch.zeros(3), steps=(1,), map_log_det=True)
    expected = []
    for one in x:
        jac = torch.autograd.functional.jacobian(
            lambda z: (z + evaluate_flow_map(student, z, 0.0, 1.0).sample).reshape(-1), one[None])
        expected.append(torch.linalg.slogdet(jac.reshape(16, 16).double())[1])
    assert abs(budget.rows[0]["map_log_det"] - torch.stack(expected).mean().item()) < 1e-4


def test_tangent_error_is_zero_for_the_exact_map_and_sees_an_offset():
    from f2d2_diffusers.calibration import tangent_error

    params = gaussian_params((3,))
    teacher = GaussianVelocity(**params)
    states = teacher.mean + teacher.std * torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert tangent_error(GaussianFlowMap(**params), teacher, states, 0.3) < 1e-6
    assert tangent_error(ShiftedEndPoint(**params), teacher, states, 0.3) > 0.01
