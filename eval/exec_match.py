"""Execution accuracy (EX): does a predicted SQL return the same result as the gold SQL?

This module owns the comparison rules and the sandboxed SQLite execution behind every EX number in
the project. The rules follow the official evaluators (see docs/evaluation.md for the rule-by-rule
mapping):

Spider (taoyds/test-suite-sql-eval, `exec_eval.eval_exec_match`, default flags):
  * both queries: `"> ="`, `"< ="`, `"! ="` are joined (`postprocess`); every token equal to DISTINCT
    (any case, found with the sqlparse tokenizer, so `COUNT(DISTINCT x)` becomes `COUNT( x)` too) is
    deleted (`remove_distinct`, skipped with `keep_distinct=True`); `YEAR(CURDATE())` becomes 2020;
  * the prediction line is stripped and `" value "` is replaced by `" 1 "` (`evaluation.evaluate`);
  * row order matters iff the (processed) gold text contains `"order by"` (a plain substring test);
  * results are bags of rows compared up to a permutation of columns (`result_eq`): two empty results
    are equal whatever their columns; otherwise same row count, same column count, a cheap rejection on
    rows with their values sorted by `str(v) + str(type(v))`, then a search over column permutations;
  * values are raw Python values from `sqlite3` (so `1 == 1.0`, but `0.30000000000000004 != 0.3`;
    text decoded as UTF-8 with undecodable bytes dropped, like the official `text_factory`);
  * a prediction that raises or times out is wrong; the queries run on every `*.sqlite` file in the
    gold database's directory (the test-suite layout; Spider's own layout has one file).
BIRD (`bird/llm/src/evaluation.py`): `set(pred_rows) == set(gold_rows)`, errors and timeouts wrong.

Differences from the official code, all on the safe side: queries run on read-only connections
(`mode=ro` URI, an authorizer that allows only reads, no ATTACH/PRAGMA/writes, no extensions) with a
real per-query deadline (the official `asyncio.wait_for` around a blocking call never fires), and a
result above `max_rows` rows is an error instead of exhausting memory. A gold query that fails is
reported as `gold_error` (the official Spider code stops with an assertion) and counts as not matched.

Work is spread over processes (`multiprocessing.Pool` with an initializer); each worker keeps its
SQLite connections open in a per-process dict.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import sqlparse
from tqdm import tqdm

EX_RULES = ("spider", "bird")  # the official semantics; each dataset declares its rule (eval.datasets)
# The official defaults, per rule: test-suite-sql-eval declares TIMEOUT = 60; BIRD's scripts pass meta_time_out=30.
DEFAULT_TIMEOUT = {"spider": 60.0, "bird": 30.0}
DEFAULT_MAX_ROWS = 1_000_000
EVALUATOR_VERSION = "ex-1"  # bump when a rule changes: cached verdicts are keyed by it

# --------------------------------------------------------------------------------------------------
# Text preprocessing (Spider)
# --------------------------------------------------------------------------------------------------

_CURDATE_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


def postprocess(sql: str) -> str:
    """Join split comparison operators, as the official `postprocess` does."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def remove_distinct(sql: str) -> str:
    """Delete every token that is the word DISTINCT (any case), keeping all other tokens verbatim.

    Tokens come from sqlparse, as in the official evaluator, so string literals and quoted identifiers
    that contain the word are kept, and DISTINCT inside aggregates goes too (`COUNT(DISTINCT a)`)."""
    if not sql.strip():
        return sql
    tokens = sqlparse.parse(sql)[0].flatten()
    return "".join(t.value for t in tokens if t.value.lower() != "distinct")


def replace_cur_year(sql: str) -> str:
    return _CURDATE_YEAR.sub("2020", sql)


def spider_prepare(sql: str, *, keep_distinct: bool = False, is_prediction: bool = False) -> str:
    """The text the Spider evaluator executes for a gold (or, with `is_prediction`, predicted) query."""
    s = sql.strip()
    if is_prediction:
        s = s.replace(" value ", " 1 ")
    s = postprocess(s)
    if not keep_distinct:
        s = remove_distinct(s)
    return s


def order_matters(prepared_gold: str) -> bool:
    """The official test: the processed gold text contains 'order by' (lower-cased substring)."""
    return "order by" in prepared_gold.lower()


