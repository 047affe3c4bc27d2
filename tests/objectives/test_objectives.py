import pytest
import torch

from analytic import GaussianFlowMap, GaussianVelocity, gaussian_params
from f2d2_diffusers import flow_matching_loss, shortcut_f2d2_loss


class PerturbedFlowMap(GaussianFlowMap):
    """The exact map with a small error in its average divergence at non-zero steps."""

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        out = super().forward(sample, timestep, step)
        step = torch.as_tensor(step, dtype=sample.dtype).expand(sample.shape[0])
        out.divergence = out.divergence + 0.5 * sample.shape[1] * (step != 0)
        return out


@pytest.fixture
def gaussian_batch():
    params = gaussian_params((4,))
    teacher = GaussianVelocity(**params)
    batch = teacher.mean + teacher.std * torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return params, teacher, batch


@pytest.mark.parametrize("directions", ["both", "forward"])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_the_exact_flow_map_is_a_fixed_point_of_shortcut_f2d2(gaussian_batch, directions, divergence):
    params, teacher, batch = gaussian_batch
    out = shortcut_f2d2_loss(
        GaussianFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
        directions=directions, divergence=divergence, num_probes=4, bootstrap_fraction=0.5,
    )
    # Both the tangent condition and the semigroup property hold exactly, so every term vanishes.
    assert out.loss < 1e-10 and out.bootstrap_loss < 1e-10 and out.diagonal_loss < 1e-10


def test_a_wrong_divergence_is_penalised_in_the_bootstrap_term(gaussian_batch):
    params, teacher, batch = gaussian_batch
    out = shortcut_f2d2_loss(
        PerturbedFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
        bootstrap_fraction=0.5, anchor_starts_to_grid=True,
    )
    # Student off by 0.5 per dimension; the two half-step targets carry the same offset, so the error is 0.
    assert out.diagonal_loss < 1e-10
    assert out.bootstrap_loss < 1e-10
    swapped = shortcut_f2d2_loss(
        PerturbedFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), teacher=teacher,
        target_model=GaussianFlowMap(**params), bootstrap_fraction=0.5,
    )
    # With exact targets the 0.5-per-dimension error shows up as 0.25 per bootstrap sample.
    torch.testing.assert_close(swapped.bootstrap_loss.double(), torch.tensor(0.25, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_shortcut_loss_trains_every_new_part_of_a_student(tiny_f2d2_mlp):
    batch = torch.randn(16, 3)
    out = shortcut_f2d2_loss(tiny_f2d2_mlp, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    grads = {n: p.grad for n, p in tiny_f2d2_mlp.named_parameters()}
    assert grads["divergence_out.weight"].abs().sum() > 0
    assert grads["step_embedding.linear_1.weight"].abs().sum() > 0
    assert torch.isfinite(out.loss) and out.velocity_loss >= 0 and out.divergence_loss >= 0


def test_shortcut_loss_on_images_with_a_teacher(tiny_f2d2_unet):
    from diffusers import UNet2DModel

    from testing_utils import tiny_unet_config

    teacher = UNet2DModel(**tiny_unet_config()).eval()
    out = shortcut_f2d2_loss(
        tiny_f2d2_unet, torch.rand(4, 1, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0), teacher=teacher,
        divergence="hutchinson", num_probes=2,
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_flow_matching_loss_is_lowest_at_the_true_velocity(gaussian_batch):
    params, teacher, batch = gaussian_batch
    wrong = GaussianVelocity(**{**params, "data_std": [s * 1.5 for s in params["data_std"]]})
    losses = [float(flow_matching_loss(m, batch.repeat(8, 1), generator=torch.Generator().manual_seed(0))) for m in (teacher, wrong)]
    assert losses[0] < losses[1]


def test_bad_options_are_rejected(tiny_f2d2_mlp):
    batch = torch.randn(4, 3)
    with pytest.raises(ValueError, match="directions"):
        shortcut_f2d2_loss(tiny_f2d2_mlp, batch, directions="backward")
    with pytest.raises(ValueError, match="divergence"):
        shortcut_f2d2_loss(tiny_f2d2_mlp, batch, divergence="approx")
    with pytest.raises(ValueError, match="bootstrap_fraction"):
        shortcut_f2d2_loss(tiny_f2d2_mlp, batch, bootstrap_fraction=1.0)


def test_teacher_finest_level_anchors_the_smallest_steps_to_the_teacher(gaussian_batch):
    params, teacher, batch = gaussian_batch
    kwargs = dict(generator=torch.Generator().manual_seed(0), bootstrap_fraction=0.5, max_level=0)
    # max_level=0: every bootstrap sample is at the finest level, h = +-1, so targets are one teacher midpoint
    # step, far from the exact map's average over a whole unit step: the loss must be clearly positive.
    anchored = shortcut_f2d2_loss(GaussianFlowMap(**params), batch, teacher=teacher, teacher_finest_level=True, **kwargs)
    assert anchored.bootstrap_loss > 1e-3
    # With tiny finest steps, the teacher's midpoint step matches the exact map closely.
    fine = shortcut_f2d2_loss(
        GaussianFlowMap(**params), batch, teacher=teacher, teacher_finest_level=True,
        generator=torch.Generator().manual_seed(0), bootstrap_fraction=0.5, max_level=10,
    )
    assert fine.bootstrap_loss < 1e-4
    with pytest.raises(ValueError, match="needs a teacher"):
        shortcut_f2d2_loss(GaussianFlowMap(**params), batch, teacher_finest_level=True)
