"""Selection policies: pick one candidate from scored, executed candidates.

- `first`: the first candidate (the "first sample" baseline; callers pass non-rejected candidates only).
- `rerank`: the best soft score (ties -> earliest candidate).
- `check-rerank`: drop non-executable candidates, then the best soft score (the paper's "check").
- `vote`: the largest cluster of identical execution results (order-insensitive fingerprint); ties ->
  the cluster whose first member came first; within the cluster, the earliest candidate.
- `hybrid`: clusters weighted by the sum of their members' soft scores; within the cluster, the best score.
- `ranker`: a learned model scores the result clusters (`planner.ranker`: vote share, generator priors,
  result and SQL shape, literal agreement, soft scores when present); the artifact comes from
  `defaults.ranker` in the config (without one: a prior-weighted vote).

Each is called as `policy(cands, ctx)` with a `SelectionContext` (the question's text and the Planner's
`RankerState`, which holds the ranker's artifact and cross-question priors: state that belongs to a Planner,
never to the process) and returns a `Selection`: the index or None, the reason, and per candidate its result
cluster and the value it was ranked by. Policies never change their input; the select stage
(`planner.stages.select`) records the clusters and ranking values on the candidates. Clusters, weights and
shares come from `core.clusters` (the one result-clustering rule). Only executable candidates can be chosen
by check-rerank, vote and hybrid; `first` and `rerank` may choose a non-executable one (that is what "no
check" means), and the pipeline reports it as such.

Every policy is declared once, here, with its metadata (`PolicyInfo`, `POLICIES.info(name)`):
- `needs_scores`: it ranks by the discriminator's soft scores, so it needs a discriminator;
- `executable_only`: it picks among executable candidates only (so only those need scoring);
- `summary`: one line for help texts and the API schema;
- `scores_if_unanimous` (default True): whether it still needs scores when the executable candidates form a single
  result cluster; False for `check-rerank` and `hybrid`, whose answer (a result) is then fixed, so the pipeline
  skips the discriminator (`planner.stages.scoring_plan`; `rerank` may still choose a non-executable one);
- `without_scores` (optional, for a policy that needs scores): the policy it reduces to when candidates
  carry no scores, when that is still worth reporting (`hybrid`: every score counts 0.5, so it is `vote`).
  Eval reports (replay, end-to-end `ex_by_policy`) include such a policy on unscored questions; the other
  score policies (`rerank`, `check-rerank`) are left out there (`reported_policies`).
The API schema, the CLI choices, eval's reported policies and the stages' scoring rule
(`planner.stages.score_targets`) are derived from these (`policy_names`, `needs_scores`,
`executable_only`, `reported_policies`, `check_policy`). `policy_names()` lists them in registration
order (the order of eval reports).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.clusters import Clustering, argmax_first, cluster
from core.errors import PlanRequestError
from core.model import ScoredCandidate, executable, soft_score
from core.registry import Registry

if TYPE_CHECKING:
    from planner.ranker import RankerState


@dataclass(frozen=True)
class SelectionContext:
    """What a policy may read besides the candidates: the question's text (the ranker's literal and result-shape
    cues) and the Planner's ranker state (artifact and priors; None: no artifact, no priors)."""

    question: str = ""
    ranker: RankerState | None = None


@dataclass(frozen=True)
class Selection:
    """A policy's answer: the chosen index (None: nothing), why, and per candidate its result cluster and the
    value the policy ranked it by (None where it does not apply)."""

    index: int | None
    reason: str
    clusters: tuple[int | None, ...] = ()
    scores: tuple[float | None, ...] = ()


Policy = Callable[[Sequence[ScoredCandidate], SelectionContext], Selection]


@dataclass(frozen=True)
class PolicyInfo:
    """What the code needs to know about a selection policy, declared with its registry entry (see above)."""

    summary: str
    needs_scores: bool
    executable_only: bool = True
    without_scores: str | None = None
    # with a single executable result cluster the policy's answer does not depend on scores (the members share a
    # result), so the pipeline skips the discriminator; True for policies that may still choose by score
    scores_if_unanimous: bool = True


POLICIES: Registry[Selection, PolicyInfo] = Registry("selection policy", PolicyInfo)


def _by_cluster(cl: Clustering, values: Sequence[float]) -> tuple[float | None, ...]:
    """Each candidate's value = its cluster's (None when it does not execute)."""
    return tuple(None if k is None else values[k] for k in cl.of)


@POLICIES.register("first", needs_scores=False, executable_only=False,
                   summary="the first candidate (the first-sample baseline; no executability check)")
