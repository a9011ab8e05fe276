"""Fixtures for tests that start real ROS 2 processes and talk to them over DDS (Fast DDS).

Every test gets its own ROS domain (random id) restricted to localhost, so tests never see each
other or other machines. Helper processes are started with this interpreter and killed at the end.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# a broken rclpy (ImportError, not only a missing one) skips too: under CI any skip fails
rclpy = pytest.importorskip('rclpy', exc_type=ImportError)

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent / 'peers'
# the synthetic camera of the node tests: a small clip keeps rendering and processing fast
# (160 x 120, 30 frames; seed 2 has moving objects; the node processes it at native resolution)
CAMERA = dict(seed=2, frames=30, width=160, height=120, scene_fps=30.0)


@pytest.fixture(scope='module')
def clip():
    """The clip the synthetic camera plays (rendered again here for its ground truth)."""
    from fourd_ros.core.data.synthetic import SceneConfig, generate_clip
    return generate_clip(SceneConfig(frames=CAMERA['frames'], width=CAMERA['width'],
                                     height=CAMERA['height'], seed=CAMERA['seed'],
                                     fps=CAMERA['scene_fps']))


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private ROS 2 graph: random ROS_DOMAIN_ID, localhost-only discovery, our DDS profile."""
    monkeypatch.setenv('ROS_DOMAIN_ID', str(random.randint(1, 101)))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    monkeypatch.setenv('FASTDDS_DEFAULT_PROFILES_FILE', str(REPO / 'config' / 'fastdds.xml'))
    monkeypatch.setenv('PYTHONUNBUFFERED', '1')
    return dict(os.environ)


@pytest.fixture
def ros_context(ros_env: dict[str, str]) -> Iterator[rclpy.context.Context]:
    """An initialised rclpy context for the test process (after the env is set)."""
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture
def start_process(ros_env: dict[str, str],
                  tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `python <args>` in the test's ROS graph; all are terminated after the test."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(*args: str, name: str = 'proc') -> subprocess.Popen:
        log = tmp_path / f'{name}-{len(procs)}.log'
        proc = subprocess.Popen([sys.executable, *args], env=ros_env, cwd=REPO,
                                stdout=log.open('w'), stderr=subprocess.STDOUT)
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for proc, log in procs:
        print(f'--- {log.name} (rc={proc.returncode}) ---')
        print(log.read_text()[-3000:])


def spin_until(node, condition: Callable[[], bool], timeout: float,
               executor=None) -> bool:
    """Spin `node` until `condition()` holds or `timeout` seconds pass; returns the condition."""
    executor = executor or rclpy.executors.SingleThreadedExecutor(context=node.context)
    if node not in executor.get_nodes():
        executor.add_node(node)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()