# --------------------------------------------------------------------------------------------------
# Result comparison (Spider)
# --------------------------------------------------------------------------------------------------


def _value_key(v: Any) -> str:
    return str(v) + str(type(v))


def _unorder_row(row: Sequence[Any]) -> tuple:
    return tuple(sorted(row, key=_value_key))


def result_eq(gold: Sequence[tuple], pred: Sequence[tuple], order_matters: bool) -> bool:
    """Spider's denotation equality: equal as bags of rows (as lists when `order_matters`), up to a
    permutation of the prediction's columns."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred):
        return False
    ncols = len(gold[0])
    if len(pred[0]) != ncols:
        return False
    # Necessary condition: the rows agree once the values inside each row are sorted.
    ug = [_unorder_row(r) for r in gold]
    up = [_unorder_row(r) for r in pred]
    if order_matters:
        if ug != up:
            return False
    elif set(ug) != set(up):
        return False
    if ncols == 1:
        return list(gold) == list(pred) if order_matters else Counter(gold) == Counter(pred)
    # Gold column i can only be matched by prediction columns whose every value occurs in gold column i.
    # (The official code prunes with 20 sampled rows when there are more than 3 columns; pruning with all
    # rows removes only permutations that cannot match, so the verdict is the same, and deterministic.)
    gold_cols = [{r[i] for r in gold} for i in range(ncols)]
    allowed = [[j for j in range(ncols) if all(r[j] in gold_cols[i] for r in pred)] for i in range(ncols)]
    gold_list = list(gold)
    gold_bag = None if order_matters else Counter(gold)
    for perm in product(*allowed):
        if len(set(perm)) != ncols:
            continue
        permuted = [tuple(r[j] for j in perm) for r in pred]
        if order_matters:
            if permuted == gold_list:
                return True
        elif Counter(permuted) == gold_bag:
            return True
    return False


def bird_result_eq(gold: Sequence[tuple], pred: Sequence[tuple]) -> bool:
    """BIRD's rule: the results are equal as sets of rows (order, duplicates and nothing else ignored)."""
    return set(pred) == set(gold)


# --------------------------------------------------------------------------------------------------
# Sandboxed execution
# --------------------------------------------------------------------------------------------------

_CONNS: dict[tuple[str, bool], sqlite3.Connection] = {}  # per process: (db path, lenient text) -> conn

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
if hasattr(sqlite3, "SQLITE_RECURSIVE"):
    _ALLOWED_ACTIONS.add(sqlite3.SQLITE_RECURSIVE)


def _authorizer(action: int, arg1, arg2, dbname, source) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _lenient_text(b: bytes) -> str:
    return b.decode(errors="ignore")


def connect(db_path: str | os.PathLike, *, lenient_text: bool = True) -> sqlite3.Connection:
    """A cached read-only connection (per process) that can only read: writes, ATTACH, PRAGMA and
    extension loading are refused."""
    key = (str(db_path), lenient_text)
    conn = _CONNS.get(key)
    if conn is None:
        p = Path(db_path)
        if not p.is_file():
            raise FileNotFoundError(f"database file not found: {p}")
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        if lenient_text:
            conn.text_factory = _lenient_text
        conn.set_authorizer(_authorizer)
        _CONNS[key] = conn
    return conn


def close_all() -> None:
    """Close this process's cached connections."""
    while _CONNS:
        _, conn = _CONNS.popitem()
        conn.close()


@dataclass
class QueryOutcome:
    ok: bool
    rows: list[tuple] | None = None
    error: str | None = None
    timed_out: bool = False
    elapsed_ms: float = 0.0


