"""Where the tests find the data the project ships beside the repo (``../shared/data``).

``FOURD_SHARED_DATA`` points elsewhere (the test of scripts/run_tests.sh uses it to hide the
data). Tests that need a dataset are marked `needs_7scenes`: they skip outside CI when it is
missing, and under ``CI=true`` a skip fails the run (test/ci_skip_guard.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get('FOURD_SHARED_DATA')
                   or Path(__file__).resolve().parents[2] / 'shared' / 'data')
SEVEN_SCENES = SHARED_DATA / '7scenes-redkitchen'
needs_7scenes = pytest.mark.skipif(not SEVEN_SCENES.is_dir(),
                                   reason=f'7-Scenes sample missing ({SEVEN_SCENES})')
