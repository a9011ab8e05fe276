"""Backend construction by name (the one place that knows every backend)."""

from __future__ import annotations

import re
from typing import Any

from fourd_ros.core.engine.backend import Backend

# backends that run on a live stream (the node, `fourd bench`, the demo)
STREAM_BACKENDS = ('learned', 'rgbd')
# ... and the oracle, which replays a dataset's ground truth (evaluation plumbing only)
BACKENDS = (*STREAM_BACKENDS, 'oracle')
# what a user may ask for: a backend, or 'auto' (`resolve_backend`)
STREAM_CHOICES = ('auto', *STREAM_BACKENDS)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is available, else 'cpu'; 'cpu', 'cuda' and 'cuda:N'
    pass through; anything else is a ValueError."""
    if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', device):
        raise ValueError(f"device '{device}': use auto, cpu, cuda or cuda:N")
    if device != 'auto':
        return device
    try:
        import torch
    except ImportError:
        return 'cpu'
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def resolve_backend(name: str, has_depth: bool) -> str:
    """'auto' -> 'rgbd' when registered depth comes with the images, else 'learned'."""
    if name == 'auto':
        return 'rgbd' if has_depth else 'learned'
    return name


def check_metric_depth(name: str, has_depth: bool) -> None:
    """Raise ValueError unless metres from the depth (`make_backend`'s `metric_depth`) apply:
    the learned backend (rgbd is metric anyway) on an input with registered depth."""
    if name != 'learned' or not has_depth:
        raise ValueError('metres from the depth (--metric-depth) are for the learned backend '
                         f'on an input with depth (backend {name}, input depth: {has_depth})')


def make_backend(name: str, device: str = 'auto', checkpoint: str | None = None,
                 sequence: Any = None, metric_depth: bool = False) -> Backend:
    """Build a backend; raises ValueError with a clear message when impossible.

    Args:
        name: one of `BACKENDS` ('auto' must be resolved first, `resolve_backend`).
        device: inference device of the learned model ('auto', 'cpu', 'cuda', 'cuda:N').
        checkpoint: learned model checkpoint (None = the one shipped in the package).
        sequence: the evaluated sequence, for 'oracle' only (evaluation plumbing that replays
            its ground truth; a synthetic clip also gives it GT motion and dynamic masks).
        metric_depth: 'learned' on an RGB-D camera: its outputs take metres from the frames'
            registered depth (`LearnedConfig.scale_from_depth`); otherwise the depth is
            ignored (monocular).
    """
    if name == 'rgbd':
        from fourd_ros.core.backends.rgbd import RgbdBackend
        return RgbdBackend()
    if name == 'learned':
        dev = resolve_device(device)
        if dev.startswith('cuda'):
            import torch
            if not torch.cuda.is_available():
                raise ValueError(f"device '{device}': CUDA is not available on this machine")
        from fourd_ros.core.backends.learned import LearnedBackend, LearnedConfig
        return LearnedBackend(checkpoint=checkpoint, device=dev,
                              config=LearnedConfig(scale_from_depth=metric_depth))
    if name == 'oracle':
        if sequence is None:
            raise ValueError("the oracle backend replays a dataset's ground truth: evaluation "
                             'only (fourd eval --backend oracle)')
        from fourd_ros.core.backends.oracle import OracleBackend
        clip = getattr(sequence, 'clip', None)
        if clip is not None:
            return OracleBackend(motion_gt=clip.points_at, dynamic_gt=clip.dynamic_mask)
        return OracleBackend()
    raise ValueError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
