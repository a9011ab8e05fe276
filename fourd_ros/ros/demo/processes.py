"""The demo's child processes and their environment: config lookup, ROS/DDS variables,
starting and stopping `python -m ...` children with their logs."""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import fourd_ros

STOP_TIMEOUT_S = 10.0


def config_dir() -> Path:
    """config/ of the source tree, else of the installed package share directory."""
    source = Path(fourd_ros.__file__).resolve().parents[1] / 'config'
    if (source / 'fourd.yaml').is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory('fourd_ros')) / 'config'
        if (share / 'fourd.yaml').is_file():
            return share
    except Exception:  # noqa: BLE001 - no ament index here: report what was looked for
        pass
    prefix = Path(sys.prefix) / 'share' / 'fourd_ros' / 'config'
    if (prefix / 'fourd.yaml').is_file():
        return prefix
    raise FileNotFoundError(f'config/fourd.yaml not found (looked in {source} and {prefix})')


def map_voxel_size(params_file: Path, default: float = 0.05) -> float:
    """map_voxel_size from the node's parameter file (sets the snapshot's marker size)."""
    try:
        import yaml
        params = yaml.safe_load(params_file.read_text())['/**']['ros__parameters']
        return float(params.get('map_voxel_size', default))
    except Exception:  # noqa: BLE001 - only cosmetic
        return default


def setup_environment(domain_id: int | None, config: Path) -> int:
    """Set the ROS/DDS variables in os.environ (inherited by children); returns the domain."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = config / 'fastdds.xml'
    if profile.is_file():
        os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    if domain_id is None:
        domain_id = random.randint(1, 100)
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    os.environ.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')
    return domain_id


def node_argv(config: Path, *params: str, depth: bool = True) -> list[str]:
    """`python` arguments of fourd_node on the synthetic camera's topics (remapped inputs, the
    parameter file in `config`); `params` are NAME:=VALUE; `depth` False = monocular."""
    argv = ['-m', 'fourd_ros.ros.node', '--ros-args', '--params-file', str(config / 'fourd.yaml'),
            '-r', 'image:=/camera/image_raw', '-r', 'camera_info:=/camera/camera_info',
            *(['-r', 'depth:=/camera/depth'] if depth else [])]
    for item in params:
        argv += ['-p', item]
    return argv


def camera_argv(*params: str) -> list[str]:
    """`python` arguments of fourd_synthetic_camera; `params` are NAME:=VALUE."""
    argv = ['-m', 'fourd_ros.ros.synthetic_camera', '--ros-args']
    for item in params:
        argv += ['-p', item]
    return argv


@dataclass
class Child:
    """A started child process and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors='replace').splitlines()
        except OSError:
            return '(no log)'
        return '\n'.join(text[-lines:]) or '(empty log)'


def start_child(name: str, argv: list[str], log_dir: Path) -> Child:
    """`python -m ...` in a new session (a terminal's Ctrl-C reaches only the demo)."""
    log = log_dir / f'{name}.log'
    with log.open('w') as fh:
        proc = subprocess.Popen([sys.executable, *argv], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ),
                                start_new_session=True)
    return Child(name, proc, log)


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGINT each child, wait up to `timeout` s in total, then SIGKILL what is left."""
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
