"""`sqlarbiter serve` drains on SIGTERM: the real server process stops accepting connections, finishes the
request in flight, and then exits (with SIGTERM's status, which uvicorn re-raises after draining)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# runs in the sandbox until its 5 s execution timeout: a request that is reliably in flight for seconds
SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_live(url: str, proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early ({proc.returncode}): {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/livez", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"serve did not answer /livez within {limit_s} s")


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SQLARBITER_STORE_URL": f"sqlite:///{tmp_path / 'plans.sqlite'}", "PYTHONUNBUFFERED": "1"}
    env.pop("SQLARBITER_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_live(url, proc)
        got: dict = {}

        def in_flight():
            try:
                got["r"] = httpx.post(f"{url}/check", json={"db_id": "demo", "sql": SLOW_SQL}, timeout=120)
            except httpx.HTTPError as e:  # pragma: no cover - the failure the test looks for
                got["e"] = e

        t = threading.Thread(target=in_flight)
        t0 = time.monotonic()
        t.start()
        time.sleep(1.5)  # the check is running in the sandbox now
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert t.is_alive(), "the check ended before the SIGTERM"
        # draining: the listening socket is closed, so a new connection is refused
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/livez", timeout=5)
        t.join(120)
        assert "e" not in got, f"the request in flight was cut off: {got.get('e')!r}"
        r = got["r"]
        assert r.status_code == 200, r.text
        assert r.json()["error_kind"] == "timeout"  # it ran to the sandbox's limit, after the SIGTERM
        assert time.monotonic() - t0 >= 4.0
        # uvicorn re-raises the SIGTERM once drained: the conventional "terminated by SIGTERM" status
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
