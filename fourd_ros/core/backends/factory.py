"""Backend construction by name (the one place that knows every backend)."""

from __future__ import annotations

from fourd_ros.core.engine.backend import Backend

BACKENDS = ('rgbd', 'learned', 'oracle')


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is available, else 'cpu'."""
    if device != 'auto':
        return device
    try:
        import torch
    except ImportError:
        return 'cpu'
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def make_backend(name: str, device: str = 'auto', checkpoint: str | None = None) -> Backend:
    """Build a perception backend; raises ValueError with a clear message when impossible."""
    if name == 'rgbd':
        from fourd_ros.core.backends.rgbd import RgbdBackend
        return RgbdBackend()
    if name == 'learned':
        raise ValueError('the learned (monocular) backend is not available in this version: '
                         'give the node a registered depth topic (depth_topic) to use the '
                         'rgbd backend')
    if name == 'oracle':
        raise ValueError('the oracle backend replays dataset ground truth for evaluation only')
    raise ValueError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
