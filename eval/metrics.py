"""Discriminator metrics over candidates labelled correct/incorrect by EX, and EX aggregation helpers.

Input: one group per question, the candidates in their original order, each a (soft score, label) pair.
Two conventions are reported side by side (docs/evaluation.md):

**paper** (the headline, `discriminator_metrics(...)["paper"]`): the definitions of "When Reasoning Beats
Scale" (Anjum 2025) as its public code computes them (`utils/functions.py: eval_intrinsic`):

* pairwise accuracy: over every (correct, incorrect) pair of candidates of the same question, pooled over all
  questions, the share with `score(correct) > score(incorrect)`, strictly (a tie is an error);
* macro F1: a candidate is predicted correct when `score > 0.5` (strictly); the mean of the F1 of the
  "correct" and of the "incorrect" class over all candidates;
* Hit@1 and MRR over ALL questions: candidates sorted by score, descending, with a stable sort (ties keep the
  earliest candidate first); a question with no correct candidate counts 0;
* end-to-end selection (`hit_at_1_e2e`, when the SQL texts are given): the paper's planner picks the best
  score and, among equal scores, the lexicographically smallest SQL text.

**project** (the top-level keys, kept for comparison with earlier runs):

* `pairwise_accuracy` (micro, as above) and `pairwise_accuracy_macro` (the mean of per-question shares);
* `macro_f1` with `score >= 0.5`;
* `hit_at_1` / `mrr` over the *mixed* questions only (at least one correct and one incorrect candidate:
  elsewhere a ranking cannot be right or wrong), ties to the earliest candidate (`planner.select`'s rerank);
  `hit_at_1_all` over every question;
* AUROC: sklearn `roc_auc_score` over all candidates pooled (None when only one class is present);
* ECE and a reliability table: 10 equal-width score bins, |accuracy - mean score| weighted by bin size
  (scores outside [0, 1], e.g. the -0.5 "no verdict" fallback, are clipped into the end bins).

Questions whose candidates are all correct or all wrong are counted (`n_all_correct`, `n_all_wrong`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Group = Sequence[tuple[float, bool]]


def rank_order(scores: Sequence[float]) -> list[int]:
    """Candidate indices from best to worst score; equal scores keep the original order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _pairwise(group: Group) -> tuple[int, int]:
    pos = [s for s, y in group if y]
    neg = [s for s, y in group if not y]
    return sum(1 for p in pos for n in neg if p > n), len(pos) * len(neg)


def paper_metrics(groups: Sequence[Group], sqls: Sequence[Sequence[str]] | None = None) -> dict:
    """The paper's definitions (module docstring): pairwise accuracy, macro F1 at `> 0.5`, Hit@1 and MRR over all
    questions with a stable descending sort, and with `sqls` the end-to-end pick (best score, then smallest SQL)."""
    wins = pairs = 0
    hits = 0
    rr = 0.0
    e2e = 0
    for qi, g in enumerate(groups):
        w, p = _pairwise(g)
        wins, pairs = wins + w, pairs + p
        ranked = sorted(g, key=lambda x: x[0], reverse=True)  # stable: equal scores keep their order
        hits += bool(ranked[0][1])
        first = next((r for r, (_, y) in enumerate(ranked, start=1) if y), None)
        rr += 1.0 / first if first else 0.0
        if sqls is not None:
            best = max(s for s, _ in g)
            pick = min((sqls[qi][i], i) for i, (s, _) in enumerate(g) if s == best)[1]
            e2e += bool(g[pick][1])
    scores = [s for g in groups for s, _ in g]
    labels = [bool(y) for g in groups for _, y in g]
    n = len(groups)
    return {
        "convention": "paper (Anjum 2025, utils/functions.py eval_intrinsic)",
        "n_questions": n,
        "n_pairs": pairs,
        "pairwise_accuracy": wins / pairs if pairs else None,
        "macro_f1": macro_f1(scores, labels, 0.5, strict=True),
        "hit_at_1": hits / n if n else None,
        "mrr": rr / n if n else None,
        "hit_at_1_e2e": (e2e / n if n else None) if sqls is not None else None,
    }


