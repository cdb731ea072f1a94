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
    """Run one command and return its exit status. Called without `argv` it is the process's entry point (the
    console script, `python -m cli` and `python -m cli.main`) and ends the process itself (`_exit`)."""
    if argv is not None:
        return _run(argv)
    try:
        rc = _run(None)
    except SystemExit as e:  # argparse's --help and usage errors, as sys.exit would end them
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        import traceback

        traceback.print_exc()
        rc = 1
    _exit(rc)
    return rc  # pragma: no cover - _exit does not return


def _run(argv: list[str] | None) -> int:
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


def _exit(rc: int) -> None:
    """End the process the way a normal exit does, then skip the interpreter's final teardown with `os._exit`,
    as multiprocessing ends its forked children: `threading._shutdown` (stops idle thread pools and waits for
    the non-daemon threads), the atexit handlers, then logging and the standard streams are flushed. The
    teardown's garbage collection walks the millions of objects torch and transformers create and cost a one-shot
    `plan` 1.4 s after its answer was printed (BENCHMARKS.md, "First answers in seconds"). Files are closed
    by the commands that write them; nothing is left buffered but what is flushed here."""
    import atexit
    import logging
    import os
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
