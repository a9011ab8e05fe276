"""S-4RC checkpoints: weights plus the model config that rebuilds the exact architecture.

Loaded with ``torch.load(..., weights_only=True)`` (no pickled code runs). Every failure (missing,
truncated, corrupt, not ours, config mismatch) raises one `CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from fourd_ros.core.model.config import ModelConfig
from fourd_ros.core.model.s4rc import S4RC

FORMAT = 'fourd_ros.s4rc'
VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / 'checkpoints' / 's4rc_default.pt'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | Path, model: S4RC, meta: dict[str, Any] | None = None,
                    **training_state: Any) -> Path:
    """Write weights, config and metadata (plus optional training state) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {'format': FORMAT, 'version': VERSION, 'config': model.config.to_dict(),
               'model': model.state_dict(), 'meta': dict(meta or {}), **training_state}
    tmp = path.with_name(path.name + '.tmp')
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = 'cpu') -> dict[str, Any]:
    """The checked payload of a checkpoint file (tensors on `device`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path}: file not found')
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated/corrupt files raise many different errors
        raise CheckpointError(f'checkpoint {path}: unreadable (truncated or corrupt?): '
                              f'{type(err).__name__}: {str(err).splitlines()[0][:200]}'
                              ) from None
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        raise CheckpointError(f'checkpoint {path}: not an S-4RC checkpoint '
                              f'(expected format {FORMAT!r})')
    if payload.get('version') != VERSION:
        raise CheckpointError(f'checkpoint {path}: format version {payload.get("version")} '
                              f'is not supported (this build reads version {VERSION})')
    for key in ('config', 'model'):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f'checkpoint {path}: missing {key!r}')
    return payload


def load_model(path: str | Path | None = None, device: str | torch.device = 'cpu'
               ) -> tuple[S4RC, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode).

    Args:
        path: checkpoint file; None = the default checkpoint shipped in the package.
        device: where the model lives ('cpu', 'cuda', 'cuda:N').

    Returns:
        (model, metadata stored with it).
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    payload = read_checkpoint(path, device)
    try:
        config = ModelConfig.from_dict(payload['config'])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f'checkpoint {path}: bad model config: {err}') from None
    model = S4RC(config)
    try:
        model.load_state_dict(payload['model'], strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes that do not fit the config
        raise CheckpointError(f'checkpoint {path}: weights do not match its model config: '
                              f'{" ".join(str(err).split())[:300]}') from None
    return model.to(device).eval(), dict(payload.get('meta', {}))


def load_grown_model(path: str | Path, device: str | torch.device = 'cpu',
                     motion_prior: bool | None = None) -> S4RC:
    """A model with the architecture of checkpoint `path`, where fields that checkpoint's config
    predates take today's defaults, and its weights. A weight whose input channels grew (a new
    input, e.g. the motion head's scene-flow prior) keeps its trained channels and starts the new
    ones at zero, so the grown model first computes what the old one did (`fourd train --init`).

    Raises:
        CheckpointError: the file is missing or unreadable.
        ValueError: a weight that today's model lacks or whose shape cannot grow.
    """
    payload = read_checkpoint(Path(path), device)
    config = ModelConfig.from_dict(payload['config'], legacy=False)
    if motion_prior is not None:
        config = dataclasses.replace(config, motion_prior=motion_prior)
    model = S4RC(config).to(device)
    state = model.state_dict()
    for name, old in payload['model'].items():
        new = state.get(name)
        if new is None:
            raise ValueError(f"{path}: {name} is not a parameter of today's model")
        if old.shape == new.shape:
            state[name] = old
        elif (old.dim() == new.dim() >= 2 and old.shape[0] == new.shape[0]
              and old.shape[2:] == new.shape[2:] and old.shape[1] < new.shape[1]):
            grown = torch.zeros_like(new)
            grown[:, :old.shape[1]] = old
            state[name] = grown
        else:
            raise ValueError(f'{path}: {name} has shape {tuple(old.shape)}, '
                             f"today's model {tuple(new.shape)}")
    model.load_state_dict(state)
    return model
