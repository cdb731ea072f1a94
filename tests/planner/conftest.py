"""Fixtures the planner tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def executor():
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.demo import DEMO_DB_ID, build_demo
    from sqlbox.executor import Executor

    reg = DatabaseRegistry()
    reg.register(DEMO_DB_ID, build_demo())
    with Executor(reg, engine="sqlite") as ex:
        yield ex
