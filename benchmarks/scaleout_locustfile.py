"""The scale-out drill's load (`benchmarks.scaleout` runs it: `locust -f benchmarks/scaleout_locustfile.py
--headless ...`). Not imported by anything else: locust patches the standard library with gevent on import.

Each user behaves like a careful client of the service behind the balancer:

- `POST /plan` (small n and budget); each acknowledged plan is queued for one feedback;
- `POST /feedback` for a queued plan, alternately with an `Idempotency-Key` header and without one (the
  service then deduplicates by content), and a quarter of them sent a second time on purpose (that one must
  answer `"duplicate": true` with the same feedback id);
- `POST /check` of a fixed query, `GET /plans/{id}` of an acknowledged plan.

Retries (what docs/deployment.md tells clients to do): a connection error, 429, 502, 503 or 504 is retried,
after `Retry-After` when the answer carries one, else after a backoff of 0.5, 1, 2, 4 s; feedback for up to
`SCALEOUT_FEEDBACK_RETRY_S` seconds (it must be acknowledged: the store is checked against it), other requests
for up to `SCALEOUT_RETRY_S`. Every attempt is one line of the client log (`SCALEOUT_LOG`, JSON lines): start
time, endpoint, status (0: no HTTP answer), latency, whether it carried Retry-After, and for an acknowledgement
the plan or feedback id. The drill stops the users by creating the file `SCALEOUT_STOP`.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent
from locust import HttpUser, between, events, task

LOG = Path(os.environ.get("SCALEOUT_LOG", "scaleout-client.jsonl"))
STOP = Path(os.environ.get("SCALEOUT_STOP", "scaleout.stop"))
RETRY_S = float(os.environ.get("SCALEOUT_RETRY_S", "30"))
FEEDBACK_RETRY_S = float(os.environ.get("SCALEOUT_FEEDBACK_RETRY_S", "90"))
N = int(os.environ.get("SCALEOUT_N", "1"))
RETRY_STATUS = {0, 429, 502, 503, 504}
QUESTIONS = [  # short answers: the tiny CPU model then writes SQL that runs, so the discriminator is asked too
    "How many singers are there?",
    "How many concerts are there?",
    "How many stadiums are there?",
    "What are the names of all singers?",
    "List the names of all stadiums.",
]
CHECK_SQL = "SELECT count(*) FROM singer WHERE age > 30"
_log = LOG.open("a", buffering=1)


def record(**kw) -> None:
    _log.write(json.dumps(kw) + "\n")


@events.test_start.add_listener
def _watch_stop(environment, **_kw) -> None:
    def watch() -> None:
        while not STOP.exists():
            gevent.sleep(0.5)
        if environment.runner is not None:
            environment.runner.quit()

    gevent.spawn(watch)


class Client(HttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.plans: list[str] = []  # acknowledged plan ids
        self.unlabelled: list[str] = []  # acknowledged, no feedback sent yet
        self.k = 0

    def call(self, ep: str, method: str, path: str, *, body: dict | None = None, headers: dict | None = None,
             budget_s: float = RETRY_S, **extra) -> dict | None:
        """One logical request with the retries a client should make; every attempt is logged. Returns the
        acknowledged JSON body, or None when it was never acknowledged."""
        give_up = time.time() + budget_s
        attempt = 0
        while True:
            t = time.time()
            with self.client.request(method, path, json=body, headers=headers, name=ep, catch_response=True,
                                     timeout=150) as r:
                ms = (time.time() - t) * 1000
                status = int(r.status_code or 0)
                retry_after = r.headers.get("Retry-After") if status else None
                rec = {"t": t, "ep": ep, "status": status, "ms": round(ms, 1), "attempt": attempt,
                       "retry_after": retry_after, **extra}
                data = None
                if 200 <= status < 300:
                    r.success()
                    data = r.json()
                else:
                    detail = (r.text or "")[:160] if status else f"{type(r.error).__name__}: {r.error}"[:160]
                    rec["error"] = detail
                    r.failure(f"{status}: {detail}")
            if data is not None:
                rec.update({k: data[k] for k in ("id", "plan_id", "duplicate") if k in data})
                if ep == "plan":
                    rec["plan_status"] = data.get("status")
            record(**rec)
            if data is not None:
                return data
            if status not in RETRY_STATUS or time.time() >= give_up or STOP.exists() and ep != "feedback":
                return None
            attempt += 1
            delay = min(4.0, 0.5 * 2 ** (attempt - 1))
            try:
                delay = max(delay, float(retry_after)) if retry_after else delay
            except ValueError:
                pass
            gevent.sleep(min(delay, max(0.0, give_up - time.time())) + random.uniform(0, 0.2))

    @task(3)
    def plan(self) -> None:
        q = random.choice(QUESTIONS)
        p = self.call("plan", "POST", "/plan", body={"question": q, "db_id": "demo", "n": N})
        if p is not None:
            self.plans.append(p["id"])
            self.unlabelled.append(p["id"])

    @task(3)
    def feedback(self) -> None:
        if not self.unlabelled:
            return self.plan()
        pid = self.unlabelled.pop(0)
        self.k += 1
        keyed = self.k % 2 == 0
        body = {"plan_id": pid, "correct": random.random() < 0.5}
        headers = {"Idempotency-Key": f"drill-{pid}"} if keyed else None
        ep = "feedback"
        first = self.call(ep, "POST", "/feedback", body=body, headers=headers, budget_s=FEEDBACK_RETRY_S,
                          keyed=keyed, label=body["correct"], for_plan=pid)
        if first is not None and random.random() < 0.25:  # a client repeating itself: must be a duplicate
            self.call(ep, "POST", "/feedback", body=body, headers=headers, budget_s=FEEDBACK_RETRY_S,
                      keyed=keyed, label=body["correct"], for_plan=pid, repeat_of=first["id"])

    @task(2)
    def check(self) -> None:
        self.call("check", "POST", "/check", body={"db_id": "demo", "sql": CHECK_SQL})

    @task(2)
    def get_plan(self) -> None:
        if not self.plans:
            return self.check()
        self.call("get_plan", "GET", f"/plans/{random.choice(self.plans)}")
