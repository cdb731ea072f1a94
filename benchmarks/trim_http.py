"""TRIM over HTTP: each pair behind its own loopback OpenAI-compatible server, and what the servers received.

Two servers (`api.openai_server.create_openai_app`, each on its own port, each with a request log) serve the
embedded model: the cheap pair's generator asks one unconstrained and zero-shot, the strong pair's asks the other
with the schema grammar (`guided_grammar`) and 3 retrieved examples, the tiers of trim.toml. Every question is
planned by the real pipeline with the `trim` router (`Planner.plan(router="trim")`, TRIM-Thr at `--k`). Then, per
plan, the request logs are checked against the Plan:

- the strong server received exactly the handed-off steps: as many requests as hand-offs, each continuing
  byte for byte the prefix of the accepted steps before it (`sqlbox.steps.prefix_for`);
- the cheap server received one request per cheap step, kept or discarded, with the same prefixes;
- the decoded tokens each server reports equal the Plan's (`route.details.trim` per step and per pair, and
  `plan.usage`);
- with `--compare OUTCOMES` (a local `eval routing-live` run's outcomes.jsonl on the same question sample), the
  chain equals the local run's chain of the same policy (greedy decoding: HTTP and local write the same steps).

    python -m benchmarks.trim_http --questions 30 --k 0.5 --compare runs/routing_live/outcomes.jsonl

`--study` runs the whole live routing study over HTTP instead (`eval.routing_live.run_live_study`: cheap only,
strong only, the TRIM-Thr sweep, TRIM-Agg trained on `--train` questions, the cascade) with the two tiers' generators
behind the two servers, and checks the servers' logs against the study's distinct model calls (its step memo: one
request per distinct (pair, question, prefix), with the same prefix and decoded tokens), and every policy's chain
against a local study's outcomes (`--compare`):

    python -m benchmarks.trim_http --study --questions 100 --train 12 --epochs 15 --max-steps 4 \
        --ks 0.2,0.4,0.5,0.6,0.8 --compare runs/routing_live/outcomes.jsonl --out runs/routing_live_http
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", type=int, default=30, help="the first N of the live study's question sample")
    p.add_argument("--sample", type=int, default=100, help="the live study's sample size (same seed: same questions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=float, default=0.5, help="TRIM-Thr threshold")
    p.add_argument("--max-steps", type=int, default=6, help="the trim router's max_steps (match the local study's)")
    p.add_argument("--data", default=None, help="the Spider folder (default: the shared data's spider/)")
    p.add_argument("--compare", default=None, help="a local live study's outcomes.jsonl to compare chains with")
    p.add_argument("--out", default="runs/trim_http")
    p.add_argument("--study", action="store_true", help="run the whole live study over HTTP (module docstring)")
    p.add_argument("--train", type=int, default=12, help="--study: Spider train questions to train TRIM-Agg on")
    p.add_argument("--epochs", type=int, default=15, help="--study: TRIM-Agg's training epochs")
    p.add_argument("--price", type=float, default=0.002, help="--study: TRIM-Agg's price per strong decoded token")
    p.add_argument("--ks", default="0.2,0.4,0.5,0.6,0.8", help="--study: TRIM-Thr thresholds")


def _config(cheap_url: str, strong_url: str, spider: Path, k: float, max_steps: int = 6) -> dict:
    return {
        "databases": [str(spider / "database")],
        "generators": {
            "http-cheap": {"backend": "openai", "url": cheap_url, "model": "smollm2", "api_key_env": None,
                           "options": {"constrained": False}, "cost_per_1k_input": 0.0001, "cost_per_1k_output": 0.0002},
            "http-strong": {"backend": "openai", "url": strong_url, "model": "smollm2", "api_key_env": None,
                            "options": {"constrained": True}, "cost_per_1k_input": 0.001, "cost_per_1k_output": 0.002}},
        "discriminators": {"embedded": {"backend": "embedded", "options": {"mode": "cot"}}},
        "pairs": {"cheap": {"generator": "http-cheap", "discriminator": "embedded", "few_shot": 0},
                  "strong": {"generator": "http-strong", "discriminator": "embedded", "few_shot": 3}},
        "router": {"name": "trim", "params": {"k": k, "prm_mode": "logit", "max_steps": max_steps}},
        "defaults": {"n": 1, "policy": "vote", "reasoning_budget": 64},
    }


def check_plan(plan, cheap_log: list[dict], strong_log: list[dict]) -> list[str]:
    """What does not match between a plan's step record and the requests the two servers logged for it."""
    from sqlbox.steps import prefix_for

    t = plan.route.details.get("trim") or {}
    problems: list[str] = []
    accepted: list[str] = []
    want_cheap: list[tuple[str, int]] = []
    want_strong: list[tuple[str, int]] = []
    for s in t.get("steps", []):
        prefix = prefix_for(accepted)
        if s["pair"] == "strong":
            want_strong.append((prefix, s["tokens"]))
            if s.get("draft"):
                want_cheap.append((prefix, s["draft"]["tokens"]))
        else:
            want_cheap.append((prefix, s["tokens"]))
        accepted.append(s["text"])
    fallback = bool(t.get("fallback"))
    for name, want, log in (("cheap", want_cheap, cheap_log), ("strong", want_strong, strong_log)):
        steps = [e for e in log if e.get("continue_final_message") or e.get("prefix") is not None]
        whole = [e for e in log if e not in steps]  # the whole-query path after a fallback (the cheap pair only)
        got = [(e.get("prefix"), e.get("completion_tokens")) for e in steps]
        if len(got) != len(want):
            problems.append(f"{name} server got {len(got)} step request(s), the plan has {len(want)}")
        if whole and not (fallback and name == "cheap" and len(whole) == 1):
            problems.append(f"{name} server got {len(whole)} whole-query request(s) (fallback: {fallback})")
        if fallback and name == "cheap" and len(whole) != 1:
            problems.append(f"the plan fell back but the cheap server got {len(whole)} whole-query request(s)")
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            if g[0] != w[0]:
                problems.append(f"{name} request {i}: prefix differs from the accepted steps' prefix")
            if g[1] != w[1]:
                problems.append(f"{name} request {i}: {g[1]} tokens logged, the plan says {w[1]}")
        usage = sum(u.completion_tokens for u in plan.usage if u.model == f"http-{name}" and u.role == "generator")
        logged = sum(e.get("completion_tokens") or 0 for e in log)
        if usage != logged:
            problems.append(f"{name}: plan.usage has {usage} decoded tokens, the server logged {logged}")
    return problems


