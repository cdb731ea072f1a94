"""The pooled SQLAlchemy engines of server targets: one per target (and database) and process."""

from __future__ import annotations

import threading
from typing import Any

from sqlbox.servers.targets import ServerTarget

_ENGINES: dict[tuple[ServerTarget, str | None], Any] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(target: ServerTarget, *, database: str | None = None, pool_size: int = 4):
    """The pooled SQLAlchemy engine of a target (one per target and process)."""
    from sqlalchemy import create_engine

    key = (target, database)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            # no pre-ping (a round trip per query): a connection that fails is invalidated and replaced
            kw: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": False,
                                  "pool_recycle": 1800, "hide_parameters": True}
            if target.kind == "postgresql":
                kw["connect_args"] = {"connect_timeout": 10, "application_name": "sqlarbiter",
                                      "options": "-c default_transaction_read_only=on"}
            else:
                kw["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4", "read_timeout": 120,
                                      "local_infile": False}
            eng = create_engine(target.sqlalchemy_url(database), **kw)
            _ENGINES[key] = eng
        return eng


def dispose_all() -> None:
    """Close every pooled server connection (tests; shutdown)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for e in engines:
        try:
            e.dispose()
        except Exception:  # noqa: BLE001 - shutdown is best effort, whatever the driver raises
            pass
