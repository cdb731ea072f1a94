"""`POST /plan` latency on the demo database with the DEFAULT configuration (the built-in embedded config; only
the plan store is a throwaway file), through the real ASGI app (TestClient). One warm-up plan (model loading,
grammar compilation) is excluded; then `--plans` plans cycle over the demo questions. Reports p50/p95/max seconds
(client-observed), statuses, how many plans chose an executable SQL, and the mean per-stage seconds.

Runs against whatever code is on PYTHONPATH, so the same file measures another checkout ("before"):
`PYTHONPATH=/path/to/other/checkout python benchmarks/plan_latency.py --plans 5`.

    python -m benchmarks.plan_latency --plans 10 --n 3

**Varied questions, before and after side by side** (`--varied`, issue 31): the 10 demo-database questions of
`DEMO_QUESTIONS` plus 20 Spider dev questions on their own databases (dev indices 0, 52, ..., 988: every 52nd, so
20 different databases and shapes). Each code version runs in its own worker process (this file with `--worker`,
PYTHONPATH set to the checkout), through the real ASGI app with the built-in configuration (only the plan store
and the Spider databases added) or with `demo.toml`; the driver sends each question to the "before" and the
"after" worker in turn (alternating which goes first), so load drift on a shared machine hits both alike. One
warm-up plan per worker (a demo and a Spider question) is excluded. Reports p50/p95/max and the share of plans
within their deadline, and per stage p50/p95/max, per configuration and code version; `--busy` adds one busy
process (`while True: pass`) for the whole run.

    python -m benchmarks.plan_latency --varied --before /work/pre31 --configs builtin,demo --json runs/lat.json

The Spider questions carry their gold SQL, and each run reports the EX of the chosen SQL on them (`spider_ex`); a
quality check of a latency change takes more of them and leaves out the demo ones:

    python -m benchmarks.plan_latency --varied --spider 100 --no-demo --before /work/pre --configs builtin
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = [
    "How many singers are older than 30?",
    "List the names of all stadiums ordered by capacity.",
    "What is the average age of singers from France?",
]


DEMO_QUESTIONS = [  # issue 31: the three that took 33-41 s at budget 512 are the 2nd, 4th and 5th
    "How many singers are older than 30?",
    "How many singers are there?",
    "List the names of all stadiums ordered by capacity.",
    "List the names of all stadiums.",
    "Which stadium has the largest capacity?",
    "What is the average age of singers from France?",
    "How many concerts were held in 2023?",
    "Which singer performed in the most concerts?",
    "List the concerts held in the stadium with the largest capacity.",
    "What are the names of singers who never performed in a concert?",
]
SPIDER_DEV = tuple(range(0, 1034, 52))[:20]


def varied_questions(spider: int = len(SPIDER_DEV), demo: bool = True) -> list[dict]:
    """The 10 demo questions (unless `demo` is False), then `spider` Spider dev questions with their db_id and gold
    SQL: the default 20 are `SPIDER_DEV`; another count takes every (1034 // count)-th question from dev 0."""
    import json

    from core.settings import spider_dir

    out = [{"question": t, "db_id": "demo", "set": "demo"} for t in DEMO_QUESTIONS] if demo else []
    dev = spider_dir() / "dev.json"
    if dev.is_file() and spider > 0:
        data = json.loads(dev.read_text())
        idx = SPIDER_DEV if spider == len(SPIDER_DEV) else tuple(range(0, len(data), max(len(data) // spider, 1)))[:spider]
        out += [{"question": data[i]["question"], "db_id": data[i]["db_id"], "set": f"spider:{i}",
                 "gold": data[i]["query"]} for i in idx]
    return out


def spider_ex(results: list[dict]) -> dict | None:
    """EX of the chosen SQL on the Spider questions (the official evaluator's rules, `eval.exec_match`); a plan with
    no chosen SQL counts as wrong. None when no question has a gold query."""
    from core.settings import spider_dir
    from eval.exec_match import spider_verdicts

    rows = [r for r in results if r.get("gold")]
    if not rows:
        return None
    right = 0
    for r in rows:
        if r.get("chosen_sql"):
            db = spider_dir() / "database" / r["db_id"] / f"{r['db_id']}.sqlite"
            (v,) = spider_verdicts(db, r["gold"], [r["chosen_sql"]])
            right += bool(v.ex)
    return {"questions": len(rows), "ex": right, "ex_pct": round(100.0 * right / len(rows), 1)}


def worker(config: str) -> int:
    """Plans the questions read from stdin (one JSON object a line) through the real app with `config` (builtin |
    demo); writes one `RESULT {...}` line each to stdout."""
    import json
    import logging

    logging.disable(logging.WARNING)
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.settings import spider_dir
    from planner.config import config_from_dict

    data: dict = {}
    if config == "demo":
        import tomllib

        data = tomllib.loads((Path(__file__).resolve().parent.parent / "demo.toml").read_text())
    store = Path(tempfile.mkdtemp(prefix="sqlarbiter-latency-")) / "plans.sqlite"
    data.update(store_url=f"sqlite:///{store}", databases=[str(spider_dir() / "database")])
    cfg = config_from_dict(data, source=f"plan-latency:{config}", env={})
    out = sys.stdout
    sys.stdout = sys.stderr  # only RESULT lines on the real stdout
    with TestClient(create_app(cfg)) as client:
        print("READY", file=out, flush=True)
        for line in sys.stdin:
            q = json.loads(line)
            t0 = time.perf_counter()
            body = {"question": q["question"], "db_id": q["db_id"], "execute": True}
            if q.get("deadline_s"):  # the warm-up: room for first-use work (few-shot embeddings, grammars)
                body["deadline_s"] = q["deadline_s"]
            r = client.post("/plan", json=body)
            dt = time.perf_counter() - t0
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            res = {"latency_s": dt, "http": r.status_code, "status": body.get("status"),
                   "timings_ms": body.get("timings_ms") or {}, "chosen_sql": body.get("chosen_sql"),
                   "n": len(body.get("candidates") or []), "discrimination": body.get("discrimination"),
                   "deadline_s": cfg.limits.deadline_s}
            print("RESULT " + json.dumps(res), file=out, flush=True)
    return 0


class _Worker:
    def __init__(self, name: str, pythonpath: str, config: str):
        import subprocess

        env = {**os.environ, "PYTHONPATH": pythonpath}
        self.name = name
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", config], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=pythonpath)
        line = self.p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"worker {name} did not start: {line!r}")

    def plan(self, q: dict) -> dict:
        import json

        self.p.stdin.write(json.dumps(q) + "\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} ended")
            if line.startswith("RESULT "):
                return json.loads(line[7:])

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def summarize(results: list[dict]) -> dict:
    lat = [r["latency_s"] for r in results]
    stages: dict[str, list[float]] = {}
    for r in results:
        for k, v in r["timings_ms"].items():
            stages.setdefault(k, []).append(v / 1000.0)
    ok = sum(1 for r in results if r["http"] == 200)
    within = sum(1 for r in results if r["http"] == 200 and r["latency_s"] <= r["deadline_s"])
    return {"plans": len(lat), "p50": statistics.median(lat), "p95": _pct(lat, 0.95), "max": max(lat),
            "mean": statistics.mean(lat), "http_200": ok, "within_deadline": within,
            "statuses": {s: sum(1 for r in results if r["status"] == s) for s in {r["status"] for r in results}},
            "stages": {k: {"p50": statistics.median(v), "p95": _pct(v, 0.95), "max": max(v)} for k, v in stages.items()},
            "spider_ex": spider_ex(results)}


def varied(a) -> int:
    import json
    import subprocess

    here = str(Path(__file__).resolve().parent.parent)
    codes = [("after", here)] + ([("before", a.before)] if a.before else [])
    qs = varied_questions(a.spider, demo=not a.no_demo)
    if a.interleave:  # demo and Spider questions alternate, so a run stopped early still covers both
        demo, spider = [q for q in qs if q["db_id"] == "demo"], [q for q in qs if q["db_id"] != "demo"]
        qs = [q for pair in zip(demo, spider, strict=False) for q in pair] + spider[len(demo):]
    qs = qs[:a.limit] if a.limit else qs
    warm = [qs[0]] + [q for q in qs if q["db_id"] != "demo"][:1]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.busy else None
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "busy": bool(a.busy), "questions": qs, "runs": {}}
    loads = [os.getloadavg()[0]]
    try:
        for config in a.configs.split(","):
            workers = {name: _Worker(name, path, config) for name, path in codes}
            for w in workers.values():
                for q in warm:
                    r = w.plan({**q, "deadline_s": 600})
                    print(f"{config:7} {w.name:6} warm-up {r['latency_s']:6.1f} s HTTP {r['http']}", flush=True)
            res: dict[str, list[dict]] = {name: [] for name in workers}
            for i, q in enumerate(qs):
                order = list(workers) if i % 2 == 0 else list(reversed(workers))
                for name in order:
                    r = workers[name].plan(q)
                    r.update(question=q["question"], db_id=q["db_id"], gold=q.get("gold"), load1=os.getloadavg()[0])
                    loads.append(r["load1"])
                    res[name].append(r)
                    print(f"{config:7} {name:6} {i + 1:2}/{len(qs)} {r['latency_s']:6.1f} s HTTP {r['http']} "
                          f"{r['status']} load {r['load1']:.1f} | {q['question'][:60]}", flush=True)
                if a.json:  # what is done so far, in case the run is stopped
                    Path(a.json + ".partial").write_text(json.dumps(res))
            for w in workers.values():
                w.close()
            for name, rs in res.items():
                report["runs"][f"{config}/{name}"] = {"summary": summarize(rs), "plans": rs}
    finally:
        if busy is not None:
            busy.kill()
    report["load1"] = {"min": min(loads), "max": max(loads), "mean": statistics.mean(loads)}
    print(f"\nquestions: {len(qs)} ({sum(q['db_id'] == 'demo' for q in qs)} demo, "
          f"{sum(q['db_id'] != 'demo' for q in qs)} Spider dev); busy process: {bool(a.busy)}; load avg (1 min) "
          f"{report['load1']['min']:.1f}-{report['load1']['max']:.1f} (mean {report['load1']['mean']:.1f})")
    for key, run in report["runs"].items():
        s = run["summary"]
        st = s["stages"]
        ex = s.get("spider_ex")
        print(f"{key:16} p50 {s['p50']:5.1f} p95 {s['p95']:5.1f} max {s['max']:5.1f} | within deadline "
              f"{s['within_deadline']}/{s['plans']} | " + ", ".join(
                  f"{k} {v['p50']:.1f}/{v['p95']:.1f}/{v['max']:.1f}" for k, v in st.items() if k != "total")
              + (f" | Spider EX {ex['ex']}/{ex['questions']} ({ex['ex_pct']} %)" if ex else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(q * (len(xs) - 1)))))
    return xs[k]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plans", type=int, default=10)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--varied", action="store_true", help="the 30 varied questions, before/after side by side")
    p.add_argument("--before", default=None, help="--varied: a checkout of the code before (run alongside)")
    p.add_argument("--configs", default="builtin,demo", help="--varied: builtin and/or demo (demo.toml)")
    p.add_argument("--limit", type=int, default=None, help="--varied: only the first N questions")
    p.add_argument("--busy", action="store_true", help="--varied: one busy process for the whole run")
    p.add_argument("--interleave", action="store_true", help="--varied: alternate demo and Spider questions")
    p.add_argument("--spider", type=int, default=len(SPIDER_DEV),
                   help="--varied: Spider dev questions (default the 20 of SPIDER_DEV; EX of the chosen SQL is reported)")
    p.add_argument("--no-demo", action="store_true", help="--varied: leave out the 10 demo-database questions")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker)
    if a.varied:
        return varied(a)
    from fastapi.testclient import TestClient

    from api.app import create_app
    from planner.config import config_from_dict

    store = Path(tempfile.mkdtemp(prefix="sqlarbiter-latency-")) / "plans.sqlite"
    cfg = config_from_dict({"store_url": f"sqlite:///{store}"}, source="plan-latency", env={})
    lat: list[float] = []
    statuses: dict[str, int] = {}
    stages: dict[str, list[float]] = {}
    timeouts = 0
    with TestClient(create_app(cfg)) as client:
        t0 = time.perf_counter()
        r = client.post("/plan", json={"question": QUESTIONS[0], "db_id": "demo", "n": a.n, "execute": True})
        print(f"warm-up plan: {time.perf_counter() - t0:.1f} s (HTTP {r.status_code})", flush=True)
        for i in range(a.plans):
            q = QUESTIONS[i % len(QUESTIONS)]
            t0 = time.perf_counter()
            r = client.post("/plan", json={"question": q, "db_id": "demo", "n": a.n, "execute": True})
            dt = time.perf_counter() - t0
            lat.append(dt)
            if r.status_code != 200:
                timeouts += r.status_code == 504
                statuses[f"HTTP {r.status_code}"] = statuses.get(f"HTTP {r.status_code}", 0) + 1
                print(f"plan {i + 1}: {dt:.1f} s HTTP {r.status_code}", flush=True)
                continue
            body = r.json()
            statuses[body["status"]] = statuses.get(body["status"], 0) + 1
            for k, v in body["timings_ms"].items():
                stages.setdefault(k, []).append(v / 1000.0)
            print(f"plan {i + 1}: {dt:.1f} s {body['status']} {body.get('chosen_sql')!r}", flush=True)
    print(f"\nplans: {len(lat)}, n={a.n}, default config, load avg (1 min) at the end: {os.getloadavg()[0]:.1f}")
    print(f"latency s: p50 {statistics.median(lat):.1f}, p95 {_pct(lat, 0.95):.1f}, max {max(lat):.1f}")
    print(f"statuses: {statuses} (504: {timeouts})")
    print("mean stage s: " + ", ".join(f"{k} {statistics.mean(v):.2f}" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
