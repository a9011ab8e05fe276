"""`fourd` command line: synth, run, eval, bench, train, demo, view.

Bad input (unreadable or corrupt files, missing intrinsics, mismatched sizes, bad options) prints
one line ``fourd: error: <message>`` on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fourd_ros.core.data.readers import DatasetError
from fourd_ros.core.engine.engine import InputError, QueryError

USER_ERRORS = (DatasetError, InputError, QueryError, FileNotFoundError, ValueError, OSError)
"""Exceptions reported as one-line errors (exit 2) instead of tracebacks."""


def build_parser() -> argparse.ArgumentParser:
    from fourd_ros.cli import bench, eval as eval_cmd, run, synth, train, view

    parser = argparse.ArgumentParser(
        prog='fourd', description='Streaming 4D perception: synthetic data, offline runs, '
                                  'evaluation and benchmarks.')
    parser.add_argument('-v', '--verbose', action='store_true', help='log progress details')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    synth.add_parser(sub)
    run.add_parser(sub)
    eval_cmd.add_parser(sub)
    bench.add_parser(sub)
    train.add_parser(sub)
    view.add_parser(sub)
    sub.add_parser('demo', add_help=False,
                   help='ROS 2 demo (fourd_ros.ros.demo); arguments are passed through')
    return parser


def _one_line(err: BaseException) -> str:
    text = ' '.join(part.strip() for part in str(err).splitlines() if part.strip())
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f'{text}: {err.filename}'
    return text or type(err).__name__


def _demo(argv: list[str]) -> int:
    """Run the ROS 2 demo (`fourd_ros.ros.demo`, imported lazily: it needs ROS 2).

    The module provides ``add_arguments(parser)`` and ``main(args: Namespace)``; a module without
    ``add_arguments`` gets the raw argument list.
    """
    try:
        from fourd_ros.ros import demo
    except ImportError as err:
        print(f'fourd: error: the ROS 2 demo is not available (cannot import '
              f'fourd_ros.ros.demo: {_one_line(err)})', file=sys.stderr)
        return 1
    add_arguments = getattr(demo, 'add_arguments', None)
    if add_arguments is None:
        return int(demo.main(argv) or 0)
    parser = argparse.ArgumentParser(prog='fourd demo',
                                     description=(demo.__doc__ or '').split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return int(demo.main(parser.parse_args(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fourd` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ('-v', '--verbose') for a in argv[:1])
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format='fourd: %(levelname)s: %(message)s')
    rest = argv[1:] if verbose else argv
    try:
        if rest and rest[0] == 'demo':
            return _demo(rest[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, 'func', None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print('fourd: interrupted', file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        print(f'fourd: error: {_one_line(err)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
