"""Replay: evaluate selection policies and a discriminator on a fixed candidate pool, with no generator.

For each pool question (`eval.pool.PoolEntry`), every candidate is
1. labelled correct/incorrect by EX against the gold (`eval.exec_match`, the dataset's official rule);
2. executed by the project executor (`sqlbox.executor.Executor`, engine "sqlite" by default for
   fidelity with EX), giving `ExecutionResult.ok` and the result `fingerprint` that `vote`/`hybrid` cluster on;
3. optionally scored by a discriminator (any `discriminators.base.Discriminator`); scores are cached in a
   JSONL file keyed by (discriminator + budget + mode, db id, question, sql), so reruns are free and a run
   can be extended question by question (`--limit`).
Steps 2-4 run the pipeline's own stage units (`planner.stages`: execute, discriminate, select). Then each
registered policy (`planner.select`) picks one candidate: `first` (the first candidate: the "first sample"
/ first system baseline), `vote`, `hybrid`, `rerank`, `check-rerank`; a policy that needs scores is
reported only on scored questions unless it declares what it reduces to without them (`hybrid` without a
discriminator sees every score as 0.5 and reduces to `vote`; `planner.select.reported_policies`). The
summary reports EX per policy (overall and by difficulty), the oracle (any candidate correct), EX of each
candidate source (each system, or each sample position) and the best of them, and, with scores, the
discriminator's intrinsic metrics (`eval.metrics.discriminator_metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from core.model import Candidate, Score, ScoredCandidate
from eval.datasets import Example
from eval.exec_match import MatchTask, match_tasks
from eval.metrics import discriminator_metrics, ex_by_group, ex_rate
from eval.pool import PoolEntry
from planner import stages
from planner.select import check_policy, policy_names, reported_policies

log = logging.getLogger(__name__)

# Derived from the policy registry (`planner.select.POLICIES`), in its registration order.
ALL_POLICIES = tuple(policy_names())
# reported on scored questions only (`hybrid` needs scores too, but is reported unscored as what it reduces to)
SCORE_POLICIES = tuple(p for p in ALL_POLICIES if p not in reported_policies(False))


# --------------------------------------------------------------------------------------------------
# Discriminator + scores cache
# --------------------------------------------------------------------------------------------------


def make_discriminator(name: str, *, budget: int | None = None, config=None, options: dict | None = None):
    """A configured discriminator by name (from the project config), with an optional reasoning budget and
    option overrides (e.g. {"force": False} or {"profile": "paper"})."""
    from planner.config import load_config

    cfg = config if config is not None and not isinstance(config, (str, os.PathLike)) else load_config(config)
    try:
        from discriminators.registry_all import DISCRIMINATORS as discs
    except ModuleNotFoundError as e:
        raise RuntimeError(f"no discriminator backends are installed ({e})") from None
    if name not in cfg.discriminators:
        raise ValueError(f"unknown discriminator {name!r}; configured: {', '.join(cfg.discriminators) or '(none)'}")
    spec = cfg.discriminators[name]
    opts = {**dict(spec.options), **(options or {})}
    if budget is not None:
        opts["budget"] = int(budget)
    elif "budget" not in opts and "max_new_tokens" not in opts and opts.get("profile") != "paper":
        from planner.config import reasoning_budget_for

        opts["budget"] = reasoning_budget_for(cfg, spec)  # by device unless defaults.reasoning_budget is set
    spec = spec.model_copy(update={"options": opts})
    return discs.create(spec.backend, spec)


_FINGERPRINTS: dict[str, str] = {}


def checkpoint_fingerprint(path: str | os.PathLike | None) -> str | None:
    """A fingerprint of a checkpoint's files (relative name, size, mtime of each), so a changed or converted
    checkpoint under the same name gets new cache keys."""
    if not path:
        return None
    p = Path(path)
    key = str(p.resolve()) if p.exists() else str(p)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(p) if p.is_dir() else f.name}\x1f{st.st_size}\x1f{st.st_mtime_ns}\n".encode())
        _FINGERPRINTS[key] = h.hexdigest()[:16] if files else f"missing:{key}"
    return _FINGERPRINTS[key]


def discriminator_key(disc) -> str:
    """What identifies a discriminator's scores: its name, mode, every setting that changes a score (budget,
    profile, prompt id and text hash, framing, fallback, forcing, early stop, scoring, check wrapping and its
    worst score) and the checkpoint's identity (a fingerprint of its files; model and server URL over HTTP)."""
    parts = {"name": getattr(disc, "name", type(disc).__name__), "mode": getattr(disc, "mode", None)}
    inner = disc
    if hasattr(disc, "inner"):  # the check wrapper
        parts["check_worst"] = getattr(disc, "worst", None)
        inner = disc.inner
    settings = getattr(inner, "settings", None)
    parts.update(settings() if callable(settings) else {"budget": getattr(inner, "budget", None)})
    loaded = getattr(inner, "loaded", None)
    if loaded is not None:
        parts["checkpoint"] = getattr(loaded, "name", None)
        parts["files"] = checkpoint_fingerprint(getattr(loaded, "path", None))
    elif hasattr(inner, "client"):
        parts["checkpoint"] = getattr(inner, "model", None)
        parts["url"] = getattr(inner.client, "base", None)
    return "|".join(f"{k}={parts[k]}" for k in sorted(parts))


