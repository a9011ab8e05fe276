"""Regenerate config/fourd.yaml from the parameter table in fourd_ros/ros/params.py."""

from pathlib import Path

from fourd_ros.ros.params import PARAMS


def render() -> str:
    lines = ['# fourd_node parameters with their defaults (made by scripts/gen_params_yaml.py',
             '# from fourd_ros/ros/params.py). Load: --ros-args --params-file config/fourd.yaml',
             '# Read-only parameters need a node restart.', '/**:', '  ros__parameters:']
    for p in PARAMS:
        v = p.default
        if isinstance(v, bool):
            v = 'true' if v else 'false'
        elif isinstance(v, str):
            v = f"'{v}'"
        choices = f' ({p.choices_text})' if p.choices else ''
        lines.append(f'    # {p.description}{choices}')
        lines.append(f'    {p.name}: {v}')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    Path(__file__).resolve().parents[1].joinpath('config', 'fourd.yaml').write_text(render())
