"""The normalize stage: turn raw generated SQL strings into guarded, canonical, de-duplicated Candidates.

What it owns: `CandidatePool`, the growing list of a plan's candidates (a cascade keeps adding to the same
pool). Each added SQL is
- refused with a reason (`Candidate.rejected`) when empty or when `sqlbox.guard.guard` rejects it
  (not a single read-only query); rejected candidates are kept, so the plan shows them, but never executed;
- SQL that sqlglot cannot parse (`ParseFailure`) is not rejected: it goes to the executor, which reports
  the parse error like any other candidate error;
- otherwise canonicalized with `sqlbox.guard.normalize` (sqlglot) into `normalized` + `dedup_key`;
  a SQL that sqlglot cannot parse keeps `normalized=None` and a whitespace/case-collapsed key, and the
  executor reports the parse error;
- merged into an earlier candidate with the same dedup key (that candidate's `duplicates` grows: the
  `vote` and `hybrid` policies count it), else appended as a new candidate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from core.model import Candidate

EMPTY_REASON = "no SQL could be extracted from the model output"


def _collapse(sql: str) -> str:
    return re.sub(r"\s+", " ", sql.strip().rstrip(";").strip()).lower()


@dataclass
class CandidatePool:
    """Candidates of one plan in order of first appearance, de-duplicated by `dedup_key`."""

    dialect: str = "sqlite"
    candidates: list[Candidate] = field(default_factory=list)
    # (sql, dialect) -> sqlbox.guard.analyze's dict; the planner passes its executor's `analyze`, which runs
    # the parse in a sandbox worker (bounded time and memory); None = parse in this process
    analyzer: Callable[[str, str], dict] | None = None
    _by_key: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.candidates)

    def add(self, sql: str, *, source: str, sample_index: int | None = None, logprob: float | None = None,
            logprob_tokens: int | None = None, dropped: str | None = None) -> tuple[int, bool]:
        """Add one raw SQL. Returns (index of its candidate, whether the candidate is new). `logprob`: the
        generator's sequence log-probability of the sample (a merged duplicate keeps the first sample's).
        `dropped`: why the generator dropped the sample (`GenerationResult.drops`); it is rejected saying so."""
        from generators.base import drop_reason
        from sqlbox.guard import ParseFailure, Rejected, guard, normalize

        sql = sql or ""
        cand = Candidate(sql=sql, source=source, dialect=self.dialect, sample_index=sample_index, logprob=logprob,
                         logprob_tokens=logprob_tokens)
        if dropped is not None:
            cand.sql = ""
            cand.rejected = drop_reason(dropped)
            key = "dropped:" + dropped
        elif not sql.strip():
            cand.rejected = EMPTY_REASON
            key = "empty:"
        elif self.analyzer is not None:
            a = self.analyzer(sql, self.dialect)
            cand.rejected = a.get("rejected")
            key = None
            if cand.rejected is None and a.get("dedup_key"):
                cand.normalized, cand.dedup_key = a.get("normalized"), a["dedup_key"]
                key = "q:" + cand.dedup_key
            if key is None:
                key = ("rejected:" if cand.rejected else "raw:") + _collapse(sql)
                cand.dedup_key = cand.dedup_key or key
        else:
            try:
                guard(sql, self.dialect)
            except ParseFailure:
                pass  # not a safety verdict: the executor reports the parse error
            except Rejected as e:
                cand.rejected = str(e) or "rejected by the SQL guard"
            except Exception:  # noqa: BLE001 - sqlglot could not parse it: the executor reports the error
                pass
            key = None
            if cand.rejected is None:
                try:
                    cand.normalized, cand.dedup_key = normalize(sql, self.dialect)
                    key = "q:" + cand.dedup_key
                except Exception:  # noqa: BLE001 - unparseable: keep the raw text, dedup on collapsed text
                    cand.normalized = None
            if key is None:
                key = ("rejected:" if cand.rejected else "raw:") + _collapse(sql)
                cand.dedup_key = cand.dedup_key or key
        if key in self._by_key:
            i = self._by_key[key]
            self.candidates[i].duplicates += 1
            return i, False
        self._by_key[key] = len(self.candidates)
        self.candidates.append(cand)
        return len(self.candidates) - 1, True

    def add_many(self, sqls: list[str], *, source: str, logprobs: list[float | None] | None = None,
                 logprob_tokens: list[int | None] | None = None, drops: list[str | None] | None = None) -> list[int]:
        """Add a generator's samples (in order), with their sequence logprobs when the backend reported them and
        why it dropped any (`GenerationResult.drops`). Returns the indices of the candidates that are new."""
        new = []
        lps, toks, dr = list(logprobs or []), list(logprob_tokens or []), list(drops or [])
        for j, sql in enumerate(sqls):
            i, is_new = self.add(sql, source=source, sample_index=j, logprob=lps[j] if j < len(lps) else None,
                                 logprob_tokens=toks[j] if j < len(toks) else None,
                                 dropped=dr[j] if j < len(dr) else None)
            if is_new:
                new.append(i)
        return new
