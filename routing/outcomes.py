"""Logged routing outcomes: which pair (or system) answered which question, was it right, what it cost.

Owns:
- the `routing_outcomes` table (on `core.store.Base`) and `OutcomeStore` (add / load / label by plan id);
- `Outcome`, the in-memory/JSONL form of one row, and JSONL read/write;
- the outcome of a Plan (the service's `on_plan` hook and feedback);
- `OutcomeMatrix`: outcomes pivoted to questions x pairs (correctness, cost, tokens) for training.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Boolean, DateTime, Float, Integer, String, Text, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.model import Plan
from core.store import Base, create_tables, make_engine


class OutcomeError(ValueError):
    """Bad outcome input (unreadable file, unknown source, misaligned pool)."""


class OutcomeRow(Base):
    __tablename__ = "routing_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    question: Mapped[str] = mapped_column(Text)
    db_id: Mapped[str] = mapped_column(String(128), index=True)
    pair: Mapped[str] = mapped_column(String(128), index=True)  # configured pair, or a published system
    generator: Mapped[str | None] = mapped_column(String(128), nullable=True)
    discriminator: Mapped[str | None] = mapped_column(String(128), nullable=True)
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None until labelled
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    source: Mapped[str] = mapped_column(String(256), index=True)
    plan_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


_FIELDS = ("question_id", "question", "db_id", "pair", "generator", "discriminator", "correct", "prompt_tokens",
           "completion_tokens", "cost", "latency_ms", "source", "plan_id", "created_at")


class Outcome(BaseModel):
    """One logged outcome: `pair` answered `question` (correct or not) at `cost`."""

    model_config = ConfigDict(extra="forbid")

    question: str
    db_id: str
    pair: str
    correct: bool | None = None
    question_id: str | None = None
    generator: str | None = None
    discriminator: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_ms: float | None = None
    source: str = "unknown"
    plan_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> str:
        """Identity of the question across pairs: the caller's id, else a hash of db_id + text."""
        if self.question_id:
            return f"{self.db_id}#{self.question_id}"
        return f"{self.db_id}#" + hashlib.sha1(self.question.encode()).hexdigest()[:16]


class OutcomeStore:
    """The outcomes table through the project's SQLAlchemy store."""

    def __init__(self, engine: Engine | str | None = None):
        self.engine = engine if isinstance(engine, Engine) else make_engine(engine)
        create_tables(self.engine, tables=[OutcomeRow.__table__])

    def add(self, outcomes: Iterable[Outcome]) -> int:
        rows = [OutcomeRow(**o.model_dump()) for o in outcomes]
        with Session(self.engine) as s, s.begin():
            s.add_all(rows)
        return len(rows)

    def load(self, *, source: str | None = None, pair: str | None = None, labelled_only: bool = True) -> list[Outcome]:
        q = select(OutcomeRow).order_by(OutcomeRow.id)
        if source is not None:
            q = q.where(OutcomeRow.source == source)
        if pair is not None:
            q = q.where(OutcomeRow.pair == pair)
        if labelled_only:
            q = q.where(OutcomeRow.correct.is_not(None))
        with Session(self.engine) as s:
            return [Outcome(**{f: getattr(r, f) for f in _FIELDS}) for r in s.scalars(q)]

    def label(self, plan_id: str, correct: bool) -> int:
        """Set the correctness of the outcomes logged for a plan (feedback). Returns rows updated."""
        with Session(self.engine) as s, s.begin():
            res = s.execute(update(OutcomeRow).where(OutcomeRow.plan_id == plan_id).values(correct=bool(correct)))
            return int(res.rowcount or 0)

    def count(self, source: str | None = None) -> int:
        return len(self.load(source=source, labelled_only=False))

    def sources(self) -> list[str]:
        with Session(self.engine) as s:
            return sorted(set(s.scalars(select(OutcomeRow.source))))


# --------------------------------------------------------------------------- JSONL


