"""``train_f2d2.py --trajectory_weight``: the cached teacher paths and the flag checks."""

import types

import pytest
import torch

from f2d2_diffusers import FlowMatchingMLPModel
from f2d2_diffusers.training.data import TrainingData, VectorDataset
from f2d2_diffusers.training.trajectories import TRAJECTORY_FILE, TRAJECTORY_GRID, training_trajectories
from training import train_f2d2


class MainProcess:
    is_main_process = True
    device = torch.device("cpu")

    def print(self, *args):
        pass

    def wait_for_everyone(self):
        pass


def test_teacher_paths_are_computed_once_and_recomputed_for_another_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = FlowMatchingMLPModel(sample_size=2, hidden_dim=16, num_layers=1, time_embed_dim=8).eval()
    data = TrainingData(VectorDataset(torch.randn(10, 2)), "vector", (2,), None, "ten points")
    args = types.SimpleNamespace(output_dir=str(tmp_path), trajectory_samples=6, trajectory_draws=3, divergence="auto")
    paths = training_trajectories(args, data, teacher, MainProcess(), seed=0)
    # Vectors get one draw; states start at the data and the grid is the 8-step one.
    assert paths.states.shape == (6, len(TRAJECTORY_GRID), 2) and paths.integrals.shape == (6, len(TRAJECTORY_GRID))
    torch.testing.assert_close(paths.states[:, 0], torch.stack([data.dataset[i] for i in range(6)]))
    assert paths.metadata["divergence"] == "exact"
    cache = tmp_path / TRAJECTORY_FILE
    stamp = cache.stat().st_mtime_ns
    training_trajectories(args, data, teacher, MainProcess(), seed=0)
    assert cache.stat().st_mtime_ns == stamp  # reused, e.g. on resume
    with torch.no_grad():
        teacher.proj_out.bias.add_(1.0)
    again = training_trajectories(args, data, teacher, MainProcess(), seed=0)
    assert cache.stat().st_mtime_ns != stamp and not torch.equal(again.states, paths.states)


@pytest.mark.parametrize("flags, message", [
    (["--trajectory_weight", "1"], "needs --teacher_model_name_or_path"),
    (["--trajectory_weight", "-1", "--teacher_model_name_or_path", "t"], "must be >= 0"),
    (["--trajectory_draws", "0"], "must be >= 1"),
])
def test_bad_trajectory_flags_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        train_f2d2.parse_args(["--dataset", "checkerboard", *flags])
    assert message in capsys.readouterr().err


def test_defaults_are_the_calibrated_recipe():
    args = train_f2d2.parse_args(["--dataset", "checkerboard", "--teacher_model_name_or_path", "t"])
    assert args.bootstrap_fraction == 0.5 and args.anchor_starts_to_grid and args.teacher_finest_level
    assert args.trajectory_weight == 0.0
    without_teacher = train_f2d2.parse_args(["--dataset", "checkerboard"])
    assert without_teacher.teacher_finest_level is False
    off = train_f2d2.parse_args(["--dataset", "checkerboard", "--no-anchor_starts_to_grid"])
    assert off.anchor_starts_to_grid is False
