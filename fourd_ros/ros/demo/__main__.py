"""`python -m fourd_ros.ros.demo`: run `fourd demo` without the `fourd` CLI."""

import sys

from fourd_ros.ros.demo import _cli

if __name__ == '__main__':
    sys.exit(_cli())