VERDICT_KINDS = ("natural", "forced", "missing")


class ScoresCache:
    """Append-only JSONL of discriminator scores keyed by (discriminator, db id, question, sql)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._d: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    obj = json.loads(line)
                    self._d[obj["key"]] = obj["score"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a torn last line after a crash

    @staticmethod
    def key(disc: str, db_id: str, question: str, sql: str) -> str:
        return hashlib.sha256("\x1f".join((disc, db_id, question, sql)).encode()).hexdigest()

    def get(self, key: str) -> Score | None:
        d = self._d.get(key)
        return Score.model_validate(d) if d is not None else None

    def put(self, key: str, score: Score) -> None:
        d = score.model_dump(mode="json")
        with self._lock:
            self._d[key] = d
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps({"key": key, "score": d}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

    def __len__(self) -> int:
        return len(self._d)


# --------------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------------


def _registry_for(examples: Sequence[Example]):
    from sqlbox.databases import DatabaseRegistry

    reg = DatabaseRegistry()
    for e in examples:
        if e.db_id not in reg:
            reg.register(e.db_id, e.db_path)
    return reg


def _schema_text(registry, db_id: str, cache: dict) -> str:
    if db_id not in cache:
        from sqlbox.schema import schema_to_prompt

        try:
            from planner.config import ConfigError, load_config

            d = load_config().defaults
            kw = {"sample_rows": d.schema_sample_rows, "max_tokens": d.schema_max_tokens}
        except (ConfigError, OSError):  # the config is optional here
            kw = {}
        cache[db_id] = schema_to_prompt(registry.schema(db_id), **kw)
    return cache[db_id]


def replay(
    entries: Sequence[PoolEntry],
    examples: Sequence[Example],
    *,
    dataset: str = "spider",
    discriminator=None,
    scores_cache: ScoresCache | None = None,
    policies: Sequence[str] | None = None,
    limit: int | None = None,
    workers: int = 2,
    engine: str = "sqlite",
    exec_timeout: float = 30.0,
    score_limit: int | None = None,
    score_batch: int = 8,
    progress: bool = True,
    keep: list | None = None,
    preview_rows: int = 0,
) -> dict:
    """Replay a pool. `examples` must cover the pool's indices (dataset file positions). `limit` keeps the
    first N pool questions; `score_limit` scores only the first N of those (the rest get no scores, and
    score-based policies are reported over the scored questions only). Candidates of up to `score_batch`
    questions are scored in one `score_many` call when the discriminator has one (cross-question batching);
    scores are cached after each such group. `policies`: the policies to report (default: every registered
    one); an unknown name is a `planner.select.PolicyError`. `keep`, when a list, receives per question
    (question text, ScoredCandidates, EX labels) for `eval.select_fit`; `preview_rows` keeps that many result rows
    (the ranker's result-shape features). Returns {"questions", "summary"}."""
    from sqlbox.executor import Executor

    policies = [check_policy(p) for p in (reported_policies(True) if policies is None else policies)]  # not `auto`

    by_index = {e.index: e for e in examples}
    missing = [p.index for p in entries if p.index not in by_index]
    if missing:
        log.warning("%d pool questions are not in the dataset selection and are skipped (e.g. %s)", len(missing), missing[:5])
    entries = [p for p in entries if p.index in by_index]
    if limit is not None:
        entries = entries[:limit]
    for p in entries:
        if p.db_id != by_index[p.index].db_id:
            raise ValueError(f"pool question {p.index}: db_id {p.db_id!r} but the dataset says {by_index[p.index].db_id!r}")

    # 1. EX labels of every candidate (gold runs once per question).
    tasks = [MatchTask(str(by_index[p.index].db_path), by_index[p.index].gold_sql, [c.sql for c in p.candidates]) for p in entries]
    labels = match_tasks(tasks, dataset, workers=workers, progress=progress, desc="label candidates")

    # 2. Execution results through the project executor (the pipeline's execute stage).
    registry = _registry_for([by_index[p.index] for p in entries])
    cands: list[list[ScoredCandidate]] = [
        [ScoredCandidate(candidate=_candidate(c, k)) for k, c in enumerate(p.candidates)]
        for p in entries
    ]
    with Executor(registry, engine=engine, timeout_s=exec_timeout, preview_rows=preview_rows) as ex:
        for qi, p in enumerate(tqdm(entries, desc="execute candidates", disable=not progress, unit="q", dynamic_ncols=True)):
            stages.execute(cands[qi], ex, p.db_id, engine=engine, memo={})

    # 3. Scores (cached).
    scores: list[list[Score | None]] = [[None] * len(p.candidates) for p in entries]
    disc_key = discriminator_key(discriminator) if discriminator is not None else None
    if discriminator is not None:
        cache = scores_cache if scores_cache is not None else ScoresCache(None)
        schemas: dict[str, str] = {}
        n_score = len(entries) if score_limit is None else min(score_limit, len(entries))
        batched = hasattr(discriminator, "score_many") and score_batch > 1
        pending: list[stages.ScoreJob] = []

        def score_many(reqs):
            return discriminator.score_many(reqs) if batched else [discriminator.score(r) for r in reqs]

        def flush() -> None:
            stages.discriminate(pending, score_many)  # one call for the group; each job's on_score caches
            pending.clear()

        all_keys: list[dict[str, str]] = []
        bar = tqdm(range(n_score), desc=f"score ({disc_key})", disable=not progress, unit="q", dynamic_ncols=True)
        for qi in bar:
            p, e = entries[qi], by_index[entries[qi].index]
            uniq = list(dict.fromkeys(c.sql for c in p.candidates))
            keys = {s: ScoresCache.key(disc_key, p.db_id, e.question, s) for s in uniq}
            all_keys.append(keys)
            targets = [k for k in stages.score_targets(cands[qi], policy_names())
                       if cache.get(keys[cands[qi][k].candidate.sql]) is None]
            if targets:
                job = stages.score_job(cands[qi], targets, question=e.question,
                                       schema=_schema_text(registry, p.db_id, schemas), evidence=e.evidence,
                                       on_score=lambda sql, sc, keys=keys: cache.put(keys[sql], sc))
                pending.append(job)
            if len(pending) >= max(score_batch, 1):
                flush()
        if pending:
            flush()
        for qi in range(n_score):  # the cache is the source of truth (a rerun reads the same scores)
            for k, c in enumerate(entries[qi].candidates):
                scores[qi][k] = cache.get(all_keys[qi][c.sql])
                cands[qi][k].scores = [scores[qi][k]] if scores[qi][k] is not None else []

    # 4. Selection per policy.
    questions = []
    for qi, p in enumerate(entries):
        e = by_index[p.index]
        lab = [bool(v["ex"]) for v in labels[qi]]
        scored_q = all(s is not None for s in scores[qi]) and discriminator is not None
        rec = {
            "index": p.index,
            "db_id": p.db_id,
            "difficulty": e.difficulty,
            "n_candidates": len(p.candidates),
            "sources": [c.source for c in p.candidates],
            "sqls": [c.sql for c in p.candidates],
            "labels": lab,
            "executable": [bool(sc.execution and sc.execution.ok) for sc in cands[qi]],
            "scores": [s.score if s is not None else None for s in scores[qi]],
            "verdict_kinds": [_kind(s) for s in scores[qi]],
            "oracle": any(lab),
            "chosen": {},
            "ex": {},
        }
        for pol in reported_policies(scored_q, policies):
            idx, _ = stages.select(cands[qi], pol, e.question)
            rec["chosen"][pol] = idx
            rec["ex"][pol] = bool(idx is not None and lab[idx])
        questions.append(rec)
        if keep is not None:
            keep.append((e.question, [ScoredCandidate(candidate=_candidate(c, k),
                                                      execution=cands[qi][k].execution,
                                                      scores=[scores[qi][k]] if scores[qi][k] is not None else [])
                                      for k, c in enumerate(p.candidates)], lab))
    return {"questions": questions, "summary": summarize(questions, discriminator=disc_key)}


def _candidate(c, k: int) -> Candidate:
    """A pool candidate as the pipeline's Candidate; the optional `logprob` fields become the ranker's likelihood
    evidence (a pool without them replays exactly as before: the features are missing, flagged)."""
    return Candidate(sql=c.sql, source=c.source, sample_index=k, logprob=getattr(c, "logprob", None),
                     logprob_tokens=getattr(c, "logprob_tokens", None))


def side_by_side(summary: dict) -> dict:
    """Every policy next to the best single source and the oracle, with the share of the vote -> oracle gap it
    closes: (EX - vote) / (oracle - vote) (None without a gap; negative: below the vote)."""
    pols = summary.get("policies", {})
    vote = (pols.get("vote") or {}).get("ex")
    oracle = (summary.get("oracle") or {}).get("ex")
    gap = None if vote is None or oracle is None or abs(oracle - vote) < 1e-9 else oracle - vote
    rows = {p: {"ex": v["ex"], "gap_closed": None if gap is None or v["ex"] is None else (v["ex"] - vote) / gap}
            for p, v in pols.items()}
    best = summary.get("best_source")
    return {"policies": rows, "best_single": best and {"name": best["name"], "ex": best["ex"]}, "oracle": oracle,
            "vote": vote}


def _kind(s: Score | None) -> str | None:
    if s is None:
        return None
    return s.verdict_kind or ("missing" if s.parse_failure else ("not_executable" if s.mode == "check" else "natural"))


def summarize(questions: Sequence[dict], discriminator: str | None = None) -> dict:
    """EX per policy (and by difficulty), oracle, per-source EX and the best source, discriminator metrics."""
    pols: list[str] = []
    for q in questions:
        for pol in q["ex"]:
            if pol not in pols:
                pols.append(pol)
    out: dict = {"n_questions": len(questions), "discriminator": discriminator, "policies": {}}
    for pol in pols:
        recs = [{"difficulty": q["difficulty"], "ex": q["ex"][pol]} for q in questions if pol in q["ex"]]
        out["policies"][pol] = {"n": len(recs), "ex": ex_rate(r["ex"] for r in recs), "by_difficulty": ex_by_group(recs)}
    out["oracle"] = {"n": len(questions), "ex": ex_rate(q["oracle"] for q in questions),
                     "by_difficulty": ex_by_group([{"difficulty": q["difficulty"], "ex": q["oracle"]} for q in questions])}
    per_source: dict[str, list[bool]] = {}
    for q in questions:
        for s, y in zip(q["sources"], q["labels"], strict=True):
            per_source.setdefault(s, []).append(y)
    src = {s: {"n": len(v), "ex": ex_rate(v)} for s, v in per_source.items()}
    out["sources"] = src
    if src:
        best = max(src, key=lambda s: (src[s]["n"], src[s]["ex"]))
        out["best_source"] = {"name": best, **src[best]}
    out["side_by_side"] = side_by_side(out)
    out["candidates"] = {
        "total": sum(q["n_candidates"] for q in questions),
        "correct": sum(sum(q["labels"]) for q in questions),
        "executable": sum(sum(q["executable"]) for q in questions),
    }
    scored = [q for q in questions if q["scores"] and all(s is not None for s in q["scores"])]
    if scored:
        out["discriminator_metrics"] = discriminator_metrics(
            [list(zip(q["scores"], q["labels"], strict=True)) for q in scored],
            sqls=[q.get("sqls") for q in scored] if all(q.get("sqls") for q in scored) else None,
        )
        kinds = {k: 0 for k in (*VERDICT_KINDS, "not_executable")}
        for q in scored:
            for k in q.get("verdict_kinds") or []:
                if k is not None:
                    kinds[k] = kinds.get(k, 0) + 1
        out["discriminator_metrics"]["verdicts"] = kinds
        # The same questions without the discriminator, so score-based policies compare like with like.
        out["scored_subset"] = {
            "n": len(scored),
            **{pol: ex_rate(q["ex"][pol] for q in scored if pol in q["ex"]) for pol in pols},
            "oracle": ex_rate(q["oracle"] for q in scored),
        }
    return out
