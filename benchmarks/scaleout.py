"""Scale-out drill on real parts (loopback only, bounded): HAProxy in front of 3 `sqlarbiter serve` replicas
on one PostgreSQL store, the generator and the discriminator each behind its own loopback OpenAI-compatible
model server (`sqlarbiter models serve-openai`), load from locust, and faults during the load.

    python -m benchmarks.scaleout [--users 4] [--steady 30] [--window 20] [--n 2] [--no-pg-restart] [--out runs/scaleout]

The parts are the ones a user deploys: HAProxy (Debian's package) runs `deploy/haproxy.cfg` as it is, the
replica addresses given through the environment variables it reads; each replica is started with the
ExecStart and Environment of `deploy/sqlarbiter@.service` (after `systemd-analyze verify` of the unit, where
that tool exists), the install paths mapped to this checkout's venv and the drill's own files.

Phases, one after the other while locust (headless, `--users` users) keeps sending its mix of POST /plan,
POST /feedback (with and without Idempotency-Key), POST /check and GET /plans/{id}
(benchmarks/scaleout_locustfile.py):

    steady      no fault, `--steady` seconds
    rolling     SIGTERM each replica in turn; start it again and wait until HAProxy has it UP, then the next
    kill9       one replica `kill -9`-ed, restarted a second later (the unit's Restart=always, RestartSec=1),
                until HAProxy has it UP again plus `--window` seconds
    model       the generator's model server restarted (SIGTERM, start, ready), plus `--window` seconds
    database    `pg_ctlcluster 15 main restart` (skipped with --no-pg-restart), plus `--window` seconds
    tail        `--steady`/2 seconds without a fault

Then the users stop (each finishes its request, feedback retried until acknowledged) and both sides are
counted: the client log (every attempt: 2xx, 429, 503, other; p50/p95 latency per phase) against the store
(every acknowledged plan and feedback id present; feedback rows; the bandit's update count in
`router_state` against the acknowledged labelled feedback). Exit 0 only when nothing acknowledged is missing,
the bandit count equals the acknowledged labelled feedback, the rolling restart failed no request that did
not carry Retry-After, everything it started is stopped, and it took at most `--max-seconds` (600).

The plan store is the database `--db` (default sqlarbiter_drill) on the PostgreSQL server `--pg`, dropped
and created again at the start (only that database) and kept afterwards for inspection. Results:
`<out>/result.json`, `<out>/report.md` (the tables BENCHMARKS.md quotes), the client log and every process's log.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from core.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
UNIT = DEPLOY / "sqlarbiter@.service"
LOCUSTFILE = Path(__file__).with_name("scaleout_locustfile.py")
PHASES = ("steady", "rolling", "kill9", "model", "database", "tail")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ------------------------------------------------------------------------------------------- the unit file


def read_unit(path: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section of a systemd unit: key -> values in order (Environment= repeats)."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Service" and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_command(port: int, mapping: dict[str, str], path: Path = UNIT) -> tuple[list[str], dict[str, str]]:
    """ExecStart (as argv) and Environment of the unit for instance `port`, install paths mapped by prefix."""
    svc = read_unit(path)

    def sub(s: str) -> str:
        s = s.replace("%i", str(port))
        for a, b in mapping.items():
            s = s.replace(a, b)
        return s

    env: dict[str, str] = {}
    for e in svc.get("Environment", []):
        for kv in shlex.split(e):
            k, v = kv.split("=", 1)
            env[k] = sub(v)
    (exec_start,) = svc["ExecStart"]
    return [sub(a) for a in shlex.split(exec_start)], env


def verify_unit(tmp: Path, mapping: dict[str, str]) -> str:
    """`systemd-analyze verify` of the unit with the install paths mapped (so its ExecStart exists here).
    Returns what the tool said ('' = clean); 'skipped: ...' where the tool is missing."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return "skipped: systemd-analyze not found"
    d = tmp / "unit"
    d.mkdir(exist_ok=True)
    text = UNIT.read_text()
    for a, b in mapping.items():
        text = text.replace(a, b)
    (d / UNIT.name).write_text(text)
    r = subprocess.run([tool, "verify", str(d / UNIT.name.replace("@", "@8101"))], capture_output=True, text=True,
                       timeout=60)
    said = (r.stdout + r.stderr).strip()
    return said if said or r.returncode == 0 else f"exit {r.returncode}"


