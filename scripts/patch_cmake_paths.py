"""Rewrite the wheel builder's include paths in the venv's CMake configs to this venv's own.

The ROS 2 wheels on PyPI export CMake files that name the builder's Python and numpy include
directories (/opt/python/cp311-cp311/...); CMake refuses to configure while those paths do not
exist. Idempotent: a second run finds nothing to replace.
"""

import pathlib
import sys
import sysconfig

import numpy

BUILDER_PREFIX = '/opt/python/cp311-cp311'
REPLACEMENTS = {
    BUILDER_PREFIX + '/lib/python3.11/site-packages/numpy/_core/include': numpy.get_include(),
    BUILDER_PREFIX + '/include/python3.11': sysconfig.get_paths()['include'],
}


def main(venv: str) -> int:
    patched = 0
    for path in pathlib.Path(venv, 'share').rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        if BUILDER_PREFIX not in text:
            continue
        for old, new in REPLACEMENTS.items():
            text = text.replace(old, new)
        path.write_text(text, errors='surrogateescape')
        patched += 1
    print(f'patch_cmake_paths: {patched} file(s) patched')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
