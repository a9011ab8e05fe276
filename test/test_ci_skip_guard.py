"""Under CI=true a skipped test fails the run (test/ci_skip_guard.py), so hidden data or a
missing rclpy cannot pass quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / 'test_needs_data.py').write_text(
        'import pytest\n'
        'def test_x():\n    pass\n'
        'def test_y():\n    pytest.importorskip("a_module_that_is_not_installed")\n')
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    if ci is not None:
        env['CI'] = ci
    return subprocess.run([sys.executable, '-m', 'pytest', '-c', str(ROOT / 'pytest.ini'),
                           '--rootdir', str(tmp_path), '-p', 'no:cacheprovider',
                           str(tmp_path / 'test_needs_data.py')],
                          env={**env, 'PYTHONPATH': str(ROOT / 'test')}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_skip_fails_the_run_under_ci(tmp_path: Path) -> None:
    out = _run(tmp_path, 'true')
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'skipped test(s) fail the run' in out.stdout
    assert 'a_module_that_is_not_installed' in out.stdout


def test_a_skip_is_only_a_skip_outside_ci(tmp_path: Path) -> None:
    out = _run(tmp_path, None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '1 passed, 1 skipped' in out.stdout
