"""Two-view depth with the S-4RC model: the second image is a cached source of the first.

Used to score the model on real stereo pairs with ground truth (a package ships the Middlebury
Motorcycle pair) and as the smallest example of the streaming API.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from fourd_ros.core.model.s4rc import S4RC, SourceViews


def two_view_depth(model: S4RC, ref_rgb: np.ndarray, src_rgb: np.ndarray, K: np.ndarray,
                   T_src_ref: np.ndarray, scale: float) -> np.ndarray:
    """Depth of the reference image (H x W float32, units of `T_src_ref`'s translation).

    Args:
        ref_rgb, src_rgb: H x W x 3 uint8 RGB, sides multiples of 16, same intrinsics `K`.
        K: 3x3 intrinsics in pixels.
        T_src_ref: 4x4 reference-camera -> source-camera transform.
        scale: a rough scene depth in the same units (the model works at unit median depth);
            any value within a factor ~3 of the true median.
    """
    dev = next(model.parameters()).device

    def tensor(img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(img).to(dev).permute(2, 0, 1)[None].float() / 255.0

    K_t = torch.from_numpy(np.asarray(K, np.float32)).to(dev)[None]
    T = np.asarray(T_src_ref, np.float64).copy()
    T[:3, 3] /= scale
    with torch.inference_mode():
        src = model.encode(tensor(src_rgb), K_t, torch.zeros(1, device=dev), [], None,
                           is_anchor=True)
        views = SourceViews(gray=src.latent.gray[:, None],
                            T_src_ref=torch.from_numpy(T).float().to(dev)[None, None])
        out = model.encode(tensor(ref_rgb), K_t, torch.full((1,), 0.1, device=dev),
                           [src.latent], views)
    return (out.depth[0, 0] * scale).cpu().numpy()


def shift_image_x(img: np.ndarray, dx: float) -> np.ndarray:
    """img(x + dx): moves content left by dx pixels (sub-pixel, border replicated)."""
    M = np.array([[1.0, 0.0, -dx], [0.0, 1.0, 0.0]])
    return cv2.warpAffine(img, M, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