def haproxy_check(env: dict[str, str] | None = None, cfg: Path = HAPROXY_CFG) -> tuple[bool, str]:
    """`haproxy -c` of the config (the drill's addresses through `env`)."""
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(exe).exists():
        return False, "haproxy not found (apt-get install -y haproxy)"
    r = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30,
                       env={**os.environ, **(env or {})})
    return r.returncode == 0, (r.stdout + r.stderr).strip()


# ------------------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    pgids: set[int] = field(default_factory=set)  # every process group this one ever had (restarts)

    def start(self) -> None:
        with self.log.open("a") as f:
            f.write(f"\n=== {datetime.now(UTC).isoformat()} start: {shlex.join(self.argv)}\n")
        self.popen = subprocess.Popen(self.argv, cwd=REPO_ROOT, env={**os.environ, **self.env},
                                      stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        self.pgids.add(self.popen.pid)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def term(self, timeout_s: float) -> float:
        """SIGTERM to the main process only (the unit's KillMode=mixed), wait for it, then SIGKILL what is
        left of its group. Returns the seconds it took to exit."""
        t = time.monotonic()
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.reap()
        return time.monotonic() - t

    def kill9(self) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        self.reap()

    def reap(self) -> None:
        for g in self.pgids:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def leftovers(self) -> list[int]:
        """Process groups of this process still present (should be none once stopped)."""
        left = []
        for g in self.pgids:
            try:
                os.killpg(g, 0)
                left.append(g)
            except ProcessLookupError:
                pass
        return left


def wait_http(url: str, proc: Proc | None, timeout_s: float, ok=lambda r: r.status_code == 200) -> float:
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
        try:
            if ok(httpx.get(url, timeout=2)):
                return time.monotonic() - t
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url}: not ready within {timeout_s:g}s")


def haproxy_states(stats: str) -> dict[str, str]:
    """Server -> status (UP, DOWN, 'UP 1/2', ...) of the `replicas` backend, from the stats page's CSV."""
    r = httpx.get(f"{stats}/stats;csv", timeout=2)
    rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
    return {row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas"
            and row["svname"] not in ("FRONTEND", "BACKEND")}


def wait_lb(stats: str, server: str, timeout_s: float, want: str = "UP") -> float:
    """Wait until HAProxy's status of `server` is exactly `want` ("UP") or starts with it ("DOWN")."""
    t = time.monotonic()
    while time.monotonic() - t < timeout_s:
        try:
            st = haproxy_states(stats).get(server, "")
            if st == want or (want != "UP" and st.startswith(want)):
                return time.monotonic() - t
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"HAProxy: {server} not {want} within {timeout_s:g}s")


# ------------------------------------------------------------------------------------------- configuration


def write_config(path: Path, store_url: str, gen_port: int, disc_port: int, a: argparse.Namespace) -> None:
    model = """backend = "openai"
model = "embedded"
options = { timeout = 60, max_retries = 6, backoff = 0.5, concurrency = 4"""
    path.write_text(f"""# written by benchmarks.scaleout
store_url = "{store_url}"
warmup = false

[generators.g]
url = "http://127.0.0.1:{gen_port}/v1"
{model}, constrained = true }}

[discriminators.d]
url = "http://127.0.0.1:{disc_port}/v1"
{model}, mode = "cot" }}

[pairs.cheap]
generator = "g"
discriminator = "d"

[pairs.strong]
generator = "g"
discriminator = "d"

[router]
name = "bandit"
params = {{ embeddings = false }}

[defaults]
n = {a.n}
max_tokens = {a.max_tokens}
reasoning_budget = {a.budget}
few_shot = 0

[limits]
n_max = {max(2, a.n)}
concurrency = 2
queue_size = 8
deadline_s = 60
max_deadline_s = 60
sandbox_workers = 1
""")


# ------------------------------------------------------------------------------------------- accounting