def discriminator_metrics(groups: Iterable[Group], threshold: float = 0.5, bins: int = 10,
                          sqls: Sequence[Sequence[str]] | None = None) -> dict:
    """All the metrics above for a list of per-question groups: the project's convention at the top level,
    the paper's under "paper". `sqls` (per group, same order) enables the paper's end-to-end tie-break."""
    groups = [list(g) for g in groups]
    if sqls is not None:
        sqls = [s for s, g in zip(sqls, groups, strict=True) if len(g) > 0]
    groups = [g for g in groups if len(g) > 0]
    n_all_correct = sum(1 for g in groups if all(y for _, y in g))
    n_all_wrong = sum(1 for g in groups if not any(y for _, y in g))
    mixed = [g for g in groups if any(y for _, y in g) and not all(y for _, y in g)]

    wins = pairs = 0
    per_q = []
    hits = 0
    rr = 0.0
    for g in mixed:
        w, p = _pairwise(g)
        wins += w
        pairs += p
        per_q.append(w / p)
        order = rank_order([s for s, _ in g])
        hits += bool(g[order[0]][1])
        first = next(r for r, i in enumerate(order, start=1) if g[i][1])
        rr += 1.0 / first
    hits_all = sum(1 for g in groups if g[rank_order([s for s, _ in g])[0]][1])

    scores = [s for g in groups for s, _ in g]
    labels = [bool(y) for g in groups for _, y in g]
    out = {
        "n_questions": len(groups),
        "n_candidates": len(scores),
        "n_correct_candidates": sum(labels),
        "n_mixed": len(mixed),
        "n_all_correct": n_all_correct,
        "n_all_wrong": n_all_wrong,
        "n_pairs": pairs,
        "pairwise_accuracy": wins / pairs if pairs else None,
        "pairwise_accuracy_macro": sum(per_q) / len(per_q) if per_q else None,
        "hit_at_1": hits / len(mixed) if mixed else None,
        "mrr": rr / len(mixed) if mixed else None,
        "hit_at_1_all": hits_all / len(groups) if groups else None,
        "threshold": threshold,
        "macro_f1": macro_f1(scores, labels, threshold),
        "auroc": auroc(scores, labels),
    }
    cal = reliability(scores, labels, bins)
    out["ece"] = cal["ece"]
    out["reliability"] = cal["bins"]
    out["convention"] = "project (F1 at >= threshold; Hit@1/MRR over mixed questions)"
    out["paper"] = paper_metrics(groups, sqls)
    return out


def macro_f1(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.5, *,
             strict: bool = False) -> float | None:
    """Macro F1 with "predicted correct" = score >= threshold (strict: score > threshold, the paper's)."""
    if not scores:
        return None
    from sklearn.metrics import f1_score

    pred = [(s > threshold) if strict else (s >= threshold) for s in scores]
    return float(f1_score(list(labels), pred, average="macro", labels=[False, True], zero_division=0))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(labels), list(scores)))


def reliability(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> dict:
    """Equal-width bins over [0, 1]: count, mean score, accuracy per bin, and the ECE."""
    table = []
    ece = 0.0
    n = len(scores)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, s in enumerate(scores)
               if (lo <= min(max(s, 0.0), 1.0) < hi) or (b == bins - 1 and s >= 1.0)]
        if idx:
            conf = sum(min(max(scores[i], 0.0), 1.0) for i in idx) / len(idx)
            acc = sum(1 for i in idx if labels[i]) / len(idx)
            ece += len(idx) / n * abs(acc - conf)
        else:
            conf = acc = None
        table.append({"lo": lo, "hi": hi, "count": len(idx), "mean_score": conf, "accuracy": acc})
    return {"ece": ece if n else None, "bins": table}


def ex_rate(flags: Iterable[bool]) -> float | None:
    """Percentage of True (None for no items)."""
    flags = list(flags)
    return 100.0 * sum(1 for f in flags if f) / len(flags) if flags else None


def ex_by_group(records: Sequence[Mapping], key: str = "difficulty", field: str = "ex") -> dict[str, dict]:
    """{group: {"n": count, "ex": percent}} plus "all"; records lacking `key` go to "unknown"."""
    groups: dict[str, list[bool]] = {}
    for r in records:
        groups.setdefault(str(r.get(key) or "unknown"), []).append(bool(r.get(field)))
    out = {g: {"n": len(v), "ex": ex_rate(v)} for g, v in groups.items()}
    out["all"] = {"n": len(records), "ex": ex_rate(bool(r.get(field)) for r in records)}
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval for a proportion, in percent."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100 * (centre - half), 100 * (centre + half)


LEVEL_ORDER = ("easy", "medium", "hard", "extra", "simple", "moderate", "challenging", "unknown", "all")


def order_levels(keys) -> list[str]:
    """Difficulty levels in their natural order (Spider's, then BIRD's), unknown names last, alphabetically."""
    return sorted(keys, key=lambda k: (LEVEL_ORDER.index(k) if k in LEVEL_ORDER else len(LEVEL_ORDER), k))
