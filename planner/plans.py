"""Persistence of plans and feedback: two SQLAlchemy tables on `core.store.Base` and a small repository.

What it owns: the `plans` table (id, created_at, db_id, question, status, chosen_sql, policy, pair,
total_cost, the full Plan as JSON) and the `feedback` table (id, plan_id -> plans.id, correct, corrected_sql,
created_at), and `PlanStore`, which commits every write before returning (so what the service
acknowledged survives a restart). Works on any SQLAlchemy URL; SQLite (default) and PostgreSQL are tested.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.model import Plan
from core.store import Base, make_engine


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


@dataclass(frozen=True)
class Feedback:
    id: int
    plan_id: str
    correct: bool | None
    corrected_sql: str | None
    created_at: datetime

    @classmethod
    def _of(cls, r: FeedbackRow) -> Feedback:
        return cls(r.id, r.plan_id, r.correct, r.corrected_sql, _aware(r.created_at))


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite drops the zone; stored values are UTC


class PlanStore:
    """Repository of plans and feedback. Thread-safe (a session per call); every write is committed on return."""

    def __init__(self, engine: Engine | str | None = None):
        self.engine = engine if isinstance(engine, Engine) else make_engine(engine)
        Base.metadata.create_all(self.engine, tables=[PlanRow.__table__, FeedbackRow.__table__])
        self._lock = threading.Lock()  # SQLite: serialize writers so concurrent plans never see "database is locked"

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def save(self, plan: Plan) -> None:
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
        with Session(self.engine) as s:
            row = s.get(PlanRow, plan_id)
            if row is None:
                raise UnknownPlan(f"unknown plan id {plan_id!r}")
            return Plan.model_validate_json(row.plan_json)

    def exists(self, plan_id: str) -> bool:
        with Session(self.engine) as s:
            return s.get(PlanRow, plan_id) is not None

    def count(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(PlanRow)) or 0)

    def recent(self, limit: int = 20) -> list[Plan]:
        with Session(self.engine) as s:
            rows = s.scalars(select(PlanRow).order_by(PlanRow.created_at.desc()).limit(limit)).all()
            return [Plan.model_validate_json(r.plan_json) for r in rows]

    def add_feedback(self, plan_id: str, *, correct: bool | None = None, corrected_sql: str | None = None) -> Feedback:
        if correct is None and corrected_sql is None:
            raise ValueError("feedback needs `correct` and/or `corrected_sql`")
        with self._lock, Session(self.engine) as s:
            if s.get(PlanRow, plan_id) is None:
                raise UnknownPlan(f"unknown plan id {plan_id!r}")
            row = FeedbackRow(plan_id=plan_id, correct=correct, corrected_sql=corrected_sql,
                              created_at=datetime.now(UTC))
            s.add(row)
            s.commit()
            s.refresh(row)
            return Feedback._of(row)

    def feedback_for(self, plan_id: str) -> list[Feedback]:
        with Session(self.engine) as s:
            rows = s.scalars(select(FeedbackRow).where(FeedbackRow.plan_id == plan_id).order_by(FeedbackRow.id)).all()
            return [Feedback._of(r) for r in rows]

    def ping(self) -> bool:
        try:
            with Session(self.engine) as s:
                s.scalar(select(1))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.engine.dispose()
