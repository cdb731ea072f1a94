"""Render fidelity: does the SQL the sandbox runs (the rendering of the guard's checked tree, `sqlbox.guard.render`)
give the same result on sqlite3 as the candidate's own text?

    python -m benchmarks.render_fidelity [--data DIR] [--systems N] [--json OUT] [--show K]

The queries: the Spider dev gold SQL, the published systems' predictions (`candidates/spider_dev/*.sql`, the first
N systems; all by default) and the BIRD dev gold SQL on the BIRD databases that are present. Each query that passes
the guard runs twice on a read-only sqlite3 connection, as written and as rendered (3 s deadline each); a pair
agrees when both fail or both give the same multiset of rows. A query the guard refuses is counted by reason.
Disagreements are listed: they are the SQL that sqlglot reads differently from SQLite (it repairs clause order and
`CONCAT`, for instance), which the SQLite engine catches by compiling the candidate's own text first
(`sqlbox.engines.SqliteConn.compile`), and nondeterministic queries (`ORDER BY RANDOM()`).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from core.settings import bird_dir, spider_dir
from sqlbox.guard import ParseFailure, Rejected, guard, render


def _queries(spider: Path, bird: Path, systems: int | None) -> list[tuple[str, Path, str]]:
    """(source, database file, SQL)."""
    out: list[tuple[str, Path, str]] = []
    dev = json.loads((spider / "dev.json").read_text())
    db = lambda d: spider / "database" / d / f"{d}.sqlite"  # noqa: E731
    out += [("spider-gold", db(e["db_id"]), e["query"]) for e in dev]
    cand_dir = spider.parent / "candidates" / "spider_dev"
    for f in sorted(cand_dir.glob("*.sql"))[:systems]:
        for i, line in enumerate(f.read_text(errors="replace").splitlines()[: len(dev)]):
            out.append((f.stem, db(dev[i]["db_id"]), line.split("\t")[0].strip()))
    if (bird / "dev.json").is_file():
        for e in json.loads((bird / "dev.json").read_text()):
            p = bird / "dev_databases" / e["db_id"] / f"{e['db_id']}.sqlite"
            out.append(("bird-gold", p, e["SQL"]))
    return [q for q in out if q[2] and q[1].is_file()]


class _Runner:
    def __init__(self, timeout_s: float = 3.0):
        self.timeout_s = timeout_s
        self.cons: dict[Path, sqlite3.Connection] = {}

    def run(self, path: Path, sql: str) -> tuple[str, object]:
        con = self.cons.get(path)
        if con is None:
            con = self.cons[path] = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            con.text_factory = lambda b: b.decode("utf-8", errors="replace")
        deadline = time.monotonic() + self.timeout_s
        con.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 5000)
        try:
            return "ok", sorted(map(repr, con.execute(sql).fetchmany(5000)))
        except sqlite3.Error as e:
            return ("timeout", None) if "interrupted" in str(e) else ("error", type(e).__name__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.render_fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--systems", type=int, default=None, help="only the first N published systems")
    ap.add_argument("--json", default=None, help="write the counts and disagreements here")
    ap.add_argument("--show", type=int, default=10, help="disagreements to print")
    args = ap.parse_args(argv)
    spider = Path(args.data) if args.data else spider_dir()
    if not (spider / "dev.json").is_file():
        print(f"error: no Spider dev.json under {spider}", file=sys.stderr)
        return 2
    runner = _Runner()
    counts: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    diffs: list[dict] = []
    t0 = time.perf_counter()
    for source, path, sql in tqdm(_queries(spider, bird_dir(), args.systems), desc="queries", unit="q"):
        try:
            rendered = render(guard(sql, "sqlite"), "sqlite")
        except ParseFailure:
            counts["parse failure"] += 1
            continue
        except Rejected as e:
            counts["refused by the guard"] += 1
            refused[e.reason.split(":")[0][:80]] += 1
            continue
        a, b = runner.run(path, sql), runner.run(path, rendered)
        if a[0] == "timeout":
            counts["timeout as written"] += 1
        elif a == b or (a[0] == b[0] == "error"):
            counts["same result"] += 1
        else:
            counts["different"] += 1
            diffs.append({"source": source, "sql": sql, "rendered": rendered, "as_written": a[0], "rendered_run": b[0]})
    ran = counts["same result"] + counts["different"]
    print(f"same result: {counts['same result']}/{ran} ({100 * counts['same result'] / max(ran, 1):.2f}%); "
          f"{dict(counts)}; {time.perf_counter() - t0:.0f} s")
    for reason, n in refused.most_common(8):
        print(f"  refused {n:5d}  {reason}")
    for d in diffs[: args.show]:
        print(f"  [{d['source']}] {d['as_written']} -> {d['rendered_run']}: {d['sql'][:110]}\n      ran: {d['rendered'][:110]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "refused": refused, "different": diffs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