def summarize(records: list[dict], phases: list[dict]) -> list[dict]:
    rows = []
    for ph in phases:
        rs = [r for r in records if ph["start"] <= r["t"] + r["ms"] / 1000 < ph["end"]]  # by when it was answered
        st = Counter(r["status"] for r in rs)
        ok = [r for r in rs if 200 <= r["status"] < 300]
        fails = [r for r in rs if not 200 <= r["status"] < 300]
        other = Counter(str(r["status"]) for r in fails if r["status"] not in (429, 503))
        plans = [r["ms"] for r in ok if r["ep"] == "plan"]
        rows.append({
            "phase": ph["name"], "seconds": round(ph["end"] - ph["start"], 1), "sent": len(rs), "2xx": len(ok),
            "429": st[429], "503": st[503], "other": sum(other.values()), "other_by_status": dict(other),
            "failed_without_retry_after": sum(1 for r in fails if not r.get("retry_after")),
            "p50_ms": pct([r["ms"] for r in rs], 0.5), "p95_ms": pct([r["ms"] for r in rs], 0.95),
            "plan_p50_ms": pct(plans, 0.5), "plan_p95_ms": pct(plans, 0.95),
            "by_endpoint": dict(Counter(r["ep"] for r in rs)),
            "failures": [{k: r.get(k) for k in ("ep", "status", "retry_after", "error")} for r in fails][:20],
        })
    return rows


def account(records: list[dict], conn) -> dict:
    """The client's acknowledgements against the store."""
    plan_acks = {r["id"] for r in records if r["ep"] == "plan" and 200 <= r["status"] < 300}
    fb = [r for r in records if r["ep"] == "feedback" and 200 <= r["status"] < 300]
    fb_ids = {r["id"] for r in fb}
    fb_label = {r["id"]: r["label"] for r in fb}
    repeats = [r for r in fb if "repeat_of" in r]
    stored_plans = {p for (p,) in conn.execute("SELECT id FROM plans").fetchall()}
    rows = conn.execute("SELECT id, plan_id, correct FROM feedback").fetchall()
    stored_fb = {i: (p, c) for i, p, c in rows}
    per_plan = Counter(p for _, p, _ in rows)
    states = [json.loads(s) for (s,) in conn.execute(
        "SELECT state FROM router_state WHERE key = 'bandit' AND arm <> '__meta__'").fetchall()]
    ids_per_plan: dict[str, set[int]] = {}
    for r in fb:
        ids_per_plan.setdefault(r["for_plan"], set()).add(r["id"])
    return {
        "plans_acknowledged": len(plan_acks), "plans_stored": len(stored_plans),
        "plans_acknowledged_missing": len(plan_acks - stored_plans),
        "feedback_requests_acknowledged": len(fb), "feedback_acknowledged_distinct": len(fb_ids),
        "feedback_acknowledged_labelled": sum(1 for i in fb_ids if fb_label[i] is not None),
        "feedback_stored": len(stored_fb), "feedback_stored_labelled": sum(1 for p, c in stored_fb.values()
                                                                            if c is not None),
        "feedback_acknowledged_missing": len(fb_ids - set(stored_fb)),
        "feedback_label_mismatch": sum(1 for i in fb_ids if i in stored_fb and stored_fb[i][1] != fb_label[i]),
        "feedback_rows_per_plan_max": max(per_plan.values(), default=0),
        "feedback_ids_per_plan_max": max(map(len, ids_per_plan.values()), default=0),
        "feedback_without_key": sum(1 for r in fb if not r.get("keyed") and "repeat_of" not in r),
        "feedback_with_key": sum(1 for r in fb if r.get("keyed") and "repeat_of" not in r),
        "deliberate_repeats": len(repeats),
        "repeats_answered_duplicate_same_id": sum(1 for r in repeats if r.get("duplicate") and r["id"] == r["repeat_of"]),
        "duplicates_acknowledged": sum(1 for r in fb if r.get("duplicate")),
        "bandit_updates": sum(int(s["n"]) for s in states),
    }


