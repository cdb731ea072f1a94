"""Outcome importers that need the evaluation layer (datasets, EX labels), for `route fit` and the routing study:

- from an end-to-end eval run's results.jsonl (`outcomes_from_results`);
- from the published Spider-dev systems (correctness from `eval.systems.system_correctness`, cost per question
  from `routing.costs`);
- from a candidate-pool JSONL (each question lists candidates with the system that produced them);
- `load_outcomes(src)`: one entry point (a .jsonl file, a SQLAlchemy URL, or `systems[:name,name,...]`).

The outcome records, their store and the matrix form live in `routing.outcomes`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from routing.outcomes import Outcome, OutcomeError, OutcomeStore, read_jsonl


def outcomes_from_systems(
    names: Sequence[str] | None = None,
    *,
    cost_config: str | os.PathLike | None = None,
    correctness: dict[str, list[bool]] | None = None,
    workers: int = 2,
    source: str = "systems:spider_dev",
) -> list[Outcome]:
    """One outcome per (Spider dev question, published system): correctness from the project's EX
    (`eval.systems.system_correctness`, cached), cost per question from `routing.costs`."""
    from eval.datasets import load_spider
    from routing.costs import system_costs

    if correctness is None:
        from eval.systems import system_correctness

        correctness = system_correctness(list(names) if names else None, workers=workers)
    names = list(names) if names else sorted(correctness)
    costs = system_costs(names, cost_config)
    examples = load_spider(require_db=False)
    out: list[Outcome] = []
    for n in names:
        labels = correctness[n]
        if len(labels) != len(examples):
            raise OutcomeError(f"system {n}: {len(labels)} labels for {len(examples)} Spider dev questions")
        c = costs[n]
        for e, ok in zip(examples, labels, strict=True):
            out.append(Outcome(question=e.question, db_id=e.db_id, question_id=str(e.index), pair=n, generator=n,
                               correct=bool(ok), prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                               cost=c.usd_per_question, source=source))
    return out


Judge = Callable[[int, str], bool]


def spider_judge(workers: int = 1) -> Judge:
    """EX against Spider dev gold by 0-based index, with the project's evaluator (eval.exec_match)."""
    from eval.datasets import load_spider
    from eval.exec_match import spider_match

    examples = load_spider()
    by_index = {e.index: e for e in examples}

    def judge(index: int, sql: str) -> bool:
        e = by_index.get(index)
        if e is None:
            raise OutcomeError(f"no Spider dev question with index {index}")
        return bool(sql and spider_match(e.db_path, e.gold_sql, sql))

    return judge


