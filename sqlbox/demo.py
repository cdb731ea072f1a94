"""The demo database: a small concerts database (singer, stadium, concert, singer_in_concert) built
from `sqlbox/demo.sql` into `<data_dir>/demo.sqlite` on first use.

The build is atomic (a temporary file in the same folder, then `os.replace`), so concurrent first uses
never see a half-written file. The file records a hash of the script in `PRAGMA user_version`; when the
script changes, the next use rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

from core.settings import data_dir

DEMO_DB_ID = "demo"
DEMO_QUESTION = "How many singers are older than 30?"

# Worked examples on the demo schema, shown to the generator as few-shot turns (planner.examples).
# None of them is the demo question itself.
DEMO_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("How many stadiums are there?", "SELECT count(*) FROM stadium"),
    ("List the names of singers from France.", "SELECT name FROM singer WHERE country = 'France'"),
    ("What is the average ticket price of concerts held in 2024?",
     "SELECT avg(ticket_price) FROM concert WHERE year = 2024"),
)


def demo_script() -> str:
    """The SQL script that builds the demo database."""
    return resources.files("sqlbox").joinpath("demo.sql").read_text(encoding="utf-8")


def _script_version(script: str) -> int:
    # user_version is a signed 32-bit integer: keep 31 bits of the script hash.
    return int.from_bytes(hashlib.sha256(script.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _file_version(path: Path) -> int | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def demo_path() -> Path:
    """Where the demo database lives (it may not be built yet)."""
    return data_dir() / "demo.sqlite"


def build_demo(path: Path | None = None, *, force: bool = False) -> Path:
    """Build the demo database at `path` (default `demo_path()`) unless an up-to-date copy exists.
    Returns the path."""
    path = Path(path) if path is not None else demo_path()
    script = demo_script()
    version = _script_version(script)
    if not force and path.is_file() and _file_version(path) == version:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".demo-", suffix=".sqlite", dir=path.parent)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(script)
            con.execute(f"PRAGMA user_version = {version}")
            con.commit()
        finally:
            con.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
