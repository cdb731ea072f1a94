"""Grammar coverage: how much real gold SQL the schema-generated grammar (`generators.grammar`) accepts.

Sets: Spider dev and train gold (`dev_gold.sql`, `train_gold.sql`) on their own databases, BIRD dev gold on
the three available databases (`dev_subset_available_dbs.json`). Each query is checked by xgrammar against
the bare-query grammar of its database's schema (`wrap="none"`). Queries whose database is missing are
skipped (counted). Prints the rate per set and every rejected query; `--append` adds a section to
BENCHMARKS.md.

    python -m benchmarks.grammar_coverage [--sets spider-dev,spider-train,bird-dev] [--limit N] [--append]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

SETS = ("spider-dev", "spider-train", "bird-dev")


def _spider_gold(name: str) -> Iterator[tuple[str, str]]:
    from core.settings import spider_dir

    path = spider_dir() / ("dev_gold.sql" if name == "spider-dev" else "train_gold.sql")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sql, _, db = line.rpartition("\t")
            yield db.strip(), sql.strip()


def _bird_gold() -> Iterator[tuple[str, str]]:
    from core.settings import bird_dir

    for row in json.loads((bird_dir() / "dev_subset_available_dbs.json").read_text(encoding="utf-8")):
        yield row["db_id"], row["SQL"].strip()


def _db_path(set_name: str, db_id: str) -> Path:
    from core.settings import bird_dir, spider_dir

    if set_name.startswith("spider"):
        return spider_dir() / "database" / db_id / f"{db_id}.sqlite"
    return bird_dir() / "dev_databases" / db_id / f"{db_id}.sqlite"


def coverage(set_name: str, limit: int | None = None) -> dict:
    """{"set", "total", "accepted", "skipped", "rejected": [(db_id, sql)], "seconds"}."""
    from generators.grammar import accepts, sql_grammar
    from sqlbox.databases import DatabaseInfo, introspect

    rows = list(_bird_gold() if set_name == "bird-dev" else _spider_gold(set_name))[: limit or None]
    grammars: dict[str, str | None] = {}
    out = {"set": set_name, "total": 0, "accepted": 0, "skipped": 0, "rejected": []}
    t0 = time.perf_counter()
    for db_id, sql in rows:
        if db_id not in grammars:
            p = _db_path(set_name, db_id)
            grammars[db_id] = (sql_grammar(introspect(DatabaseInfo(db_id, p, "sqlite"), samples=0), wrap="none")
                               if p.is_file() else None)
        g = grammars[db_id]
        if g is None:
            out["skipped"] += 1
            continue
        out["total"] += 1
        if accepts(g, sql):
            out["accepted"] += 1
        else:
            out["rejected"].append((db_id, sql))
    out["seconds"] = time.perf_counter() - t0
    return out


def _table(results: list[dict]) -> str:
    lines = ["| set | queries | accepted | rate | skipped (database missing) |", "|---|---|---|---|---|"]
    for r in results:
        rate = 100.0 * r["accepted"] / r["total"] if r["total"] else 0.0
        lines.append(f"| {r['set']} | {r['total']} | {r['accepted']} | {rate:.2f} % | {r['skipped']} |")
    tot = sum(r["total"] for r in results)
    acc = sum(r["accepted"] for r in results)
    if len(results) > 1 and tot:
        lines.append(f"| all | {tot} | {acc} | {100.0 * acc / tot:.2f} % | {sum(r['skipped'] for r in results)} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--limit", type=int, default=None, help="first N queries of each set")
    p.add_argument("--append", action="store_true", help="append a section to BENCHMARKS.md")


def run(args: argparse.Namespace) -> int:
    from generators.grammar import GRAMMAR_VERSION

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in SETS]
    if bad:
        print(f"unknown set(s) {', '.join(bad)}; choose from {', '.join(SETS)}", file=sys.stderr)
        return 2
    results = [coverage(s, args.limit) for s in sets]
    table = _table(results)
    print(table)
    rejected = [(r["set"], db, sql) for r in results for db, sql in r["rejected"]]
    print(f"\nrejected ({len(rejected)}):")
    for s, db, sql in rejected:
        print(f"- {s} {db}: {sql}")
    if args.append:
        cmd = "python -m benchmarks.grammar_coverage " + " ".join(sys.argv[1:])
        body = [f"\n## Grammar coverage: gold SQL accepted by the schema grammar ({GRAMMAR_VERSION})\n",
                f"Command: `{cmd.strip()}`  ",
                f"Machine: {platform.machine()} CPU, 2 cores shared with other work. Date: {date.today()}.  ",
                f"Wall time: {sum(r['seconds'] for r in results):.0f} s.\n", table,
                f"\nRejected ({len(rejected)}):\n"]
        body += [f"- {s} `{db}`: `{sql}`" for s, db, sql in rejected]
        with open(Path(__file__).resolve().parent.parent / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write("\n".join(body) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grammar_coverage", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
