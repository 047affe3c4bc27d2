from .loading import load_flow_map, load_teacher
from .mlp_f2d2 import F2D2MLPModel
from .mlp_flow_matching import FlowMatchingMLPModel
from .modeling_outputs import F2D2ModelOutput, FlowMatchingModelOutput
from .unet_f2d2 import F2D2UNet2DModel
from .utils import sample_shape

__all__ = [
    "F2D2MLPModel", "F2D2ModelOutput", "F2D2UNet2DModel", "FlowMatchingMLPModel", "FlowMatchingModelOutput", "load_flow_map",
    "load_teacher",
    "sample_shape",
]
