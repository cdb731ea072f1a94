"""Stage profile of /plan: where the time and the tokens of one plan go, per pipeline stage.

Owns the profile run: plans several questions (demo database questions, plus Spider dev questions when the data is
present) through the real ASGI app (`api.app.create_app`, POST /plan via `fastapi.testclient.TestClient`; or the
`Planner` directly with `--via planner`) with the built-in embedded default for both roles (SmolLM2-135M on CPU),
small CPU budgets (stated in the output), a throwaway SQLite plan store, and reads each plan's `timings_ms` (route,
generate, normalize, execute, discriminate, select, total) and `usage` (generator / discriminator tokens).
One warm-up plan (model loading) is excluded. Reports mean and p50 milliseconds per stage, the stage's share of the
total, and tokens per plan (prompt / completion) with completion tokens/s for the model stages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

DEMO_QUESTIONS = [
    "How many singers are older than 30?",
    "List the names of all stadiums ordered by capacity.",
    "What is the average age of singers from France?",
]
STAGES = ("route", "generate", "normalize", "execute", "discriminate", "select", "total")


def spider_questions(k: int) -> list[tuple[str, str]]:
    """(question, db_id) for k Spider dev questions on distinct databases, [] when the data is absent."""
    from core.settings import spider_dir

    dev = spider_dir() / "dev.json"
    if k <= 0 or not dev.is_file():
        return []
    out, seen = [], set()
    for e in json.loads(dev.read_text()):
        if e["db_id"] not in seen:
            seen.add(e["db_id"])
            out.append((e["question"], e["db_id"]))
        if len(out) == k:
            break
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--via", choices=["api", "planner"], default="api",
                   help="POST /plan on the ASGI app (default) or Planner.plan directly")
    p.add_argument("--demo-questions", type=int, default=3, help=f"demo questions (at most {len(DEMO_QUESTIONS)})")
    p.add_argument("--spider-questions", type=int, default=3, help="Spider dev questions (distinct databases)")
    p.add_argument("--n", type=int, default=3, help="candidates per question")
    p.add_argument("--max-tokens", type=int, default=64, help="generator max new tokens per sample")
    p.add_argument("--budget", type=int, default=64, help="discriminator reasoning budget (new tokens)")
    p.add_argument("--policy", default="check-rerank", help="selection policy")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's choice; 1 is steadier on a busy shared machine)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")
    p.add_argument("--json", dest="json_out", default=None, help="also write the plans' timings/usage to this file")


def _config(args, store: Path):
    from core.settings import spider_dir
    from planner.config import config_from_dict

    data: dict = {
        "defaults": {"n": args.n, "max_tokens": args.max_tokens, "reasoning_budget": args.budget,
                     "policy": args.policy},
        "limits": {"deadline_s": 600.0, "max_deadline_s": 600.0},
        "store_url": f"sqlite:///{store}",
    }
    db = spider_dir() / "database"
    if args.spider_questions > 0 and db.is_dir():
        data["databases"] = [str(db)]
    return config_from_dict(data, source="stage-profile", env={})


def profile(args) -> tuple[list[dict], list[tuple[str, str]], float]:
    """Run the plans; returns their (timings_ms, usage, status) records, the questions, and the warm-up seconds."""
    from tqdm import tqdm

    questions = [(q, "demo") for q in DEMO_QUESTIONS[: max(0, args.demo_questions)]]
    questions += spider_questions(args.spider_questions)
    if not questions:
        raise ValueError("no questions: give --demo-questions or --spider-questions > 0")
    tmp = Path(tempfile.mkdtemp(prefix="sqlarbiter-stage-profile-"))
    cfg = _config(args, tmp / "plans.sqlite")
    records: list[dict] = []
    if args.via == "api":
        from fastapi.testclient import TestClient

        from api.app import create_app

        client = TestClient(create_app(cfg))
        client.__enter__()

        def plan(q: str, db: str) -> dict:
            r = client.post("/plan", json={"question": q, "db_id": db, "n": args.n, "policy": args.policy})
            if r.status_code != 200:
                raise RuntimeError(f"POST /plan {db!r} {q!r}: {r.status_code} {r.text[:300]}")
            return r.json()

        close = lambda: client.__exit__(None, None, None)  # noqa: E731
    else:
        from core.model import Question
        from planner.pipeline import Planner

        planner = Planner(cfg)

        def plan(q: str, db: str) -> dict:
            return json.loads(planner.plan(Question(text=q, db_id=db), n=args.n, policy=args.policy).model_dump_json())

        close = planner.close
    try:
        t0 = time.perf_counter()
        plan(*questions[0])  # warm-up: loads the models
        warm = time.perf_counter() - t0
        for q, db in tqdm(questions, desc="plans", leave=False):
            p = plan(q, db)
            records.append({"question": q, "db_id": db, "status": p["status"], "timings_ms": p["timings_ms"],
                            "usage": p["usage"], "candidates": len(p["candidates"])})
    finally:
        close()
    return records, questions, warm


def summarize(records: list[dict]) -> tuple[list[str], list[list]]:
    from benchmarks.report import fmt

    total_mean = statistics.mean(r["timings_ms"].get("total", 0.0) for r in records)
    headers = ["stage", "mean ms", "p50 ms", "share of total", "prompt tok/plan", "completion tok/plan",
               "completion tok/s"]
    rows = []
    role_of = {"generate": "generator", "discriminate": "discriminator"}
    for st in STAGES:
        vals = [r["timings_ms"].get(st, 0.0) for r in records]
        mean, p50 = statistics.mean(vals), statistics.median(vals)
        pt = ct = None
        if st in role_of:
            pt = statistics.mean(sum(u["prompt_tokens"] for u in r["usage"] if u["role"] == role_of[st]) for r in records)
            ct = statistics.mean(sum(u["completion_tokens"] for u in r["usage"] if u["role"] == role_of[st])
                                 for r in records)
        rows.append([st, fmt(mean), fmt(p50), f"{mean / total_mean:.1%}" if total_mean else "n/a",
                     fmt(pt) if pt is not None else "-", fmt(ct) if ct is not None else "-",
                     fmt(ct / (mean / 1000.0)) if ct and mean else "-"])
    return headers, rows


def run(args: argparse.Namespace, command: str) -> int:
    from benchmarks.report import append_section, markdown_table

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records, questions, warm = profile(args)
    headers, rows = summarize(records)
    table = markdown_table(headers, rows)
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    n_demo = sum(1 for _, db in questions if db == "demo")
    notes = [
        f"{len(records)} plans via {'POST /plan on the ASGI app (TestClient)' if args.via == 'api' else 'Planner.plan'}: "
        f"{n_demo} demo-database question(s) + {len(questions) - n_demo} Spider dev question(s) on distinct databases",
        f"built-in config (embedded SmolLM2-135M-Instruct for both roles, CPU fp32), n={args.n} candidates, generator "
        f"max_tokens={args.max_tokens}, discriminator reasoning budget={args.budget}, policy {args.policy}, "
        "DuckDB executor",
        f"one warm-up plan excluded (model load + first plan: {warm:.1f} s); plan statuses: "
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        "tokens per plan: summed over the stage's model calls (TokenUsage of the plan); total = wall time of the plan",
    ]
    print(table)
    for n in notes:
        print("- " + n)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(records, indent=2))
    if not args.no_append:
        append_section("/plan stage profile (CPU, embedded default)", command, table, notes=notes)
    return 0
