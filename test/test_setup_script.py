"""scripts/setup.sh stops with a message naming the failing step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_setup(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which('bash'), str(root / 'scripts' / 'setup.sh')], env=env,
                          cwd=root, capture_output=True, text=True, timeout=600)


def test_missing_cmake_names_the_step(tmp_path: Path) -> None:
    # a PATH with everything but cmake, and apt disabled, so the tool check must fail
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('python3', 'g++', 'make', 'sha256sum', 'cut', 'cat', 'grep', 'id', 'ldconfig',
                 'dirname', 'mkdir', 'tail', 'rm', 'bash', 'env'):
        found = shutil.which(tool) or shutil.which(tool, path='/sbin:/usr/sbin')
        if found:
            (bin_dir / tool).symlink_to(found)
    env = dict(os.environ, PATH=str(bin_dir), FOURD_NO_APT='1', PYTHON=sys.executable)
    result = _run_setup(REPO, env)
    assert result.returncode != 0
    assert "'cmake' is missing" in result.stderr
    assert "FAILED at step 'system packages" in result.stderr


def test_failing_interface_build_names_the_step(tmp_path: Path) -> None:
    # a copy of the repo whose message definition is broken, built against the existing venv
    copy = tmp_path / 'repo'
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns('.venv', 'build', '.git', 'out'))
    (copy / 'msg' / 'msg' / 'TrackedPoints.msg').write_text('not_a_type ids\n')
    env = dict(os.environ, FOURD_VENV=str(REPO / '.venv'), FOURD_NO_APT='1')
    result = _run_setup(copy, env)
    assert result.returncode != 0
    assert "FAILED at step 'build interface package fourd_ros_msgs" in result.stderr
