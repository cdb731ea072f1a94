"""The pipeline's Route-and-Reason route (`routing.r2`): decompose, allocate, compose, then judge the chain.

`run_r2` (called by `Planner.run` for the `r2` router):

1. the decomposer pair's generator writes the ordered sub-questions (`planner.decompose.decompose`, one call, with
   retrieved Spider train examples rewritten as decompositions); a refused list falls back to the whole-question path
   (the default tier's ordinary generation) and the Plan says why;
2. the allocator (`routing.r2.Allocator`, a trained artifact; without one, every step goes to the default tier) picks
   a tier per subtask from `subtask_features` (text embedding, the named tables' schema-linking features, index and
   dependencies, the decomposer's confidence);
3. each tier writes its step's body after the sub-question as the step's comment (`planner.decompose.compose`);
4. the process reward (`planner.prm.ProcessReward`, the decomposer pair's discriminator with the step prompt and the
   sandbox) scores every step of the composed chain, for the record;
5. the chain is one ordinary candidate: normalized, guarded (as one query: a hostile step cannot slip past the guard),
   executed, discriminated and selected like any other.

`route.details["r2"]` records the decomposition (or why it was refused), each subtask's tier, text, tokens and
process reward, and the tokens per pair; `plan.usage` has the decomposer's call, each tier's and the PRM's.
"""

from __future__ import annotations

import contextlib
from typing import Any

from generators.base import GenerationResult
from planner.decompose import Decomposition, DecompositionError, compose, decompose, decomposition_examples
from planner.stages import usage_entry
from planner.stepwise import Tier, step_request, tier_grammar
from routing.r2 import SubtaskFeatures


def subtask_features(d: Decomposition, schema: Any, linked_tables: list[str] | None) -> list[SubtaskFeatures]:
    """The allocator's view of each subtask (`routing.r2.SubtaskFeatures`)."""
    cols = {t.name.lower(): len(t.columns) for t in schema.tables}
    linked = {t.lower() for t in linked_tables} if linked_tables else None
    n = len(d.subtasks)
    out = []
    for k, s in enumerate(d.subtasks):
        tabs = [t.lower() for t in s.tables]
        share = 1.0 if not tabs or linked is None else sum(t in linked for t in tabs) / len(tabs)
        out.append(SubtaskFeatures(text=s.text, index=k, n_steps=n, n_needs=len(s.needs), n_tables=len(tabs),
                                   n_columns=sum(cols.get(t, 0) for t in tabs), tables_linked=share,
                                   confidence=0.5 if d.confidence is None else float(d.confidence)))
    return out


