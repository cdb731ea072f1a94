"""The step loop below the question: TRIM's hand-off over SQL written as CTE steps (`routing.trim`).

`run_chain` writes one query step by step (the format: `sqlbox.steps`):

1. the cheap tier continues the prefix (the accepted steps, then the forced `-- ` of the next step's comment) and
   stops at the step boundary (`Generator.continue_step`);
2. the process reward (`planner.prm.ProcessReward`) scores the partial chain: the discriminator's verdict
   probability with the step prompt, and the execution of the partial chain in the sandbox;
3. the policy sees TRIM-Agg's observation (`routing.trim.StepObservation`) and says whether to hand off; then the
   cheap draft is discarded (its tokens still count), the strong tier continues THE SAME prefix for that step only,
   its step is scored too (it enters the product of scores), and control returns to the cheap tier.

The loop ends when a step is the final SELECT, at `max_steps`, or when a step's text cannot be read; then the
caller falls back to the whole-query path and the Plan says why (`ChainRun.fallback`). The finished chain is one
ordinary candidate: the pipeline normalizes, guards, executes, discriminates and selects it like any other.

Every model call, score part and token is recorded (`ChainRun.record()`, the Plan's `route.details["trim"]`):
per step the tier that wrote it, whether it was handed off, the discarded draft, the PRM's parts; per tier the
prompt and decoded tokens, calls and discarded tokens; the PRM's calls and tokens.

`StepMemo` memoises step generations by (tier, prefix) and rewards by (steps): with greedy decoding a study runs
many policies over the same questions and pays for each distinct step once (`eval.routing_live`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generators.base import GenerationRequest, GenerationResult, StepRequest, StepResult
from routing.trim import StepObservation, TrimSettings
from sqlbox.steps import OPENER, StepParseError, parse_chain, step_kind, step_state


@dataclass
class Tier:
    """One side of the hand-off: a pair's generator backend and its step-mode request."""

    pair: str
    generator: str  # the generator's name (usage accounting)
    backend: Any  # has continue_step(StepRequest) -> StepResult
    request: GenerationRequest  # question, schema prompt, few-shot (chain-formatted), dialect, sampling params
    grammar: Callable[[Any], str | None] | None = None  # StepState -> this step's grammar (constrained tiers)