def table(rows: list[dict]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    out = ["| phase | s | sent | 2xx | 429 | 503 | other | failed w/o Retry-After | p50 ms | p95 ms | plan p50 ms "
           "| plan p95 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        other = f"{r['other']}" + (f" ({', '.join(f'{k}: {v}' for k, v in r['other_by_status'].items())})"
                                   if r["other"] else "")
        out.append(f"| {r['phase']} | {r['seconds']:.0f} | {r['sent']} | {r['2xx']} | {r['429']} | {r['503']} | "
                   f"{other} | {r['failed_without_retry_after']} | {ms(r['p50_ms'])} | {ms(r['p95_ms'])} | "
                   f"{ms(r['plan_p50_ms'])} | {ms(r['plan_p95_ms'])} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- the drill


def run(a: argparse.Namespace) -> dict:
    import psycopg

    t_begin = time.monotonic()
    deadline = t_begin + a.max_seconds

    def left(cap: float) -> float:
        return max(1.0, min(cap, deadline - time.monotonic()))

    out = Path(a.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="sqlarbiter-scaleout-"))
    bin_dir = Path(sys.executable).parent
    mapping = {"/opt/sqlarbiter/.venv/bin/": f"{bin_dir}/", "/etc/sqlarbiter/sqlarbiter.toml": str(tmp / "config.toml"),
               "/var/lib/sqlarbiter": str(tmp / "state"), "/var/cache/sqlarbiter": str(a.cache_dir)}
    res: dict = {"command": "python -m benchmarks.scaleout " + " ".join(a.argv), "machine": machine(),
                 "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "events": []}

    def event(what: str, **kw) -> None:
        e = {"t": round(time.monotonic() - t_begin, 1), "what": what, **kw}
        res["events"].append(e)
        print(f"[{e['t']:6.1f}s] {what}" + (f" {kw}" if kw else ""), flush=True)

    res["unit_verify"] = verify_unit(tmp, mapping)
    event("unit verified", said=res["unit_verify"] or "clean")

    admin = psycopg.connect(a.pg, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{a.db}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{a.db}"')
    admin.close()
    kv = dict(x.split("=", 1) for x in a.pg.split())
    store_url = (f"postgresql+psycopg://{kv.get('user', 'postgres')}@{kv.get('host', '127.0.0.1')}:"
                 f"{kv.get('port', 5432)}/{a.db}?connect_timeout=3")
    store_dsn = " ".join(f"{k}={v}" for k, v in {**kv, "dbname": a.db}.items())

    gen_port, disc_port, lb_port, stats_port = (free_port() for _ in range(4))
    rep_ports = [free_port() for _ in range(3)]
    write_config(tmp / "config.toml", store_url, gen_port, disc_port, a)
    sqlarbiter = str(bin_dir / "sqlarbiter")
    model_env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    models = {role: Proc(f"model-{role}", [sqlarbiter, "models", "serve-openai", "--name", "embedded", "--port", str(port)],
                         out / f"model-{role}.log", model_env)
              for role, port in (("generator", gen_port), ("discriminator", disc_port))}
    replicas = []
    for i, port in enumerate(rep_ports, 1):
        argv, env = unit_command(port, mapping)
        replicas.append(Proc(f"r{i}", argv, out / f"replica-r{i}.log", env))
    res["replica_command"] = shlex.join(replicas[0].argv)
    res["replica_environment"] = replicas[0].env
    lb_env = {"SQLARBITER_LB_BIND": f"127.0.0.1:{lb_port}", "SQLARBITER_LB_STATS": f"127.0.0.1:{stats_port}",
              **{f"SQLARBITER_REPLICA_{i}": f"127.0.0.1:{p}" for i, p in enumerate(rep_ports, 1)}}
    ok, said = haproxy_check(lb_env)
    res["haproxy_check"] = said
    if not ok:
        raise RuntimeError(f"haproxy -c failed: {said}")
    haproxy = Proc("haproxy", [shutil.which("haproxy") or "/usr/sbin/haproxy", "-W", "-db", "-f", str(HAPROXY_CFG)],
                   out / "haproxy.log", lb_env)
    client_log, stop_file = out / "client.jsonl", tmp / "stop"
    locust = Proc("locust", [str(bin_dir / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u", str(a.users),
                             "-r", str(a.users), "--run-time", f"{int(a.max_seconds)}s", "--stop-timeout", "100",
                             "-H", f"http://127.0.0.1:{lb_port}", "--only-summary", "--loglevel", "WARNING"],
                  out / "locust.log",
                  {"SCALEOUT_LOG": str(client_log), "SCALEOUT_STOP": str(stop_file), "SCALEOUT_N": str(a.n)})
    everything = [locust, haproxy, *replicas, *models.values()]
    stats = f"http://127.0.0.1:{stats_port}"
    phases: list[dict] = []
    try:
        for m in models.values():
            m.start()
        for m, port in zip(models.values(), (gen_port, disc_port), strict=True):
            wait_http(f"http://127.0.0.1:{port}/v1/models", m, left(240))
        event("model servers ready")
        for r in replicas:
            r.start()
        for r, port in zip(replicas, rep_ports, strict=True):
            wait_http(f"http://127.0.0.1:{port}/readyz", r, left(240))
        event("replicas ready")
        haproxy.start()
        for i in range(1, 4):
            wait_lb(stats, f"r{i}", left(30))
        event("haproxy: r1-r3 UP")
        # one plan through the balancer first: the sandbox workers and the models' first call are warm
        httpx.post(f"http://127.0.0.1:{lb_port}/plan", json={"question": "How many singers are there?",
                                                              "db_id": "demo"}, timeout=120)
        locust.start()
        wait_http(f"http://127.0.0.1:{lb_port}/readyz", None, left(30))
        while not client_log.exists() or client_log.stat().st_size == 0:
            if not locust.alive:
                raise RuntimeError(f"locust exited; see {locust.log}")
            time.sleep(0.2)
        event("load started", users=a.users)

        def phase(name: str) -> dict:
            if phases and "end" not in phases[-1]:
                phases[-1]["end"] = time.time()
            ph = {"name": name, "start": time.time()}
            phases.append(ph)
            event(f"phase {name}")
            return ph

        def hold(seconds: float) -> None:
            time.sleep(max(0.0, min(seconds, deadline - time.monotonic() - 150)))

        phase("steady")
        hold(a.steady)
        phase("rolling")
        for i, r in enumerate(replicas, 1):
            took = r.term(left(75))
            wait_lb(stats, f"r{i}", left(20), "DOWN")  # HAProxy has seen it go (before it can see it back)
            r.start()
            up = wait_lb(stats, f"r{i}", left(120))
            event(f"r{i} restarted", exit_s=round(took, 1), back_up_s=round(up, 1))
        phase("kill9")
        victim = replicas[1]
        victim.kill9()
        event("r2 kill -9")
        time.sleep(1.0)  # RestartSec=1
        wait_lb(stats, "r2", left(20), "DOWN")
        victim.start()
        up = wait_lb(stats, "r2", left(120))
        event("r2 UP again", after_s=round(up, 1))
        hold(a.window)
        phase("model")
        m = models["generator"]
        took = m.term(left(60))
        m.start()
        ready = wait_http(f"http://127.0.0.1:{gen_port}/v1/models", m, left(180))
        event("generator model server restarted", exit_s=round(took, 1), ready_s=round(ready, 1))
        hold(a.window)
        phase("database")
        if a.pg_restart:
            t = time.monotonic()
            r = subprocess.run(["pg_ctlcluster", *a.pg_cluster.split(), "restart"], capture_output=True, text=True,
                               timeout=120)
            event("pg_ctlcluster restart", rc=r.returncode, seconds=round(time.monotonic() - t, 1),
                  said=(r.stdout + r.stderr).strip()[:200])
        else:
            event("database restart skipped (--no-pg-restart)")
        hold(a.window)
        phase("tail")
        hold(a.steady / 2)
        phases[-1]["end"] = time.time()
        stop_file.touch()
        event("users stopping")
        try:
            locust.popen.wait(left(150))
        except subprocess.TimeoutExpired:
            event("locust did not stop in time: killed")
        event("load stopped", locust_exit=locust.popen.returncode)
        # the last requests' stragglers belong to the tail
        phases[-1]["end"] = time.time()
        records = [json.loads(x) for x in client_log.read_text().splitlines() if x.strip()]
        res["phases"] = summarize(records, phases)
        res["all"] = summarize(records, [{"name": "all", "start": 0, "end": float("inf")}])[0]
        with psycopg.connect(store_dsn) as c:
            res["accounting"] = account(records, c)
    finally:
        stop_file.touch()
        for p in everything:
            p.term(30)
        for _ in range(40):  # killed processes take a moment to be reaped
            if not any(p.leftovers() for p in everything):
                break
            time.sleep(0.25)
        res["leftover_process_groups"] = {p.name: p.leftovers() for p in everything if p.leftovers()}
        shutil.rmtree(tmp, ignore_errors=True)
        res["seconds"] = round(time.monotonic() - t_begin, 1)
        res["out"] = str(out)
        (out / "result.json").write_text(json.dumps(res, indent=1, default=str))
    return res


def verdict(res: dict, max_seconds: float) -> dict[str, bool]:
    acc = res["accounting"]
    rolling = next(p for p in res["phases"] if p["phase"] == "rolling")
    return {
        "no acknowledged plan missing": acc["plans_acknowledged_missing"] == 0,
        "no acknowledged feedback missing": acc["feedback_acknowledged_missing"] == 0,
        "one feedback row per plan": acc["feedback_rows_per_plan_max"] <= 1 and acc["feedback_ids_per_plan_max"] <= 1,
        "every deliberate repeat answered as a duplicate": acc["repeats_answered_duplicate_same_id"]
        == acc["deliberate_repeats"],
        "bandit updates == acknowledged labelled feedback": acc["bandit_updates"]
        == acc["feedback_acknowledged_labelled"] == acc["feedback_stored_labelled"],
        "rolling restart: no failure without Retry-After": rolling["failed_without_retry_after"] == 0,
        f"finished within {max_seconds:g} s": res["seconds"] <= max_seconds,
        "everything it started is stopped": not res["leftover_process_groups"],
    }


def report(res: dict, ok: dict[str, bool]) -> str:
    acc = res["accounting"]
    lines = [f"Command: `{res['command']}`  ", f"Machine: {res['machine']}  ", f"Date: {res['date']}; "
             f"wall time {res['seconds']:.0f} s", "", table(res["phases"] + [res["all"]]), "",
             "Accounting (client log vs store):", "",
             "| | client (acknowledged) | store |", "|---|---:|---:|",
             f"| plans | {acc['plans_acknowledged']} | {acc['plans_stored']} (missing: "
             f"{acc['plans_acknowledged_missing']}) |",
             f"| feedback (distinct ids) | {acc['feedback_acknowledged_distinct']} ({acc['feedback_with_key']} with "
             f"Idempotency-Key, {acc['feedback_without_key']} without; {acc['deliberate_repeats']} deliberate repeats, "
             f"{acc['repeats_answered_duplicate_same_id']} answered duplicate) | {acc['feedback_stored']} rows "
             f"(missing: {acc['feedback_acknowledged_missing']}; max per plan {acc['feedback_rows_per_plan_max']}) |",
             f"| labelled feedback vs bandit updates | {acc['feedback_acknowledged_labelled']} | "
             f"{acc['bandit_updates']} updates in router_state ({acc['feedback_stored_labelled']} labelled rows) |",
             "", "Events: " + "; ".join(f"{e['t']:.0f}s {e['what']}" for e in res["events"]), "",
             "Checks: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in ok.items())]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=4, help="locust users (default 4)")
    ap.add_argument("--steady", type=float, default=30, help="seconds of steady state (the tail gets half)")
    ap.add_argument("--window", type=float, default=20, help="seconds held after each fault")
    ap.add_argument("--n", type=int, default=2, help="candidates per plan (2: the discriminator judges them)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--budget", type=int, default=8, help="discriminator reasoning budget")
    ap.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3",
                    help="libpq connection of an account that may create the store database")
    ap.add_argument("--db", default="sqlarbiter_drill", help="the store database (dropped and created again)")
    ap.add_argument("--pg-cluster", default="15 main", help="the cluster pg_ctlcluster restarts")
    ap.add_argument("--no-pg-restart", dest="pg_restart", action="store_false",
                    help="skip the PostgreSQL restart (it interrupts everyone else's connections)")
    ap.add_argument("--cache-dir", default=None, help="SQLARBITER_CACHE_DIR of the replicas (default: the user's)")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--out", default=str(REPO_ROOT / "runs" / "scaleout"))
    a = ap.parse_args(argv)
    a.argv = argv
    if a.cache_dir is None:
        from core.settings import cache_dir

        a.cache_dir = cache_dir()
    res = run(a)
    ok = verdict(res, a.max_seconds)
    text = report(res, ok)
    (Path(res["out"]) / "report.md").write_text(text + "\n")
    print(text)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
