"""The benchmark runner: `python -m benchmarks ...`, and behind `sqlarbiter bench ...` (cli/commands/bench.py).

Owns the benchmark catalogue and how each runs. `python -m benchmarks` stays a standalone entry point that
imports only the benchmarks package: on a GPU machine with only the wheels of benchmarks/gpu-requirements.txt
(see BENCHMARKS.md) the `sqlarbiter` command line, which assembles every command, is not importable. Commands:

    list                       benchmarks available here (own and other modules present), and the architectures
    archs                      the benchmark architectures (benchmarks.archs)
    scoring [...]              discriminator scoring throughput, variants (a)/(b)/(c) (benchmarks.scoring)
    roofline [...]             decode roofline (benchmarks.roofline)
    stage-profile [...]        /plan per-stage time and tokens on CPU (benchmarks.stage_profile)
    run NAME [ARGS...]         any benchmark by name, ARGS passed through (e.g. `run dialect-agreement --limit 50`)
    all [--only A,B] [--skip A,B]   the CPU suite: every available benchmark with its CPU defaults, in order

Each benchmark prints a table and appends a machine-tagged section to BENCHMARKS.md (`--no-append` to skip).
Exit status: 0 ok, 1 a benchmark failed (e.g. the score check), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    summary: str
    cpu_suite: bool = True  # part of `all`
    own: bool = False  # has add_arguments/run here; else the module's main(argv)


CATALOGUE: list[Bench] = [
    Bench("scoring", "benchmarks.scoring", "discriminator scoring throughput: (a) reference, (b) per question with "
          "prefix reuse, (c) cross-question batches; score equivalence", own=True),
    Bench("roofline", "benchmarks.roofline", "decode memory-bandwidth/compute roofline and achieved fraction", own=True),
    Bench("stage-profile", "benchmarks.stage_profile", "/plan per-stage time and tokens (CPU, embedded default)",
          own=True),
    Bench("discriminator-cpu", "benchmarks.discriminator_cpu", "embedded model load time and CPU discriminator "
          "throughput with/without prefix reuse"),
    Bench("early-stop", "benchmarks.early_stop", "CoT discriminator decode steps, tokens and wall time with early stop "
          "at the complete verdict on vs off"),
    Bench("executor-overhead", "benchmarks.executor_overhead", "sandboxed executor overhead per candidate"),
    Bench("dialect-agreement", "benchmarks.dialect_agreement", "SQLite vs DuckDB agreement on Spider dev gold"),
    Bench("load-test", "benchmarks.load_test", "loopback load test of the planning service"),
    Bench("step-fidelity", "benchmarks.step_fidelity", "Spider gold rewritten as CTE step chains (sqlbox.steps): "
          "same result under the EX rules, partial chains run; --export writes the chains as JSONL"),
    Bench("prm-quality", "benchmarks.prm_quality", "per-step process reward (planner.prm) on execution-labelled "
          "Spider dev steps (gold chains vs wrong candidates' chains): AUROC of the verdict and execution parts and "
          "their combinations", cpu_suite=False),
    Bench("trim-http", "benchmarks.trim_http", "TRIM through the pipeline with each pair behind its own loopback "
          "server: the servers' request logs against the Plan (hand-offs, prefixes, tokens)", cpu_suite=False),
    Bench("decompose-quality", "benchmarks.decompose_quality", "Route-and-Reason's decomposer on Spider dev: valid "
          "lists, steps by hardness, EX of composed chains vs the whole-question path", cpu_suite=False),
    Bench("grammar-coverage", "benchmarks.grammar_coverage", "gold SQL (Spider dev/train, BIRD dev) accepted by the "
          "schema grammar of constrained decoding"),
    Bench("constrained-eval", "benchmarks.constrained_eval", "embedded generator on Spider dev: unconstrained vs "
          "constrained vs constrained + retrieved few-shot (executable rate, oracle/chosen EX)", cpu_suite=False),
    Bench("cpu-generate", "benchmarks.cpu_generate", "CPU generation: fp32 / bf16 / int8 dynamic quantisation, "
          "torch threads", cpu_suite=False),
]
BY_NAME = {b.name: b for b in CATALOGUE} | {b.module.rsplit(".", 1)[1]: b for b in CATALOGUE}

# Arguments `all` gives the own benchmarks (CPU defaults stated in each module).
SUITE_ARGS: dict[str, list[str]] = {
    "scoring": [],
    "roofline": ["--arch", "smollm2-135m", "--batch", "1,5,10", "--context", "512", "--measure", "--steps", "16"],
    "stage-profile": [],
}


def available(b: Bench) -> bool:
    try:
        return importlib.util.find_spec(b.module) is not None
    except ModuleNotFoundError:
        return False


def _command(prog: str, argv: list[str]) -> str:
    return " ".join([prog, *(shlex.quote(a) for a in argv)])


def _own_parser(b: Bench, prog: str) -> argparse.ArgumentParser:
    mod = importlib.import_module(b.module)
    p = argparse.ArgumentParser(prog=f"{prog} {b.name}", description=(mod.__doc__ or "").split("\n\n")[0])
    mod.add_arguments(p)
    return p


def run_bench(name: str, argv: list[str], *, prog: str) -> int:
    """Run benchmark `name` with `argv`; returns its exit status."""
    b = BY_NAME.get(name)
    if b is None:
        print(f"unknown benchmark {name!r}; known: {', '.join(x.name for x in CATALOGUE)}", file=sys.stderr)
        return 2
    if not available(b):
        print(f"benchmark {b.name!r} is not available here (module {b.module} not found)", file=sys.stderr)
        return 2
    mod = importlib.import_module(b.module)
    if b.own:
        try:
            args = _own_parser(b, prog).parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
        return int(mod.run(args, _command(f"{prog} {b.name}", argv)) or 0)
    main: Callable | None = getattr(mod, "main", None)
    if main is None:
        print(f"benchmark module {b.module} has no main(argv)", file=sys.stderr)
        return 2
    try:
        return int(main(argv) or 0)
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1


def cmd_list(_args) -> int:
    print("benchmarks:")
    for b in CATALOGUE:
        state = "available" if available(b) else "missing"
        suite = "cpu suite" if b.cpu_suite else ""
        print(f"  {b.name:<20} {state:<10} {suite:<10} {b.summary}")
    print()
    return cmd_archs(_args)


def cmd_archs(_args) -> int:
    from benchmarks.archs import ARCHS

    print("architectures (benchmarks.archs):")
    for a in ARCHS.values():
        print(f"  {a.name:<14} {a.description}")
    return 0


def cmd_all(args, prog: str) -> int:
    only = {x for x in (args.only or "").split(",") if x}
    skip = {x for x in (args.skip or "").split(",") if x}
    unknown = (only | skip) - set(BY_NAME)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(b.name for b in CATALOGUE)}",
              file=sys.stderr)
        return 2
    only = {BY_NAME[x].name for x in only}
    skip = {BY_NAME[x].name for x in skip}
    status = 0
    for b in CATALOGUE:
        if not b.cpu_suite or (only and b.name not in only) or b.name in skip:
            continue
        if not available(b):
            print(f"== {b.name}: skipped (module {b.module} not present)")
            continue
        extra = SUITE_ARGS.get(b.name, []) + (["--no-append"] if args.no_append and b.own else [])
        print(f"== {b.name}: {_command(f'{prog} {b.name}' if b.own else f'python -m {b.module}', extra)}", flush=True)
        rc = run_bench(b.name, extra, prog=prog)
        print(f"== {b.name}: exit {rc}")
        status = status or rc
    return status


def build_parser(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    p = sub.add_parser("list", help="list benchmarks and architectures")
    p.set_defaults(bench_func=cmd_list)
    p = sub.add_parser("archs", help="list benchmark architectures")
    p.set_defaults(bench_func=cmd_archs)
    for b in CATALOGUE:
        if b.own and available(b):
            mod = importlib.import_module(b.module)  # own modules import only the stdlib at import time
            p = sub.add_parser(b.name, help=b.summary, description=(mod.__doc__ or "").split("\n\n")[0])
            mod.add_arguments(p)
            p.set_defaults(bench_func=lambda a, m=mod: int(m.run(a, a.bench_command_line) or 0))
    p = sub.add_parser("run", help="run any benchmark by name; arguments after NAME pass through")
    p.add_argument("name", help="benchmark name (see `list`)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(bench_func=lambda a: run_bench(a.name, a.rest, prog=prog))
    p = sub.add_parser("all", help="run the CPU suite")
    p.add_argument("--only", help="comma-separated benchmark names to run")
    p.add_argument("--skip", help="comma-separated benchmark names to skip")
    p.add_argument("--no-append", action="store_true", help="own benchmarks: do not append to BENCHMARKS.md")
    p.set_defaults(bench_func=lambda a: cmd_all(a, prog))
    return parser


def dispatch(args, parser, command_line: str) -> int:
    args.bench_command_line = command_line  # the exact command, recorded in BENCHMARKS.md
    fn = getattr(args, "bench_func", None)
    if fn is None:
        parser.print_help(sys.stderr)
        return 2
    return int(fn(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    build_parser(parser, "python -m benchmarks")
    args = parser.parse_args(argv)
    return dispatch(args, parser, shlex.join(["python", "-m", "benchmarks", *argv]))
