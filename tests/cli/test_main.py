"""The process entry point (`cli.main.main()` without arguments): exit status, flushed output, atexit handlers,
non-daemon threads and uncaught exceptions end the process as a normal interpreter exit would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_command_s_status_and_whole_output():
    p = _run(["-m", "cli", "check", "--db", "demo", "SELECT name FROM singer", "--json"])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # the whole document arrived: nothing left in a buffer at exit
    assert out["ok"] and len(out["rows"]) >= 1
    p = _run(["-m", "cli", "check", "--db", "demo", "SELECT nonsense"])
    assert p.returncode == 1 and p.stdout.startswith("failed"), (p.stdout, p.stderr)
    p = _run(["-m", "cli", "plan"])
    assert p.returncode == 2 and "usage:" in p.stderr  # argparse's usage error
    p = _run(["-m", "cli", "--help"])
    assert p.returncode == 0 and "usage:" in p.stdout


def test_threads_atexit_and_uncaught_exceptions_end_as_a_normal_exit_would():
    script = (
        "import atexit, threading, time\n"
        "import importlib\n"
        "m = importlib.import_module('cli.main')  # the module (the package exports its function as cli.main)\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def run(argv):\n"
        "    threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
        "    ThreadPoolExecutor(2).submit(print, 'pooled')  # left open: its idle workers must not hang the exit\n"
        "    return 7\n"
        "m._run = run\n"
        "m.main()\n"
        "print('not reached')\n")
    p = _run(["-c", script])
    assert p.returncode == 7 and p.stdout.split() == ["pooled", "thread", "done", "atexit", "ran"], (p.stdout, p.stderr)
    p = _run(["-c", "import importlib\nm = importlib.import_module('cli.main')\nm._run = lambda argv: 1 / 0\nm.main()\n"])
    assert p.returncode == 1 and "Traceback" in p.stderr and "ZeroDivisionError" in p.stderr, p.stderr
