"""The `bench` command: the performance benchmarks (`benchmarks.runner`, also `python -m benchmarks`); results
are appended to BENCHMARKS.md.

    sqlarbiter bench list | archs | scoring ... | roofline ... | stage-profile ... | run NAME [ARGS...] | all ...
"""

from __future__ import annotations

import shlex
import sys


def add_to(subparsers) -> None:
    from benchmarks.runner import build_parser, dispatch  # own benchmarks import only the stdlib

    p = subparsers.add_parser("bench", help="performance benchmarks (results appended to BENCHMARKS.md)",
                              description="Performance benchmarks (benchmarks.runner); results are appended to BENCHMARKS.md.")
    build_parser(p, "sqlarbiter bench")
    p.set_defaults(func=lambda a: dispatch(a, p, shlex.join(["sqlarbiter", *sys.argv[1:]])))
