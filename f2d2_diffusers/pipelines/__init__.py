from .pipeline_energy_sampler import EnergySamplerPipeline, EnergySamplerPipelineOutput
from .pipeline_f2d2 import F2D2Pipeline, F2D2PipelineOutput
from .pipeline_f2d2_likelihood import F2D2LikelihoodPipeline, F2D2LikelihoodPipelineOutput
from .pipeline_flow_matching import FlowMatchingEulerPipeline

__all__ = [
    "EnergySamplerPipeline", "EnergySamplerPipelineOutput",
    "F2D2LikelihoodPipeline", "F2D2LikelihoodPipelineOutput", "F2D2Pipeline", "F2D2PipelineOutput", "FlowMatchingEulerPipeline",
]
