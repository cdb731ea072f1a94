"""The planning pipeline: question -> route -> generate -> normalize -> execute -> discriminate -> select -> Plan.

What it owns: `Planner` (built from a `planner.config.Config`), `DeadlineExceeded`, `PlanRequestError`, and
the rules of one plan:

- route: the configured router (default `fixed`: the first pair), or the request's `router`, or a fixed
  `pair`. A decision may list several steps (a cascade, cheap first); steps run in order, candidates of all
  steps are pooled (never thrown away), and after each step the router's `should_escalate(plan, step)`
  decides whether the next one runs.
- generate: N samples from the step's generator (`GenerationRequest` with the schema prompt of the
  registered database), through its `CheckpointPool`, so a checkpoint switch never interrupts a request.
- normalize: `planner.normalize.CandidatePool` (guard, canonicalize, de-duplicate; rejected candidates are
  kept with their reason and never run).
- execute: every new candidate through the sandboxed `sqlbox.executor.Executor` (DuckDB by default).
- discriminate: the step's discriminator scores the candidates the policy can use: all non-rejected ones
  for `rerank`, the executable ones for `check-rerank`/`hybrid` (scores of the others cannot matter), none
  for `vote` (it ignores scores). In a cascade a later, different discriminator also scores the earlier
  steps' candidates, so all pooled candidates are ranked on one scale (the last score counts).
- select: `planner.select` with the request's policy; rejected candidates are never eligible.
- outcome: `status` is `ok`, `no_candidates` (nothing generated), `no_executable_candidate` (then
  `chosen`/`chosen_sql` are None and `errors` lists every candidate's error), or `chosen_not_executable`
  (only `rerank`, which skips the check, can pick a candidate that fails: the error is listed).
  `execute=True` puts a bounded preview of the chosen SQL's rows in `plan.preview`.
- accounting: per-stage `timings_ms` (route, generate, normalize, execute, discriminate, select, total),
  token usage and cost per model (`ModelSpec.cost`), the route decision.
- deadline: a per-request deadline bounds the whole plan (`deadline_s=None`: `limits.deadline_s`;
  `math.inf`: none, as the CLI does by default); it is checked between stages, between
  candidates and between cascade steps (a model call in progress is not interrupted) and raises
  `DeadlineExceeded`, which the API maps to 504.

Hooks: `Planner.on_plan` callbacks receive `(plan, route_context)` after each plan; `Planner.on_feedback`
callbacks receive `(plan, correct, corrected_sql)`. Exceptions in hooks are logged, never raised.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from core.model import (
    ErrorKind,
    ExecutionResult,
    Plan,
    Question,
    RouteDecision,
    ScoredCandidate,
    TokenUsage,
)
from core.specs import ModelSpec
from discriminators.base import DiscriminationRequest
from generators.base import GenerationRequest, SamplingParams
from planner.config import Config, known_backends, known_routers, load_config
from planner.examples import few_shot_examples
from planner.normalize import CandidatePool
from planner.select import POLICIES, executable
from planner.select import select as run_policy
from routing.router import FixedRouter, RouteContext, Router

log = logging.getLogger(__name__)

STAGES = ("route", "generate", "normalize", "execute", "discriminate", "select", "total")
CANDIDATE_PREVIEW_ROWS = 3  # rows kept per candidate execution in the plan (the chosen one's preview has more)


class DeadlineExceeded(TimeoutError):
    """The plan did not finish within its deadline."""

    def __init__(self, stage: str, elapsed_s: float, deadline_s: float):
        self.stage, self.elapsed_s, self.deadline_s = stage, elapsed_s, deadline_s
        super().__init__(f"deadline of {deadline_s:g}s exceeded at stage {stage!r} after {elapsed_s:.2f}s")


class PlanRequestError(ValueError):
    """The request asks for something the configuration does not have (policy, pair, router, n)."""


class _Clock:
    def __init__(self, deadline_s: float | None):
        self.t0 = time.monotonic()
        self.deadline_s = deadline_s
        self.timings: dict[str, float] = {s: 0.0 for s in STAGES}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float | None:
        return None if self.deadline_s is None else self.deadline_s - self.elapsed()

    def check(self, stage: str) -> None:
        if self.deadline_s is not None and self.elapsed() > self.deadline_s:
            raise DeadlineExceeded(stage, self.elapsed(), self.deadline_s)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.check(name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += (time.perf_counter() - t) * 1000.0


class ModelSlots:
    """The checkpoints of one role, as the pipeline uses them.

    One switchable `CheckpointPool` per role holds every declared spec of the role; its active checkpoint
    (initially the role's model in the first pair) serves every pair that names that default model, and
    `PUT /generators|discriminators/active` switches it at run time. A pair naming another model (e.g. the
    strong step of a cascade) gets that model from its own pool, loaded lazily on first use.
    """

    def __init__(self, role: str, specs: dict[str, ModelSpec], default: str):
        from planner.checkpoints import CheckpointPool

        self.role, self.specs, self.default = role, specs, default
        self.pool = CheckpointPool(role, specs, default)
        self._extra: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _pool_for(self, name: str):
        if name == self.default:
            return self.pool
        with self._lock:
            if name not in self._extra:
                from planner.checkpoints import CheckpointPool

                if name not in self.specs:
                    raise PlanRequestError(f"unknown {self.role} {name!r}; known: {', '.join(self.specs)}")
                self._extra[name] = CheckpointPool(self.role, {name: self.specs[name]}, name)
            return self._extra[name]

    @contextlib.contextmanager
    def acquire(self, name: str) -> Iterator[tuple[str, Any]]:
        """Pin the checkpoint serving `name` for the duration: yields (checkpoint name, backend)."""
        with self._pool_for(name).acquire() as (ckpt, backend):
            yield ckpt, backend

    @property
    def active(self) -> str:
        return self.pool.active

    def switch(self, name: str) -> None:
        self.pool.switch(name)

    def list(self) -> list[dict[str, Any]]:
        return self.pool.list()

    def spec_of(self, checkpoint: str) -> ModelSpec:
        return self.specs.get(checkpoint) or self.specs[self.default]

    def loaded(self) -> bool:
        """Whether the active checkpoint of the switchable pool is loaded."""
        return bool(self.pool.is_loaded(self.pool.active))

    def warmup(self) -> None:
        """Load the active checkpoint now."""
        self.pool.load()


def _with_budget(spec: ModelSpec, budget: int) -> ModelSpec:
    """The discriminator spec with the configured reasoning budget filled in when the spec sets none."""
    if "budget" in spec.options or "max_new_tokens" in spec.options:
        return spec
    return spec.model_copy(update={"options": {**spec.options, "budget": budget}})


def _usage_key(u: dict, model: str, role: str, spec: ModelSpec) -> TokenUsage:
    key = (model, role)
    if key not in u:
        u[key] = (TokenUsage(model=model, role=role), spec)
    return u[key][0]


def _error_line(i: int, sc: ScoredCandidate) -> str:
    c = sc.candidate
    if c.rejected:
        return f"candidate {i} ({c.source}): rejected: {c.rejected}"
    ex = sc.execution
    if ex is None:
        return f"candidate {i} ({c.source}): not executed"
    return f"candidate {i} ({c.source}): {ex.error_kind or 'error'}: {ex.error or 'failed'}"


class Planner:
    """Plans questions end to end. Thread-safe: the service calls `plan` from several worker threads."""

    def __init__(self, config: Config, *, registry=None, executor=None, engine=None):
        from sqlbox.executor import Executor

        self.config = config
        if config.limits.torch_threads:
            import torch

            torch.set_num_threads(config.limits.torch_threads)
        known_backends()  # import every backend so the checkpoint pools can create them
        if registry is None:
            registry = build_registry(config)
        self.registry = registry
        lim = config.limits
        self.executor = executor or Executor(registry, engine=lim.engine, timeout_s=lim.exec_timeout_s,
                                             max_rows=lim.max_rows, preview_rows=lim.preview_rows)
        self.engine = engine  # SQLAlchemy engine for routers that keep state (bandit)
        first = next(iter(config.pairs.values()))
        disc_specs = {k: _with_budget(v, config.defaults.reasoning_budget) for k, v in config.discriminators.items()}
        self.generators = ModelSlots("generator", dict(config.generators), first.generator)
        self.discriminators = ModelSlots("discriminator", disc_specs, first.discriminator)
        self.on_plan: list[Callable[[Plan, RouteContext], None]] = []
        self.on_feedback: list[Callable[[Plan, bool | None, str | None], None]] = []
        self._routers: dict[str, Router] = {}
        self._router_lock = threading.Lock()
        self._prompts: dict[str, str] = {}
        try:
            self.router()  # build the configured router now: a misconfiguration fails at startup, not per request
        except PlanRequestError as e:
            from planner.config import ConfigError

            raise ConfigError(f"router.name: {e}") from None

    @classmethod
    def from_config(cls, config: Config | str | None = None, **kw) -> Planner:
        """A planner for a Config, a config file path, or (None) the default configuration."""
        if not isinstance(config, Config):
            config = load_config(config)
        return cls(config, **kw)

    # ------------------------------------------------------------------ routing helpers
    def router(self, name: str | None = None) -> Router:
        """The router instance of that name (created once from the config's parameters)."""
        name = name or self.config.router.name
        with self._router_lock:
            if name not in self._routers:
                routers = known_routers()
                if name not in routers:
                    raise PlanRequestError(f"unknown router {name!r}; known: {', '.join(routers.names())}")
                factory = routers.get(name)
                params = self.config.router_params(name)
                try:
                    self._routers[name] = factory(**_fill_kwargs(factory, params, engine=self.engine,
                                                                 pairs=self.config.pairs, models=self.config.models))
                except Exception as e:  # noqa: BLE001 - e.g. carrot without a trained artifact
                    raise PlanRequestError(f"router {name!r} is not usable with this configuration: "
                                           f"{type(e).__name__}: {e}") from e
            return self._routers[name]

    def schema_prompt(self, db_id: str) -> str:
        if db_id not in self._prompts:
            from sqlbox.schema import schema_to_prompt

            d = self.config.defaults
            self._prompts[db_id] = schema_to_prompt(self.registry.schema(db_id), sample_rows=d.schema_sample_rows,
                                                    max_tokens=d.schema_max_tokens)
        return self._prompts[db_id]

    def grammar(self, db_id: str) -> str | None:
        """The schema grammar of `db_id` for constrained generators (generators.grammar; None for a dialect
        other than SQLite/DuckDB's shared SELECT syntax)."""
        if self.config.defaults.dialect not in ("sqlite", "duckdb"):
            return None
        key = f"grammar:{db_id}"
        if key not in self._prompts:
            from generators.grammar import sql_grammar

            self._prompts[key] = sql_grammar(self.registry.schema(db_id))
        return self._prompts[key]

    def few_shot(self, question: Question) -> list[tuple[str, str]]:
        """Few-shot examples: retrieved by masked-question similarity (planner.fewshot) when
        `defaults.few_shot_retrieval`, else the database's own (planner.examples)."""
        d = self.config.defaults
        if d.few_shot <= 0:
            return []
        if d.few_shot_retrieval:
            from planner.fewshot import retrieve

            try:
                return retrieve(question.text, question.db_id, self.registry.schema(question.db_id), d.few_shot)
            except (ImportError, OSError, RuntimeError) as e:  # no embedder installed / unreadable store
                log.warning("few-shot retrieval unavailable (%s: %s); using the database's own examples",
                            type(e).__name__, e)
        return few_shot_examples(question.db_id, d.few_shot)

    def route_context(self, question: Question) -> RouteContext:
        from sqlbox.schema import schema_features

        schema = self.registry.schema(question.db_id)  # raises UnknownDatabase
        return RouteContext(question=question, pairs=dict(self.config.pairs), models=self.config.models,
                            schema_features=schema_features(schema), schema_text=self.schema_prompt(question.db_id))

    # ------------------------------------------------------------------ the plan
    def plan(self, question: Question, *, n: int | None = None, policy: str | None = None, pair: str | None = None,
             router: str | None = None, execute: bool = False, deadline_s: float | None = None) -> Plan:
        cfg = self.config
        n = cfg.defaults.n if n is None else n
        policy = policy or cfg.defaults.policy
        if not question.text or not question.text.strip():
            raise PlanRequestError("question: must not be empty")
        if not 1 <= n <= cfg.limits.n_max:
            raise PlanRequestError(f"n: must be between 1 and {cfg.limits.n_max}, got {n}")
        if policy not in POLICIES:
            raise PlanRequestError(f"policy: unknown policy {policy!r}; known: {', '.join(POLICIES.names())}")
        if pair is not None and router is not None:
            raise PlanRequestError("give either `pair` or `router`, not both")
        if pair is not None and pair not in cfg.pairs:
            raise PlanRequestError(f"pair: unknown pair {pair!r}; known: {', '.join(cfg.pairs)}")
        if deadline_s is None:
            deadline_s = cfg.limits.deadline_s
        clock = _Clock(deadline_s)

        with clock.stage("route"):
            ctx = self.route_context(question)
            rtr: Router = FixedRouter(pair=pair) if pair is not None else self.router(router)
            try:
                decision: RouteDecision = rtr.decide(ctx)
            except (ValueError, KeyError) as e:
                raise PlanRequestError(f"router {getattr(rtr, 'name', router)!r} could not decide: {e}") from e
            steps = list(decision.steps) or [decision.pair]
            for s in steps:
                if s not in cfg.pairs:
                    raise PlanRequestError(f"router {decision.router!r} chose unknown pair {s!r}")

        plan = Plan(question=question, policy=policy, route=decision.model_copy(deep=True))
        plan.route.steps = list(steps)  # the planned ladder while it runs (routers read it in should_escalate)
        pool = CandidatePool(dialect=cfg.defaults.dialect)
        scored: list[ScoredCandidate] = []
        usage: dict[tuple[str, str], tuple[TokenUsage, ModelSpec]] = {}
        ran: list[str] = []
        escalations: list[str] = []
        gen_info: dict[str, Any] = {"constrained": [], "notes": []}
        for k, pair_name in enumerate(steps):
            p = cfg.pairs[pair_name]
            ran.append(pair_name)
            self._run_step(question, p.generator, p.discriminator, n, policy, pool, scored, usage, clock, gen_info)
            with clock.stage("select"):
                self._select(plan, scored, policy, usage, ran)
            if k + 1 < len(steps):
                clock.check("route")
                esc, why = rtr.should_escalate(plan, k)
                if not esc:
                    break
                escalations.append(f"after {pair_name}: {why}" if why else f"after {pair_name}")
        plan.route.steps = list(ran)  # now: the pairs actually run, in order
        if len(steps) > 1:
            plan.route.details["planned_steps"] = list(steps)
        if escalations:
            plan.route.details["escalations"] = escalations
        plan.route.details["constrained"] = gen_info["constrained"]  # generators that sampled under the grammar
        if gen_info["notes"]:
            plan.route.details["generation_notes"] = gen_info["notes"]  # e.g. a server refused the grammar
        plan.timings_ms = {s: round(v, 3) for s, v in clock.timings.items()}
        plan.timings_ms["total"] = round(clock.elapsed() * 1000.0, 3)

        if execute and plan.chosen is not None:
            ch = plan.candidates[plan.chosen].execution
            if ch is not None and ch.ok:
                plan.preview = ch.model_copy(deep=True)
        for sc in plan.candidates:  # keep plans small: a few rows per candidate
            if sc.execution is not None and len(sc.execution.rows) > CANDIDATE_PREVIEW_ROWS:
                sc.execution.rows = sc.execution.rows[:CANDIDATE_PREVIEW_ROWS]
        for hook in list(self.on_plan):
            try:
                hook(plan, ctx)
            except Exception:  # noqa: BLE001 - a logging hook must never fail a plan
                log.exception("on_plan hook %r failed", hook)
        return plan

    def _run_step(self, question: Question, gen_name: str, disc_name: str, n: int, policy: str,
                  pool: CandidatePool, scored: list[ScoredCandidate], usage: dict, clock: _Clock,
                  gen_info: dict | None = None) -> None:
        d = self.config.defaults
        prompt = self.schema_prompt(question.db_id)
        with clock.stage("generate"):
            req = GenerationRequest(question=question.text, schema=prompt, evidence=question.evidence,
                                    dialect=d.dialect, few_shot=self.few_shot(question),
                                    grammar=self.grammar(question.db_id),
                                    params=SamplingParams(n=n, temperature=d.temperature, top_p=d.top_p,
                                                          max_tokens=d.max_tokens, seed=d.seed))
            with self.generators.acquire(gen_name) as (ckpt, backend):
                res = backend.generate(req)
            if gen_info is not None:
                if res.constrained:
                    gen_info["constrained"].append(gen_name)
                gen_info["notes"] += [f"{gen_name}: {x}" for x in res.notes]
            spec = self.generators.spec_of(ckpt)
            u = _usage_key(usage, ckpt, "generator", spec)
            u.prompt_tokens += res.prompt_tokens
            u.completion_tokens += res.completion_tokens
            u.calls += 1
            source = f"{gen_name}:{ckpt}" if ckpt != gen_name else gen_name
        with clock.stage("normalize"):
            new = pool.add_many(list(res.sqls), source=source)
            for i, c in enumerate(pool.candidates):
                if i < len(scored):
                    scored[i].candidate = c
                else:
                    scored.append(ScoredCandidate(candidate=c))
        with clock.stage("execute"):
            for i in new:
                clock.check("execute")
                sc = scored[i]
                c = sc.candidate
                if c.rejected:
                    sc.execution = ExecutionResult(ok=False, error_kind=ErrorKind.REJECTED, error=c.rejected,
                                                   engine=self.config.limits.engine)
                else:
                    sc.execution = self.executor.execute(question.db_id, c.sql, dialect=c.dialect)
        with clock.stage("discriminate"):
            if policy == "vote":
                return
            if policy == "rerank":
                todo = [i for i, sc in enumerate(scored) if not sc.candidate.rejected]
            else:
                todo = [i for i, sc in enumerate(scored) if executable(sc)]
            todo = [i for i in todo if not any(s.discriminator == disc_name for s in scored[i].scores)]
            if not todo:
                return
            dreq = DiscriminationRequest(question=question.text, schema=prompt, evidence=question.evidence,
                                         sqls=[scored[i].candidate.sql for i in todo],
                                         executions=[scored[i].execution for i in todo])
            with self.discriminators.acquire(disc_name) as (ckpt, backend):
                scores = backend.score(dreq)
            if len(scores) != len(todo):
                from core.errors import BackendError

                raise BackendError(f"discriminator {disc_name!r} returned {len(scores)} scores for {len(todo)} SQLs")
            spec = self.discriminators.spec_of(ckpt)
            u = _usage_key(usage, ckpt, "discriminator", spec)
            for i, s in zip(todo, scores, strict=True):
                s = s.model_copy(update={"discriminator": disc_name, "checkpoint": s.checkpoint or ckpt})
                scored[i].scores.append(s)
                u.prompt_tokens += s.prompt_tokens
                u.completion_tokens += s.completion_tokens
            u.calls += 1

    def _select(self, plan: Plan, scored: list[ScoredCandidate], policy: str, usage: dict, ran: list[str]) -> None:
        """(Re)compute the plan's outcome from the pooled candidates (called after every cascade step)."""
        eligible = [i for i, sc in enumerate(scored) if not sc.candidate.rejected]
        for sc in scored:
            sc.selection_score = None
            sc.cluster = None
        sub = [scored[i] for i in eligible]
        j, why = run_policy(policy, sub) if sub else (None, "no candidates")
        plan.candidates = scored
        plan.errors = []
        if not scored:
            plan.status, plan.chosen, plan.chosen_sql = "no_candidates", None, None
            plan.reason = "the generator produced no candidates"
        elif j is None or not any(executable(sc) for sc in scored):
            plan.status, plan.chosen, plan.chosen_sql = "no_executable_candidate", None, None
            plan.reason = f"no candidate executes ({len(scored)} tried; see errors)"
            plan.errors = [_error_line(i, sc) for i, sc in enumerate(scored)]
        else:
            i = eligible[j]
            plan.chosen, plan.chosen_sql = i, scored[i].candidate.sql
            if executable(scored[i]):
                plan.status, plan.reason = "ok", why
            else:
                plan.status = "chosen_not_executable"
                plan.reason = f"{why}; WARNING: the chosen candidate does not execute (policy {policy} skips the check)"
                plan.errors = [_error_line(i, scored[i])]
        plan.usage = []
        total = 0.0
        for u, spec in usage.values():
            u.cost = spec.cost(u.prompt_tokens, u.completion_tokens)
            total += u.cost
            plan.usage.append(u.model_copy())
        plan.total_cost = total
        last = self.config.pairs[ran[-1]]
        if plan.route is not None:  # the pair whose candidates/discriminator decided so far
            plan.route.pair, plan.route.generator, plan.route.discriminator = ran[-1], last.generator, last.discriminator
            plan.route.escalated = len(ran) > 1

    # ------------------------------------------------------------------ feedback
    def feedback(self, plan: Plan, correct: bool | None, corrected_sql: str | None = None) -> None:
        """Forward a correctness label to the router that made the plan's decision, then the hooks."""
        if correct is not None and plan.route is not None:
            try:
                rtr = self.router(plan.route.router) if plan.route.router in known_routers() else None
            except PlanRequestError:
                rtr = None
            if rtr is not None:
                rtr.update(self.route_context(plan.question), plan.route.pair, bool(correct), plan.total_cost)
        for hook in list(self.on_feedback):
            try:
                hook(plan, correct, corrected_sql)
            except Exception:  # noqa: BLE001
                log.exception("on_feedback hook %r failed", hook)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.close()


def build_registry(config: Config):
    """The demo database (always) plus every entry of `config.databases` (files or folders; the
    SQLARBITER_DATABASES environment variable is already folded into it by the config loader)."""
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.demo import DEMO_DB_ID, build_demo

    reg = DatabaseRegistry()
    reg.register(DEMO_DB_ID, build_demo())
    for entry in config.databases:
        _register(reg, entry)
    return reg


def _register(registry, entry: str) -> None:
    from pathlib import Path

    p = Path(entry).expanduser()
    if p.is_dir():
        registry.register_dir(p)
    elif p.is_file():
        registry.register(p.stem, p)
    else:
        raise FileNotFoundError(f"databases: {entry!r} is neither a database file nor a directory")


def _fill_kwargs(factory: Callable, params: dict[str, Any], **available: Any) -> dict[str, Any]:
    """Pass `available` extras (engine, pairs, models) to a router factory that declares them."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return params
    out = dict(params)
    for k, v in available.items():
        if k in sig.parameters and k not in out and v is not None:
            out[k] = v
    return out