def run_query(
    db_path: str | os.PathLike,
    sql: str,
    *,
    timeout: float = 60.0,
    max_rows: int = DEFAULT_MAX_ROWS,
    lenient_text: bool = True,
) -> QueryOutcome:
    """Run one statement read-only with a deadline; never raises for a bad query."""
    t0 = time.perf_counter()
    try:
        conn = connect(db_path, lenient_text=lenient_text)
    except (OSError, sqlite3.Error) as e:
        return QueryOutcome(False, error=f"cannot open database: {e}")
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 5000)
    cur = None
    try:
        cur = conn.execute(replace_cur_year(sql))
        rows: list[tuple] = []
        while chunk := cur.fetchmany(10_000):
            rows.extend(chunk)
            if len(rows) > max_rows:
                return QueryOutcome(False, error=f"result exceeds {max_rows} rows", elapsed_ms=_ms(t0))
        return QueryOutcome(True, rows=rows, elapsed_ms=_ms(t0))
    except Exception as e:  # noqa: BLE001 - as the official evaluator: any failure (sqlite3 errors, one-statement warnings, recursion, memory) is a failed execution
        timed_out = time.monotonic() > deadline
        msg = f"timed out after {timeout:g}s" if timed_out else f"{type(e).__name__}: {e}"
        return QueryOutcome(False, error=msg, timed_out=timed_out, elapsed_ms=_ms(t0))
    finally:
        if cur is not None:
            cur.close()
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.rollback()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def database_files(db_path: str | os.PathLike) -> list[Path]:
    """The databases a Spider comparison runs on: every `*.sqlite` file in the gold database's directory
    (test-suite layout), which for Spider's own layout is just the one file."""
    p = Path(db_path)
    files = sorted(
        f
        for f in p.parent.iterdir()
        if ".sqlite" in f.name and f.is_file() and not f.name.endswith(("-journal", "-wal", "-shm"))
    )
    return files or [p]


