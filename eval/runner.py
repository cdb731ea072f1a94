"""The eval runner: turns a dataset selection into `results.jsonl` (one line per question), in one of
three modes, and hands the lines to `eval.report`.

* predictions: an official-format file (one SQL per line aligned with the dataset file, optionally
  `\\t<db_id>`) is scored with `eval.exec_match`;
* replay: a candidate pool (`eval.pool`) is replayed through the selection policies and, optionally, a
  discriminator (`eval.replay`);
* end-to-end: every question goes through the planning pipeline (`planner.pipeline.Planner.plan`), and
  the line records the chosen SQL, EX, the EX every policy would have had on the same candidates, cost,
  tokens and latency.

`results.jsonl` lines carry at least `index` (0-based position in the dataset file), `db_id`, `ex`.
Runs are resumable: lines are appended and fsynced one by one, and a restart skips indices already
present (predictions and end-to-end modes; replay is made cheap to rerun by its scores cache).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from eval.datasets import Example
from eval.exec_match import match_tasks, verdicts

RESULTS = "results.jsonl"


def read_results(out_dir: str | os.PathLike) -> list[dict]:
    """The lines of `<out_dir>/results.jsonl` (a torn last line is ignored), sorted by index."""
    p = Path(out_dir) / RESULTS
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    seen: dict[int, dict] = {}
    for r in out:
        seen[int(r["index"])] = r  # a rerun of the same index replaces the earlier line
    return [seen[i] for i in sorted(seen)]


class ResultsWriter:
    """Appends result lines durably (flush + fsync per line)."""

    def __init__(self, out_dir: str | os.PathLike, *, resume: bool = True):
        self.path = Path(out_dir) / RESULTS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.path.exists():
            self.path.unlink()
        self.done = {int(r["index"]) for r in read_results(out_dir)} if resume else set()
        if self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            with self.path.open("a") as f:  # terminate a torn line so the next append starts clean
                f.write("\n")
        self._f = self.path.open("a")

    def write(self, rec: dict, *, sync: bool = True) -> None:
        """Append one line and flush it (a crashed process loses nothing); `sync` also fsyncs (a crashed
        machine loses nothing). Batch writers pass sync=False and call `sync()` per batch."""
        self._f.write(json.dumps(rec, default=str) + "\n")
        self._f.flush()
        if sync:
            os.fsync(self._f.fileno())
        self.done.add(int(rec["index"]))

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_prediction_file(path: str | os.PathLike, examples: Sequence[Example], n_total: int | None = None) -> list[str]:
    """Predictions for `examples` from an official-format file aligned with the *whole* dataset file
    (line i = dataset index i). A file with exactly len(examples) lines is taken as aligned with the
    selection instead. A `\\t<db_id>` suffix is checked against the example's db_id."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    parsed = [line.split("\t") for line in lines]
    by_position = n_total is not None and len(parsed) == n_total
    if not by_position and len(parsed) != len(examples):
        raise ValueError(
            f"{path}: {len(parsed)} lines; expected one per dataset question ({n_total}) or one per selected "
            f"question ({len(examples)})"
        )
    out = []
    for k, e in enumerate(examples):
        fields = parsed[e.index if by_position else k]
        if len(fields) > 1 and fields[-1].strip() and fields[-1].strip() != e.db_id:
            raise ValueError(f"{path}: line for index {e.index} names db {fields[-1].strip()!r}, expected {e.db_id!r}")
        out.append(fields[0].strip())
    return out


def _base(e: Example) -> dict:
    return {"index": e.index, "db_id": e.db_id, "difficulty": e.difficulty}


def run_predictions(
    examples: Sequence[Example],
    preds: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    dataset: str = "spider",
    workers: int = 2,
    timeout: float | None = None,
    resume: bool = True,
    progress: bool = True,
    target_url: str | None = None,
) -> list[dict]:
    """Score aligned predictions; appends to results.jsonl and returns all lines of the run. With
    `target_url`, gold and predictions run on that PostgreSQL/MySQL server (one database per db_id)."""
    with ResultsWriter(out_dir, resume=resume) as w:
        todo = [(e, p) for e, p in zip(examples, preds, strict=True) if e.index not in w.done]
        if todo:
            from eval.exec_match import MatchTask

            tasks = [MatchTask(str(e.db_path), e.gold_sql, [p]) for e, p in todo]
            pending = [0]

            def write(i: int, vs: list[dict]) -> None:
                e, p = todo[i]
                w.write({**_base(e), "ex": vs[0]["ex"], "error_kind": vs[0]["error_kind"], "error": vs[0]["error"],
                         "pred_sql": p, "gold_sql": e.gold_sql}, sync=False)
                pending[0] += 1
                if pending[0] % 100 == 0:
                    w.sync()  # fsync per 100 lines: per line costs ~10-40 ms on a busy disk

            match_tasks(tasks, dataset, workers=workers, timeout=timeout, progress=progress, on_result=write,
                        target_url=target_url)
            w.sync()
    return read_results(out_dir)


