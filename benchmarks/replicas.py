"""Replica test (loopback only, bounded): 2 service replicas on one PostgreSQL store, models on the loopback
OpenAI-compatible server, concurrent plans and feedback, one replica `kill -9`-ed mid-run.

    python -m benchmarks.replicas [--plans 6] [--pg "host=127.0.0.1 port=5432 user=postgres dbname=postgres"]

Every feedback is sent to both replicas at once with the same `Idempotency-Key` (a client retrying through a
load balancer); replica B is killed with SIGKILL after half of them, and requests it can no longer answer are
retried on A. Reported: plans stored, feedback acknowledged (distinct) vs rows stored, duplicates acknowledged,
and the bandit's update count in `router_state` against the acknowledged labelled feedback. Needs a
PostgreSQL server (`bash .ci/postgres.sh`); uses a throwaway database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.load_test import free_port, start_server
from core.settings import REPO_ROOT


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}: not ready within {timeout_s}s")


def run(n_plans: int, pg: str) -> dict:
    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="sqlarbiter-replicas-"))
    name = f"sqlarbiter_replicas_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(pg, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    host = dict(kv.split("=") for kv in pg.split())
    url = f"postgresql+psycopg://{host.get('user', 'postgres')}@{host.get('host', '127.0.0.1')}:{host.get('port', 5432)}/{name}"
    procs: list[subprocess.Popen] = []
    try:
        mport = free_port()
        model = subprocess.Popen([sys.executable, "-m", "cli", "models", "serve-openai", "--port", str(mport)],
                                 cwd=REPO_ROOT, stdout=(tmp / "model.log").open("w"), stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        procs.append(model)
        _wait(f"http://127.0.0.1:{mport}/v1/models", model)
        served = httpx.get(f"http://127.0.0.1:{mport}/v1/models").json()["data"][0]["id"]
        cfg = tmp / "config.toml"
        cfg.write_text(f"""
store_url = "{url}"
warmup = false

[generators.m]
backend = "openai"
url = "http://127.0.0.1:{mport}/v1"
model = "{served}"

[discriminators.m]
backend = "openai"
url = "http://127.0.0.1:{mport}/v1"
model = "{served}"
options = {{ mode = "cot" }}

[pairs.cheap]
generator = "m"
discriminator = "m"

[pairs.strong]
generator = "m"
discriminator = "m"

[router]
name = "bandit"
params = {{ embeddings = false }}

[defaults]
n = 1
max_tokens = 8
reasoning_budget = 8

[limits]
concurrency = 1
queue_size = 32
deadline_s = 600
max_deadline_s = 600
""")
        ports = [free_port(), free_port()]
        reps = [start_server(cfg, p, tmp / f"replica{i}.log", threads=1) for i, p in enumerate(ports)]
        procs += reps
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for b, p in zip(bases, reps, strict=True):
            _wait(f"{b}/readyz", p)
        # concurrent plans, alternating replicas
        plan_ids: list[str] = []
        lock = threading.Lock()

        def plan(i: int) -> None:
            r = httpx.post(f"{bases[i % 2]}/plan", json={"question": "How many singers are there?", "db_id": "demo"},
                           timeout=600)
            if r.status_code == 200:
                with lock:
                    plan_ids.append(r.json()["id"])

        ths = [threading.Thread(target=plan, args=(i,)) for i in range(n_plans)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        # feedback to both replicas at once, same Idempotency-Key; kill -9 replica B half way
        acks: dict[str, set[int]] = {}
        dup_acks = 0
        errors = 0

        def feedback(pid: str, base: str, correct: bool) -> None:
            nonlocal dup_acks, errors
            for target in (base, bases[0]):  # retried on A when B is gone
                try:
                    r = httpx.post(f"{target}/feedback", json={"plan_id": pid, "correct": correct},
                                   headers={"Idempotency-Key": f"fb-{pid}"}, timeout=120)
                except httpx.HTTPError:
                    continue
                with lock:
                    if r.status_code == 200:
                        acks.setdefault(pid, set()).add(r.json()["id"])
                        dup_acks += r.json()["duplicate"]
                    else:
                        errors += 1
                return

        killed_after = len(plan_ids) // 2
        for k, pid in enumerate(plan_ids):
            if k == killed_after:
                os.kill(reps[1].pid, signal.SIGKILL)
            ths = [threading.Thread(target=feedback, args=(pid, b, k % 2 == 0)) for b in bases]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
        with psycopg.connect(pg.replace("dbname=postgres", f"dbname={name}")) as c:
            stored_plans = c.execute("SELECT count(*) FROM plans").fetchone()[0]
            stored_fb = c.execute("SELECT count(*) FROM feedback").fetchone()[0]
            states = [json.loads(s) for (s,) in c.execute(
                "SELECT state FROM router_state WHERE key = 'bandit' AND arm <> '__meta__'").fetchall()]
        bandit_updates = sum(int(s["n"]) for s in states)
        return {"plans_acknowledged": len(plan_ids), "plans_stored": stored_plans,
                "feedback_acknowledged_distinct": len(acks), "feedback_ids_per_plan_max": max(map(len, acks.values()), default=0),
                "feedback_stored": stored_fb, "duplicate_acks": dup_acks, "feedback_errors": errors,
                "bandit_updates": bandit_updates, "replica_killed_after_feedback": killed_after}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.replicas", description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int, default=6)
    ap.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3")
    a = ap.parse_args(argv)
    res = run(a.plans, a.pg)
    print(json.dumps(res, indent=1))
    ok = res["feedback_acknowledged_distinct"] == res["feedback_stored"] == res["bandit_updates"] and \
        res["feedback_ids_per_plan_max"] == 1 and res["plans_acknowledged"] == res["plans_stored"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
