"""Step format fidelity (issue 28): do the Spider gold queries, rewritten as CTE step chains
(`sqlbox.steps.to_chain`), return the same result as the original under the project's EX rules?

    python -m benchmarks.step_fidelity [--data DIR] [--split dev|train] [--limit N] [--out runs/step_fidelity.json]
                                       [--export PATH.jsonl] [--workers N] [--show K]

For every gold query of the split: rewrite it with `to_chain` (with the database's schema, read from its SQLite
file, so that unqualified columns resolve to their tables), then run the original and the chain's text on the
database and compare them with the Spider EX rule (`eval.exec_match.match_tasks`: the official preprocessing,
bag/order semantics, column permutations). Reported: total, how many chains have more than one step, the
same-result share (goal >= 99 %), and every query that does not round-trip (db, gold, chain, why: the rewrite
failed, the chain failed to run, or a different result; a different result whose rows are equal as a bag is
marked "order only"). Gold queries that fail on their own database, and those whose database file is missing
from the data folder, are counted apart. A stricter figure is printed too: both texts run as written (no EX
preprocessing) and give identical rows as bags with the columns in the same order. Every partial chain (steps
1..k of a multi-step chain, `partial_query`, LIMIT 5) is run too; the ones that fail are counted and listed.

`--export PATH.jsonl` writes one line per rewritten query: question, db_id, gold, chain (the chain's text),
steps ([{name, comment, sql}]), n_steps, same_result: few-shot examples and supervised data for the step format.
Default place for it: `<cache_dir>/steps/spider_<split>_chains.jsonl`.
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

from core.settings import cache_dir, spider_dir
from eval.exec_match import MatchTask, match_tasks, run_query
from sqlbox.steps import StepParseError, partial_query, to_chain

SPLITS = {"dev": "dev.json", "train": "train_spider.json"}


def default_export(split: str) -> Path:
    """Where the exported chains go by default: the cache dir (rebuildable, not tracked)."""
    return cache_dir() / "steps" / f"spider_{split}_chains.jsonl"


def sqlite_schema(path: Path) -> dict[str, list[str]]:
    """Table -> column names of a SQLite file (read-only)."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        return {t: [r[1] for r in con.execute("SELECT * FROM pragma_table_info(?)", (t,))] for t in tables}
    finally:
        con.close()


def _same_bag(db: Path, gold: str, chain: str) -> bool:
    """Both texts run as written (no EX preprocessing) and give the same rows as bags, columns in the same order:
    a stricter check than EX, which permutes columns and drops DISTINCT."""
    a, b = run_query(db, gold, timeout=30), run_query(db, chain, timeout=30)
    return bool(a.ok and b.ok and Counter(map(repr, a.rows)) == Counter(map(repr, b.rows)))


