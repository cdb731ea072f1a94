"""Result clusters: which candidates agree on an answer, and by how much. The one home of the rule.

Every consumer of "how many candidates agree" uses this module: the `vote`, `hybrid` and `ranker`
selection policies (`planner.select`, `planner.ranker`: features, vote share, plan confidence), the
cascade's escalation signals (`routing.cascade.escalation_signals`) and, through those signals, the
offline routing study (`eval.routing.cascade_decisions`).

The rule:

- **Members.** Only executable candidates (`core.model.executable`) belong to a cluster; a candidate that
  did not run, failed or was rejected votes for no answer.
- **Key.** Two executable candidates are in one cluster when their results are equal: equal
  order-insensitive result fingerprints (`ExecutionResult.fingerprint`, `sqlbox.values`). An executable
  candidate without a fingerprint (a result logged before fingerprints existed, a hand-built result) is
  keyed by its SQL text: the same SQL on the same database gives the same result, so this is still a
  statement of equal results, and it makes clustering independent of whether identical samples were
  merged into one candidate (`duplicates`) or kept apart (replay pools keep one candidate per system).
  The alternatives in use before were worse: a per-index key (`"#i"`) split identical SQL into separate
  clusters, so a merged candidate with `duplicates=2` and two unmerged copies of the same SQL voted
  differently; dropping such a candidate (the old offline study) counted an executed answer as "did not
  execute". With fingerprints present (every result the executor produces has one) all rules agree.
  Fingerprint keys and SQL keys are tagged (`fp:` / `sql:`), so a SQL text can never collide with a
  fingerprint.
- **Weight.** A candidate stands for `max(1, duplicates)` generated samples: `duplicates` counts the samples
  merged into it and is 1 for a candidate that was not merged. The floor of 1 matters only for data from
  outside the pipeline (`duplicates=0` from a hand-written or logged record): such a candidate was still
  generated once, and a zero weight would make an executed answer invisible to the vote and could make
  every share 0/0. Plain `duplicates` (the old `vote`/`hybrid` weight) equals this for every candidate
  the pipeline makes.
- **Order.** Clusters are listed in order of first appearance (the index of their first member); ties in
  weight go to the earlier cluster.
- **Shares and margin.** `vote_share(k)` = the cluster's weight / the weight of *all* candidates
  (executable or not): the share of the samples that produced this answer (plan confidence without a
  ranker artifact, the ranker's `vote_share` feature). `margin` = (weight of the largest cluster - weight
  of the second) / the weight of the *executable* candidates: how clearly the answers that exist agree (the
  cascade's `vote_margin` rule; one cluster: 1; no executable candidate: 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from core.model import ScoredCandidate, executable


def argmax_first(idxs: Iterable[int], key: Callable[[int], float]) -> int | None:
    """The index of `idxs` with the largest `key`, the earliest on ties (None when there is none): the tie rule of
    every selection policy, of vote's largest cluster and of the ranker's best cluster."""
    best, best_v = None, None
    for i in idxs:
        v = key(i)
        if best is None or v > best_v:
            best, best_v = i, v
    return best


def result_key(c: ScoredCandidate) -> str | None:
    """The candidate's cluster key (see the module docstring), None when it does not execute."""
    if not executable(c):
        return None
    fp = c.execution.fingerprint
    return f"fp:{fp}" if fp else f"sql:{c.candidate.sql}"


def sample_weight(c: ScoredCandidate) -> float:
    """How many generated samples the candidate stands for: max(1, duplicates)."""
    return float(max(1, c.candidate.duplicates))


@dataclass(frozen=True)
class Cluster:
    key: str
    members: tuple[int, ...]  # indices into the candidates, ascending
    weight: float  # summed sample weights of the members


@dataclass(frozen=True)
class Clustering:
    """A question's result clusters. `clusters` are in first-appearance order; `of[i]` is candidate i's
    cluster index (None when it does not execute)."""

    clusters: tuple[Cluster, ...]
    of: tuple[int | None, ...]
    total_weight: float  # all candidates
    executable_weight: float  # executable candidates

    def __len__(self) -> int:
        return len(self.clusters)

    @property
    def members(self) -> list[list[int]]:
        return [list(c.members) for c in self.clusters]

    @property
    def weights(self) -> list[float]:
        return [c.weight for c in self.clusters]

    def vote_share(self, k: int) -> float:
        """Cluster k's weight over the weight of all candidates."""
        return self.clusters[k].weight / self.total_weight if self.total_weight else 0.0

    def shares(self) -> list[float]:
        return [self.vote_share(k) for k in range(len(self.clusters))]

    def share_of(self, i: int | None) -> float:
        """The vote share of candidate i's cluster (0 when i is None or does not execute)."""
        k = None if i is None else self.of[i]
        return 0.0 if k is None else self.vote_share(k)

    @property
    def margin(self) -> float:
        """(largest weight - second largest) / executable weight; 0 without executable candidates."""
        if not self.executable_weight:
            return 0.0
        w = sorted(self.weights, reverse=True)
        return (w[0] - (w[1] if len(w) > 1 else 0.0)) / self.executable_weight

    def largest(self, weight: Sequence[float] | None = None) -> int | None:
        """Index of the heaviest cluster (by `weight`, default the sample weights); ties: the earliest."""
        w = self.weights if weight is None else list(weight)
        return argmax_first(range(len(w)), w.__getitem__)

    def weighted(self, cands: Sequence[ScoredCandidate], per_candidate: Callable[[ScoredCandidate], float]) -> list[float]:
        """Per cluster: Σ per_candidate(c) x sample weight(c) over its members (e.g. summed soft scores)."""
        return [sum(per_candidate(cands[i]) * sample_weight(cands[i]) for i in c.members) for c in self.clusters]


def cluster(cands: Sequence[ScoredCandidate]) -> Clustering:
    """Group `cands` into result clusters by the module's rule. Reads the candidates, never changes them."""
    groups: dict[str, list[int]] = {}
    of: list[int | None] = []
    index: dict[str, int] = {}
    total = 0.0
    for i, c in enumerate(cands):
        total += sample_weight(c)
        k = result_key(c)
        if k is None:
            of.append(None)
            continue
        if k not in index:
            index[k] = len(index)
            groups[k] = []
        groups[k].append(i)
        of.append(index[k])
    clusters = tuple(Cluster(k, tuple(m), sum(sample_weight(cands[i]) for i in m)) for k, m in groups.items())
    return Clustering(clusters, tuple(of), total, sum(c.weight for c in clusters))