@dataclass
class StepMemo:
    """Step generations keyed by (tier, prefix) and process rewards keyed by the step texts (greedy decoding)."""

    steps: dict[tuple[str, str, str], StepResult] = field(default_factory=dict)  # (pair, request key, prefix)
    rewards: dict[tuple[str, ...], Any] = field(default_factory=dict)  # (db_id, question, *step texts)
    hits: int = 0
    misses: int = 0

    def calls(self) -> dict[str, dict[str, int]]:
        """The distinct model calls behind the memo, by pair: calls, prompt and decoded tokens (what the tiers'
        servers received when the backends are remote: one request per distinct (pair, request, prefix))."""
        out: dict[str, dict[str, int]] = {}
        for (pair, _, _), r in self.steps.items():
            c = out.setdefault(pair, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
            c["calls"] += 1
            c["prompt_tokens"] += r.prompt_tokens
            c["completion_tokens"] += r.completion_tokens
        return out


@dataclass
class TierUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0  # every decoded token, discarded drafts included
    discarded_tokens: int = 0  # decoded tokens of drafts the policy handed off
    calls: int = 0


@dataclass
class ChainRun:
    settings: TrimSettings
    steps: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the accepted step texts
    answer: str | None = None  # a prose trace's SQL (step kind "prose"); a CTE chain's answer is its text
    complete: bool = False
    fallback: str | None = None  # why the chain is not usable (the caller falls back to the whole-query path)
    usage: dict[str, TierUsage] = field(default_factory=dict)  # by pair
    prm_calls: int = 0
    prm_prompt_tokens: int = 0
    prm_completion_tokens: int = 0
    elapsed_ms: float = 0.0

    @property
    def text(self) -> str | None:
        if not self.complete or self.fallback is not None:
            return None
        return self.answer if self.answer is not None else "\n".join(self.texts)

    @property
    def strong_tokens(self) -> int:
        """Decoded tokens of the strong tier (the TRIM cost)."""
        u = self.usage.get(self.settings.strong)
        return u.completion_tokens if u else 0

    @property
    def handoffs(self) -> int:
        return sum(bool(s.get("handed_off")) for s in self.steps)

    def record(self) -> dict[str, Any]:
        return {"step_kind": self.settings.step_kind, "steps": self.steps, "complete": self.complete,
                "fallback": self.fallback, "answer": self.answer,
                "usage": {k: vars(v) for k, v in self.usage.items()}, "strong_tokens": self.strong_tokens,
                "handoffs": self.handoffs,
                "prm": {"calls": self.prm_calls, "prompt_tokens": self.prm_prompt_tokens,
                        "completion_tokens": self.prm_completion_tokens},
                "elapsed_ms": round(self.elapsed_ms, 3)}


def _request_key(r: GenerationRequest) -> str:
    """What makes two step calls with the same prefix the same call: the question, schema, examples, dialect."""
    import hashlib

    blob = "\0".join([r.question, r.schema, r.evidence or "", r.dialect] + [f"{q}\0{s}" for q, s in r.few_shot])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def continue_tier(tier: Tier, prefix: str, *, grammar: str | None, max_tokens: int,
                  memo: StepMemo | None = None, kind: str = "cte") -> tuple[StepResult, bool]:
    """(the tier's step after `prefix` under `grammar`, whether it came from the memo). The memo key is the tier, the
    request (question, schema, examples, dialect) and the prefix: the same prefix of another question is another call."""
    key = (tier.pair, _request_key(tier.request), prefix)
    if memo is not None and key in memo.steps:
        memo.hits += 1
        return memo.steps[key], True
    res = tier.backend.continue_step(StepRequest(request=tier.request, prefix=prefix, grammar=grammar,
                                                 max_tokens=max_tokens, kind=kind))
    if memo is not None:
        memo.misses += 1
        memo.steps[key] = res
    return res, False


def _continue(tier: Tier, prefix: str, state: Any, max_tokens: int, memo: StepMemo | None,
              kind: str = "cte") -> tuple[StepResult, bool]:
    """The loop's step call: the tier's grammar for `state` (constrained tiers, CTE steps), then `continue_tier`."""
    key = (tier.pair, _request_key(tier.request), prefix)
    if memo is not None and key in memo.steps:  # the grammar is not even built for a memoised step
        return continue_tier(tier, prefix, grammar=None, max_tokens=max_tokens, memo=memo, kind=kind)
    grammar = tier.grammar(state) if tier.grammar is not None and state is not None else None
    return continue_tier(tier, prefix, grammar=grammar, max_tokens=max_tokens, memo=memo, kind=kind)


def _reward(run: ChainRun, prm: Any, texts: list[str], prev_rows: int | None, memo: StepMemo | None,
            kw: dict[str, Any]) -> Any:
    """The process reward of the partial chain `texts` (memoised), counted in the run's PRM calls and tokens (a
    memoised reward counts as the call it stands for: the costs are those of the policy, not of the study)."""
    key = (kw["db_id"], kw["question"], *texts)
    if memo is not None and key in memo.rewards:
        r = memo.rewards[key]
    else:
        r = prm.score(step_texts=list(texts), prev_rows=prev_rows, **kw)
        if memo is not None:
            memo.rewards[key] = r
    run.prm_calls += 1
    run.prm_prompt_tokens += getattr(r, "prompt_tokens", 0) or 0
    run.prm_completion_tokens += getattr(r, "completion_tokens", 0) or 0
    return r


def _reward_dict(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    d = {k: getattr(r, k) for k in ("score", "verdict_p", "exec_score", "ok", "error", "empty", "all_null", "rows",
                                    "row_delta", "parts") if hasattr(r, k)}
    return d


def _step_usage(run: ChainRun, tier: Tier, res: StepResult) -> None:
    """Count a step's tokens for its tier (a memoised step counts as the call it stands for)."""
    u = run.usage.setdefault(tier.pair, TierUsage())
    u.prompt_tokens += res.prompt_tokens
    u.completion_tokens += res.completion_tokens
    u.calls += 1


def run_chain(cheap: Tier, strong: Tier, prm: Any, policy: Any, settings: TrimSettings, *, db_id: str,
              memo: StepMemo | None = None, act: Callable[[StepObservation], bool] | None = None,
              deadline: float | None = None) -> ChainRun:
    """Write one query step by step (module docstring). `policy.hand_off(obs)` decides each step unless `act`
    (training: a sampling policy) is given; `prm` is a `planner.prm.ProcessReward` (None: the policy needs none,
    e.g. cheap only / strong only). `deadline` (time.monotonic()): past it, the remaining steps stay with the
    cheap tier and the record says so."""
    t0 = time.monotonic()
    run = ChainRun(settings=settings)
    kind = step_kind(settings.step_kind)
    cte = kind.name == "cte"
    for tier in (cheap, strong):
        run.usage.setdefault(tier.pair, TierUsage())
    q = cheap.request
    prm_kw = {"question": q.question, "schema": q.schema, "evidence": q.evidence, "db_id": db_id,
              "dialect": q.dialect}
    strong_only = bool(getattr(policy, "strong_only", False)) and act is None
    cheap_only = bool(getattr(policy, "cheap_only", False)) and act is None
    scores: list[float] = []
    prev_rows: int | None = None
    for index in range(settings.max_steps):
        state = step_state(run.texts) if cte else None  # the CTE grammar's view; prose steps have no grammar
        if kind.complete(run.texts, q.dialect):
            break
        prefix = kind.prefix(run.texts)
        rec: dict[str, Any] = {"index": index}
        late = deadline is not None and time.monotonic() > deadline
        if strong_only:
            res, _ = _continue(strong, prefix, state, settings.step_tokens, memo, kind.name)
            _step_usage(run, strong, res)
            chosen_tier, chosen, handed = strong, res, True  # strong only: no draft, nothing to decide, no PRM call
            rec["draft"] = None
            reward = None
        else:
            res, _ = _continue(cheap, prefix, state, settings.step_tokens, memo, kind.name)
            _step_usage(run, cheap, res)
            reward = None
            if prm is not None and not cheap_only:
                reward = _reward(run, prm, run.texts + [res.text], prev_rows, memo, prm_kw)
            s = float(reward.score) if reward is not None else 1.0
            obs = StepObservation(index=index, score=s, tokens=res.completion_tokens,
                                  product=_prod(scores + [s]), minimum=min(scores + [s]))
            rec["observation"] = {"score": round(s, 6), "product": round(obs.product, 6),
                                  "minimum": round(obs.minimum, 6), "tokens": obs.tokens}
            if late:
                handed = False
                rec["note"] = "past the plan's deadline: the cheap step is kept"
            elif act is not None:
                handed = bool(act(obs))
            else:
                handed = bool(policy.hand_off(obs))
            chosen_tier, chosen = cheap, res
            rec["draft"] = None
            if handed:
                run.usage[cheap.pair].discarded_tokens += res.completion_tokens
                rec["draft"] = {"text": res.text, "tokens": res.completion_tokens, "reward": _reward_dict(reward)}
                res2, _ = _continue(strong, prefix, state, settings.step_tokens, memo, kind.name)
                _step_usage(run, strong, res2)
                chosen_tier, chosen = strong, res2
                if prm is not None:
                    reward = _reward(run, prm, run.texts + [res2.text], prev_rows, memo, prm_kw)
        rec.update({"pair": chosen_tier.pair, "generator": chosen_tier.generator, "handed_off": handed,
                    "text": chosen.text, "tokens": chosen.completion_tokens, "prompt_tokens": chosen.prompt_tokens,
                    "boundary": chosen.boundary, "reward": _reward_dict(reward)})
        run.steps.append(rec)
        run.texts.append(chosen.text)
        if reward is not None:
            scores.append(float(reward.score))
            prev_rows = getattr(reward, "rows", None)
        if chosen.boundary == "length":
            run.fallback = f"step {index + 1} ran out of tokens ({settings.step_tokens}) before its boundary"
            break
        if chosen.boundary == "end" or (not cte and chosen.boundary == "eos") or kind.complete(run.texts, q.dialect):
            break
    run.elapsed_ms = (time.monotonic() - t0) * 1000.0
    if run.fallback is None and not cte:
        try:
            run.answer = kind.answer(run.texts, q.dialect)
            run.complete = True
        except StepParseError as e:
            run.fallback = f"the prose steps give no SQL: {e}"
    elif run.fallback is None:
        try:
            chain = parse_chain("\n".join(run.texts), dialect=q.dialect)
            run.complete = chain.complete
            if not chain.complete:
                run.fallback = f"no final SELECT after {len(run.texts)} step(s) (max_steps {settings.max_steps})"
        except StepParseError as e:
            run.fallback = f"the step chain does not parse: {e}"
    return run


def _prod(xs: list[float]) -> float:
    p = 1.0
    for x in xs:
        p *= x
    return p


# ---------------------------------------------------------------------------------------------- the pipeline's glue
def chain_examples(shots: list[tuple[str, str]], dialect: str) -> list[tuple[str, str]]:
    """Few-shot (question, SQL) pairs with the SQL rewritten as a CTE step chain (`sqlbox.steps.to_chain`); an
    example that does not rewrite is left out (a wrong format in the prompt is worse than one example fewer)."""
    from sqlbox.steps import to_chain

    out = []
    for q, sql in shots:
        try:
            out.append((q, to_chain(sql, dialect=dialect).text))
        except (StepParseError, ValueError):
            continue
    return out


def prose_examples(shots: list[tuple[str, str]], dialect: str) -> list[tuple[str, str]]:
    """Few-shot (question, answer) pairs for prose steps: the answer is one short paragraph per step of the SQL's
    step chain (`sqlbox.steps.to_chain`: "Step k: <what the step computes>."), a blank line between them, then the
    chain in a ```sql block (the prose step prompt's shape); an example that does not rewrite is left out."""
    from sqlbox.steps import PROSE_SEPARATOR, to_chain

    out = []
    for q, sql in shots:
        try:
            chain = to_chain(sql, dialect=dialect)
        except (StepParseError, ValueError):
            continue
        paras = [f"Step {i}: {st.comment.strip().rstrip('.')}." for i, st in enumerate(chain.steps, 1)
                 if st.comment.strip()]
        out.append((q, PROSE_SEPARATOR.join([*paras, f"```sql\n{chain.text}\n```"])))
    return out


def step_request(planner: Any, question: Any, pair: str, prompt: str, info: dict | None,
                 kind: str = "cte") -> GenerationRequest:
    """The step-mode request of one tier: the schema prompt, the pair's few-shot examples as step chains (or, for
    prose steps, as reasoning paragraphs and the chain: `prose_examples`), greedy."""
    from generators.base import SamplingParams

    p = planner.config.pairs[pair]
    dialect = planner.dialect(question.db_id)
    examples = prose_examples if kind == "prose" else chain_examples
    shots = examples(planner.few_shot(question, info, k=p.few_shot), dialect)
    return GenerationRequest(question=question.text, schema=prompt, evidence=question.evidence, dialect=dialect,
                             few_shot=shots, params=SamplingParams(n=1, temperature=0.0, top_p=1.0, seed=0))


def tier_grammar(planner: Any, db_id: str, backend: Any, kind: str = "cte") -> Callable[[Any], str | None] | None:
    """StepState -> the step's grammar, for a backend whose constrained decoding is on (else None); prose steps
    have none (a paragraph is not SQL)."""
    if not getattr(backend, "constrained", False) or kind != "cte":
        return None
    from generators.grammar import step_grammar

    schema = planner.registry.schema(db_id)
    return lambda state: step_grammar(schema, expect=state.expect, names=state.names, columns=state.columns,
                                      opener=OPENER)


def run_stepwise(planner: Any, router: Any, question: Any, plan: Any, n: int, policy: str, pool: Any, scored: list,
                 usage: dict, clock: Any, gen_info: dict) -> list[str]:
    """The pipeline's stepwise route (`Planner.run` for a router whose registry entry says `stepwise`): run the
    step loop with the router's cheap and strong pairs, account every token, record the steps in
    `route.details["trim"]`, and judge the finished chain as one candidate; when the chain is unusable, fall back to
    the cheap pair's whole-query path and say why. Returns the pairs that wrote (or generated) candidates."""
    from planner.prm import ProcessReward
    from planner.stages import usage_entry

    cfg = planner.config
    settings: TrimSettings = router.settings(cfg.pairs)
    pol = router.policy
    cheap_p, strong_p = cfg.pairs[settings.cheap], cfg.pairs[settings.strong]
    prompt = planner.schema_prompt(question.db_id, question)
    detail = plan.route.details.setdefault("trim", {})
    info = gen_info.setdefault("few_shot", {})
    rem = clock.remaining()
    deadline = None if rem is None or rem == float("inf") else time.monotonic() + max(rem * 0.6, 0.05)
    with clock.stage("generate"):
        with contextlib.ExitStack() as stack:
            ck_c, b_c = stack.enter_context(planner.generators.acquire(cheap_p.generator))
            if strong_p.generator == cheap_p.generator:
                ck_s, b_s = ck_c, b_c
            else:
                ck_s, b_s = stack.enter_context(planner.generators.acquire(strong_p.generator))
            for b, name in ((b_c, cheap_p.generator), (b_s, strong_p.generator)):
                if not hasattr(b, "continue_step"):
                    raise ValueError(f"generator {name!r} cannot continue a step prefix (no continue_step)")
            kind = settings.step_kind
            cheap = Tier(settings.cheap, cheap_p.generator, b_c,
                         step_request(planner, question, settings.cheap, prompt, info, kind),
                         tier_grammar(planner, question.db_id, b_c, kind))
            strong = Tier(settings.strong, strong_p.generator, b_s,
                          step_request(planner, question, settings.strong, prompt, info, kind),
                          tier_grammar(planner, question.db_id, b_s, kind))
            prm = None
            d_spec = None
            needs_prm = not (getattr(pol, "cheap_only", False) or getattr(pol, "strong_only", False))
            if needs_prm:
                d_name = cheap_p.discriminator
                ck_d, disc = stack.enter_context(planner.step_discriminator(d_name, settings.prm_mode, kind)) \
                    if settings.use_verdict else (None, None)
                d_spec = planner.discriminators.spec_of(ck_d) if ck_d else None
                prm = ProcessReward(discriminator=disc, executor=planner.executor, use_verdict=settings.use_verdict,
                                    use_execution=settings.use_execution, kind=kind)
                detail["prm_checkpoint"] = ck_d
            run = run_chain(cheap, strong, prm, pol, settings, db_id=question.db_id, deadline=deadline)
        for tier, ck in ((cheap, ck_c), (strong, ck_s)):
            tu = run.usage.get(tier.pair)
            if tu is None or not tu.calls:
                continue
            u = usage_entry(usage, ck, "generator", planner.generators.spec_of(ck))
            u.prompt_tokens += tu.prompt_tokens
            u.completion_tokens += tu.completion_tokens
            u.calls += tu.calls
        if run.prm_calls and d_spec is not None:
            u = usage_entry(usage, d_spec.name, "prm", d_spec)
            u.prompt_tokens += run.prm_prompt_tokens
            u.completion_tokens += run.prm_completion_tokens
            u.calls += run.prm_calls
    detail.update(run.record())
    detail["strong_pair"], detail["cheap_pair"] = settings.strong, settings.cheap
    wrote = [p for p in (settings.cheap, settings.strong) if any(s.get("pair") == p for s in run.steps)]
    if run.text is None:
        detail["fallback"] = run.fallback or "the step loop wrote no chain"
        plan.warnings.append(f"trim: {detail['fallback']}; the cheap pair's whole-query path was used")
        planner._run_step(question, cheap_p.generator, cheap_p.discriminator, n, policy, pool, scored, usage, clock,
                          gen_info, shots=cheap_p.few_shot)
        return [settings.cheap]
    res = GenerationResult(sqls=[run.text], raw=[run.text], model="trim", prompt_tokens=0, completion_tokens=0)
    source = "trim:" + "+".join(wrote or [settings.cheap])
    planner._run_step(question, cheap_p.generator, plan.route.discriminator, n, policy, pool, scored, usage, clock,
                      gen_info, generated=(res, source))
    return wrote or [settings.cheap]