def run_replay(
    examples: Sequence[Example],
    pool_entries,
    out_dir: str | os.PathLike,
    *,
    dataset: str = "spider",
    policy: str | None = None,
    discriminator=None,
    scores_cache=None,
    limit: int | None = None,
    score_limit: int | None = None,
    score_batch: int = 8,
    workers: int = 2,
    progress: bool = True,
    ranker=None,
) -> tuple[list[dict], dict]:
    """Replay a pool; writes results.jsonl (ex = `policy`'s verdict) and returns (lines, replay summary).
    `ranker` (`eval.select_fit.RankerRun`: a fitted artifact or cross-fitting) adds the `ranker` policy and
    each policy's plan confidence to the lines."""
    from eval.replay import replay

    kept: list | None = [] if ranker is not None else None
    r = replay(pool_entries, examples, dataset=dataset, discriminator=discriminator, scores_cache=scores_cache,
               limit=limit, score_limit=score_limit, score_batch=score_batch, workers=workers, progress=progress,
               keep=kept, preview_rows=3 if ranker is not None else 0)
    if ranker is not None:
        ranker.run(r, kept)
    main = policy or ("check-rerank" if discriminator is not None else "vote")
    with ResultsWriter(out_dir, resume=False) as w:
        for q in r["questions"]:
            chosen = q["chosen"].get(main)
            w.write({
                "index": q["index"], "db_id": q["db_id"], "difficulty": q["difficulty"],
                "ex": q["ex"].get(main, False), "policy": main, "ex_by_policy": q["ex"], "oracle": q["oracle"],
                "chosen": chosen, "n_candidates": q["n_candidates"], "labels": q["labels"], "scores": q["scores"],
                "executable": q["executable"], "sources": q["sources"],
                "verdict_kinds": q.get("verdict_kinds"),
                **({"confidence_by_policy": q["confidence"]} if q.get("confidence") else {}),
            }, sync=False)
        w.sync()
    return read_results(out_dir), r["summary"]


def _policy_verdicts(plan, labels: list[bool], ranker=None) -> dict[str, bool]:
    """EX each policy would have had on this plan's candidates, chosen as the pipeline chooses
    (`planner.stages.select`: rejected candidates are never eligible; `ranker`: the planner's ranker state);
    policies that need scores only when the plan has scores (`planner.select.reported_policies`)."""
    from planner import stages
    from planner.select import reported_policies

    cands = [c.model_copy(deep=True) for c in plan.candidates]  # the select stage records clusters on them
    has_scores = any(c.scores for c in cands)
    out = {}
    for pol in reported_policies(has_scores):
        idx, _ = stages.select(cands, pol, plan.question.text, ranker=ranker)
        out[pol] = bool(idx is not None and labels[idx])
    return out


def run_end_to_end(
    examples: Sequence[Example],
    planner,
    out_dir: str | os.PathLike,
    *,
    dataset: str = "spider",
    n: int | None = None,
    policy: str | None = None,
    timeout: float | None = None,
    deadline_s: float | None = None,
    resume: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Plan every question with the pipeline and score the chosen SQL; one durable line per question.
    `deadline_s` overrides the pipeline's per-request deadline (CPU runs of the embedded model need more)."""
    from core.model import Question

    kw = {} if timeout is None else {"timeout": timeout}
    with ResultsWriter(out_dir, resume=resume) as w:
        todo = [e for e in examples if e.index not in w.done]
        done = len(examples) - len(todo)
        correct = sum(1 for r in read_results(out_dir) if r.get("ex"))
        bar = tqdm(todo, desc="eval", disable=not progress, unit="q", dynamic_ncols=True, initial=0)
        for e in bar:
            t0 = time.perf_counter()
            rec = _base(e)
            try:
                extra = {"deadline_s": deadline_s} if deadline_s else {}
                plan = planner.plan(Question(text=e.question, db_id=e.db_id, evidence=e.evidence, id=str(e.index)),
                                    n=n, policy=policy, **extra)
            except Exception as exc:  # noqa: BLE001 - a failed plan is a wrong answer, recorded with its reason
                rec.update(ex=False, status="error", error=f"{type(exc).__name__}: {exc}",
                           latency_ms=(time.perf_counter() - t0) * 1000, pred_sql=None)
                w.write(rec)
                done += 1
                bar.set_postfix_str(f"EX {100.0 * correct / done:.1f}%")
                continue
            latency = (time.perf_counter() - t0) * 1000
            sqls = [c.candidate.sql for c in plan.candidates]
            vs = verdicts(dataset, e.db_path, e.gold_sql, sqls or [""], **kw) if sqls else []
            labels = [bool(v.ex) for v in vs]
            chosen_ok = plan.chosen is not None and labels[plan.chosen]
            if hasattr(planner, "feedback"):  # the EX label is feedback: learning routers update, outcome hooks log it
                planner.feedback(plan, bool(chosen_ok))
            usage = [u.model_dump() for u in plan.usage]
            rec.update(
                ex=bool(chosen_ok),
                pred_sql=plan.chosen_sql,
                status=plan.status,
                policy=plan.policy,
                chosen=plan.chosen,
                n_candidates=len(plan.candidates),
                labels=labels,
                scores=[c.scores[-1].score if c.scores else None for c in plan.candidates],
                executable=[bool(c.execution and c.execution.ok) for c in plan.candidates],
                ex_by_policy=_policy_verdicts(plan, labels, getattr(planner, "ranker_state", None)) if plan.candidates else {},
                oracle=any(labels),
                cost=plan.total_cost,
                prompt_tokens=sum(u["prompt_tokens"] for u in usage),
                completion_tokens=sum(u["completion_tokens"] for u in usage),
                usage=usage,
                latency_ms=latency,
                timings_ms=plan.timings_ms,
                route=plan.route.pair if plan.route else None,
                plan_id=plan.id,
            )
            w.write(rec)
            done += 1
            correct += rec["ex"]
            bar.set_postfix_str(f"EX {100.0 * correct / done:.1f}%")
    return read_results(out_dir)
