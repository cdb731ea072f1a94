"""The scale-out drill's parts, fast: deploy/haproxy.cfg passes `haproxy -c` with the drill's addresses, the
replica unit parses (and `systemd-analyze verify` is clean where it exists) into the command the drill runs,
the compose file parses, the per-phase accounting counts what it should, and the store's retry on a lost
connection. The drill itself (`python -m benchmarks.scaleout`, minutes, restarts PostgreSQL) is marked slow."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy.exc import OperationalError

from benchmarks import scaleout
from planner.plans import retry_store


def test_haproxy_config_validates():
    if not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()):
        pytest.skip("haproxy is not installed (.ci/run installs Debian's haproxy)")
    env = {"SQLARBITER_LB_BIND": "127.0.0.1:18080", "SQLARBITER_LB_STATS": "127.0.0.1:18404",
           **{f"SQLARBITER_REPLICA_{i}": f"127.0.0.1:1810{i}" for i in (1, 2, 3)}}
    ok, said = scaleout.haproxy_check(env)
    assert ok, said
    ok, said = scaleout.haproxy_check()  # the defaults work too
    assert ok, said
    text = scaleout.HAPROXY_CFG.read_text()
    assert "uri /readyz" in text and "retry-on conn-failure empty-response" in text


def test_unit_is_the_replica_command(tmp_path):
    bin_dir = Path(sys.executable).parent
    mapping = {"/opt/sqlarbiter/.venv/bin/": f"{bin_dir}/", "/etc/sqlarbiter/sqlarbiter.toml": str(tmp_path / "c.toml"),
               "/var/lib/sqlarbiter": str(tmp_path), "/var/cache/sqlarbiter": str(tmp_path)}
    argv, env = scaleout.unit_command(8101, mapping)
    assert argv[:2] == [str(bin_dir / "sqlarbiter"), "serve"]
    assert argv[argv.index("--port") + 1] == "8101" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert env["SQLARBITER_CONFIG"] == str(tmp_path / "c.toml") and env["OMP_NUM_THREADS"] == "1"
    svc = scaleout.read_unit()
    assert svc["KillMode"] == ["mixed"] and svc["KillSignal"] == ["SIGTERM"]
    said = scaleout.verify_unit(tmp_path, mapping)
    if said.startswith("skipped"):
        pytest.skip(said)
    assert said == "", said


def test_compose_file_parses():
    doc = yaml.safe_load((scaleout.DEPLOY / "compose.yaml").read_text())
    assert {"lb", "r1", "r2", "r3", "postgres", "vllm-generator", "vllm-discriminator"} <= set(doc["services"])
    assert doc["services"]["lb"]["environment"]["SQLARBITER_REPLICA_3"] == "r3:8000"
    assert doc["services"]["r2"]["stop_grace_period"] == "130s"


def test_phases_count_by_answer_time():
    recs = [{"t": 0.0, "ep": "plan", "status": 200, "ms": 500.0},
            {"t": 1.0, "ep": "plan", "status": 0, "ms": 9000.0, "error": "RemoteDisconnected"},  # answered at 10 s
            {"t": 2.0, "ep": "check", "status": 429, "ms": 5.0, "retry_after": "1"},
            {"t": 11.0, "ep": "feedback", "status": 503, "ms": 5.0, "retry_after": "2"},
            {"t": 12.0, "ep": "feedback", "status": 503, "ms": 5.0}]
    rows = scaleout.summarize(recs, [{"name": "a", "start": 0, "end": 5}, {"name": "b", "start": 5, "end": 20}])
    a, b = rows
    assert (a["sent"], a["2xx"], a["429"], a["503"], a["other"], a["failed_without_retry_after"]) == (2, 1, 1, 0, 0, 0)
    assert (b["sent"], b["2xx"], b["503"], b["other"], b["failed_without_retry_after"]) == (3, 0, 2, 1, 2)
    assert b["other_by_status"] == {"0": 1} and a["plan_p50_ms"] == 500.0


def test_retry_store_waits_out_a_lost_connection():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return "ok"

    assert retry_store(flaky, budget_s=5) == "ok" and len(calls) == 3
    with pytest.raises(OperationalError):
        retry_store(lambda: flaky() if False else (_ for _ in ()).throw(
            OperationalError("x", {}, Exception("down"))), budget_s=0.3)


@pytest.mark.slow
@pytest.mark.postgres
def test_drill(tmp_path):
    """The whole drill without the PostgreSQL restart (minutes; needs haproxy, locust and PostgreSQL)."""
    if not shutil.which("haproxy") and not Path("/usr/sbin/haproxy").exists():
        pytest.skip("haproxy is not installed")
    pytest.importorskip("locust")
    assert scaleout.main(["--no-pg-restart", "--steady", "20", "--window", "10", "--out", str(tmp_path)]) == 0
