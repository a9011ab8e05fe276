"""Helpers shared by the `fourd` subcommands: argument types, tables, JSON, memory readings."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fourd_ros.core.jsonsafe import json_safe  # noqa: F401 (re-exported for the CLI)
from fourd_ros.core.types import GroundPlane


def size_arg(text: str) -> tuple[int, int]:
    """Parse 'WxH' (pixels) into (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}')
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f'image size must be at least 8x8, got {text!r}')
    return w, h


def range_arg(text: str) -> tuple[int, int]:
    """Parse 'MIN-MAX' or 'N' (non-negative integers) into (min, max)."""
    try:
        parts = [int(v) for v in text.split('-')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected MIN-MAX or N, got {text!r}')
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(f'expected MIN-MAX with 0 <= MIN <= MAX, got {text!r}')
    return parts[0], parts[1]


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}')
    if v < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}')
    return v


def finite_float(text: str) -> float:
    """A finite number (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}')
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f'expected a finite number, got {text!r}')
    return v


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --checkpoint of the learned backend."""
    p.add_argument('--device', default='auto',
                   help='learned backend: auto, cpu, cuda or cuda:N (auto)')
    p.add_argument('--checkpoint', default=None,
                   help='learned backend: model checkpoint (default: the one shipped)')


def add_cache_arguments(p: argparse.ArgumentParser) -> None:
    """--cache-mb and --cache-device-mb (`budget_policy`; the node's cache_budget_mb and
    cache_device_budget_mb)."""
    p.add_argument('--cache-mb', type=finite_float, default=None, metavar='MB',
                   help='latent cache budget in host memory, MiB (engine default)')
    p.add_argument('--cache-device-mb', type=finite_float, default=None, metavar='MB',
                   help="latent cache budget on the inference GPU (the learned model's "
                        'keys/values), MiB (default or 0: --cache-mb)')


def add_ground_arguments(p: argparse.ArgumentParser) -> None:
    """--camera-height and --camera-pitch: a ground robot's camera (`ground_plane`)."""
    p.add_argument('--camera-height', type=finite_float, default=0.0, metavar='M',
                   help="a ground robot's camera: its height above the flat floor, metres; "
                   'the learned backend then outputs metres (0 = unknown: up to scale)')
    p.add_argument('--camera-pitch', type=finite_float, default=None, metavar='DEG',
                   help='with --camera-height: how far the optical axis points below the '
                   'horizon, degrees (no roll)')


def ground_plane(args: argparse.Namespace) -> GroundPlane | None:
    """The floor under the camera that --camera-height / --camera-pitch describe (None: not
    given); ValueError for a negative height or a pitch without a height."""
    if args.camera_height < 0:
        raise ValueError('--camera-height must be >= 0')
    if args.camera_pitch is not None and args.camera_height <= 0:
        raise ValueError('--camera-pitch goes with --camera-height (the floor under the camera)')
    if args.camera_height == 0:
        return None
    return GroundPlane.pitched(args.camera_height, args.camera_pitch or 0.0)


def add_metric_depth_argument(p: argparse.ArgumentParser) -> None:
    """`--metric-depth` of `fourd run` and `fourd eval` (`factory.check_metric_depth`)."""
    p.add_argument('--metric-depth', action='store_true',
                   help="learned backend on an input with depth (an RGB-D camera's recording): "
                        "its outputs take metres from the depth (the node's backend:=learned "
                        'with a depth remap); without it the depth is ignored (monocular)')


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented strict JSON (NaN as null), creating parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(json_safe(data), indent=1, allow_nan=False) + '\n')
    return p


def fmt_value(value: Any, digits: int = 4) -> str:
    if isinstance(value, (bool, np.bool_)):
        return 'yes' if value else 'no'
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return 'n/a'
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f'{v:.3e}'
        return f'{v:.{digits}g}'
    return str(value)


def print_table(title: str, rows: Iterable[tuple[str, Any, str]]) -> None:
    """Print (name, value, unit/meaning) rows as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify='left')
    table.add_column('metric')
    table.add_column('value', justify='right')
    table.add_column('unit / meaning', style='dim')
    for name, value, unit in rows:
        table.add_row(name, fmt_value(value), unit)
    Console().print(table)
