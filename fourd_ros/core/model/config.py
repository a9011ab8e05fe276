"""Architecture settings of the S-4RC model; stored in every checkpoint so loading rebuilds it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """S-4RC architecture (sizes in pixels at the processing resolution).

    Attributes:
        width, height: processing size the model is built and trained for (multiples of
            ``patch``); the backend resizes images to it.
        patch: token stride in pixels (one token per patch x patch block).
        dim: token width D.
        heads: attention heads.
        blocks: encoder blocks (each: frame-wise attention, then causal global attention).
        motion_layers: motion-head layers (AdaLN self-attention + cross-attention + MLP).
        planes: depth hypotheses of the plane-sweep cost volume (log-uniform).
        min_depth, max_depth: plane range in normalised units (scene median depth ~ 1).
        zncc_window: side in pixels of the local normalisation window of the NCC cost.
        max_sources: cached frames matched against the current one in the cost volume.
        feat8: channels of the per-frame 1/8-resolution feature map cached for the motion head.
        cost_aggregation: side (1/4-resolution pixels) of the box that aggregates the cost
            volume before it enters the network and the plane logits (1 = none).
        motion_prior: the motion head adds its output to a fixed scene-flow prior
            (`scene_flow.scene_flow_prior`) and sees it as input (False = the head alone, the
            default: measured, the prior lowered query errors on synthetic development seeds
            but raised them 3x on the node test's scene, docs/history.md).
    """

    width: int = 256
    height: int = 192
    patch: int = 16
    dim: int = 128
    heads: int = 4
    blocks: int = 4
    motion_layers: int = 2
    planes: int = 32
    min_depth: float = 0.2
    max_depth: float = 5.0
    zncc_window: int = 5
    max_sources: int = 2
    feat8: int = 48
    cost_aggregation: int = 9
    motion_prior: bool = False

    def __post_init__(self) -> None:
        if self.width % self.patch or self.height % self.patch:
            raise ValueError(f'model size {self.width}x{self.height} must be a multiple of the '
                             f'patch size {self.patch}')
        if self.patch != 16:
            raise ValueError('the convolutional stem has a fixed stride of 16: patch must be 16')
        if self.dim % self.heads:
            raise ValueError(f'dim {self.dim} is not divisible by heads {self.heads}')

    @property
    def tokens(self) -> int:
        """Patch tokens per frame."""
        return (self.width // self.patch) * (self.height // self.patch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], legacy: bool = True) -> ModelConfig:
        """Rebuild from a checkpoint's dict; unknown keys are an error (config mismatch).
        Keys the dict predates take the value its checkpoint implies (`legacy`) or, when
        growing an old checkpoint into today's architecture, today's default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f'unknown model config keys {unknown}')
        # keys added after checkpoints were written, with the value those checkpoints imply
        implied = {'cost_aggregation': 1, 'motion_prior': False} if legacy else {}
        return cls(**{**implied, **d})
