"""Style is part of the tests (as in ament_flake8): flake8 with the settings in setup.cfg."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.linter
def test_flake8() -> None:
    result = subprocess.run([sys.executable, '-m', 'flake8', 'fourd_ros', 'test', 'launch',
                             'scripts'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, 'flake8 found problems:\n' + result.stdout + result.stderr


@pytest.mark.linter
def test_core_never_imports_ros() -> None:
    offenders = []
    for path in (REPO / 'fourd_ros' / 'core').rglob('*.py'):
        text = path.read_text()
        if 'import rclpy' in text or 'from rclpy' in text or '_msgs' in text:
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f'ROS imports in the ROS-free core: {offenders}'