def outcomes_from_pool(
    path: str | os.PathLike,
    *,
    judge: Judge | None = None,
    generator: str | None = None,
    costs: dict[str, float] | None = None,
    mode: str = "first",
    source: str | None = None,
) -> list[Outcome]:
    """Outcomes from a candidate-pool JSONL. Each line: `{"idx", "db_id", ["question"], "candidates": [...]}`
    where a candidate is a SQL string (produced by `generator`, default the file stem) or an object
    `{"sql", "system"|"source", ["correct"], ["prompt_tokens"], ["completion_tokens"], ["cost"]}`.
    One outcome per (question, system): `mode="first"` takes the system's first candidate (one answer per
    call), `"any"` is right when any of its candidates is (pass@N). Missing `correct` is judged by `judge`
    (default: Spider dev EX by index); missing costs come from `costs[system]`."""
    p = Path(path)
    if not p.is_file():
        raise OutcomeError(f"candidate pool {p} does not exist")
    if mode not in ("first", "any"):
        raise OutcomeError(f"unknown mode {mode!r}; choose first or any")
    generator = generator or p.stem
    source = source or f"pool:{p.name}"
    questions: dict[int, str] = {}
    out: list[Outcome] = []
    for ln, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            idx = int(rec["idx"])
            db_id = str(rec["db_id"])
            cands = rec["candidates"]
        except (ValueError, KeyError, TypeError) as e:
            raise OutcomeError(f"{p}:{ln}: expected idx, db_id, candidates ({e})") from None
        text = rec.get("question")
        if text is None:
            if not questions:
                from eval.datasets import load_spider

                questions.update({e.index: e.question for e in load_spider(require_db=False)})
            text = questions.get(idx)
            if text is None:
                raise OutcomeError(f"{p}:{ln}: no question text and no Spider dev question {idx}")
        by_sys: dict[str, list[dict[str, Any]]] = {}
        for c in cands:
            c = {"sql": c} if isinstance(c, str) else dict(c)
            name = c.get("system") or c.get("source") or generator
            by_sys.setdefault(name, []).append(c)
        for name, cs in by_sys.items():
            use = cs[:1] if mode == "first" else cs
            verdicts = []
            for c in use:
                if c.get("correct") is None:
                    if judge is None:
                        judge = spider_judge()
                    c["correct"] = judge(idx, c.get("sql") or "")
                verdicts.append(bool(c["correct"]))
            first = cs[0]
            cost = first.get("cost", (costs or {}).get(name, 0.0))
            out.append(Outcome(question=text, db_id=db_id, question_id=str(idx), pair=name, generator=name,
                               correct=any(verdicts), prompt_tokens=int(first.get("prompt_tokens", 0)),
                               completion_tokens=int(first.get("completion_tokens", 0)), cost=float(cost),
                               source=source))
    return out


def outcomes_from_results(path: str | os.PathLike, dataset: str = "spider", source: str | None = None) -> list[Outcome]:
    """Outcomes from an end-to-end eval run's `results.jsonl` (eval.runner): one per question, labelled by
    its EX, with the route's pair, tokens, cost and latency; question text from the dataset by index."""
    from eval.datasets import load_examples

    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.is_file():
        raise OutcomeError(f"eval results {p} do not exist")
    by_index = {e.index: e for e in load_examples(dataset, require_db=False)}
    out = []
    for ln, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if r.get("route") is None or "ex" not in r:
            continue  # not an end-to-end line (predictions / replay modes have no route)
        e = by_index.get(int(r["index"]))
        if e is None:
            raise OutcomeError(f"{p}:{ln}: no {dataset} question with index {r['index']}")
        out.append(Outcome(question=e.question, db_id=e.db_id, question_id=str(e.index), pair=str(r["route"]),
                           correct=bool(r["ex"]), prompt_tokens=int(r.get("prompt_tokens") or 0),
                           completion_tokens=int(r.get("completion_tokens") or 0), cost=float(r.get("cost") or 0.0),
                           latency_ms=r.get("latency_ms"), source=source or f"eval:{p.parent.name}",
                           plan_id=r.get("plan_id")))
    return out



def load_outcomes(src: str, *, workers: int = 2) -> list[Outcome]:
    """Outcomes from `src`: a `.jsonl` file of Outcome records or a candidate pool, an end-to-end eval run
    (its directory or `results.jsonl`), a SQLAlchemy URL (labelled rows of the store), `systems` (all
    published Spider-dev systems) or `systems:NAME,NAME,...`."""
    if src == "systems" or src.startswith("systems:"):
        names = [n for n in src.partition(":")[2].split(",") if n] or None
        return outcomes_from_systems(names, workers=workers)
    if "://" in src:
        return OutcomeStore(src).load()
    p = Path(src)
    if p.name == "results.jsonl" or (p.is_dir() and (p / "results.jsonl").is_file()):
        return outcomes_from_results(p)
    if p.suffix == ".jsonl" and p.is_file():
        with p.open() as f:
            first = f.readline()
        if '"candidates"' in first:
            return outcomes_from_pool(p)
        return read_jsonl(p)
    raise OutcomeError(f"cannot read outcomes from {src!r}: expected a .jsonl file, a SQLAlchemy URL, or systems[:names]")


