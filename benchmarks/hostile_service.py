"""Hostile requests against a real service (`sqlarbiter serve` on 127.0.0.1, loopback only): every issue-15
class of input through POST /check and the JSON endpoints, with the server's peak RSS and each request's
latency against the sandbox timeout.

    python -m benchmarks.hostile_service [--timeout 1.0] [--engine duckdb] [--json PATH]

Cases: sqlglot parser hangs, DuckDB functions that ignore the memory limit or the interrupt, the LIKE pattern
blow-up, catalog disclosure, runaway queries (POST /check); lone surrogates in JSON strings, an oversized body and
a huge invalid field (the JSON endpoints). Reported: status counts, the largest (latency - timeout) of the /check
requests, any 5xx, and the server process's peak RSS (VmHWM) before and after the pass. Bounded: each request
has a client timeout; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks.load_test import free_port, start_server, stop_server

SQL_CASES = [
    "COPY }", "COPY ]", "COPY t FROM ]", "COPY (SELEC*/T 1 AS a) TO 'x.json' (FORMAT JSON;)",
    "SELECT length(repeat('x', 2000000000))", "SELECT length(list(range(1000000000)))",
    "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))",
    "SELECT damerau_levenshtein(repeat('a', 40000), repeat('b', 40000))",
    "SELECT length(list_sort(range(100000000)))",
    "SELECT repeat('a', 1000000) LIKE '" + "%a" * 499 + "%b'",
    "SELECT * FROM pragma_database_list", "SELECT * FROM duckdb_databases", "SELECT * FROM duckdb_views",
    "SELECT * FROM duckdb_tables", "SELECT * FROM pg_catalog.pg_settings", "SELECT * FROM information_schema.tables",
    "SELECT * FROM pg_proc", "SELECT * FROM src.singer", "SELECT * FROM sqlite_master",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(max(s)) FROM r",
    "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h",
    "SELECT * FROM read_csv('/etc/passwd')", "ATTACH '/tmp/x.db' AS x", "SELECT getenv('HOME')",
]
SURROGATE = '"\\ud800"'
RAW_CASES = [
    ("POST", "/check", f'{{"db_id": "demo", "sql": {SURROGATE}}}'),
    ("POST", "/plan", f'{{"question": {SURROGATE}, "db_id": "demo"}}'),
    ("POST", "/feedback", f'{{"plan_id": {SURROGATE}, "correct": true}}'),
    ("PUT", "/generators/active", f'{{"name": {SURROGATE}}}'),
    ("PUT", "/discriminators/active", f'{{"name": {SURROGATE}}}'),
    ("POST", "/check", json.dumps({"db_id": "demo", "sql": "x" * 60_000_000})),
    ("POST", "/check", json.dumps({"db_id": "demo", "sql": ["y" * 1_000_000]})),
]


def vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(timeout_s: float, engine: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sqlarbiter-hostile-"))
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
store_url = "sqlite:///{tmp / 'store.db'}"
warmup = false

[defaults]
n = 1
max_tokens = 8
reasoning_budget = 8

[limits]
exec_timeout_s = {timeout_s}
engine = "{engine}"
sandbox_memory_mb = 2560
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(cfg, port, tmp / "server.log")
    try:
        t = time.monotonic()
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t > 180:
                raise RuntimeError(f"server did not start; see {tmp / 'server.log'}")
            time.sleep(0.5)
        httpx.post(f"{base}/check", json={"db_id": "demo", "sql": "SELECT 1"}, timeout=60)  # warm
        rss_before = vmhwm_mb(proc.pid)
        statuses: Counter[str] = Counter()
        worst_over, rows = float("-inf"), []
        for sql in SQL_CASES:
            t = time.perf_counter()
            r = httpx.post(f"{base}/check", json={"db_id": "demo", "sql": sql}, timeout=timeout_s + 30)
            dt = time.perf_counter() - t
            body = r.json()
            statuses[str(r.status_code)] += 1
            worst_over = max(worst_over, dt - timeout_s)
            rows.append({"sql": sql[:70], "status": r.status_code, "verdict": body.get("verdict"),
                         "error_kind": body.get("error_kind"), "seconds": round(dt, 3)})
        for method, path, content in RAW_CASES:
            t = time.perf_counter()
            r = httpx.request(method, f"{base}{path}", content=content.encode(), timeout=60,
                              headers={"content-type": "application/json"})
            statuses[str(r.status_code)] += 1
            rows.append({"sql": f"{method} {path} ({len(content)} bytes)", "status": r.status_code,
                         "response_bytes": len(r.content), "seconds": round(time.perf_counter() - t, 3)})
        ok_after = httpx.post(f"{base}/check", json={"db_id": "demo", "sql": "SELECT count(*) FROM singer"},
                              timeout=60).json()["verdict"] == "ok"
        rss_after = vmhwm_mb(proc.pid)
    finally:
        stop_server(proc)
    return {"engine": engine, "timeout_s": timeout_s, "n_requests": len(SQL_CASES) + len(RAW_CASES),
            "statuses": dict(statuses), "n_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
            "max_seconds_past_timeout": round(worst_over, 3), "server_peak_rss_mb_before": round(rss_before, 1),
            "server_peak_rss_mb_after": round(rss_after, 1), "service_ok_after": ok_after, "cases": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hostile_service", description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=1.0, help="the sandbox's exec_timeout_s")
    ap.add_argument("--engine", choices=["duckdb", "sqlite"], default="duckdb")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    res = run(a.timeout, a.engine)
    print(json.dumps(res, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0 if res["n_5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
