"""Durable storage through SQLAlchemy: one declarative Base shared by every table of the project
(plans, feedback, logged outcomes, router state). Default: a SQLite file under the data dir; any
SQLAlchemy URL works (PostgreSQL is tested)."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

from core.settings import data_dir


class Base(DeclarativeBase):
    pass


def default_url() -> str:
    return f"sqlite:///{data_dir() / 'sqlarbiter.db'}"


def make_engine(url: str | None = None) -> Engine:
    """Create an engine and every table registered on Base (import the modules that define tables first)."""
    url = url or default_url()
    kw = {"connect_args": {"check_same_thread": False}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    engine = create_engine(url, **kw)
    create_tables(engine)
    return engine


_SCHEMA_LOCK = 0x5351_4C41  # the advisory lock that serializes schema creation across replicas


def create_tables(engine: Engine, tables: list | None = None) -> None:
    """`Base.metadata.create_all` for `tables` (default: all registered), safe when several replicas start at
    once on one PostgreSQL: they take a transaction-level advisory lock first, so one creates and the others
    then find the tables (PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a concurrent one)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            Base.metadata.create_all(conn, tables=tables)
        return
    Base.metadata.create_all(engine, tables=tables)
