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

SAMPLER_2D = "tiny sampler (grid mixture, 2-D)"
SAMPLER_4D = "tiny sampler (funnel, 4-D)"
SAMPLER_NO_EXACT = "tiny sampler (logistic regression, 3-D, no exact samples)"
SAMPLER_MISSING = "missing sampler checkpoint"

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
                      reference_options=dict(reference_options), kind="image", guidance_example=0.2),
            ModelSpec(POINTS, pipeline_factory=tiny_points_pipeline, teacher_factory=tiny_points_teacher,
                      reference_options=dict(reference_options), kind="points"),
            ModelSpec(NO_TEACHER, pipeline_factory=tiny_points_pipeline, kind="points"),
            ModelSpec(MISSING, source=str(tmp_path / "no-such-checkpoint"), teacher_source=str(tmp_path / "no-teacher"),
                      missing_hint="Train it first."),
        ]
    )


def tiny_sampler_pipeline(target, seed: int = 4):
    """An ``EnergySamplerPipeline`` with a tiny random-weight model for ``target`` (an ``EnergyTarget``)."""
    from f2d2_diffusers import EnergySamplerMLPModel, EnergySamplerPipeline, F2D2Scheduler

    torch.manual_seed(seed)
    model = EnergySamplerMLPModel(sample_size=target.dim, hidden_dim=16, num_fourier=8, prior_scale=target.prior_scale)
    return EnergySamplerPipeline(model=model.eval(), scheduler=F2D2Scheduler(), target=target)


def tiny_logistic_target():
    """A 3-D Bayesian logistic regression on 20 random points: no exact sampler; a made-up reference log Z."""
    from f2d2_diffusers.targets import BayesianLogisticRegressionTarget

    g = torch.Generator().manual_seed(5)
    target = BayesianLogisticRegressionTarget(torch.randn(20, 3, generator=g), (torch.rand(20, generator=g) > 0.5).float(),
                                              name="tiny_blr")
    target.log_Z, target.log_Z_error = -14.0, 0.05
    return target


def tiny_sampler_registry(tmp_path):
    from sampler_registry import SamplerRegistry, SamplerSpec

    from f2d2_diffusers.targets import FunnelTarget, GMMGridTarget

    return SamplerRegistry(
        [
            SamplerSpec(SAMPLER_2D, pipeline_factory=lambda: tiny_sampler_pipeline(GMMGridTarget()), example_steps=2),
            SamplerSpec(SAMPLER_4D, pipeline_factory=lambda: tiny_sampler_pipeline(FunnelTarget(dim=4))),
            SamplerSpec(SAMPLER_NO_EXACT, pipeline_factory=lambda: tiny_sampler_pipeline(tiny_logistic_target())),
            SamplerSpec(SAMPLER_MISSING, source=str(tmp_path / "no-such-sampler"), missing_hint="Train it first."),
        ]
    )
