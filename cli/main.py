"""The `sqlarbiter` command line. Every command lives in `cli.commands`, one module per command exposing
`add_to(subparsers)`, with the options they share in `cli.options`; this module only assembles them. Exit
status: 0 success, 1 a failed or rejected check / failed run, 2 bad usage.

Command modules import what a command runs inside the functions that run it, so building the parser stays
cheap (about a quarter of a second)."""

from __future__ import annotations

import argparse
import sys


def _command_modules() -> list:
    """The modules that add commands, in the order `--help` lists them."""
    from cli.commands import bench, check, databases, eval, models, plan, route, select, serve

    return [check, databases, serve, plan, models, eval, select, route, bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlarbiter",
        description="Text-to-SQL planning: generate SQL candidates, check them in a sandbox, "
        "judge them with a reasoning discriminator, route by quality and cost.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        mod.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
