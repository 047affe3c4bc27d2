from .flow_matching import SIGMA_BANDS, flow_matching_loss, flow_matching_loss_by_band
from .meanflow import MeanFlowF2D2LossOutput, meanflow_f2d2_loss
from .shortcut import ShortcutF2D2LossOutput, shortcut_f2d2_loss
from .trajectory import TrajectoryF2D2LossOutput, trajectory_f2d2_loss
from .weight_anchor import anchor_norm, anchor_weights, weight_anchor_penalty

__all__ = ["MeanFlowF2D2LossOutput", "SIGMA_BANDS", "ShortcutF2D2LossOutput", "TrajectoryF2D2LossOutput",
           "anchor_norm", "anchor_weights", "flow_matching_loss", "flow_matching_loss_by_band", "meanflow_f2d2_loss",
           "shortcut_f2d2_loss", "trajectory_f2d2_loss", "weight_anchor_penalty"]
