"""f2d2-diffusers: joint flow maps for few-step sampling and log-likelihoods, in diffusers' conventions.

The math, its conventions and which module implements each formula: ``docs/method.md``.
"""

from .calibration import (
    LikelihoodCalibration, LikelihoodErrorBudget, SegmentCalibration, likelihood_calibration, likelihood_error_budget,
    segment_calibration,
)
from .dequantization import bits_per_dim, dequantize, discrete_log_prob, pixels_to_levels, standard_normal_log_prob
from .divergence import exact_divergence, hutchinson_divergence, resolve_divergence_method
from .flow_map import evaluate_flow_map, evaluate_velocity, flow_map_step, integrate_flow_map, interpolant
from .models import (
    F2D2MLPModel, F2D2ModelOutput, F2D2UNet2DModel, FlowMatchingMLPModel, FlowMatchingModelOutput, load_teacher, sample_shape,
)
from .objectives import (
    MeanFlowF2D2LossOutput,
    ShortcutF2D2LossOutput,
    flow_matching_loss,
    flow_matching_loss_by_band,
    meanflow_f2d2_loss,
    shortcut_f2d2_loss,
)
from .models.mlp_sampler import EnergySamplerMLPModel, EnergySamplerModelOutput
from .objectives.sampler import EnergySamplerLossOutput, energy_sampler_loss
from .pipelines import EnergySamplerPipeline, EnergySamplerPipelineOutput
from .pipelines import (
    F2D2LikelihoodPipeline, F2D2LikelihoodPipelineOutput, F2D2Pipeline, F2D2PipelineOutput, FlowMatchingEulerPipeline,
)
from .reference_likelihood import ReferenceLikelihoodOutput, reference_log_likelihood
from .sampling import teacher_euler_sample
from .schedulers import F2D2Scheduler, F2D2SchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "EnergySamplerLossOutput", "EnergySamplerMLPModel", "EnergySamplerModelOutput", "EnergySamplerPipeline",
    "EnergySamplerPipelineOutput", "energy_sampler_loss",
    "F2D2LikelihoodPipeline", "F2D2LikelihoodPipelineOutput", "F2D2MLPModel", "F2D2ModelOutput", "F2D2Pipeline",
    "F2D2PipelineOutput", "F2D2Scheduler", "F2D2SchedulerOutput", "F2D2UNet2DModel", "FlowMatchingMLPModel",
    "FlowMatchingEulerPipeline", "FlowMatchingModelOutput", "LikelihoodCalibration", "ReferenceLikelihoodOutput", "SegmentCalibration",
    "ShortcutF2D2LossOutput", "bits_per_dim", "dequantize", "discrete_log_prob", "evaluate_flow_map", "evaluate_velocity",
    "exact_divergence", "flow_map_step", "flow_matching_loss", "flow_matching_loss_by_band", "hutchinson_divergence", "integrate_flow_map",
    "interpolant", "likelihood_calibration", "likelihood_error_budget", "LikelihoodErrorBudget", "load_teacher", "pixels_to_levels", "reference_log_likelihood",
    "resolve_divergence_method", "sample_shape", "segment_calibration", "shortcut_f2d2_loss", "meanflow_f2d2_loss", "MeanFlowF2D2LossOutput", "standard_normal_log_prob",
    "teacher_euler_sample",
]
