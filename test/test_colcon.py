"""A ROS user builds the repo in a colcon workspace: both packages are found and built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.mark.slow
def test_colcon_builds_both_packages(tmp_path: Path) -> None:
    if shutil.which('colcon', path=str(VENV / 'bin')) is None:
        pytest.skip('colcon is not installed in this environment')
    src = tmp_path / 'src' / 'fourd_ros'
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns('.venv', 'build', 'install', 'log',
                                                             '.git', 'out', '__pycache__'))
    env = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}",
               AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV))
    # the exact command documented in README.md
    cmd = ['colcon', 'build', '--base-paths', 'src', 'src/fourd_ros/msg', '--cmake-args',
           f'-DPython3_EXECUTABLE={VENV / "bin" / "python"}', '-DBUILD_TESTING=OFF']
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'Summary: 2 packages finished' in result.stdout
    install = tmp_path / 'install'
    assert (install / 'fourd_ros' / 'lib' / 'fourd_ros' / 'fourd_node').exists()
    assert (install / 'fourd_ros' / 'share' / 'fourd_ros' / 'config' / 'fourd.yaml').exists()
    assert (install / 'fourd_ros' / 'share' / 'fourd_ros' / 'launch' /
            'fourd.launch.py').exists()
    assert list((install / 'fourd_ros_msgs').rglob('_query_motion.py'))
