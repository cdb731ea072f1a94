"""The planning pipeline: question -> route -> generate -> normalize -> execute -> discriminate -> select -> Plan.

What it owns: `Planner` (built from a `planner.config.Config`), `DeadlineExceeded`, `PlanRequestError`, and
the rules of one plan:

- route: the configured router (default `fixed`: the first pair), or the request's `router`, or a fixed
  `pair`. A decision may list several steps (a cascade, cheap first); steps run in order, candidates of all
  steps are pooled (never thrown away), and after each step the router's `should_escalate(plan, step, steps)`
  decides whether the next one runs; the pipeline records the signals it returns in
  `plan.route.details["signals"]`.
- state: the ranker's artifact and cross-question priors belong to the Planner (`ranker_state`) and reach
  the policies through `planner.select.SelectionContext`.
- generate: N samples from the step's generator (`GenerationRequest` with the schema prompt of the
  registered database), through its `CheckpointPool`, so a checkpoint switch never interrupts a request.
- normalize: `planner.normalize.CandidatePool` (guard, canonicalize, de-duplicate; rejected candidates are
  kept with their reason and never run).
- execute: every new candidate through the sandboxed `sqlbox.executor.Executor` (DuckDB by default).
- execute / discriminate / select run the shared stage units of `planner.stages` (eval replay runs the
  same ones).
- discriminate: the step's discriminator scores the candidates the policy can use, derived from the
  policy's registry metadata (`planner.stages.score_targets`): all non-rejected ones for a policy that is
  not executable-only (`rerank`), the executable ones for `check-rerank`/`hybrid` (scores of the others
  cannot matter), none for a policy that needs no scores (`vote`, `first`). In a cascade a later, different discriminator also scores the earlier
  steps' candidates, so all pooled candidates are ranked on one scale (the last score counts).
- select: `planner.select` with the request's policy; rejected candidates are never eligible.
- outcome: `status` is `ok`, `no_candidates` (nothing generated), `no_executable_candidate` (then
  `chosen`/`chosen_sql` are None and `errors` lists every candidate's error), or `chosen_not_executable`
  (only `rerank` and `first`, which skip the check, can pick a candidate that fails: the error is listed).
  `execute=True` puts a bounded preview of the chosen SQL's rows in `plan.preview`.
- accounting: per-stage `timings_ms` (route, generate, normalize, execute, discriminate, select, total),
  token usage and cost per model (`ModelSpec.cost`), the route decision.
- deadline: a per-request deadline bounds the whole plan (`deadline_s=None`: `limits.deadline_s`;
  `math.inf`: none, as the CLI does by default); it is checked between stages, between
  candidates and between cascade steps (a model call in progress is not interrupted) and raises
  `DeadlineExceeded`, which the API maps to 504.

Hooks: `Planner.plan(..., progress=fn)` calls `fn` as each stage starts and ends (the service streams
these as server-sent events: `POST /plan/stream`); `Planner.on_plan` callbacks receive `(plan, route_context)` after each plan; `Planner.on_feedback`
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
    DiscriminationStep,
    Plan,
    Question,
    RouteDecision,
    SchemaLinking,
    ScoredCandidate,
    TokenUsage,
)
from core.specs import ModelSpec
from generators.base import GenerationRequest, GenerationResult, SamplingParams
from planner import ranker, stages
from planner.config import (
    DISCRIMINATE_RESERVE_S,
    GENERATE_RESERVE_S,
    Config,
    discriminate_s_for,
    generate_s_for,
    known_backends,
    known_routers,
    load_config,
    reasoning_budget_for,
)
from planner.examples import few_shot_examples
from planner.normalize import CandidatePool
from planner.request import PlanArgs, PlanRequestError, ValidatedRequest, validate
from planner.select import SelectionContext, check_policy, executable, needs_scores, select
from routing.router import FixedRouter, RouteContext, Router

log = logging.getLogger(__name__)

STAGES = ("route", "generate", "normalize", "execute", "discriminate", "select", "total")
CANDIDATE_PREVIEW_ROWS = 3  # rows kept per candidate execution in the plan (the chosen one's preview has more)


class DeadlineExceeded(TimeoutError):
    """The plan did not finish within its deadline."""

    def __init__(self, stage: str, elapsed_s: float, deadline_s: float):
        self.stage, self.elapsed_s, self.deadline_s = stage, elapsed_s, deadline_s
        super().__init__(f"deadline of {deadline_s:g}s exceeded at stage {stage!r} after {elapsed_s:.2f}s")


class _Clock:
    def __init__(self, deadline_s: float | None, progress: Callable[[dict[str, Any]], None] | None = None):
        self.t0 = time.monotonic()
        self.deadline_s = deadline_s
        self.timings: dict[str, float] = {s: 0.0 for s in STAGES}
        self.progress = progress

    def _report(self, stage: str, state: str, ms: float | None = None) -> None:
        if self.progress is None:
            return
        try:
            self.progress({"stage": stage, "state": state, "ms": ms, "elapsed_ms": round(self.elapsed() * 1000.0, 3)})
        except Exception:  # a progress listener must never fail a plan
            log.exception("progress callback failed")

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
        self._report(name, "start")
        t = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            ms = (time.perf_counter() - t) * 1000.0
            self.timings[name] += ms
            self._report(name, "done" if ok else "failed", round(ms, 3))


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


def _with_budget(spec: ModelSpec, config: Config) -> ModelSpec:
    """The discriminator spec with the configured reasoning budget (`reasoning_budget_for`: by device unless
    `defaults.reasoning_budget` is set) filled in when the spec sets none."""
    if "budget" in spec.options or "max_new_tokens" in spec.options:
        return spec
    return spec.model_copy(update={"options": {**spec.options, "budget": reasoning_budget_for(config, spec)}})


def _budget_of(backend: Any, default: int | None) -> int | None:
    """The token budget a discriminator backend runs with (through the check wrapper), else `default`."""
    b = getattr(backend, "budget", None)
    if b is None and hasattr(backend, "inner"):
        b = getattr(backend.inner, "budget", None)
    return int(b) if isinstance(b, int) else default


_usage_key = stages.usage_entry


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

    def __init__(self, config: Config, *, registry=None, executor=None, engine=None, start_sandbox: bool = False):
        """`start_sandbox`: start a sandbox worker now, in the background, beside the rest of the start-up (a
        one-shot command's first plan; the service warms its pool itself)."""
        from sqlbox.executor import Executor

        self.config = config
        if registry is None:
            registry = build_registry(config)
        self.registry = registry
        lim = config.limits
        self.executor = executor or Executor(registry, engine=lim.engine, timeout_s=lim.exec_timeout_s,
                                             max_rows=lim.max_rows, preview_rows=lim.preview_rows,
                                             isolation=lim.isolation, workers=lim.sandbox_workers,
                                             address_space_mb=lim.sandbox_memory_mb)
        if start_sandbox and self.executor.pool is not None:
            self.executor.pool.start_in_background(1)
        if config.limits.torch_threads:
            import torch

            torch.set_num_threads(config.limits.torch_threads)
        known_backends()  # import every backend so the checkpoint pools can create them
        self.engine = engine  # SQLAlchemy engine for routers that keep state (bandit)
        first = next(iter(config.pairs.values()))
        disc_specs = {k: _with_budget(v, config) for k, v in config.discriminators.items()}
        self.generators = ModelSlots("generator", dict(config.generators), first.generator)
        self.discriminators = ModelSlots("discriminator", disc_specs, first.discriminator)
        self.on_plan: list[Callable[[Plan, RouteContext], None]] = []
        self.on_feedback: list[Callable[[Plan, bool | None, str | None], None]] = []
        self._routers: dict[str, Router] = {}
        self._step_discs: dict[tuple[str, str], Any] = {}  # the process reward's discriminators (planner.stepwise)
        self._router_lock = threading.Lock()
        self._prompts: dict[str, str] = {}
        self._links: dict[tuple, Any] = {}  # insertion-ordered; the oldest goes first past 256
        self._full_tokens: dict[str, int] = {}
        self._link_lock = threading.Lock()
        self.ranker_state = ranker.RankerState()  # this Planner's ranker artifact and priors (never shared)
        if config.defaults.ranker:
            try:
                self.reload_ranker(config.defaults.ranker)
            except PlanRequestError as e:
                from planner.config import ConfigError

                raise ConfigError(f"defaults.ranker: {e}") from None
        name = config.router.name  # built now: a misconfiguration fails at startup (a config error), not per request
        try:
            self._routers[name] = self._build_router(name)
        except Exception as e:  # e.g. carrot without a trained artifact
            from planner.config import ConfigError

            raise ConfigError(f"router.name: router {name!r} is not usable with this configuration: "
                              f"{type(e).__name__}: {e}") from e

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
                try:
                    self._routers[name] = self._build_router(name)
                except Exception as e:  # e.g. carrot without a trained artifact
                    raise PlanRequestError(f"router {name!r} is not usable with this configuration: "
                                           f"{type(e).__name__}: {e}") from e
            return self._routers[name]

    def _build_router(self, name: str) -> Router:
        """A new router `name` with the config's parameters (checked against it by the config loader)."""
        factory = known_routers().get(name)
        return factory(**_fill_kwargs(factory, self.config.router_params(name), engine=self.engine,
                                      pairs=self.config.pairs, models=self.config.models))

    @contextlib.contextmanager
    def step_discriminator(self, name: str, mode: str = "logit", kind: str = "cte") -> Iterator[tuple[str, Any]]:
        """The process reward's discriminator: discriminator `name`'s spec with the step prompt of step kind `kind`
        (`discriminators.step.step_discriminator`), built once per (name, mode, kind) and kept; yields (name,
        backend)."""
        from discriminators.step import step_discriminator

        key = (name, mode, kind)
        with self._router_lock:
            if key not in self._step_discs:
                if name not in self.discriminators.specs:
                    raise PlanRequestError(f"unknown discriminator {name!r}; known: {', '.join(self.discriminators.specs)}")
                self._step_discs[key] = step_discriminator(self.discriminators.specs[name], mode=mode, kind=kind)
            backend = self._step_discs[key]
        yield name, backend

    def dialect(self, db_id: str) -> str:
        """The SQL dialect candidates for `db_id` are written in: a server database's own dialect
        (PostgreSQL, MySQL), else the configured `defaults.dialect` (files)."""
        info = self.registry.get(db_id)
        return info.dialect if getattr(info, "target", None) is not None else self.config.defaults.dialect

    def link_schema(self, question: Question):
        """The linked schema subset for this question (`sqlbox.linking.LinkResult`), or None when linking is
        off, or `auto` and the whole schema fits `schema_max_tokens`. Cached per (db, question, evidence)."""
        d = self.config.defaults
        if d.schema_linking == "off" or (d.schema_linking == "auto" and d.schema_max_tokens is None):
            return None
        key = (question.db_id, question.text, question.evidence, d.schema_linking, d.linking_top_k)
        with self._link_lock:
            if key in self._links:
                return self._links[key]
        from sqlbox.index import schema_index
        from sqlbox.linking import link
        from sqlbox.schema import approx_tokens, schema_to_prompt

        schema = self.registry.schema(question.db_id)
        if d.schema_linking == "auto":
            if question.db_id not in self._full_tokens:
                self._full_tokens[question.db_id] = approx_tokens(schema_to_prompt(schema, sample_rows=d.schema_sample_rows))
            if self._full_tokens[question.db_id] <= d.schema_max_tokens:
                return None
        from planner.warmup import INDEX_WAIT_S

        # never waits for an index build past INDEX_WAIT_S: its lexical stage, or the whole schema (issue 25)
        idx = schema_index(self.registry.get(question.db_id), schema, wait=False, wait_s=INDEX_WAIT_S)
        if idx is None:
            return None
        res = link(question.text, schema, idx, top_k=d.linking_top_k, budget=d.schema_max_tokens,
                   evidence=question.evidence)
        if res.mode != "embeddings":  # linked on an index still being built: not cached
            return res
        with self._link_lock:
            if len(self._links) >= 256:
                self._links.pop(next(iter(self._links)))
            self._links[key] = res
        return res

    def schema_prompt(self, db_id: str, question: Question | None = None) -> str:
        """The schema prompt: the linked subset for `question` when linking applies, else the whole schema
        truncated to `schema_max_tokens`."""
        if question is not None:
            linked = self.link_schema(question)
            if linked is not None:
                return linked.prompt
        if db_id not in self._prompts:
            from sqlbox.schema import schema_to_prompt

            d = self.config.defaults
            self._prompts[db_id] = schema_to_prompt(self.registry.schema(db_id), sample_rows=d.schema_sample_rows,
                                                    max_tokens=d.schema_max_tokens)
        return self._prompts[db_id]

    def grammar(self, db_id: str) -> str | None:
        """The schema grammar of `db_id` for constrained generators (generators.grammar; None for a dialect
        other than SQLite/DuckDB's shared SELECT syntax)."""
        if self.dialect(db_id) not in ("sqlite", "duckdb"):
            return None
        key = f"grammar:{db_id}"
        if key not in self._prompts:
            from generators.grammar import sql_grammar

            self._prompts[key] = sql_grammar(self.registry.schema(db_id))
        return self._prompts[key]

    def few_shot(self, question: Question, info: dict | None = None, k: int | None = None) -> list[tuple[str, str]]:
        """`k` few-shot examples (None: `defaults.few_shot`): retrieved by masked-question similarity
        (planner.fewshot) when `defaults.few_shot_retrieval`, else the database's own (planner.examples)."""
        d = self.config.defaults
        k = d.few_shot if k is None else k
        if k <= 0:
            return []
        if d.few_shot_retrieval:
            from planner.fewshot import retrieve

            try:
                return retrieve(question.text, question.db_id, self.registry.schema(question.db_id), k, info=info)
            except (ImportError, OSError, RuntimeError) as e:  # no embedder installed / unreadable store
                log.warning("few-shot retrieval unavailable (%s: %s); using the database's own examples",
                            type(e).__name__, e)
        return few_shot_examples(question.db_id, k)

    def route_context(self, question: Question) -> RouteContext:
        from sqlbox.schema import schema_features

        schema = self.registry.schema(question.db_id)  # raises UnknownDatabase
        feats = schema_features(schema)
        linked = self.link_schema(question)
        if linked is not None:  # router features may use the linked subset
            feats.update(linked_tables=len(linked.tables), linked_columns=sum(map(len, linked.columns.values())))
        return RouteContext(question=question, pairs=dict(self.config.pairs), models=self.config.models,
                            schema_features=feats, schema_text=self.schema_prompt(question.db_id, question))

    # ------------------------------------------------------------------ the plan
    def validate(self, request: Any) -> ValidatedRequest:
        """The one check of a plan request (`planner.request`): a `PlanArgs` or the API's `PlanRequest` in, a
        `ValidatedRequest` with the configured defaults filled in out; raises `PlanRequestError` (422) for a
        broken rule, `UnknownDatabase` (404) for an unknown database."""
        return validate(self, request)

    def plan(self, question: Question, *, n: int | None = None, policy: str | None = None, pair: str | None = None,
             router: str | None = None, execute: bool = False, deadline_s: float | None = None,
             abstain_below: float | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> Plan:
        """Plan one question: `run(validate(...))`. `progress`, when given, is called from this thread with
        `{"stage", "state": "start"|"done"|"failed", "ms" (the stage's duration, on done/failed), "elapsed_ms"}`
        as each stage starts and ends (failed: it raised) (a cascade repeats the model stages per step); its exceptions are logged."""
        v = self.validate(PlanArgs(question=question, n=n, policy=policy, pair=pair, router=router, execute=execute,
                                   deadline_s=deadline_s, abstain_below=abstain_below))
        return self.run(v, progress=progress)

    def run(self, request: ValidatedRequest, *,
            progress: Callable[[dict[str, Any]], None] | None = None) -> Plan:
        """Plan a request that passed `validate` (see `plan`)."""
        cfg = self.config
        question, n, policy, pair, router = request.question, request.n, request.policy, request.pair, request.router
        execute, abstain_below = request.execute, request.abstain_below
        clock = _Clock(request.deadline_s, progress)

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
            check_policy(policy, has_discriminator=all(cfg.pairs[s].discriminator for s in steps))  # PlanRequestError

        plan = Plan(question=question, policy=policy, route=decision.model_copy(deep=True))
        plan.warnings = self.registry.role_warnings(question.db_id)  # an opted-in privileged role says so
        linked = self.link_schema(question)
        if linked is not None:
            plan.linking = SchemaLinking(mode=cfg.defaults.schema_linking, tables=linked.tables, columns=linked.columns,
                                         closure=linked.closure, value_hits=len(linked.value_hits),
                                         prompt_tokens=linked.prompt_tokens, full_tokens=linked.full_tokens,
                                         latency_ms=round(linked.latency_ms, 3))
        pool = CandidatePool(dialect=self.dialect(question.db_id), analyzer=getattr(self.executor, "analyze", None))
        scored: list[ScoredCandidate] = []
        usage: dict[tuple[str, str], tuple[TokenUsage, ModelSpec]] = {}
        ran: list[str] = []
        escalations: list[str] = []
        gen_info: dict[str, Any] = {"constrained": [], "notes": []}
        if decision.router in known_routers() and known_routers().info(decision.router).stepwise:
            # the loop below the question (TRIM, Route-and-Reason): one chain, written step by step, then judged like
            # any candidate
            if decision.router == "r2":
                from planner.r2 import run_r2 as loop
            else:
                from planner.stepwise import run_stepwise as loop

            ran += loop(self, rtr, question, plan, n, policy, pool, scored, usage, clock, gen_info)
            with clock.stage("select"):
                self._select(plan, scored, policy, usage, ran)
            steps = []
        for k, pair_name in enumerate(steps):
            p = cfg.pairs[pair_name]
            ran.append(pair_name)
            self._run_step(question, p.generator, p.discriminator, n, policy, pool, scored, usage, clock, gen_info,
                           shots=p.few_shot)
            with clock.stage("select"):
                self._select(plan, scored, policy, usage, ran)
            if k + 1 < len(steps):
                clock.check("route")
                esc = rtr.should_escalate(plan, k, steps)
                if esc.signals is not None:  # the router's evidence, recorded here (routers never write the plan)
                    plan.route.details.setdefault("signals", []).append(
                        {"step": k, **esc.signals, "escalate": esc.escalate})
                if not esc.escalate:
                    break
                escalations.append(f"after {pair_name}: {esc.reason}" if esc.reason else f"after {pair_name}")
        plan.discrimination = gen_info.get("discrimination", [])
        ranker.apply_abstention(plan, abstain_below)
        self.ranker_state.observe(plan.candidates)  # cross-question evidence for the generators' priors
        plan.route.steps = list(ran)  # now: the pairs actually run, in order
        if len(steps) > 1:
            plan.route.details["planned_steps"] = list(steps)
        if escalations:
            plan.route.details["escalations"] = escalations
        plan.route.details["constrained"] = gen_info["constrained"]  # generators that sampled under the grammar
        if gen_info["notes"]:
            plan.route.details["generation_notes"] = gen_info["notes"]  # e.g. a server refused the grammar
        if gen_info.get("generation"):  # per generator call: its time budget and the samples it dropped (and why)
            plan.route.details["generation"] = gen_info["generation"]
        plan.timings_ms = {s: round(v, 3) for s, v in clock.timings.items()}
        plan.timings_ms["total"] = round(clock.elapsed() * 1000.0, 3)
        from planner.warmup import annotate

        annotate(plan, self, question, gen_info.get("few_shot"), linked)  # what a warm-up would have improved

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
            except Exception:  # a logging hook must never fail a plan
                log.exception("on_plan hook %r failed", hook)
        return plan

    def _run_step(self, question: Question, gen_name: str, disc_name: str, n: int, policy: str,
                  pool: CandidatePool, scored: list[ScoredCandidate], usage: dict, clock: _Clock,
                  gen_info: dict | None = None, generated: tuple[GenerationResult, str] | None = None,
                  shots: int | None = None) -> None:
        """One pair's step: generate N candidates (or take `generated`: a result and its source, already accounted,
        e.g. the step loop's chain), then normalize, execute and discriminate them. `shots`: the pair's few-shot
        count (None: `defaults.few_shot`)."""
        prompt = self.schema_prompt(question.db_id, question)
        if generated is not None:
            res, source = generated
        else:
            res, source = self._generate(question, gen_name, n, prompt, usage, clock, gen_info, shots)
        self._judge(question, disc_name, policy, prompt, res, source, pool, scored, usage, clock, gen_info)

    def _generate(self, question: Question, gen_name: str, n: int, prompt: str, usage: dict, clock: _Clock,
                  gen_info: dict | None, shots: int | None = None) -> tuple[GenerationResult, str]:
        d = self.config.defaults
        with clock.stage("generate"):
            req = GenerationRequest(question=question.text, schema=prompt, evidence=question.evidence,
                                    dialect=self.dialect(question.db_id),
                                    few_shot=self.few_shot(question, None if gen_info is None
                                                           else gen_info.setdefault("few_shot", {}), k=shots),
                                    grammar=self.grammar(question.db_id),
                                    params=SamplingParams(n=n, temperature=d.temperature, top_p=d.top_p,
                                                          max_tokens=d.max_tokens, seed=d.seed))
            budget_s = generate_s_for(self.config, self.generators.spec_of(gen_name))
            req.time_budget_s = budget_s  # seconds of decoding, from the first decoded token
            rem = clock.remaining()
            if rem is not None and rem != float("inf"):  # the plan's deadline bounds the call too
                req.deadline = time.monotonic() + max(rem - GENERATE_RESERVE_S, 0.05)
            with self.generators.acquire(gen_name) as (ckpt, backend):
                res = backend.generate(req)
            if gen_info is not None:
                if res.constrained:
                    gen_info["constrained"].append(gen_name)
                gen_info["notes"] += [f"{gen_name}: {x}" for x in res.notes]
                gen_info.setdefault("generation", []).append(
                    {"generator": gen_name, "samples": len(res.sqls), "time_budget_s": budget_s,
                     "dropped": dict(getattr(res, "dropped", {}) or {})})
            spec = self.generators.spec_of(ckpt)
            u = _usage_key(usage, ckpt, "generator", spec)
            u.prompt_tokens += res.prompt_tokens
            u.completion_tokens += res.completion_tokens
            u.calls += 1
            source = f"{gen_name}:{ckpt}" if ckpt != gen_name else gen_name
        return res, source

    def _judge(self, question: Question, disc_name: str, policy: str, prompt: str, res: GenerationResult, source: str,
               pool: CandidatePool, scored: list[ScoredCandidate], usage: dict, clock: _Clock,
               gen_info: dict | None) -> None:
        d = self.config.defaults
        with clock.stage("normalize"):
            new = pool.add_many(list(res.sqls), source=source, logprobs=getattr(res, "logprobs", None),
                                logprob_tokens=getattr(res, "logprob_tokens", None),  # the ranker's likelihood evidence
                                drops=getattr(res, "drops", None))  # a dropped sample's candidate says why
            for i, c in enumerate(pool.candidates):
                if i < len(scored):
                    scored[i].candidate = c
                else:
                    scored.append(ScoredCandidate(candidate=c))
        with clock.stage("execute"):
            stages.execute(scored, self.executor, question.db_id, indices=new, engine=self.config.limits.engine,
                           check=lambda: clock.check("execute"))
        with clock.stage("discriminate"):
            # scale the work to the disagreement: one representative per result cluster, none when unanimous
            targets = stages.score_targets(scored, policy, scored_by=disc_name)
            splan = stages.scoring_plan(scored, targets, policy, per_cluster=d.score_per_cluster, scored_by=disc_name)
            step = DiscriminationStep(discriminator=disc_name, targets=len(targets), scored=len(splan.indices),
                                      clusters=splan.clusters, per_cluster=d.score_per_cluster, skipped=splan.skipped)
            if gen_info is not None:
                gen_info.setdefault("discrimination", []).append(step)
            job = stages.score_job(scored, splan.indices, question=question.text, schema=prompt,
                                   evidence=question.evidence)
            if job is None:
                stages.copy_representative_scores(scored, splan.copies, disc_name)
                if step.skipped is None and not targets:
                    step.skipped = (f"policy {policy!r} needs no scores" if not needs_scores(policy)
                                    else "no candidate to judge" if not stages.score_targets(scored, policy)
                                    else "every target already scored")
                return
            spec = self.discriminators.spec_of(self.discriminators.active if disc_name == self.discriminators.default
                                               else disc_name)
            step.token_budget = reasoning_budget_for(self.config, spec)
            budget_s = discriminate_s_for(self.config, spec)
            rem = clock.remaining()
            if rem is not None and rem != float("inf"):  # the plan's deadline bounds the call too
                cap = max(rem - DISCRIMINATE_RESERVE_S, 0.05)
                budget_s = cap if budget_s is None else min(budget_s, cap)
            if budget_s is not None:
                step.time_budget_s = round(budget_s, 3)
                job.request.deadline = time.monotonic() + budget_s
            with self.discriminators.acquire(disc_name) as (ckpt, backend):
                step.token_budget = _budget_of(backend, step.token_budget)
                (scores,) = stages.discriminate([job], lambda reqs: [backend.score(r) for r in reqs],
                                                name=disc_name, checkpoint=ckpt)
            stages.copy_representative_scores(scored, splan.copies, disc_name)
            for s in scores:
                step.verdicts[s.verdict_kind or "none"] = step.verdicts.get(s.verdict_kind or "none", 0) + 1
                step.ran_out_time += s.ran_out == "time"
                step.ran_out_tokens += s.ran_out == "tokens"
                step.reasoning_tokens += s.reasoning_tokens or 0
            spec = self.discriminators.spec_of(ckpt)
            u = _usage_key(usage, ckpt, "discriminator", spec)
            for s in scores:
                u.prompt_tokens += s.prompt_tokens
                u.completion_tokens += s.completion_tokens
            u.calls += 1

    def _select(self, plan: Plan, scored: list[ScoredCandidate], policy: str, usage: dict, ran: list[str]) -> None:
        """(Re)compute the plan's outcome from the pooled candidates (called after every cascade step)."""
        auto = self.ranker_state.auto_choice(ran[-1]) if policy == "auto" else None  # per pair (issue 26)
        i, why = stages.select(scored, auto.policy if auto else policy, plan.question.text, ranker=self.ranker_state)
        why = f"auto -> {auto.policy} ({auto.reason}): {why}" if auto else why
        plan.candidates = scored
        plan.errors = []
        if not scored:
            plan.status, plan.chosen, plan.chosen_sql = "no_candidates", None, None
            plan.reason = "the generator produced no candidates"
        elif i is None or not any(executable(sc) for sc in scored):
            plan.status, plan.chosen, plan.chosen_sql = "no_executable_candidate", None, None
            plan.reason = f"no candidate executes ({len(scored)} tried; see errors)"
            plan.errors = [_error_line(i, sc) for i, sc in enumerate(scored)]
        else:
            plan.chosen, plan.chosen_sql = i, scored[i].candidate.sql
            if executable(scored[i]):
                plan.status, plan.reason = "ok", why
            else:
                plan.status = "chosen_not_executable"
                plan.reason = f"{why}; WARNING: the chosen candidate does not execute (policy {policy} skips the check)"
                plan.errors = [_error_line(i, scored[i])]
        ranker.annotate_plan(plan, policy, self.ranker_state)  # confidence of the choice (the cascade may escalate on it)
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
        if correct is not None:
            self.ranker_state.feedback(plan.candidates, plan.chosen, bool(correct))
        self._record_policy_outcome(plan, correct, corrected_sql)
        for hook in list(self.on_feedback):
            try:
                hook(plan, correct, corrected_sql)
            except Exception:  # a feedback hook must never fail the feedback
                log.exception("on_feedback hook %r failed", hook)

    def _record_policy_outcome(self, plan: Plan, correct: bool | None, corrected_sql: str | None) -> None:
        """Evidence for `policy = "auto"` (planner.ranker.policy_labels): the plan's pair and candidates, labelled
        by the feedback (a corrected SQL through its result fingerprint)."""
        fp = None
        if corrected_sql:
            with contextlib.suppress(Exception):
                ex = self.executor.execute(plan.question.db_id, corrected_sql)
                fp = ex.fingerprint if ex.ok else None
        eligible = [i for i, sc in enumerate(plan.candidates) if not sc.candidate.rejected]
        cands = [plan.candidates[i] for i in eligible]
        chosen = eligible.index(plan.chosen) if plan.chosen in eligible else None
        pair = plan.route.pair if plan.route is not None else None
        ctx = SelectionContext(question=plan.question.text, ranker=self.ranker_state)
        picks = {p: select(p, cands, ctx).index for p in ranker.AUTO_CHOICES}
        self.ranker_state.record_policy_outcome(pair, cands, picks, chosen, correct, fp)

    def reload_ranker(self, path: str | None = None):
        """Load the ranker artifact at `path` (default: the configured or last loaded one), like a checkpoint
        swap: later plans use it; a failed load keeps the previous artifact and raises."""
        path = path or self.ranker_state.path or self.config.defaults.ranker
        if not path:
            raise PlanRequestError("no ranker artifact configured (defaults.ranker) or given")
        try:
            return self.ranker_state.load(path)
        except (OSError, ValueError) as e:
            raise PlanRequestError(f"ranker: cannot load {path}: {e}") from e

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.close()


def build_registry(config: Config):
    """The demo database (always) plus every entry of `config.databases` (files or folders; the
    SQLARBITER_DATABASES environment variable is already folded into it by the config loader); server URLs
    register by URL, and their roles are checked at startup (`warn_server_privileges`)."""
    from sqlbox.databases import registry_for

    reg = registry_for(config.databases, privileged=config.privileged_databases)
    warn_server_privileges(reg)
    return reg


def warn_server_privileges(registry) -> None:
    """Check each server database's role now (`DatabaseRegistry.verify`, cached) and say so loudly: a refused
    database (its requests fail with PrivilegeError, HTTP 403) is logged as an error with what to change, an
    opted-in privileged one as a warning; a server that does not answer is checked again on first use."""
    from sqlbox.privileges import PrivilegeError, RoleCheckError

    for db_id in registry.server_ids():
        target = registry.get(db_id).target
        try:
            problems = registry.verify(db_id)
        except PrivilegeError as e:
            log.error("DATABASE %s REFUSED: %s", db_id, e)
            continue
        except RoleCheckError as e:
            log.warning("database %s: %s (checked again on first use)", db_id, e)
            continue
        for w in problems:
            log.warning("DATABASE %s (%s) IS NOT READ-ONLY (opted in by privileged_databases): %s", db_id,
                        target.url, w)


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