# --------------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The outcome of one (gold, prediction) comparison. `error_kind`: pred_error, pred_timeout,
    gold_error, gold_timeout, or None."""

    ex: bool
    error_kind: str | None = None
    error: str | None = None
    pred_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"ex": self.ex, "error_kind": self.error_kind, "error": self.error, "pred_ms": round(self.pred_ms, 2)}
        d.update(self.extra)
        return d


def _fail(outcome: QueryOutcome, who: str) -> Verdict:
    kind = f"{who}_timeout" if outcome.timed_out else f"{who}_error"
    return Verdict(False, kind, outcome.error, pred_ms=outcome.elapsed_ms if who == "pred" else 0.0)


def spider_verdicts(
    db_path: str | os.PathLike,
    gold: str,
    preds: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT["spider"],
    keep_distinct: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> list[Verdict]:
    """Spider verdicts for several predictions against one gold (the gold runs once per database)."""
    g = spider_prepare(gold, keep_distinct=keep_distinct)
    ordered = order_matters(g)
    prepared = [spider_prepare(p or "", keep_distinct=keep_distinct, is_prediction=True) for p in preds]
    verdicts: list[Verdict | None] = [None] * len(preds)
    for path in database_files(db_path):
        gout = run_query(path, g, timeout=timeout, max_rows=max_rows)
        if not gout.ok:  # keep predictions already wrong on an earlier database; the rest cannot be judged
            return [v if (v is not None and not v.ex) else _fail(gout, "gold") for v in verdicts]
        memo: dict[str, Verdict] = {}
        for i, p in enumerate(prepared):
            if verdicts[i] is not None and not verdicts[i].ex:
                continue  # already wrong on an earlier database
            if p in memo:
                v = memo[p]
            else:
                if not p.strip():
                    v = Verdict(False, "pred_error", "empty prediction")
                else:
                    pout = run_query(path, p, timeout=timeout, max_rows=max_rows)
                    if not pout.ok:
                        v = _fail(pout, "pred")
                    else:
                        v = Verdict(result_eq(gout.rows, pout.rows, ordered), pred_ms=pout.elapsed_ms)
                memo[p] = v
            if verdicts[i] is None or not v.ex:
                verdicts[i] = v
    return [v if v is not None else Verdict(False, "pred_error", "no database") for v in verdicts]


def bird_verdicts(
    db_path: str | os.PathLike,
    gold: str,
    preds: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT["bird"],
    max_rows: int = DEFAULT_MAX_ROWS,
) -> list[Verdict]:
    """BIRD verdicts for several predictions against one gold: set equality of rows."""
    gout = run_query(db_path, gold, timeout=timeout, max_rows=max_rows, lenient_text=False)
    if not gout.ok:
        return [_fail(gout, "gold") for _ in preds]
    gold_set = set(gout.rows)
    memo: dict[str, Verdict] = {}
    out = []
    for p in preds:
        p = p or ""
        if p not in memo:
            if not p.strip():
                memo[p] = Verdict(False, "pred_error", "empty prediction")
            else:
                pout = run_query(db_path, p, timeout=timeout, max_rows=max_rows, lenient_text=False)
                memo[p] = (
                    _fail(pout, "pred") if not pout.ok else Verdict(set(pout.rows) == gold_set, pred_ms=pout.elapsed_ms)
                )
        out.append(memo[p])
    return out


def spider_match(db_path, gold: str, pred: str, *, timeout: float = DEFAULT_TIMEOUT["spider"], keep_distinct=False) -> bool:
    """True when `pred` is execution-equivalent to `gold` under the official Spider rules."""
    return spider_verdicts(db_path, gold, [pred], timeout=timeout, keep_distinct=keep_distinct)[0].ex


def bird_match(db_path, gold: str, pred: str, *, timeout: float = DEFAULT_TIMEOUT["bird"]) -> bool:
    """True when `pred` returns the same set of rows as `gold` (the official BIRD rule)."""
    return bird_verdicts(db_path, gold, [pred], timeout=timeout)[0].ex


def rule_of(dataset: str) -> str:
    """The EX rule of a registered dataset (`eval.datasets`: spider-syn -> "spider", bird -> "bird");
    ValueError naming the choices for an unknown one."""
    from eval.datasets import DatasetError, ex_rule

    try:
        rule = ex_rule(dataset)
    except DatasetError as e:
        raise ValueError(str(e)) from None
    if rule not in EX_RULES:
        raise ValueError(f"dataset {dataset!r} declares EX rule {rule!r}; known rules: {', '.join(EX_RULES)}")
    return rule


_SERVER_SCHEMAS: dict[tuple, Any] = {}


def server_verdicts(target_url: str, db_path, gold: str, preds: Sequence[str], *, rule: str = "spider",
                    timeout: float = DEFAULT_TIMEOUT["spider"], keep_distinct: bool = False,
                    max_rows: int = DEFAULT_MAX_ROWS) -> list[Verdict]:
    """Verdicts with gold and predictions run on a PostgreSQL/MySQL server instead of the SQLite file: the
    database named like the file's db_id (lower-cased, as `sqlarbiter databases load-spider` creates it)
    on the server of `target_url`. Both are SQLite SQL, prepared as the official rule prepares them, then
    guarded, transpiled (`sqlbox.servers.translate.prepare_sql`) and run read-only; the comparison is the rule's
    (`result_eq` / `bird_result_eq`) on the server's rows."""
    from sqlbox.servers.execute import ServerConn
    from sqlbox.servers.introspect import introspect_server
    from sqlbox.servers.targets import error_text, parse_target, server_url_for
    from sqlbox.servers.translate import prepare_sql

    p = Path(db_path)
    db_id = p.stem if p.suffix else p.name
    target = parse_target(server_url_for(target_url, db_id.lower()))[1]
    conn = ServerConn(db_id, target)
    key = (target, db_id)
    if key not in _SERVER_SCHEMAS:
        _SERVER_SCHEMAS[key] = introspect_server(db_id, target, samples=0)
    schema = _SERVER_SCHEMAS[key]

    def run(sql: str) -> QueryOutcome:
        t0 = time.perf_counter()
        try:
            executed = prepare_sql(sql, "sqlite", target, schema=lambda: schema)
            _, rows = conn.run(executed, timeout, max_rows)
            return QueryOutcome(True, rows=rows[:max_rows], elapsed_ms=_ms(t0))
        except Exception as e:  # noqa: BLE001 - the query's failure is the verdict
            return QueryOutcome(False, error=error_text(e, target), timed_out=conn.timed_out(), elapsed_ms=_ms(t0))

    if rule == "spider":
        g = spider_prepare(gold, keep_distinct=keep_distinct)
        ordered = order_matters(g)
        prepared = [spider_prepare(x or "", keep_distinct=keep_distinct, is_prediction=True) for x in preds]
    else:
        g, ordered, prepared = gold, False, [x or "" for x in preds]
    gout = run(g)
    if not gout.ok:
        return [_fail(gout, "gold") for _ in preds]
    out = []
    for x in prepared:
        if not x.strip():
            out.append(Verdict(False, "pred_error", "empty prediction"))
            continue
        pout = run(x)
        if not pout.ok:
            out.append(_fail(pout, "pred"))
        elif rule == "spider":
            out.append(Verdict(result_eq(gout.rows, pout.rows, ordered), pred_ms=pout.elapsed_ms))
        else:
            out.append(Verdict(bird_result_eq(gout.rows, pout.rows), pred_ms=pout.elapsed_ms))
    return out