def write_jsonl(outcomes: Iterable[Outcome], path: str | os.PathLike) -> int:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w") as f:
        for o in outcomes:
            f.write(o.model_dump_json() + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[Outcome]:
    p = Path(path)
    if not p.is_file():
        raise OutcomeError(f"outcomes file {p} does not exist")
    out = []
    for ln, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Outcome.model_validate_json(line))
        except ValueError as e:
            raise OutcomeError(f"{p}:{ln}: not an outcome record: {e}") from None
    return out


# --------------------------------------------------------------------------- from a plan


def outcome_from_plan(plan: Plan, correct: bool | None = None, source: str = "service") -> Outcome:
    """The outcome a served (or evaluated) plan records: its route, tokens, cost, latency."""
    route = plan.route
    pair = route.pair if route else "unknown"
    if route and route.steps:
        pair = route.steps[-1] if route.escalated else route.steps[0]
    pt = sum(u.prompt_tokens for u in plan.usage)
    ct = sum(u.completion_tokens for u in plan.usage)
    latency = plan.timings_ms.get("total", sum(plan.timings_ms.values()) if plan.timings_ms else None)
    return Outcome(question=plan.question.text, db_id=plan.question.db_id, question_id=plan.question.id, pair=pair,
                   generator=route.generator if route else None, discriminator=route.discriminator if route else None,
                   correct=correct, prompt_tokens=pt, completion_tokens=ct, cost=plan.total_cost, latency_ms=latency,
                   source=source, plan_id=plan.id)


class OutcomeLogger:
    """Planner hooks: `on_plan` logs each plan's outcome (unlabelled), `feedback` (an `on_feedback` hook)
    labels it when POST /feedback says whether it was correct."""

    def __init__(self, store: OutcomeStore, source: str = "service"):
        self.store = store
        self.source = source

    def __call__(self, plan: Plan, *_: Any, **__: Any) -> None:
        self.store.add([outcome_from_plan(plan, source=self.source)])

    def feedback(self, plan: Plan, correct: bool | None, *_: Any, **__: Any) -> None:
        """An `on_feedback` callback: label the plan's logged outcome."""
        if correct is not None:
            self.store.label(plan.id, bool(correct))


# --------------------------------------------------------------------------- matrix form


@dataclass
class OutcomeMatrix:
    """Outcomes pivoted to questions (rows) x pairs (columns). Missing cells are NaN."""

    keys: list[str]
    questions: list[str]
    db_ids: list[str]
    pairs: list[str]
    correct: np.ndarray  # float, 1/0/NaN
    cost: np.ndarray  # float, NaN where missing
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[Outcome], pairs: Sequence[str] | None = None) -> OutcomeMatrix:
        labelled = [o for o in outcomes if o.correct is not None]
        if not labelled:
            raise OutcomeError("no labelled outcomes")
        pairs = list(pairs) if pairs else sorted({o.pair for o in labelled})
        col = {p: j for j, p in enumerate(pairs)}
        row: dict[str, int] = {}
        qs, dbs = [], []
        for o in labelled:
            if o.key not in row:
                row[o.key] = len(row)
                qs.append(o.question)
                dbs.append(o.db_id)
        n, m = len(row), len(pairs)
        y, c, pt, ct = (np.full((n, m), np.nan) for _ in range(4))
        for o in labelled:
            j = col.get(o.pair)
            if j is None:
                continue
            i = row[o.key]
            y[i, j], c[i, j], pt[i, j], ct[i, j] = float(o.correct), o.cost, o.prompt_tokens, o.completion_tokens
        return cls(list(row), qs, dbs, pairs, y, c, pt, ct)

    def subset(self, idx: Sequence[int] | np.ndarray) -> OutcomeMatrix:
        idx = np.asarray(idx, dtype=int)
        return OutcomeMatrix([self.keys[i] for i in idx], [self.questions[i] for i in idx],
                             [self.db_ids[i] for i in idx], list(self.pairs), self.correct[idx], self.cost[idx],
                             self.prompt_tokens[idx], self.completion_tokens[idx])

    def data_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.keys, self.pairs]).encode())
        for a in (self.correct, self.cost):
            h.update(np.nan_to_num(a, nan=-1.0).astype(np.float64).tobytes())
        return h.hexdigest()
