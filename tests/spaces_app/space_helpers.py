"""Helpers for the Space tests: its modules on ``sys.path``, and tiny random-weight models for its registry."""

import os
import sys
from pathlib import Path

import pytest
import torch
from testing_utils import randomise_new_layers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

APP_DIR = Path(__file__).resolve().parents[2] / "spaces_app"
APP_PATH = APP_DIR / "app.py"
# The Space's modules are top-level modules of a script folder (a Space runs ``python app.py`` there), so the tests
# import them the same way: ``from inputs import parse_points``.
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
ARTIFACTS = Path(__file__).resolve().parents[2] / "outputs" / "test-artifacts"

DIGITS = "tiny digits"
POINTS = "tiny 2-D"
NO_TEACHER = "tiny 2-D, no teacher"
MISSING = "missing checkpoint"

TINY_UNET = dict(
    sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False,
)
TINY_MLP = dict(sample_size=2, hidden_dim=32, num_layers=2)
#: A cheap fixed-step reference keeps the tests fast; the app's default is dopri5 at 1e-5.
FAST_REFERENCE = dict(method="euler", num_steps=2)


def require_demo_dependencies():
    """Skip (the calling module or test) when the demo's optional dependencies are not installed."""
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
    pytest.importorskip("matplotlib", reason="the demo's 2-D plots need matplotlib")


def tiny_digits_pipeline():
    from f2d2_diffusers import F2D2Pipeline, F2D2Scheduler, F2D2UNet2DModel

    torch.manual_seed(0)
    unet = randomise_new_layers(F2D2UNet2DModel(**TINY_UNET), 0).eval()
    return F2D2Pipeline(unet=unet, scheduler=F2D2Scheduler(), num_levels=17)


def tiny_digits_teacher():
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    return UNet2DModel(**TINY_UNET).eval()


def tiny_points_pipeline():
    from f2d2_diffusers import F2D2MLPModel, F2D2Pipeline, F2D2Scheduler

    torch.manual_seed(2)
    unet = randomise_new_layers(F2D2MLPModel(**TINY_MLP), 2).eval()
    return F2D2Pipeline(unet=unet, scheduler=F2D2Scheduler(), num_levels=None)


def tiny_points_teacher():
    from f2d2_diffusers import FlowMatchingMLPModel

    torch.manual_seed(3)
    return FlowMatchingMLPModel(**TINY_MLP).eval()


def tiny_registry(tmp_path, reference_options=FAST_REFERENCE):
    from registry import ModelRegistry, ModelSpec

    return ModelRegistry(
        [
            ModelSpec(DIGITS, pipeline_factory=tiny_digits_pipeline, teacher_factory=tiny_digits_teacher,
                      reference_options=dict(reference_options), kind="image"),
            ModelSpec(POINTS, pipeline_factory=tiny_points_pipeline, teacher_factory=tiny_points_teacher,
                      reference_options=dict(reference_options), kind="points"),
            ModelSpec(NO_TEACHER, pipeline_factory=tiny_points_pipeline, kind="points"),
            ModelSpec(MISSING, source=str(tmp_path / "no-such-checkpoint"), teacher_source=str(tmp_path / "no-teacher"),
                      missing_hint="Train it first."),
        ]
    )
