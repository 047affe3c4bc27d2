from .digits_classifier import DigitsClassifier
from .mlp_f2d2 import F2D2MLPModel
from .loading import load_teacher
from .mlp_flow_matching import FlowMatchingMLPModel
from .modeling_outputs import F2D2ModelOutput, FlowMatchingModelOutput
from .unet_f2d2 import F2D2UNet2DModel

__all__ = ["DigitsClassifier", "F2D2MLPModel", "F2D2ModelOutput", "F2D2UNet2DModel", "FlowMatchingMLPModel", "FlowMatchingModelOutput", "load_teacher"]
