"""Candidate-pool files: N candidate SQL per question, for replaying selection without a generator.

Owns the pool record (`PoolEntry`: dataset index, db id, candidates of {sql, source}) and its JSONL
format, one question per line::

    {"index": 12, "db_id": "concert_singer", "candidates": [{"sql": "...", "source": "CodeS-15b_SFT"}, ...]}

A candidate may carry optional `logprob` (its generator's sequence log-probability, the sum of the token
logprobs) and `logprob_tokens` (the token count): the `ranker`'s likelihood features. Pools without them
replay exactly as before (the features are missing, and flagged so).

`read_pool` also reads the sample files of `candidates/spider_dev_samples/`
(`{"idx", "db_id", "candidates": [sql, ...]}`; the source of the k-th sample becomes `<file stem>#k`).
`build_pool` makes a pool from any subset of the published systems in `candidates/spider_dev/` (the
candidates of a question are the systems' predictions, in the order the systems are given).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from eval.systems import load_systems, systems_dir


@dataclass
class PoolCandidate:
    sql: str
    source: str
    logprob: float | None = None  # optional: the generator's sequence log-probability (sum of token logprobs)
    logprob_tokens: int | None = None  # optional: its token count (the mean token logprob = logprob / tokens)


@dataclass
class PoolEntry:
    index: int  # 0-based position in the dataset file
    db_id: str
    candidates: list[PoolCandidate] = field(default_factory=list)
    question: str | None = None

    def as_dict(self) -> dict:
        d = {"index": self.index, "db_id": self.db_id,
             "candidates": [{k: v for k, v in c.__dict__.items() if v is not None or k in ("sql", "source")}
                            for c in self.candidates]}
        if self.question:
            d["question"] = self.question
        return d


class PoolFormatError(ValueError):
    """A pool line is not in either accepted format."""


def _entry(obj: dict, stem: str, lineno: int) -> PoolEntry:
    idx = obj.get("index", obj.get("idx", obj.get("question_id")))
    if idx is None or "db_id" not in obj or "candidates" not in obj:
        raise PoolFormatError(f"line {lineno}: needs index (or idx), db_id and candidates")
    cands = []
    for k, c in enumerate(obj["candidates"]):
        if isinstance(c, str):
            cands.append(PoolCandidate(c, f"{stem}#{k}"))
        elif isinstance(c, dict) and "sql" in c:
            lp, nt = c.get("logprob"), c.get("logprob_tokens")
            cands.append(PoolCandidate(c["sql"] or "", str(c.get("source") or f"{stem}#{k}"),
                                       None if lp is None else float(lp), None if nt is None else int(nt)))
        else:
            raise PoolFormatError(f"line {lineno}: candidate {k} is neither a SQL string nor {{sql, source}}")
    return PoolEntry(int(idx), obj["db_id"], cands, obj.get("question"))


def read_pool(path: str | os.PathLike) -> list[PoolEntry]:
    """Entries of a pool JSONL file (either format), in file order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pool file not found: {p}")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PoolFormatError(f"{p}:{n}: not JSON: {e}") from None
        out.append(_entry(obj, p.stem, n))
    return out


def write_pool(entries: list[PoolEntry], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as f:
        for e in entries:
            f.write(json.dumps(e.as_dict()) + "\n")
    return p


def build_pool(
    systems: list[str],
    *,
    candidates: str | os.PathLike | None = None,
    indices: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[PoolEntry]:
    """One entry per Spider dev question (or per `indices`), candidates = the systems' predictions."""
    if not systems:
        raise ValueError("build_pool needs at least one system")
    preds = load_systems(systems_dir(candidates), systems)
    import json as _json

    from core.settings import spider_dir

    sp = Path(data_dir) if data_dir else spider_dir()
    dev = _json.loads((sp / "dev.json").read_text())
    n = len(dev)
    for name, lines in preds.items():
        if len(lines) != n:
            raise ValueError(f"system {name!r} has {len(lines)} predictions, dev.json {n}")
    wanted = range(n) if indices is None else indices
    return [
        PoolEntry(i, dev[i]["db_id"], [PoolCandidate(preds[s][i], s) for s in systems], dev[i]["question"])
        for i in wanted
    ]
