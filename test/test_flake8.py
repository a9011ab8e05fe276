"""Style is part of the tests (as in ament_flake8): flake8 with the settings in setup.cfg."""

import ast
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
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or '']
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top in ('rclpy', 'launch', 'launch_ros') or top.endswith('_msgs') \
                        or top.endswith('_srvs'):
                    offenders.append(f'{path.relative_to(REPO)}: {name}')
    assert not offenders, f'ROS imports in the ROS-free core: {offenders}'
