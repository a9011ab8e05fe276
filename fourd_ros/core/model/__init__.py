"""The learned S-4RC model (torch, ROS-free): causal encoder with cached keys/values, geometry
head (depth, confidence, camera), motion head ``dP = D_m(Z_q, T_tau, Z_tau)`` and checkpoints."""

from fourd_ros.core.model.config import ModelConfig
from fourd_ros.core.model.s4rc import FrameLatent, FrameOutput, S4RC, SourceViews

__all__ = ['ModelConfig', 'S4RC', 'FrameLatent', 'FrameOutput', 'SourceViews']