def run(spider: Path, split: str = "dev", limit: int | None = None, workers: int = 2,
        export: Path | None = None) -> dict:
    items = json.loads((spider / SPLITS[split]).read_text())[:limit]
    schemas: dict[str, dict[str, list[str]] | None] = {}
    rows: list[dict] = []
    t0 = time.perf_counter()
    for i, e in enumerate(tqdm(items, desc=f"to_chain ({split})", unit="q", dynamic_ncols=True)):
        db = spider / "database" / e["db_id"] / f"{e['db_id']}.sqlite"
        if e["db_id"] not in schemas:
            schemas[e["db_id"]] = sqlite_schema(db) if db.is_file() else None
        row = {"i": i, "db_id": e["db_id"], "question": e["question"], "gold": e["query"], "db": str(db)}
        if not db.is_file():
            row.update(no_db=True)
        try:
            chain = to_chain(e["query"], schema=schemas[e["db_id"]])
            row.update(chain=chain.text, n_steps=len(chain.steps),
                       steps=[{"name": s.name, "comment": s.comment, "sql": s.sql} for s in chain.steps],
                       partials=[partial_query(chain, k, limit=5) for k in range(1, len(chain.steps))])
        except StepParseError as err:
            row.update(chain=None, n_steps=0, why=f"rewrite failed: {err.reason}")
        rows.append(row)
    rewrite_s = time.perf_counter() - t0
    todo = [r for r in rows if r["chain"] is not None and not r.get("no_db")]
    verdicts = match_tasks([MatchTask(r["db"], r["gold"], [r["chain"]]) for r in todo], "spider", workers=workers,
                           desc=f"EX chain vs gold ({split})")
    for r, vs in zip(todo, verdicts, strict=True):
        v = vs[0]
        r["same_result"] = bool(v["ex"])
        if v["error_kind"] in ("gold_error", "gold_timeout"):
            r["why"], r["same_result"] = f"gold fails: {v['error']}", None
        elif v["error_kind"]:
            r["why"] = f"chain fails: {v['error']}"
        else:
            r["same_bag"] = _same_bag(Path(r["db"]), r["gold"], r["chain"])
            outs = [run_query(r["db"], q, timeout=30) for q in r["partials"]]
            r["partial_errors"] = [f"step {k}: {o.error}" for k, o in enumerate(outs, 1) if not o.ok]
            if not v["ex"]:
                r["why"] = "different result" + (" (order only)" if r["same_bag"] else "")
    gold_fails = [r for r in rows if r.get("why", "").startswith("gold fails")]
    no_db = [r for r in rows if r.get("no_db")]
    judged = [r for r in rows if r not in gold_fails and not r.get("no_db")]
    same = sum(bool(r.get("same_result")) for r in judged)
    failures = [{k: r.get(k) for k in ("i", "db_id", "gold", "chain", "why")} for r in judged
                if not r.get("same_result")]
    summary = {
        "split": split, "total": len(rows), "judged": len(judged), "gold_fails": len(gold_fails),
        "gold_fail_items": [{k: r.get(k) for k in ("i", "db_id", "gold", "why")} for r in gold_fails],
        "no_database": len(no_db), "no_database_ids": sorted({r["db_id"] for r in no_db}),
        "same_bag": sum(bool(r.get("same_bag")) for r in judged),
        "partials": sum(len(r.get("partials") or ()) for r in judged),
        "partial_errors": [{"i": r["i"], "db_id": r["db_id"], "errors": r["partial_errors"]} for r in judged
                           if r.get("partial_errors")],
        "multi_step": sum(r["n_steps"] > 1 for r in rows), "steps": dict(Counter(r["n_steps"] for r in rows)),
        "same_result": same, "share": same / max(len(judged), 1), "rewrite_s": round(rewrite_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1), "failures": failures,
        "why": dict(Counter(f["why"].split(":")[0] for f in failures)),
    }
    if export is not None:
        export.parent.mkdir(parents=True, exist_ok=True)
        with export.open("w") as fh:
            for r in rows:
                if r["chain"] is not None:
                    fh.write(json.dumps({k: r.get(k) for k in ("question", "db_id", "gold", "chain", "steps",
                                                               "n_steps", "same_result")}) + "\n")
        summary["export"] = str(export)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.step_fidelity", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="Spider folder (default: core.settings.spider_dir())")
    ap.add_argument("--split", choices=sorted(SPLITS), default="dev")
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ap.add_argument("--workers", type=int, default=2, help="processes for the EX comparison")
    ap.add_argument("--out", default="runs/step_fidelity.json", help="the figures and every failure, as JSON")
    ap.add_argument("--export", nargs="?", const="", default=None, metavar="PATH.jsonl",
                    help=f"write the chains as JSONL (no PATH: {default_export('<split>')})")
    ap.add_argument("--show", type=int, default=20, help="failures to print")
    args = ap.parse_args(argv)
    spider = Path(args.data) if args.data else spider_dir()
    if not (spider / SPLITS[args.split]).is_file():
        print(f"error: no Spider {SPLITS[args.split]} under {spider}", file=sys.stderr)
        return 2
    export = None if args.export is None else Path(args.export) if args.export else default_export(args.split)
    s = run(spider, args.split, args.limit, args.workers, export)
    print(f"Spider {args.split}: {s['total']} gold queries, {s['multi_step']} with more than one step "
          f"(steps: {dict(sorted(s['steps'].items()))}); gold fails on its database: {s['gold_fails']}; "
          f"database file missing: {s['no_database']} {s['no_database_ids'] or ''}")
    print(f"same result: {s['same_result']}/{s['judged']} ({100 * s['share']:.2f}%, goal >= 99%); "
          f"failures by kind: {s['why']}; rewrite {s['rewrite_s']} s, total {s['wall_s']} s")
    print(f"partial chains (steps 1..k, k < last, `partial_query`): {s['partials']}, "
          f"{sum(len(x['errors']) for x in s['partial_errors'])} fail to run")
    print(f"identical rows as written (bags, same column order, no EX preprocessing): {s['same_bag']}/{s['judged']}")
    for f in s["failures"][: args.show]:
        print(f"  [{f['i']} {f['db_id']}] {f['why']}\n    gold:  {f['gold']}\n    chain: "
              + (f["chain"] or "-").replace("\n", "\n           "))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(s, indent=1))
        print(f"wrote {out}")
    if export is not None:
        print(f"exported chains: {export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
