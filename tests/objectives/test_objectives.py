import pytest
import torch

from analytic import GaussianFlowMap, GaussianVelocity, PerturbedFlowMap
from f2d2_diffusers import FlowMatchingModelOutput, flow_matching_loss, flow_matching_loss_by_band, shortcut_f2d2_loss


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
    assert grads["proj_out.weight"].abs().sum() > 0
    # The logged parts add up to the loss: the batch mean of velocity + divergence error (weight 1), and the
    # sample-weighted mean of the tangent (first 12 of 16 at bootstrap_fraction 0.25) and bootstrap parts.
    torch.testing.assert_close(out.loss.detach(), out.velocity_loss + out.divergence_loss)
    torch.testing.assert_close(out.loss.detach(), (12 * out.diagonal_loss + 4 * out.bootstrap_loss) / 16)
    assert out.velocity_loss > 0 and out.divergence_loss > 0


def test_shortcut_loss_on_images_with_a_teacher(tiny_f2d2_unet):
    from diffusers import UNet2DModel

    from testing_utils import tiny_unet_config

    teacher = UNet2DModel(**tiny_unet_config()).eval()
    out = shortcut_f2d2_loss(
        tiny_f2d2_unet, torch.rand(4, 1, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0), teacher=teacher,
        divergence="hutchinson", num_probes=2,
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.diagonal_loss > 0 and out.bootstrap_loss > 0
    grads = {n: p.grad for n, p in tiny_f2d2_unet.named_parameters()}
    assert grads["divergence_out.weight"].abs().sum() > 0 and grads["conv_out.weight"].abs().sum() > 0
    # Targets are stop-gradient: nothing flows back into the frozen teacher.
    assert all(p.grad is None for p in teacher.parameters())


def test_bootstrap_fraction_zero_trains_the_tangent_alone(tiny_f2d2_unet):
    from diffusers import UNet2DModel

    from testing_utils import tiny_unet_config

    teacher = UNet2DModel(**tiny_unet_config()).eval()
    out = shortcut_f2d2_loss(
        tiny_f2d2_unet, torch.rand(4, 1, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0), teacher=teacher,
        divergence="hutchinson", bootstrap_fraction=0.0, teacher_finest_level=True,
    )
    out.loss.backward()
    assert out.bootstrap_loss == 0 and out.diagonal_loss > 0
    torch.testing.assert_close(out.loss.detach(), out.diagonal_loss)


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


class RecordingGaussianFlowMap(GaussianFlowMap):
    """The exact map, recording every ``(timestep, step)`` it is called with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def forward(self, sample, timestep, step=0.0, return_dict=True):
        self.calls.append((torch.as_tensor(timestep).clone(), torch.as_tensor(step).clone()))
        return super().forward(sample, timestep, step, return_dict=return_dict)


def _bootstrap_draws(params, batch, **kwargs):
    """Start sigmas and signed steps of the bootstrap part, read from the student's call (the last one)."""
    model = RecordingGaussianFlowMap(**params)
    out = shortcut_f2d2_loss(model, batch, generator=torch.Generator().manual_seed(0), **kwargs)
    first_half, second_half, student = model.calls
    sigma, h = student[0] / 1000, student[1] / 1000
    return out, sigma, h, first_half, second_half


@pytest.mark.parametrize("directions", ["both", "forward"])
@pytest.mark.parametrize("anchor", [False, True])
def test_bootstrap_steps_are_signed_dyadic_and_stay_inside_the_unit_interval(gaussian_batch, directions, anchor):
    params, teacher, batch = gaussian_batch
    batch = batch.repeat(4, 1)  # 256 samples
    out, sigma, h, first_half, second_half = _bootstrap_draws(
        params, batch, teacher=teacher, directions=directions, bootstrap_fraction=0.25, max_level=3,
        anchor_starts_to_grid=anchor,
    )
    # The first 192 samples train the tangent (h = 0), the last 64 the bootstrap.
    assert (h[:192] == 0).all() and (h[192:] != 0).all()
    sigma_b, h_b = sigma[192:], h[192:]
    levels = -torch.log2(h_b.abs())
    torch.testing.assert_close(levels, levels.round())
    assert set(levels.round().long().tolist()) == {0, 1, 2, 3}
    signs = set(torch.sign(h_b).long().tolist())
    assert signs == ({-1, 1} if directions == "both" else {-1})
    ends = sigma_b + h_b
    assert (sigma_b >= 0).all() and (sigma_b <= 1).all() and (ends >= -1e-12).all() and (ends <= 1 + 1e-12).all()
    on_grid = sigma_b / h_b.abs()
    if anchor:
        torch.testing.assert_close(on_grid, on_grid.round())
    else:
        assert ((on_grid - on_grid.round()).abs() > 1e-3).float().mean() > 0.5
    # Targets come from two half steps: from the start, then from the midpoint.
    torch.testing.assert_close(first_half[0] / 1000, sigma_b)
    torch.testing.assert_close(first_half[1] / 1000, h_b / 2)
    torch.testing.assert_close(second_half[0] / 1000, sigma_b + h_b / 2)
    torch.testing.assert_close(second_half[1] / 1000, h_b / 2)
    # The exact map is a fixed point whatever the draws.
    assert out.loss < 1e-10


def test_self_distillation_regresses_the_tangent_on_eps_minus_data(gaussian_batch):
    """Without a teacher the tangent's velocity target is eps - x_data (a noisy target: the loss stays positive even
    for the exact map) and its divergence target is the target model's own divergence (matched exactly)."""
    params, _, batch = gaussian_batch
    out = shortcut_f2d2_loss(
        GaussianFlowMap(**params), batch, generator=torch.Generator().manual_seed(0), bootstrap_fraction=0.25
    )
    assert out.diagonal_loss > 0.05
    assert out.divergence_loss < 1e-10 and out.bootstrap_loss < 1e-10


def test_level_weights_set_the_odds_of_the_dyadic_levels():
    from f2d2_diffusers.objectives.steps import dyadic_steps

    generator = torch.Generator().manual_seed(0)
    _, h, levels = dyadic_steps(4000, 2, "both", True, generator=generator, level_weights=[2.0, 0.0, 1.0])
    assert set(levels.tolist()) == {0, 2}
    assert abs((levels == 0).float().mean().item() - 2 / 3) < 0.03
    torch.testing.assert_close(h.abs(), torch.pow(2.0, -levels.float()))
    for bad, match in [([1.0, 1.0], "one weight per level"), ([1.0, -1.0, 1.0], "non-negative"),
                       ([0.0, 0.0, 0.0], "not all zero")]:
        with pytest.raises(ValueError, match=match):
            dyadic_steps(8, 2, "both", level_weights=bad)


def test_shortcut_loss_passes_level_weights_to_its_steps(gaussian_batch):
    params, teacher, batch = gaussian_batch
    out, sigma, h, *_ = _bootstrap_draws(params, batch.repeat(4, 1), teacher=teacher, bootstrap_fraction=0.5,
                                         max_level=3, level_weights=[0.0, 1.0, 0.0, 0.0])
    assert (h[128:].abs() == 0.5).all()


@pytest.mark.parametrize("directions", ["both", "forward"])
def test_grid_shift_trains_the_steps_of_the_shifted_scheduler(gaussian_batch, directions):
    from f2d2_diffusers import F2D2Scheduler

    params, teacher, batch = gaussian_batch
    shift = 1 / 15
    out, sigma, h, first_half, second_half = _bootstrap_draws(
        params, batch.repeat(4, 1), teacher=teacher, directions=directions, bootstrap_fraction=0.25, max_level=3,
        anchor_starts_to_grid=True, grid_shift=shift,
    )
    sigma_b, h_b = sigma[192:].double(), h[192:].double()
    # Every trained step joins two neighbours of the 2^k-step grid of F2D2Scheduler(shift=1/15).
    scheduler = F2D2Scheduler(shift=shift)
    steps_seen = set()
    for s, step in zip(sigma_b.tolist(), h_b.tolist()):
        matches = []
        for k in range(4):
            scheduler.set_timesteps(2**k, direction="likelihood")
            grid = scheduler.sigmas.tolist()
            pairs = list(zip(grid[:-1], grid[1:]))
            lo, hi = (s, s + step) if step > 0 else (s + step, s)
            matches += [k for a, b in pairs if abs(a - lo) < 1e-6 and abs(b - hi) < 1e-6]
        assert matches, f"step {s:.4f} -> {s + step:.4f} is on no shifted grid"
        steps_seen.update(matches)
    assert steps_seen == {0, 1, 2, 3}
    # The two halves meet at the shifted midpoint, so they are unequal in sigma: the half nearer the data is the
    # shorter one (the first when encoding, h > 0; the second when sampling, h < 0, hence first_h < second_h in both).
    # The targets average them by length, so the exact map stays a fixed point.
    first_h, second_h = first_half[1].double() / 1000, second_half[1].double() / 1000
    torch.testing.assert_close(first_h + second_h, h_b, rtol=1e-5, atol=1e-6)
    encoding = h_b > 0
    assert (first_h[encoding] < second_h[encoding]).all() and (first_h[~encoding] < second_h[~encoding]).all()
    assert out.loss < 1e-10


def test_grid_shift_must_be_positive(gaussian_batch):
    params, teacher, batch = gaussian_batch
    for bad in (0.0, -1.0, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="grid_shift must be a positive finite number"):
            shortcut_f2d2_loss(GaussianFlowMap(**params), batch, teacher=teacher, grid_shift=bad)


def test_grid_shift_gives_the_teacher_the_warped_finest_steps(gaussian_batch):
    from f2d2_diffusers.flow_map import shift_sigmas

    class RecordingTeacher(GaussianVelocity):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.timesteps = []

        def forward(self, sample, timestep, return_dict=True):
            self.timesteps.append(torch.as_tensor(timestep).clone())
            return super().forward(sample, timestep, return_dict=return_dict)

    params, _, batch = gaussian_batch
    teacher, shift = RecordingTeacher(**params), 1 / 7
    # max_level=0: every bootstrap step is the finest, the whole warped unit step, from the teacher's midpoint rule.
    out, sigma, h, *_ = _bootstrap_draws(params, batch, teacher=teacher, bootstrap_fraction=0.5, max_level=0,
                                         anchor_starts_to_grid=True, teacher_finest_level=True, grid_shift=shift)
    start, mid = teacher.timesteps[-2].double() / 1000, teacher.timesteps[-1].double() / 1000
    sigma_b, h_b = sigma[32:].double(), h[32:].double()
    torch.testing.assert_close(start, sigma_b)
    # The midpoint rule halves the warped step in sigma (not in tau): it covers [sigma, sigma + h] as trained.
    torch.testing.assert_close(mid, sigma_b + h_b / 2)
    assert set(sigma_b.tolist()) <= {0.0, 1.0} and (h_b.abs() == 1).all()
    # Its midpoint is sigma = 1/2 (the middle in sigma), not shift_sigmas(1/2) = 1/8 (the middle in tau).
    assert set(mid.tolist()) == {0.5} and shift_sigmas(torch.tensor(0.5), shift).item() == pytest.approx(0.125)
    assert out.bootstrap_loss > 0  # one midpoint step over the whole unit step is not the exact map


def test_likelihood_grid_shift_moves_the_encoding_steps_alone(gaussian_batch):
    from f2d2_diffusers import F2D2Scheduler

    params, teacher, batch = gaussian_batch
    out, sigma, h, first_half, second_half = _bootstrap_draws(
        params, batch.repeat(4, 1), teacher=teacher, bootstrap_fraction=0.25, max_level=3, anchor_starts_to_grid=True,
        likelihood_grid_shift=1 / 7,
    )
    sigma_b, h_b = sigma[192:].double(), h[192:].double()
    scheduler = F2D2Scheduler(likelihood_shift=1 / 7)  # sampling grids uniform, likelihood grids shifted
    for direction, chosen in (("likelihood", h_b > 0), ("sample", h_b < 0)):
        assert chosen.any()
        points = set()
        for k in range(4):
            scheduler.set_timesteps(2**k, direction=direction)
            points.update(round(v, 6) for v in scheduler.sigmas.tolist())
        assert {round(v, 6) for v in sigma_b[chosen].tolist()} <= points, direction
    # Sampling steps keep equal halves; encoding steps have the shorter half next to the data.
    first_h, second_h = first_half[1].double() / 1000, second_half[1].double() / 1000
    torch.testing.assert_close(first_h[h_b < 0], second_h[h_b < 0])
    assert (first_h[h_b > 0] < second_h[h_b > 0]).all()
    assert out.loss < 1e-10  # the exact map is still a fixed point
    with pytest.raises(ValueError, match="likelihood_grid_shift must be a positive finite number"):
        shortcut_f2d2_loss(GaussianFlowMap(**params), batch, teacher=teacher, likelihood_grid_shift=0.0)


class _MemorisingVelocity(torch.nn.Module):
    """The exact flow-matching velocity of the empirical distribution of ``points``: a teacher that has memorised
    its training set (its ODE carries every start back to one of ``points``)."""

    def __init__(self, points):
        super().__init__()
        self.points = points

    def forward(self, sample, timestep, return_dict=True):
        sigma = (timestep / 1000.0).reshape(-1, 1)
        # posterior over the training points given x_sigma = (1 - sigma) x + sigma eps
        logits = -((sample[:, None] - (1 - sigma[:, None]) * self.points[None]) ** 2).sum(-1) / (2 * sigma**2)
        data_mean = torch.softmax(logits, dim=1) @ self.points
        velocity = (sample - (1 - sigma) * data_mean) / sigma - data_mean
        return FlowMatchingModelOutput(sample=velocity)


def test_flow_matching_loss_by_band_sees_memorisation(gaussian_batch):
    params, teacher, batch = gaussian_batch
    training, held_out = batch[:32], batch[32:]
    memorising = _MemorisingVelocity(training)
    bands = ((0.01, 0.05), (0.5, 1.0))
    on_training = flow_matching_loss_by_band(memorising, training, bands=bands)
    on_held_out = flow_matching_loss_by_band(memorising, held_out, bands=bands)
    assert list(on_training) == ["0.01-0.05", "0.5-1"]
    # Near the data the memorising teacher is far better on its own points than on new ones ...
    assert on_held_out["0.01-0.05"] > 5 * on_training["0.01-0.05"]
    # ... while the true velocity scores both splits alike, and near noise the two splits look the same.
    exact = [flow_matching_loss_by_band(teacher, split, bands=bands, repeats=32) for split in (training, held_out)]
    assert exact[1]["0.01-0.05"] == pytest.approx(exact[0]["0.01-0.05"], rel=0.25)
    assert on_held_out["0.5-1"] == pytest.approx(on_training["0.5-1"], rel=0.25)


def test_flow_matching_loss_by_band_rejects_bad_bands(gaussian_batch):
    _, teacher, batch = gaussian_batch
    with pytest.raises(ValueError, match="0 <= lo < hi <= 1"):
        flow_matching_loss_by_band(teacher, batch, bands=((0.5, 0.2),))
