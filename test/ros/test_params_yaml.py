"""config/fourd.yaml is the parameter table of fourd_ros/ros/params.py, rendered."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_shipped_yaml_matches_the_parameter_table() -> None:
    spec = importlib.util.spec_from_file_location('gen_params_yaml',
                                                  REPO / 'scripts' / 'gen_params_yaml.py')
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (REPO / 'config' / 'fourd.yaml').read_text() == gen.render(), \
        'config/fourd.yaml is stale: run `.venv/bin/python scripts/gen_params_yaml.py`'
