"""`POST /plan` latency on the demo database with the DEFAULT configuration (the built-in embedded config; only
the plan store is a throwaway file), through the real ASGI app (TestClient). One warm-up plan (model loading,
grammar compilation) is excluded; then `--plans` plans cycle over the demo questions. Reports p50/p95/max seconds
(client-observed), statuses, how many plans chose an executable SQL, and the mean per-stage seconds.

Runs against whatever code is on PYTHONPATH, so the same file measures another checkout ("before"):
`PYTHONPATH=/path/to/other/checkout python benchmarks/plan_latency.py --plans 5`.

    python -m benchmarks.plan_latency --plans 10 --n 3
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


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(q * (len(xs) - 1)))))
    return xs[k]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plans", type=int, default=10)
    p.add_argument("--n", type=int, default=3)
    a = p.parse_args(argv)
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
