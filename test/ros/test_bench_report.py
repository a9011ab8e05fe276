"""`fourd bench --report DIR --quick` (real fourd_node and camera processes over DDS, the fault
tests run by pytest): the report is written, every headline figure is there, and its query and
fault checks pass. The full-size report (`fourd bench --report DIR`) is a benchmark, not a
test."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip('rclpy')

from fourd_ros.ros.bench_report import HEADLINE_KEYS  # noqa: E402

pytestmark = pytest.mark.ros


def test_quick_report_has_every_figure_and_passes(ros_env, tmp_path) -> None:
    out = tmp_path / 'report'
    proc = subprocess.run([sys.executable, '-m', 'fourd_ros.cli.main', 'bench', '--report',
                           str(out), '--quick', '--device', 'cpu'], env=ros_env,
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / 'report.json').read_text())
    for key in HEADLINE_KEYS:
        assert data[key] is not None and not (isinstance(data[key], float)
                                              and math.isnan(data[key])), key
    assert data['fault_cases'] >= 7 and data['fault_cases_failed'] == 0, data['faults']
    assert data['queries_unanswered'] == 0
    # at quick sizes the soak verdicts are not judged (test_node_soak.py and the bench's soak
    # tests do that): here only that each soak ran and measured
    assert [s['backend'] for s in data['soaks']] == ['rgbd', 'learned', 'rgbd (fourd_node)']
    assert all(s['soak_rss_growth_mb'] is not None and s['soak_latency_ratio'] > 0
               for s in data['soaks']), data['soaks']
    text = (out / 'report.md').read_text()
    for name in ('soak_engine_rgbd.png', 'soak_engine_learned.png', 'soak_node.png'):
        assert (out / name).stat().st_size > 1000 and f']({name})' in text, name
    assert '| latency_over_processing_p50 |' in text and 'Fault tests: ' in text
