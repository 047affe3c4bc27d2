import pytest
import torch

from analytic import GaussianFlowMap, gaussian_params
from f2d2_diffusers.objectives import trajectory_f2d2_loss
from f2d2_diffusers.objectives.trajectory import trajectory_segments
from f2d2_diffusers.trajectories import TeacherTrajectories

GRID = torch.tensor([k / 8 for k in range(9)], dtype=torch.float64)


def exact_trajectories(flow_map, data):
    """States and cumulative divergence integrals at GRID from the closed-form map started at sigma = 0."""
    states, integrals = [data], [torch.zeros(data.shape[0], dtype=data.dtype)]
    for sigma in GRID[1:]:
        out = flow_map(data, torch.zeros(()), sigma * 1000)
        states.append(data + sigma * out.sample)
        integrals.append(sigma * out.divergence)
    return torch.stack(states, dim=1), torch.stack(integrals, dim=1)


@pytest.fixture
def gaussian_paths():
    params = gaussian_params((3,))
    exact = GaussianFlowMap(**params)
    data = exact.mean + exact.std * torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return params, exact, *exact_trajectories(exact, data)


@pytest.mark.parametrize("directions", ["both", "forward"])
def test_the_exact_map_fits_exact_trajectories(gaussian_paths, directions):
    params, exact, states, integrals = gaussian_paths
    out = trajectory_f2d2_loss(exact, states, integrals, GRID, directions=directions,
                               generator=torch.Generator().manual_seed(0))
    assert out.loss < 1e-12


def test_a_wrong_step_or_divergence_is_penalised(gaussian_paths):
    params, exact, states, integrals = gaussian_paths
    shifted = states.clone()
    shifted[:, 1:] += 0.1  # every end point off by 0.1 per dimension
    assert trajectory_f2d2_loss(exact, shifted, integrals, GRID, generator=torch.Generator().manual_seed(0)).velocity_loss > 1e-3
    wrong = integrals * 1.5
    out = trajectory_f2d2_loss(exact, states, wrong, GRID, generator=torch.Generator().manual_seed(0))
    assert out.divergence_loss > 1e-4 and out.velocity_loss < 1e-12


def test_segments_cover_each_grid_once():
    pairs = trajectory_segments(GRID, (1, 2, 8)).tolist()
    assert pairs[:3] == [[0, 8], [0, 4], [4, 8]] and len(pairs) == 1 + 2 + 8
    with pytest.raises(ValueError, match="sigma = 1/3"):
        trajectory_segments(GRID, (3,))


def test_mismatched_shapes_are_rejected(gaussian_paths):
    params, exact, states, integrals = gaussian_paths
    with pytest.raises(ValueError, match="do not match"):
        trajectory_f2d2_loss(exact, states, integrals[:, :-1], GRID)


def test_trajectories_round_trip_and_refuse_a_mismatched_cache(tmp_path):
    traj = TeacherTrajectories(GRID.float(), torch.randn(4, 9, 2), torch.randn(4, 9), {"teacher": "abc"})
    path = str(tmp_path / "t.safetensors")
    traj.save(path)
    loaded = TeacherTrajectories.load(path, expected_metadata={"teacher": "abc"})
    assert torch.equal(loaded.states, traj.states) and loaded.metadata["teacher"] == "abc"
    with pytest.raises(ValueError, match="other settings"):
        TeacherTrajectories.load(path, expected_metadata={"teacher": "xyz"})


def test_a_cache_hit_builds_no_data_and_a_stale_cache_is_recomputed(tmp_path):
    from analytic import GaussianVelocity

    from f2d2_diffusers.trajectories import load_or_compute_teacher_trajectories, teacher_digest

    teacher = GaussianVelocity(**gaussian_params((2,)))
    path = str(tmp_path / "paths.safetensors")
    data = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    first = load_or_compute_teacher_trajectories(path, teacher, data, [0.0, 0.5, 1.0], {"teacher": teacher_digest(teacher)},
                                                 divergence="exact", show_progress=False)

    def never():
        raise AssertionError("the data were built although the cache matched")

    again = load_or_compute_teacher_trajectories(path, teacher, never, [0.0, 0.5, 1.0], {"teacher": teacher_digest(teacher)})
    assert torch.equal(again.states, first.states)
    other = load_or_compute_teacher_trajectories(path, teacher, lambda: data * 2, [0.0, 0.5, 1.0], {"teacher": "other"},
                                                 divergence="exact", show_progress=False)
    assert other.metadata["teacher"] == "other" and torch.allclose(other.states[:, 0], (data * 2).float())
