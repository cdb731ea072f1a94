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
    Base.metadata.create_all(engine)
    return engine
