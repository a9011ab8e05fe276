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


def resolve_backend(name: str, has_depth: bool) -> str:
    """'auto' -> 'rgbd' when registered depth comes with the images, else 'learned'."""
    if name == 'auto':
        return 'rgbd' if has_depth else 'learned'
    return name


def make_backend(name: str, device: str = 'auto', checkpoint: str | None = None) -> Backend:
    """Build a perception backend; raises ValueError with a clear message when impossible.

    Args:
        name: 'rgbd' or 'learned' ('auto' must be resolved first, `resolve_backend`).
        device: inference device of the learned model ('auto', 'cpu', 'cuda', 'cuda:N').
        checkpoint: learned model checkpoint (None = the one shipped in the package).
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
        from fourd_ros.core.backends.learned import LearnedBackend
        return LearnedBackend(checkpoint=checkpoint, device=dev)
    if name == 'oracle':
        raise ValueError('the oracle backend replays dataset ground truth for evaluation only')
    raise ValueError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