def run_r2(planner: Any, router: Any, question: Any, plan: Any, n: int, policy: str, pool: Any, scored: list,
           usage: dict, clock: Any, gen_info: dict) -> list[str]:
    """The stepwise route of the `r2` router (module docstring); returns the pairs that wrote steps."""
    from planner.prm import ProcessReward

    cfg = planner.config
    tiers, decomposer, default = router.resolve(cfg.pairs)
    db = question.db_id
    dialect = planner.dialect(db)
    prompt = planner.schema_prompt(db, question)
    schema = planner.registry.schema(db)
    detail = plan.route.details.setdefault("r2", {})
    info = gen_info.setdefault("few_shot", {})
    fallback: str | None = None
    chain = None
    with clock.stage("generate"), contextlib.ExitStack() as stack:
        backends: dict[str, tuple[str, Any]] = {}

        def backend(pair: str) -> tuple[str, Any]:
            gen = cfg.pairs[pair].generator
            if gen not in backends:
                backends[gen] = stack.enter_context(planner.generators.acquire(gen))
            return backends[gen]

        ck_d, b_d = backend(decomposer)
        shots = planner.few_shot(question, info, k=cfg.pairs[decomposer].few_shot)
        try:
            d = decompose(b_d, question.text, prompt, schema, decomposition_examples(shots, dialect), dialect,
                          evidence=question.evidence, max_steps=router.max_steps)
            _account(planner, usage, ck_d, d.prompt_tokens, d.completion_tokens, 1)
            detail["decomposition"] = d.record()
        except DecompositionError as e:
            _account(planner, usage, ck_d, e.prompt_tokens, e.completion_tokens, 1)
            detail["decomposition"] = {"refused": e.kind, "reason": e.reason, "raw": e.raw}
            fallback = f"the decomposition was refused ({e.kind}: {e.reason})"
            d = None
        if d is not None:
            linked = planner.link_schema(question)
            feats = subtask_features(d, schema, linked.tables if linked is not None else None)
            alloc = router.allocator.allocate(feats) if router.allocator is not None else [default] * len(feats)
            if router.allocator is not None:
                detail["allocation_probs"] = [[round(float(p), 4) for p in row] for row in router.allocator.probs(feats)]
            detail["allocation"] = alloc
            tier_objs = []
            for pair in alloc:
                ck, b = backend(pair)
                tier_objs.append(Tier(pair, cfg.pairs[pair].generator, b, step_request(planner, question, pair, prompt, info),
                                      tier_grammar(planner, db, b)))
            chain = compose(d, tier_objs, schema=schema, dialect=dialect, step_tokens=router.step_tokens)
            for pair, tu in chain.usage.items():
                ck = backends[cfg.pairs[pair].generator][0]
                _account(planner, usage, ck, tu.prompt_tokens, tu.completion_tokens, tu.calls)
            detail.update({k: v for k, v in chain.record().items() if k != "decomposition"})
            fallback = chain.fallback
            if fallback is None:
                _score_steps(planner, stack, cfg.pairs[decomposer].discriminator, chain, question, prompt, dialect,
                             usage, detail, ProcessReward)
    if fallback is not None or chain is None or chain.text is None:
        detail["fallback"] = fallback or "the composed chain is not usable"
        plan.warnings.append(f"r2: {detail['fallback']}; the {default} pair's whole-question path was used")
        p = cfg.pairs[default]
        planner._run_step(question, p.generator, p.discriminator, n, policy, pool, scored, usage, clock, gen_info,
                          shots=p.few_shot)
        return [decomposer, default] if decomposer != default else [default]
    wrote = list(dict.fromkeys(s["pair"] for s in chain.steps))
    res = GenerationResult(sqls=[chain.text], raw=[chain.text], model="r2", prompt_tokens=0, completion_tokens=0)
    planner._run_step(question, cfg.pairs[default].generator, plan.route.discriminator, n, policy, pool, scored, usage,
                      clock, gen_info, generated=(res, "r2:" + "+".join(wrote)))
    return list(dict.fromkeys([decomposer, *wrote]))


def _account(planner: Any, usage: dict, ckpt: str, prompt_tokens: int, completion_tokens: int, calls: int) -> None:
    u = usage_entry(usage, ckpt, "generator", planner.generators.spec_of(ckpt))
    u.prompt_tokens += prompt_tokens
    u.completion_tokens += completion_tokens
    u.calls += calls


def _score_steps(planner: Any, stack: contextlib.ExitStack, disc: str, chain: Any, question: Any, prompt: str,
                 dialect: str, usage: dict, detail: dict, process_reward: Any) -> None:
    """The process reward of every step of the composed chain, recorded per step (`detail["steps"][k]["reward"]`)."""
    name, backend = stack.enter_context(planner.step_discriminator(disc, "logit"))
    prm = process_reward(discriminator=backend, executor=planner.executor)
    prev = None
    calls = pt = ct = 0
    for k, step in enumerate(detail.get("steps", [])):
        r = prm.score(question=question.text, schema=prompt, evidence=question.evidence, db_id=question.db_id,
                      dialect=dialect, step_texts=chain.texts[: k + 1], prev_rows=prev)
        step["reward"] = {"score": r.score, "verdict_p": r.verdict_p, "exec_score": r.exec_score, "rows": r.rows,
                          "error": r.error}
        prev = r.rows
        calls, pt, ct = calls + 1, pt + (r.prompt_tokens or 0), ct + (r.completion_tokens or 0)
    spec = planner.discriminators.spec_of(name)
    u = usage_entry(usage, name, "prm", spec)
    u.prompt_tokens += pt
    u.completion_tokens += ct
    u.calls += calls