def verdicts(dataset: str, db_path, gold: str, preds: Sequence[str], **kw) -> list[Verdict]:
    """Verdicts under the EX rule `dataset` declares (Spider's or BIRD's official semantics); with
    `target_url`, on that server (`server_verdicts`)."""
    target_url = kw.pop("target_url", None)
    if target_url:
        return server_verdicts(target_url, db_path, gold, preds, rule=rule_of(dataset), **kw)
    if rule_of(dataset) == "spider":
        return spider_verdicts(db_path, gold, preds, **kw)
    kw.pop("keep_distinct", None)
    return bird_verdicts(db_path, gold, preds, **kw)


# --------------------------------------------------------------------------------------------------
# Batches across processes
# --------------------------------------------------------------------------------------------------


@dataclass
class MatchTask:
    """One gold query and the predictions to compare with it."""

    db_path: str
    gold: str
    preds: list[str]


_WORKER_OPTS: dict = {}


def _init_worker(dataset: str, opts: dict) -> None:
    close_all()  # never share a parent's connections across fork
    _WORKER_OPTS.clear()
    _WORKER_OPTS.update(opts, dataset=dataset)


def _run_task(args: tuple[int, MatchTask]) -> tuple[int, list[dict]]:
    i, task = args
    opts = dict(_WORKER_OPTS)
    dataset = opts.pop("dataset")
    try:
        vs = verdicts(dataset, task.db_path, task.gold, task.preds, **opts)
    except Exception as e:  # noqa: BLE001 - an evaluator fault must not kill the whole run
        vs = [Verdict(False, "internal", f"{type(e).__name__}: {e}") for _ in task.preds]
    return i, [v.as_dict() for v in vs]


def match_tasks(
    tasks: Sequence[MatchTask],
    dataset: str = "spider",
    *,
    workers: int = 2,
    timeout: float | None = None,
    keep_distinct: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: bool = True,
    desc: str = "EX",
    on_result=None,
    target_url: str | None = None,
) -> list[list[dict]]:
    """Verdict dicts for every task (same order), computed by `workers` processes (inline when <= 1).
    A tqdm bar shows the running EX over the first prediction of each task. `on_result(i, verdicts)` is
    called as each task finishes (in completion order), e.g. to append result lines as they come."""
    rule = rule_of(dataset)
    opts = {"timeout": timeout if timeout is not None else DEFAULT_TIMEOUT[rule], "max_rows": max_rows}
    if rule == "spider":
        opts["keep_distinct"] = keep_distinct
    if target_url:
        opts["target_url"] = target_url
    out: list[list[dict] | None] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="q", dynamic_ncols=True)
    done = correct = 0

    def _collect(results: Iterable[tuple[int, list[dict]]]) -> None:
        nonlocal done, correct
        for i, vs in results:
            out[i] = vs
            if on_result is not None:
                on_result(i, vs)
            done += 1
            correct += bool(vs and vs[0]["ex"])
            bar.update(1)
            bar.set_postfix_str(f"EX {100.0 * correct / done:.1f}%", refresh=False)

    items = list(enumerate(tasks))
    try:
        if workers <= 1 or len(tasks) < 2:
            saved = dict(_WORKER_OPTS)
            _init_worker(rule, opts)
            try:
                _collect(_run_task(it) for it in items)
            finally:
                _WORKER_OPTS.clear()
                _WORKER_OPTS.update(saved)
        else:
            # fork: workers need nothing from the parent but this module, and (unlike spawn/forkserver)
            # fork does not re-run a caller's unguarded __main__ script.
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(workers, initializer=_init_worker, initargs=(rule, opts)) as pool:
                _collect(pool.imap_unordered(_run_task, items, chunksize=max(1, min(16, len(items) // (8 * workers)))))
    finally:
        bar.close()
    return out  # type: ignore[return-value]
