"""Persistence of plans and feedback: two SQLAlchemy tables on `core.store.Base` and a small repository.

What it owns: the `plans` table (id, created_at, db_id, question, status, chosen_sql, policy, pair,
total_cost, the full Plan as JSON) and the `feedback` table (id, plan_id -> plans.id, correct, corrected_sql,
created_at), the `feedback_keys` table (one idempotency key per stored feedback, so a repeated feedback is
acknowledged but stored and counted once), and `PlanStore`, which commits every write before returning (so what the service
acknowledged survives a restart). Works on any SQLAlchemy URL; SQLite (default) and PostgreSQL are tested.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.model import Plan
from core.store import Base, create_tables, make_engine


def load_plan(text: str) -> Plan:
    """A stored plan. Fields that this version does not know (a newer replica wrote the plan: during a rolling
    upgrade both versions share the store) are dropped, so an older reader still serves it; any other invalid
    content raises pydantic's ValidationError as before."""
    try:
        return Plan.model_validate_json(text)
    except ValidationError as e:
        errors = e.errors()
        if not errors or any(err["type"] != "extra_forbidden" for err in errors):
            raise
        data = json.loads(text)
        for err in errors:
            *path, key = err["loc"]
            node = data
            for step in path:
                node = node[step]
            node.pop(key, None)
        return Plan.model_validate(data)


class UnknownPlan(LookupError):
    """No plan has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PlanRow(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    db_id: Mapped[str] = mapped_column(String(255), index=True)
    question: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(64))
    chosen_sql: Mapped[str | None] = mapped_column(Text, nullable=True)
    policy: Mapped[str] = mapped_column(String(64))
    pair: Mapped[str | None] = mapped_column(String(255), nullable=True)
    total_cost: Mapped[float] = mapped_column(Float, default=0.0)
    plan_json: Mapped[str] = mapped_column(Text)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(String(64), ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    corrected_sql: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FeedbackKeyRow(Base):
    """One row per distinct feedback: its idempotency key (the client's `Idempotency-Key`, or a hash of the
    content). The primary key makes a duplicate fail to insert, on every replica at once."""

    __tablename__ = "feedback_keys"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    feedback_id: Mapped[int] = mapped_column(Integer, ForeignKey("feedback.id", ondelete="CASCADE"))


@dataclass(frozen=True)
class Feedback:
    id: int
    plan_id: str
    correct: bool | None
    corrected_sql: str | None
    created_at: datetime
    duplicate: bool = False  # this call repeated an earlier feedback: acknowledged, not stored again

    @classmethod
    def _of(cls, r: FeedbackRow, duplicate: bool = False) -> Feedback:
        return cls(r.id, r.plan_id, r.correct, r.corrected_sql, _aware(r.created_at), duplicate)


def feedback_key(plan_id: str, correct: bool | None, corrected_sql: str | None,
                 idempotency_key: str | None = None) -> str:
    """The dedup key of a feedback: the client's idempotency key (per plan), else its content."""
    if idempotency_key is not None:
        raw, kind = json.dumps([plan_id, idempotency_key]), "idem"
    else:
        raw, kind = json.dumps([plan_id, correct, corrected_sql]), "body"
    return f"{kind}:{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite drops the zone; stored values are UTC


T = TypeVar("T")
STORE_RETRY_S = 10.0  # how long a store call waits out a lost connection (a PostgreSQL restart takes seconds)


def retry_store(fn: Callable[[], T], budget_s: float = STORE_RETRY_S) -> T:
    """`fn()`, called again while it fails with a lost or refused connection (OperationalError: the server
    restarting, a pooled connection it dropped), for up to `budget_s` seconds; then the error propagates (the
    service answers 503 with Retry-After). Only for idempotent calls: a transaction that failed this way was
    rolled back."""
    t0, delay = time.monotonic(), 0.25
    while True:
        try:
            return fn()
        except OperationalError:
            if time.monotonic() - t0 + delay > budget_s:
                raise
            time.sleep(delay)
            delay = min(2.0, delay * 2)