def check_logs(calls: dict[str, dict[str, int]], logs: dict[str, list[dict]]) -> list[str]:
    """What does not match between a study's distinct model calls by pair (`StepMemo.calls()`) and the requests
    each pair's server logged: every request continues a step prefix, one per distinct call, same tokens."""
    problems = []
    for pair, log in logs.items():
        want = calls.get(pair, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        steps = [e for e in log if e.get("continue_final_message") or e.get("prefix") is not None]
        if len(steps) != len(log):
            problems.append(f"{pair} server got {len(log) - len(steps)} request(s) that continue no step prefix")
        for k, got in (("calls", len(steps)), ("completion_tokens", sum(e.get("completion_tokens") or 0 for e in steps))):
            if got != want[k]:
                problems.append(f"{pair}: the server logged {got} {k.replace('_', ' ')}, the study made {want[k]}")
    return problems


def compare_outcomes(rows: list[dict], local_path: str | None) -> dict[str, int]:
    """Per (question, policy): does the HTTP study's chain equal the local study's?"""
    if not local_path or not Path(local_path).exists():
        return {"compared": 0, "same": 0}
    local = {}
    for line in Path(local_path).read_text().splitlines():
        r = json.loads(line)
        local[(r["key"], r["policy"])] = (r["text"], r["ex"])
    both = [r for r in rows if (r["key"], r["policy"]) in local]
    same = [r for r in both if local[(r["key"], r["policy"])][0] == r["text"]]
    same_ex = [r for r in both if local[(r["key"], r["policy"])][1] == r["ex"]]
    return {"compared": len(both), "same": len(same), "same_ex": len(same_ex),
            "differ": sorted({f"{r['key']} {r['policy']}" for r in both if r not in same})[:20]}


def run_study(args: argparse.Namespace) -> int:
    from api.openai_server import create_openai_app, serve_in_thread
    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint, embedded_dtype
    from core.settings import spider_dir
    from eval.routing_live import DEFAULT_TAUS, run_live_study, sample_questions, trim_settings_for
    from planner.config import config_from_dict
    from planner.pipeline import Planner

    spider = Path(args.data) if args.data else spider_dir()
    test = sample_questions("dev", args.sample, args.seed, data=spider)[: args.questions]
    train = sample_questions("train", args.train, args.seed, data=spider,
                             exclude_dbs={q.db_id for q in test}) if args.train > 0 else []
    ks = [float(x) for x in args.ks.split(",") if x.strip()]
    lm = load_checkpoint(embedded_checkpoint(), name="smollm2", dtype=embedded_dtype(None))
    logs: dict[str, list[dict]] = {"cheap": [], "strong": []}
    out = Path(args.out)
    with contextlib.ExitStack() as st:
        cheap_url = st.enter_context(serve_in_thread(create_openai_app("smollm2", lm, request_log=logs["cheap"])))
        strong_url = st.enter_context(serve_in_thread(create_openai_app("smollm2", lm, request_log=logs["strong"])))
        planner = Planner(config_from_dict(_config(cheap_url, strong_url, spider, 0.5, args.max_steps)))
        st.callback(planner.close)
        settings = trim_settings_for(planner, None, None, max_steps=args.max_steps)
        rep = run_live_study(planner, settings, test, out, ks=ks, taus=DEFAULT_TAUS, train=train, price=args.price,
                             epochs=args.epochs, seed=args.seed, policy_out=out / "trim.pt")
    for pair, log in logs.items():
        (out / f"{pair}_requests.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    problems = check_logs(rep["memo"]["calls"], logs)
    rows = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    summary = {"questions": len(test), "train_questions": len(train), "max_steps": args.max_steps, "ks": ks,
               "requests": {p: len(v) for p, v in logs.items()}, "study_calls": rep["memo"]["calls"],
               "log_problems": problems, "versus_local": compare_outcomes(rows, args.compare),
               "cpt95": rep["cpt95"], "cpt95_cascade": rep["cpt95_cascade"], "elapsed_s": rep["elapsed_s"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print((out / "report.md").read_text())
    print(json.dumps(summary, indent=2))
    return 0 if not problems else 1


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.study:
        return run_study(args)

    from api.openai_server import create_openai_app, serve_in_thread
    from core.model import Question
    from core.runtime.checkpoint import load_checkpoint
    from core.runtime.embedded import embedded_checkpoint, embedded_dtype
    from core.settings import spider_dir
    from eval.exec_match import spider_verdicts
    from eval.routing_live import sample_questions
    from planner.config import config_from_dict
    from planner.pipeline import Planner

    spider = Path(args.data) if args.data else spider_dir()
    questions = sample_questions("dev", args.sample, args.seed, data=spider)[: args.questions]
    lm = load_checkpoint(embedded_checkpoint(), name="smollm2", dtype=embedded_dtype(None))
    cheap_log: list[dict] = []
    strong_log: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.monotonic()
    with contextlib.ExitStack() as st:
        cheap_url = st.enter_context(serve_in_thread(create_openai_app("smollm2", lm, request_log=cheap_log)))
        strong_url = st.enter_context(serve_in_thread(create_openai_app("smollm2", lm, request_log=strong_log)))
        planner = Planner(config_from_dict(_config(cheap_url, strong_url, spider, args.k, args.max_steps)))
        st.callback(planner.close)
        for q in tqdm(questions, desc="trim over HTTP"):
            c0, s0 = len(cheap_log), len(strong_log)
            plan = planner.plan(Question(text=q.question, db_id=q.db_id, id=q.key), router="trim")
            problems = check_plan(plan, cheap_log[c0:], strong_log[s0:])
            t = plan.route.details.get("trim") or {}
            chain = "\n".join(s["text"] for s in t.get("steps", [])) if not t.get("fallback") else None
            ex = False
            if chain:
                (v,) = spider_verdicts(spider / "database" / q.db_id / f"{q.db_id}.sqlite", q.gold, [chain])
                ex = bool(v.ex)
            rows.append({"key": q.key, "db_id": q.db_id, "ex": ex, "status": plan.status, "handoffs": t.get("handoffs"),
                         "strong_tokens": t.get("strong_tokens"), "strong_requests": len(strong_log) - s0,
                         "cheap_requests": len(cheap_log) - c0, "problems": problems,
                         "fallback": t.get("fallback"), "chain": chain})
    local = {}
    if args.compare and Path(args.compare).exists():  # read at the end: a local study may run beside this one
        for line in Path(args.compare).read_text().splitlines():
            r = json.loads(line)
            if r["policy"] == f"trim k={args.k:g}":
                local[r["key"]] = r["text"]
    for r in rows:
        r["same_as_local"] = None if r["key"] not in local else (local[r["key"]] == r["chain"])
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "strong_requests.jsonl").write_text("".join(json.dumps(e) + "\n" for e in strong_log))
    (out / "cheap_requests.jsonl").write_text("".join(json.dumps(e) + "\n" for e in cheap_log))
    n = len(rows)
    ok = sum(not r["problems"] for r in rows)
    handed = sum(r["handoffs"] or 0 for r in rows)
    compared = [r for r in rows if r["same_as_local"] is not None]
    summary = {"questions": n, "k": args.k, "max_steps": args.max_steps, "plans_matching_logs": ok, "handoffs": handed,
               "strong_requests": len(strong_log), "cheap_requests": len(cheap_log),
               "strong_tokens": sum(r["strong_tokens"] or 0 for r in rows), "ex": sum(r["ex"] for r in rows),
               "fallbacks": sum(r["fallback"] is not None for r in rows),
               "compared_with_local": len(compared), "same_chain_as_local": sum(r["same_as_local"] for r in compared),
               "elapsed_s": round(time.monotonic() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for r in rows:
        if r["problems"]:
            print(r["key"], r["problems"])
    return 0 if ok == n else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trim_http", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
