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

Each returns (index or None, reason). Only executable candidates can be chosen by check-rerank, vote
and hybrid; `first` and `rerank` may choose a non-executable one (that is what "no check" means), and the
pipeline reports it as such.

Every policy is declared once, here, with its metadata (`POLICIES.meta(name)`):
- `needs_scores`: it ranks by the discriminator's soft scores, so it needs a discriminator;
- `executable_only`: it picks among executable candidates only (so only those need scoring);
- `summary`: one line for help texts and the API schema;
- `needs_question` (optional): the policy reads the question's text, passed as `question=` (the ranker's
  literal and result-shape cues); the others take the candidates only;
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

from core.model import ScoredCandidate, executable, soft_score
from core.registry import Registry

Policy = Callable[[Sequence[ScoredCandidate]], tuple[int | None, str]]
POLICIES: Registry[tuple[int | None, str]] = Registry("selection policy")


def assign_clusters(cands: Sequence[ScoredCandidate]) -> dict[str, list[int]]:
    """Group executable candidates by result fingerprint; sets `cluster` on each. Returns fingerprint -> indices
    in order of first appearance."""
    clusters: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        if executable(c):
            clusters.setdefault(c.execution.fingerprint or f"#{i}", []).append(i)
    for k, idxs in enumerate(clusters.values()):
        for i in idxs:
            cands[i].cluster = k
    return clusters


def _argmax(idxs: Sequence[int], key: Callable[[int], float]) -> int:
    best = idxs[0]
    for i in idxs[1:]:
        if key(i) > key(best):
            best = i
    return best


@POLICIES.register("first", needs_scores=False, executable_only=False,
                   summary="the first candidate (the first-sample baseline; no executability check)")
def first(cands: Sequence[ScoredCandidate]) -> tuple[int | None, str]:
    if not cands:
        return None, "no candidates"
    return 0, f"first of {len(cands)} candidates"


@POLICIES.register("vote", needs_scores=False, executable_only=True,
                   summary="the largest cluster of identical execution results")
def vote(cands: Sequence[ScoredCandidate]) -> tuple[int | None, str]:
    clusters = assign_clusters(cands)
    if not clusters:
        return None, "no candidate executes"
    weight = {fp: float(sum(cands[i].candidate.duplicates for i in idxs)) for fp, idxs in clusters.items()}
    best_fp = max(clusters, key=lambda fp: weight[fp])  # max keeps the first of equal weights
    for fp, idxs in clusters.items():
        for i in idxs:
            cands[i].selection_score = weight[fp]
    i = clusters[best_fp][0]
    return i, f"largest result cluster: {int(weight[best_fp])} of {sum(weight.values()):.0f} executable samples agree"


@POLICIES.register("hybrid", needs_scores=True, executable_only=True, without_scores="vote",
                   summary="result clusters weighted by their members' summed soft scores")
def hybrid(cands: Sequence[ScoredCandidate]) -> tuple[int | None, str]:
    clusters = assign_clusters(cands)
    if not clusters:
        return None, "no candidate executes"
    weight = {
        fp: sum(soft_score(cands[i]) * cands[i].candidate.duplicates for i in idxs) for fp, idxs in clusters.items()
    }
    best_fp = max(clusters, key=lambda fp: weight[fp])
    for fp, idxs in clusters.items():
        for i in idxs:
            cands[i].selection_score = weight[fp]
    i = _argmax(clusters[best_fp], lambda j: soft_score(cands[j]))
    return i, f"result cluster with the largest summed soft score ({weight[best_fp]:.4f}, {len(clusters[best_fp])} members)"


@POLICIES.register("rerank", needs_scores=True, executable_only=False,
                   summary="the best soft score over all candidates (no executability check)")
def rerank(cands: Sequence[ScoredCandidate]) -> tuple[int | None, str]:
    if not cands:
        return None, "no candidates"
    for c in cands:
        c.selection_score = soft_score(c)
    i = _argmax(range(len(cands)), lambda j: cands[j].selection_score)
    return i, f"highest soft score ({cands[i].selection_score:.4f}) of {len(cands)} candidates"


@POLICIES.register("check-rerank", needs_scores=True, executable_only=True,
                   summary="the best soft score among executable candidates (the paper's check)")
def check_rerank(cands: Sequence[ScoredCandidate]) -> tuple[int | None, str]:
    ok = [i for i, c in enumerate(cands) if executable(c)]
    if not ok:
        return None, "no candidate executes"
    for i in ok:
        cands[i].selection_score = soft_score(cands[i])
    i = _argmax(ok, lambda j: cands[j].selection_score)
    return i, f"highest soft score ({cands[i].selection_score:.4f}) among {len(ok)} executable of {len(cands)}"


@POLICIES.register("ranker", needs_scores=False, executable_only=True, needs_question=True,
                   summary="a learned ranker over result clusters (votes, generator priors, result/SQL shape; "
                           "uses scores when present)")
def ranker(cands: Sequence[ScoredCandidate], question: str = "") -> tuple[int | None, str]:
    from planner.ranker import select_active  # the artifact and cross-question priors live there

    return select_active(cands, question)


def select(policy: str, cands: Sequence[ScoredCandidate], question: str = "") -> tuple[int | None, str]:
    """Run `policy` on `cands`; `question` goes to the policies registered with `needs_question`."""
    fn = POLICIES.get(policy)
    if POLICIES.meta(policy).get("needs_question"):
        return fn(cands, question=question)
    return fn(cands)


class PolicyError(ValueError):
    """A usage error: an unknown policy, or one that needs scores with no discriminator. The message lists
    the valid choices."""


def policy_names() -> list[str]:
    """Every registered policy, in registration order (CLI choices and the API schema's enum come from here)."""
    return POLICIES.names(sort=False)


def needs_scores(policy: str) -> bool:
    return bool(POLICIES.meta(policy).get("needs_scores", False))


def executable_only(policy: str) -> bool:
    return bool(POLICIES.meta(policy).get("executable_only", True))


def without_scores(policy: str) -> str | None:
    """The policy `policy` reduces to on unscored candidates, if declared (see the module docstring)."""
    return POLICIES.meta(policy).get("without_scores")


def reported_policies(scored: bool, policies: Sequence[str] | None = None) -> list[str]:
    """The policies (of `policies`, default all) an eval report includes for a question: all of them when its
    candidates are scored, else those that need no scores or declare what they reduce to without them."""
    pols = policy_names() if policies is None else list(policies)
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