def first(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    if not cands:
        return Selection(None, "no candidates")
    return Selection(0, f"first of {len(cands)} candidates")


@POLICIES.register("vote", needs_scores=False, executable_only=True,
                   summary="the largest cluster of identical execution results")
def vote(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    cl = cluster(cands)
    if not cl.clusters:
        return Selection(None, "no candidate executes", cl.of)
    k = cl.largest()  # ties: the earliest cluster
    w = cl.clusters[k].weight
    return Selection(cl.clusters[k].members[0],
                     f"largest result cluster: {w:.0f} of {cl.executable_weight:.0f} executable samples agree",
                     cl.of, _by_cluster(cl, cl.weights))


@POLICIES.register("hybrid", needs_scores=True, executable_only=True, without_scores="vote", scores_if_unanimous=False,
                   summary="result clusters weighted by their members' summed soft scores")
def hybrid(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    cl = cluster(cands)
    if not cl.clusters:
        return Selection(None, "no candidate executes", cl.of)
    weight = cl.weighted(cands, soft_score)
    k = cl.largest(weight)
    m = cl.clusters[k].members
    i = argmax_first(m, lambda j: soft_score(cands[j]))
    return Selection(i, f"result cluster with the largest summed soft score ({weight[k]:.4f}, {len(m)} members)",
                     cl.of, _by_cluster(cl, weight))


@POLICIES.register("rerank", needs_scores=True, executable_only=False,
                   summary="the best soft score over all candidates (no executability check)")
def rerank(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    if not cands:
        return Selection(None, "no candidates")
    scores = tuple(soft_score(c) for c in cands)
    i = argmax_first(range(len(cands)), lambda j: scores[j])
    return Selection(i, f"highest soft score ({scores[i]:.4f}) of {len(cands)} candidates", (), scores)


@POLICIES.register("check-rerank", needs_scores=True, executable_only=True, scores_if_unanimous=False,
                   summary="the best soft score among executable candidates (the paper's check)")
def check_rerank(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    ok = [i for i, c in enumerate(cands) if executable(c)]
    if not ok:
        return Selection(None, "no candidate executes")
    scores = tuple(soft_score(c) if executable(c) else None for c in cands)
    i = argmax_first(ok, lambda j: scores[j])
    return Selection(i, f"highest soft score ({scores[i]:.4f}) among {len(ok)} executable of {len(cands)}",
                     (), scores)


@POLICIES.register("ranker", needs_scores=False, executable_only=True,
                   summary="a learned ranker over result clusters (votes, generator priors, result/SQL shape; "
                           "uses scores when present)")
def ranker(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    from planner.ranker import rank_select  # scikit-learn only when an artifact is loaded

    state = ctx.ranker
    r = rank_select(cands, ctx.question, state.priors() if state else {}, state.artifact if state else None)
    return Selection(r.index, r.reason, r.clusters.of, _by_cluster(r.clusters, r.scores) if r.scores else ())


def select(policy: str, cands: Sequence[ScoredCandidate], ctx: SelectionContext | None = None) -> Selection:
    """Run `policy` on `cands` with `ctx` (default: no question text, no ranker state)."""
    return POLICIES.get(policy)(cands, ctx or SelectionContext())


class PolicyError(PlanRequestError):
    """A usage error: an unknown policy, or one that needs scores with no discriminator. The message lists
    the valid choices. A `core.errors.PlanRequestError` (the one request error type: HTTP 422)."""


def policy_names() -> list[str]:
    """Every registered policy, in registration order (CLI choices and the API schema's enum come from here)."""
    return POLICIES.names(sort=False)


def needs_scores(policy: str) -> bool:
    return POLICIES.info(policy).needs_scores


@POLICIES.register("auto", needs_scores=False, executable_only=False,
                   summary="per pair, first / vote / ranker by their EX on the pair's logged feedback "
                   "(planner.ranker.decide_auto; the default until enough evidence)")
def auto(cands: Sequence[ScoredCandidate], ctx: SelectionContext) -> Selection:
    """Without a pair (replay, a bare call) this is the state's default: the pipeline resolves `auto` per pair
    before selecting (`planner.ranker.RankerState.auto_choice`)."""
    name = ctx.ranker.auto_default() if ctx.ranker is not None else "vote"
    sel = POLICIES.get(name)(cands, ctx)
    return Selection(sel.index, f"auto -> {name} (the default; no pair given): {sel.reason}", sel.clusters, sel.scores)


def executable_only(policy: str) -> bool:
    return POLICIES.info(policy).executable_only


def scores_if_unanimous(policy: str) -> bool:
    """Whether `policy` needs scores when the executable candidates form one result cluster."""
    return POLICIES.info(policy).scores_if_unanimous


def without_scores(policy: str) -> str | None:
    """The policy `policy` reduces to on unscored candidates, if declared (see the module docstring)."""
    return POLICIES.info(policy).without_scores


def reported_policies(scored: bool, policies: Sequence[str] | None = None) -> list[str]:
    """The policies (of `policies`, default all) an eval report includes for a question: all of them when its
    candidates are scored, else those that need no scores or declare what they reduce to without them."""
    # `auto` is left out by default: it picks one of first / vote / ranker per pair, which reports show already
    pols = [p for p in policy_names() if p != "auto"] if policies is None else list(policies)
    return [p for p in pols if scored or not needs_scores(p) or without_scores(p) is not None]


def check_policy(policy: str, *, has_discriminator: bool = True) -> str:
    """`policy` if it is usable, else PolicyError with the valid choices (exit 2 in the CLI, 422 in the API)."""
    if policy not in POLICIES:
        raise PolicyError(f"unknown policy {policy!r}; choose one of: {', '.join(policy_names())}")
    if needs_scores(policy) and not has_discriminator:
        usable = [p for p in policy_names() if not needs_scores(p)]
        raise PolicyError(f"selection policy {policy!r} needs a discriminator's scores and none was given; "
                          f"give a discriminator or choose one of: {', '.join(usable)}")
    return policy
