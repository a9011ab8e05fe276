"""Dynamic-mask IoU of the rgbd backend against synthetic ground truth.

Usage: python scripts/segmentation_iou.py [SEED ...]   (24 frames, 256x192, 30 Hz, 3-5 objects)
"""

import sys

import numpy as np

from fourd_ros.core.backends.rgbd import RgbdBackend
from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
from fourd_ros.core.engine.engine import EngineConfig, StreamingEngine


def mask_iou(seed: int) -> float:
    clip = generate_clip(SceneConfig(frames=24, width=256, height=192, seed=seed, fps=30.0,
                                     num_objects=(3, 5)))
    engine = StreamingEngine(RgbdBackend(), EngineConfig(width=0))
    scores = []
    for i in range(len(clip)):
        result = engine.process(clip.frame(i))
        if i:
            gt = clip.dynamic_mask(i)
            union = (result.dynamic_mask | gt).sum()
            scores.append(((result.dynamic_mask & gt).sum() + 1) / (union + 1))
    return float(np.mean(scores))


if __name__ == '__main__':
    for seed in [int(s) for s in sys.argv[1:]] or [0, 2, 6, 11]:
        print(f'seed {seed}: dynamic mask IoU {mask_iou(seed):.2f}')