class PlanStore:
    """Repository of plans and feedback. Thread-safe (a session per call); every write is committed on return."""

    def __init__(self, engine: Engine | str | None = None):
        self.engine = engine if isinstance(engine, Engine) else make_engine(engine)
        create_tables(self.engine, [PlanRow.__table__, FeedbackRow.__table__, FeedbackKeyRow.__table__])
        self._lock = threading.Lock()  # SQLite: serialize writers so concurrent plans never see "database is locked"

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def save(self, plan: Plan) -> None:
        retry_store(lambda: self._save(plan))  # a merge by id: safe to repeat

    def _save(self, plan: Plan) -> None:
        row = PlanRow(
            id=plan.id, created_at=plan.created_at, db_id=plan.question.db_id, question=plan.question.text,
            status=plan.status, chosen_sql=plan.chosen_sql, policy=plan.policy,
            pair=plan.route.pair if plan.route else None, total_cost=plan.total_cost,
            plan_json=plan.model_dump_json(),
        )
        with self._lock, Session(self.engine) as s:
            s.merge(row)
            s.commit()

    def get(self, plan_id: str) -> Plan:
        return retry_store(lambda: self._get(plan_id))

    def _get(self, plan_id: str) -> Plan:
        with Session(self.engine) as s:
            row = s.get(PlanRow, plan_id)
            if row is None:
                raise UnknownPlan(f"unknown plan id {plan_id!r}")
            return load_plan(row.plan_json)

    def exists(self, plan_id: str) -> bool:
        with Session(self.engine) as s:
            return s.get(PlanRow, plan_id) is not None

    def count(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(PlanRow)) or 0)

    def recent(self, limit: int = 20) -> list[Plan]:
        with Session(self.engine) as s:
            rows = s.scalars(select(PlanRow).order_by(PlanRow.created_at.desc()).limit(limit)).all()
            return [load_plan(r.plan_json) for r in rows]

    def add_feedback(self, plan_id: str, *, correct: bool | None = None, corrected_sql: str | None = None,
                     idempotency_key: str | None = None) -> Feedback:
        """Store one feedback, once: a repeat (same `idempotency_key` for the plan, or without one the same
        content) returns the stored feedback with `duplicate=True` and stores nothing. Safe across replicas
        (the key's primary key decides, in the same transaction as the feedback row)."""
        if correct is None and corrected_sql is None:
            raise ValueError("feedback needs `correct` and/or `corrected_sql`")
        key = feedback_key(plan_id, correct, corrected_sql, idempotency_key)
        return retry_store(lambda: self._add_feedback(plan_id, key, correct, corrected_sql))  # keyed: once

    def _add_feedback(self, plan_id: str, key: str, correct: bool | None, corrected_sql: str | None) -> Feedback:
        with self._lock:
            with Session(self.engine) as s:
                if s.get(PlanRow, plan_id) is None:
                    raise UnknownPlan(f"unknown plan id {plan_id!r}")
                old = self._by_key(s, key)
                if old is not None:
                    return old
                row = FeedbackRow(plan_id=plan_id, correct=correct, corrected_sql=corrected_sql,
                                  created_at=datetime.now(UTC))
                s.add(row)
                try:
                    s.flush()
                    s.add(FeedbackKeyRow(key=key, feedback_id=row.id))
                    s.commit()
                except IntegrityError:  # another replica stored the same feedback first
                    s.rollback()
                else:
                    s.refresh(row)
                    return Feedback._of(row)
            with Session(self.engine) as s:
                old = self._by_key(s, key)
                if old is None:  # pragma: no cover - the winner's row is committed before our insert failed
                    raise RuntimeError("feedback key conflict without a stored feedback")
                return old

    @staticmethod
    def _by_key(s: Session, key: str) -> Feedback | None:
        k = s.get(FeedbackKeyRow, key)
        if k is None:
            return None
        row = s.get(FeedbackRow, k.feedback_id)
        return Feedback._of(row, duplicate=True) if row is not None else None

    def feedback_for(self, plan_id: str) -> list[Feedback]:
        with Session(self.engine) as s:
            rows = s.scalars(select(FeedbackRow).where(FeedbackRow.plan_id == plan_id).order_by(FeedbackRow.id)).all()
            return [Feedback._of(r) for r in rows]

    def ping(self) -> bool:
        try:
            with Session(self.engine) as s:
                s.scalar(select(1))
            return True
        except SQLAlchemyError:  # the store's database does not answer (connection, timeout, driver errors)
            return False

    def close(self) -> None:
        self.engine.dispose()
