"""`sqlarbiter serve` drains on SIGTERM: the real server process stops accepting connections, finishes the
request in flight, and then exits (with SIGTERM's status, which uvicorn re-raises after draining). The process
is started and watched with the load test's helpers (`benchmarks.load_test`)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from benchmarks.load_test import free_port, start_server, stop_server, wait_ready

# runs in the sandbox until its 5 s execution timeout: a request that is reliably in flight for seconds
SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits(tmp_path):
    cfg = tmp_path / "serve.toml"
    # warmup: the models load at start-up, so `wait_ready` (ready and models loaded) can see the service ready
    cfg.write_text(f'store_url = "sqlite:///{tmp_path / "plans.sqlite"}"\nwarmup = true\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(cfg, port, tmp_path / "serve.log")
    try:
        wait_ready(url, proc, timeout_s=120)
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
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM), (tmp_path / "serve.log").read_text()
    finally:
        stop_server(proc)
