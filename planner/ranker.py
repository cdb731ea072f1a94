"""The learned selection policy (`ranker`): features of result clusters, the model artifact, plan confidence.

A question's executable candidates are grouped into result clusters by the one clustering rule of
`core.clusters` (equal order-insensitive fingerprints; weights max(1, duplicates)). Each cluster gets a feature row that needs no gold (`FEATURES`):

- votes: the cluster's vote share, its size rank, the margin to the next cluster, the number of clusters,
  the executable share of the candidates;
- discriminator: member mean / max soft score when scores exist (and a flag; 0.5 otherwise);
- generator priors: each candidate's source has a prior accuracy: from logged outcomes (labels) when the
  artifact or the feedback has some for that source, otherwise estimated without labels by a one-coin
  Dawid-Skene truth discovery over the questions seen (`agreement_priors`): sources whose results agree
  with the weighted majority more often get higher accuracy. Features: the members' best and mean prior,
  the prior-weighted vote share (log-odds weights) and whether it is the best-prior cluster;
- result shape: empty, all NULL, one value, one row, log row count, columns, against cues in the question
  ("how many", "list", "top"/superlatives, "each");
- SQL shape of the cluster's representative: joins, aggregates, GROUP BY, ORDER BY ... LIMIT, DISTINCT,
  nesting, set operations, length;
- literal agreement: share of the question's numbers / quoted values found in the SQL literals, and of
  the SQL's string literals found in the question (rapidfuzz partial ratio).

A pointwise classifier scores each cluster (`planner.ranker_model`: a free gradient-boosted member and one
boosted from the vote's log-odds, averaged); the policy picks the best cluster and, within it, the member with the best prior, then the best
soft score, then the earliest. Confidence: calibrators fitted on held-out folds (`Calibrator`: Platt or
isotonic, whichever has the lower grouped cross-validated Brier score) map the chosen cluster's model score
(ranker, and the other policies) or its vote share (vote) to P(correct).

The artifact (`RankerArtifact`, a joblib file) is versioned: format version, feature list, prior mode
(`labelled` = per-source priors from training labels, or `agreement` = system-agnostic), the priors, a
hash of the training data, the cross-validated metrics and the calibrators. A `RankerState` holds the artifact
a Planner uses (loaded from `defaults.ranker` in the config, reloadable at run time) and the cross-question
evidence the priors are estimated from; every Planner owns one (`Planner.ranker_state`) and hands it to the
policy through `planner.select.SelectionContext`, so two Planners in one process never share an artifact.
Nothing here changes the candidates it reads.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.clusters import Clustering, argmax_first, cluster, result_key, sample_weight
from core.model import ScoredCandidate, executable

FORMAT_VERSION = 1
# the shipped default (`defaults.ranker = "default"`): fitted on a mix of pool kinds, agreement priors only
# (docs/selection.md, "Pool kinds"; `python -m benchmarks.selection_mix fit`)
DEFAULT_ARTIFACT = Path(__file__).parent / "data" / "ranker_default.joblib"


def resolve_artifact(path: str | Path) -> Path:
    """"default" is the shipped artifact; anything else a path."""
    return DEFAULT_ARTIFACT if str(path) == "default" else Path(path)
DEFAULT_PRIOR = 0.6  # a source with neither labels nor agreement evidence

FEATURES: tuple[str, ...] = (
    "vote_share", "size_rank", "share_margin", "is_top", "n_clusters", "exec_share", "n_candidates_log",
    "has_scores", "score_mean", "score_max", "score_rank1",
    "prior_max", "prior_mean", "prior_share", "is_prior_top", "prior_margin",
    "empty", "all_null", "one_value", "one_row", "rows_log", "n_columns",
    "q_howmany", "q_list", "q_top", "q_each", "howmany_one_value", "each_many_rows", "top_order_limit",
    "sql_joins", "sql_agg", "sql_group", "sql_order_limit", "sql_distinct", "sql_nesting", "sql_setop",
    "sql_len_log", "sql_where", "lit_q_numbers_in_sql", "lit_sql_strings_in_q", "lit_n_sql",
    # order evidence (issue 26): positions normalised by the pool size, and the label-free accuracy lift of the
    # cluster's positions (`position_keys`: ~0 where order carries nothing, e.g. shuffled or i.i.d. samples)
    "pos_first", "pos_mean", "pos_rep", "holds_first", "pos_lift_max", "pos_lift_first",
    # likelihood evidence: the generator's sequence logprobs, relative within the question (0 and has_logprob=0
    # when any executable candidate lacks one)
    "has_logprob", "lp_mean_gap", "lp_total_gap", "lp_mass", "lp_rank1",
)
POSITION_PREFIX = "#pos:"  # position "sources" in the priors map (a source_key never holds "#", so none collides)

# --------------------------------------------------------------------------------------------------
# Priors: labelled outcomes, else one-coin Dawid-Skene agreement
# --------------------------------------------------------------------------------------------------


def source_key(source: str) -> str:
    """Samples of one generator (`name#k`) share a prior."""
    return source.split("#", 1)[0]


def agreement_priors(questions: Sequence[Mapping[str, str | None]], iters: int = 10) -> dict[str, float]:
    """Label-free accuracy estimate per source from `questions` = [{source: result key or None}] (None: did not
    execute, counts as wrong). One-coin Dawid-Skene with leave-one-out: repeat (a) per question, the
    posterior that a source's result is the true one, from the *other* sources' log-odds-weighted votes
    (so a source cannot vouch for itself), (b) each source's accuracy = its mean posterior (Laplace smoothed)."""
    srcs = sorted({s for q in questions for s in q})
    if not srcs:
        return {}
    acc = dict.fromkeys(srcs, 0.7)

    def lo(a: float) -> float:
        a = min(max(a, 0.02), 0.98)
        return max(0.0, math.log(a / (1 - a)) + 1.0)  # +1: a plain vote when a ~ 0.5

    for _ in range(iters):
        tot = dict.fromkeys(srcs, 0.0)
        cnt = dict.fromkeys(srcs, 0)
        for q in questions:
            w: dict[str, float] = {}
            for s, k in q.items():
                if k is not None:
                    w[k] = w.get(k, 0.0) + lo(acc[s])
            for s, k in q.items():
                cnt[s] += 1
                if k is None:
                    continue
                others = dict(w)
                others[k] -= lo(acc[s])
                m = max(others.values())
                z = sum(math.exp(v - m) for v in others.values())
                tot[s] += math.exp(others[k] - m) / z
        new = {s: (tot[s] + 1.0) / (cnt[s] + 2.0) for s in srcs}
        if max(abs(new[s] - acc[s]) for s in srcs) < 1e-4:
            acc = new
            break
        acc = new
    return acc


def labelled_priors(outcomes: Mapping[str, tuple[int, int]], strength: float = 4.0,
                    fallback: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per-source accuracy from (correct, total) counts, shrunk toward the agreement estimate (or DEFAULT_PRIOR)."""
    fb = fallback or {}
    out = {}
    for s, (c, n) in outcomes.items():
        base = fb.get(s, DEFAULT_PRIOR)
        out[s] = (c + strength * base) / (n + strength)
    return out


def position_keys(cands: Sequence[ScoredCandidate]) -> dict[str, str | None]:
    """{"#pos:k": result key} per candidate position: the agreement estimate over positions says whether a
    pool's order carries its generator's ranking (position 0 agrees with the others more than later ones)."""
    return {f"{POSITION_PREFIX}{k}": result_key(c) for k, c in enumerate(cands)}


ORDER_Z = 1.645  # one-sided 5 %: position 0 must agree with the others significantly more than later positions
ORDERED_KEY = "#pos:ordered"


def order_is_informative(questions: Sequence[Mapping[str, str | None]]) -> bool:
    """Label-free test of whether a pool's order carries a ranking: how often position 0's result equals the
    plurality result of the *other* candidates, against the same rate pooled over the later positions
    (two-proportion z-test, one-sided at ORDER_Z). I.i.d. samples and alphabetical systems fail it."""
    hit0 = n0 = hit = n = 0
    for q in questions:
        keys = [q.get(f"{POSITION_PREFIX}{k}") for k in range(len(q))]
        if len(keys) < 3:
            continue
        for k, key in enumerate(keys):
            others: dict[str, int] = {}
            for j, o in enumerate(keys):
                if j != k and o is not None:
                    others[o] = others.get(o, 0) + 1
            top = max(others.values(), default=0)
            agree = key is not None and top > 0 and others.get(key, 0) == top
            if k == 0:
                hit0, n0 = hit0 + agree, n0 + 1
            else:
                hit, n = hit + agree, n + 1
    if n0 < 10 or n < 10:
        return False
    p0, p1, p = hit0 / n0, hit / n, (hit0 + hit) / (n0 + n)
    se = math.sqrt(max(p * (1 - p) * (1 / n0 + 1 / n), 1e-12))
    return (p0 - p1) / se > ORDER_Z


def position_priors(questions: Sequence[Mapping[str, str | None]]) -> dict[str, float]:
    """Label-free accuracy per position (`agreement_priors` over `position_keys` maps), estimated apart from the
    sources' so a candidate never votes twice, and ORDERED_KEY: 1.0 when `order_is_informative`, else 0.0 (the
    order features are then neutral: a pool whose order carries nothing gives the model nothing to fit)."""
    if not questions:
        return {}
    return {**agreement_priors(questions), ORDERED_KEY: float(order_is_informative(questions))}


def question_keys(cands: Sequence[ScoredCandidate]) -> dict[str, str | None]:
    """{source: result key} for the agreement estimate (the first candidate of each source wins)."""
    out: dict[str, str | None] = {}
    for c in cands:
        s = c.candidate.source
        if s not in out:
            out[s] = result_key(c)
    return out


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------

_HOWMANY = re.compile(r"\b(how many|number of|count of|total number|how much)\b", re.I)
_LIST = re.compile(r"\b(list|show|give|find all|what are|which|names? of|display|return)\b", re.I)
_TOP = re.compile(r"\b(top|most|least|highest|lowest|largest|smallest|maximum|minimum|max|min|best|worst|oldest|"
                  r"youngest|first|last|fewest|greatest|earliest|latest|longest|shortest)\b", re.I)
_EACH = re.compile(r"\b(each|every|per|for all|for each)\b", re.I)
_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_QUOTED = re.compile(r"[\"“']([^\"”']{1,60})[\"”']")
_SQL_STR = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"]|\"\")*)\"")


def question_cues(text: str) -> dict[str, float]:
    return {"q_howmany": float(bool(_HOWMANY.search(text))), "q_list": float(bool(_LIST.search(text))),
            "q_top": float(bool(_TOP.search(text))), "q_each": float(bool(_EACH.search(text)))}


@lru_cache(maxsize=65536)
def sql_features(sql: str) -> dict[str, float]:
    """Shape of one SQL (sqlglot; a regex fallback when it does not parse)."""
    s = sql.strip()
    low = s.lower()
    f = {"sql_len_log": math.log1p(len(s.split()))}
    try:
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(s, read="sqlite")
        f["sql_joins"] = float(len(list(tree.find_all(exp.Join))))
        f["sql_agg"] = float(any(True for _ in tree.find_all(exp.AggFunc)))
        f["sql_group"] = float(tree.find(exp.Group) is not None)
        f["sql_order_limit"] = float(tree.find(exp.Order) is not None and tree.find(exp.Limit) is not None)
        f["sql_distinct"] = float(tree.find(exp.Distinct) is not None)
        f["sql_nesting"] = float(max(0, len(list(tree.find_all(exp.Select))) - 1))
        f["sql_setop"] = float(any(True for _ in tree.find_all(exp.Union, exp.Intersect, exp.Except)))
        f["sql_where"] = float(tree.find(exp.Where) is not None)
    except Exception:  # noqa: BLE001 - unparseable SQL still gets coarse features
        f["sql_joins"] = float(low.count(" join "))
        f["sql_agg"] = float(bool(re.search(r"\b(count|sum|avg|min|max)\s*\(", low)))
        f["sql_group"] = float("group by" in low)
        f["sql_order_limit"] = float("order by" in low and " limit " in low)
        f["sql_distinct"] = float("distinct" in low)
        f["sql_nesting"] = float(max(0, low.count("select") - 1))
        f["sql_setop"] = float(any(k in low for k in (" union ", " intersect ", " except ")))
        f["sql_where"] = float(" where " in low)
    return f


@lru_cache(maxsize=65536)
def literal_features(question: str, sql: str) -> dict[str, float]:
    from rapidfuzz import fuzz

    q_nums = set(_NUM.findall(question))
    strs = [a or b for a, b in _SQL_STR.findall(sql)]
    body = _SQL_STR.sub(" ", sql)
    sql_nums = set(_NUM.findall(body))
    q_quoted = [m.strip() for m in _QUOTED.findall(question)]
    n_q = len(q_nums) + len(q_quoted)
    hits = sum(1 for x in q_nums if x in sql_nums) + sum(
        1 for x in q_quoted if any(fuzz.ratio(x.lower(), s.strip("%").lower()) >= 85 for s in strs))
    ql = question.lower()
    s_hits = sum(1 for s in strs if s.strip("% ") and fuzz.partial_ratio(s.strip("% ").lower(), ql) >= 85)
    return {"lit_q_numbers_in_sql": hits / n_q if n_q else 1.0,
            "lit_sql_strings_in_q": s_hits / len(strs) if strs else 1.0,
            "lit_n_sql": float(len(strs) + len(sql_nums))}


def _shape(c: ScoredCandidate) -> dict[str, float]:
    e = c.execution
    rows = e.rows if e is not None else []
    n = e.row_count if e is not None else 0
    all_null = bool(rows) and all(v is None for r in rows for v in r)
    return {"empty": float(n == 0), "all_null": float(all_null),
            "one_value": float(n == 1 and len(e.columns) == 1) if e is not None else 0.0,
            "one_row": float(n == 1), "rows_log": math.log1p(n), "n_columns": float(len(e.columns) if e else 0)}


@dataclass
class Clusters:
    """A question's result clusters (`core.clusters`: candidate indices, first-appearance order) and their
    feature rows."""

    clustering: Clustering
    rows: list[list[float]]

    @property
    def members(self) -> list[list[int]]:
        return self.clustering.members


def cluster_features(cands: Sequence[ScoredCandidate], question: str, priors: Mapping[str, float]) -> Clusters:
    cl = cluster(cands)
    members = cl.members
    if not members:
        return Clusters(cl, [])
    dup = [sample_weight(c) for c in cands]
    shares = cl.shares()
    order = sorted(range(len(members)), key=lambda k: (-shares[k], k))
    rank = {k: r for r, k in enumerate(order)}
    has_scores = all(c.scores for c in cands)
    pri = [priors.get(source_key(c.candidate.source), DEFAULT_PRIOR) for c in cands]

    def lo(p: float) -> float:
        p = min(max(p, 0.02), 0.98)
        return max(0.0, math.log(p / (1 - p)) + 1.0)

    pw = [sum(lo(pri[i]) * dup[i] for i in m) for m in members]
    pw_tot = sum(pw) or 1.0
    pmax = [max(pri[i] for i in m) for m in members]
    smax = [max(cands[i].scores[-1].score for i in m) if has_scores else 0.5 for m in members]
    cues = question_cues(question)
    n_exec = sum(1 for k in cl.of if k is not None)
    order = _order_evidence(cands, members, priors)
    lik = _likelihood_evidence(cands, members)
    rows = []
    for k, m in enumerate(members):
        rep = m[_best_member(m, cands, pri)]
        others_share = max((shares[j] for j in range(len(members)) if j != k), default=0.0)
        others_pmax = max((pmax[j] for j in range(len(members)) if j != k), default=0.0)
        f: dict[str, float] = {
            "vote_share": shares[k], "size_rank": float(rank[k]), "share_margin": shares[k] - others_share,
            "is_top": float(rank[k] == 0), "n_clusters": float(len(members)), "exec_share": n_exec / len(cands),
            "n_candidates_log": math.log1p(len(cands)), "has_scores": float(has_scores),
            "score_mean": (sum(cands[i].scores[-1].score for i in m) / len(m)) if has_scores else 0.5,
            "score_max": smax[k], "score_rank1": float(has_scores and smax[k] >= max(smax)),
            "prior_max": pmax[k], "prior_mean": sum(pri[i] for i in m) / len(m), "prior_share": pw[k] / pw_tot,
            "is_prior_top": float(pmax[k] >= max(pmax)), "prior_margin": pmax[k] - others_pmax,
            **_shape(cands[rep]), **cues, **sql_features(cands[rep].candidate.sql),
            **literal_features(question, cands[rep].candidate.sql),
        }
        f["howmany_one_value"] = f["q_howmany"] * f["one_value"]
        f["each_many_rows"] = f["q_each"] * float(f["rows_log"] > math.log(2.5))
        f["top_order_limit"] = f["q_top"] * f["sql_order_limit"]
        f["pos_rep"] = rep / max(len(cands) - 1, 1) if priors.get(ORDERED_KEY) else 0.0
        f.update(order[k])
        f.update(lik[k])
        rows.append([float(f[name]) for name in FEATURES])
    return Clusters(cl, rows)


def _order_evidence(cands: Sequence[ScoredCandidate], members: Sequence[Sequence[int]],
                    priors: Mapping[str, float]) -> list[dict[str, float]]:
    """Per cluster: its earliest and mean position over (N - 1), whether it holds candidate 0, and the lift of
    its positions' label-free accuracy (`position_priors`, in `priors` under "#pos:k") over the mean position's:
    the best member's and candidate 0's (when it holds it). All 0 unless the pool's order passed
    `order_is_informative` (ORDERED_KEY in `priors`)."""
    span = max(len(cands) - 1, 1)
    if not priors.get(ORDERED_KEY):  # the pool's order carries no ranking (or no evidence yet): neutral
        return [dict.fromkeys(("pos_first", "pos_mean", "holds_first", "pos_lift_max", "pos_lift_first"), 0.0)
                for _ in members]
    pacc = [priors.get(f"{POSITION_PREFIX}{i}") for i in range(len(cands))]
    known = [p for p in pacc if p is not None]
    mean = sum(known) / len(known) if known else 0.0

    def lift(i: int) -> float:
        return 0.0 if pacc[i] is None else float(pacc[i]) - mean

    out = []
    for m in members:
        out.append({"pos_first": min(m) / span, "pos_mean": sum(m) / len(m) / span, "holds_first": float(0 in m),
                    "pos_lift_max": max(lift(i) for i in m), "pos_lift_first": lift(0) if 0 in m else 0.0})
    return out


def _likelihood_evidence(cands: Sequence[ScoredCandidate], members: Sequence[Sequence[int]]) -> list[dict[str, float]]:
    """Per cluster, from the generator's sequence logprobs (`Candidate.logprob`, `logprob_tokens`): the gap of its
    best member's mean token logprob and total logprob to the question's best (<= 0), its share of the
    likelihood mass (sum of exp(total logprob) x sample weight, over all executable candidates) and whether it
    has the best mean logprob. Missing when any executable candidate has no logprob: zeros, has_logprob 0."""
    ex = [i for m in members for i in m]
    lp = [getattr(c.candidate, "logprob", None) for c in cands]  # getattr: candidates pickled before the field
    have = bool(ex) and all(lp[i] is not None for i in ex)
    if not have:
        return [{"has_logprob": 0.0, "lp_mean_gap": 0.0, "lp_total_gap": 0.0, "lp_mass": 0.0, "lp_rank1": 0.0}
                for _ in members]
    tot = {i: float(lp[i]) for i in ex}  # type: ignore[arg-type]
    mean = {i: tot[i] / max(1, getattr(cands[i].candidate, "logprob_tokens", None) or 1) for i in ex}
    best_mean = max(mean.values())
    best_tot = max(tot.values())
    mass = [sum(math.exp(tot[i] - best_tot) * sample_weight(cands[i]) for i in m) for m in members]
    z = sum(mass) or 1.0
    out = []
    for m, w in zip(members, mass, strict=True):
        bm = max(mean[i] for i in m)
        out.append({"has_logprob": 1.0, "lp_mean_gap": bm - best_mean, "lp_total_gap": max(tot[i] for i in m) - best_tot,
                    "lp_mass": w / z, "lp_rank1": float(bm >= best_mean)})
    return out


def _best_member(m: Sequence[int], cands: Sequence[ScoredCandidate], pri: Sequence[float]) -> int:
    """Position in `m` of the member with the best prior, then the best soft score, then the earliest."""
    def key(j: int) -> tuple[float, float, int]:
        c = cands[m[j]]
        return (pri[m[j]], c.scores[-1].score if c.scores else 0.5, -j)

    return max(range(len(m)), key=key)


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------

_EPS = 1e-3


def logit(x: Any, eps: float = _EPS) -> Any:
    """log(x / (1 - x)), x clipped to [eps, 1 - eps] (default 0.001)."""
    import numpy as np

    x = np.clip(np.asarray(x, dtype=float), eps, 1 - eps)
    return np.log(x / (1 - x))


class Calibrator:
    """A map from a raw confidence signal in [0, 1] (model score, vote share) to P(correct).

    kind `platt`: sigmoid(a * logit(x) + b) (two parameters: robust on small sets, smooth);
    `isotonic`: scikit-learn `IsotonicRegression` (monotone steps: flexible, needs more data);
    `const`: one probability (a training set with one class). `eval.select_fit.fit_calibrator` chooses the
    kind per fit by grouped cross-validated Brier score and records the comparison in `cv`."""

    def __init__(self, kind: str, *, a: float = 1.0, b: float = 0.0, iso: Any = None, const: float = 0.5,
                 n: int = 0, cv: dict[str, float] | None = None):
        self.kind, self.a, self.b, self.iso, self.const, self.n = kind, a, b, iso, const, n
        self.cv = dict(cv or {})

    def predict(self, x: Sequence[float]) -> Any:
        import numpy as np

        x = np.asarray(x, dtype=float)
        if self.kind == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * logit(x) + self.b)))
        if self.kind == "isotonic":
            return np.clip(self.iso.predict(x), 0.0, 1.0)
        return np.full(x.shape, self.const)

    def __repr__(self) -> str:
        return f"Calibrator({self.kind}, n={self.n}, cv_brier={self.cv})"


# --------------------------------------------------------------------------------------------------
# Artifact
# --------------------------------------------------------------------------------------------------


@dataclass
class RankerArtifact:
    model: Any  # fitted classifier with predict_proba
    features: list[str]
    prior_mode: str = "labelled"  # labelled | agreement (system-agnostic)
    priors: dict[str, float] = field(default_factory=dict)  # labelled per-source accuracies (labelled mode)
    calibrators: dict[str, Any] = field(default_factory=dict)  # "ranker" | "vote" | "model" -> Calibrator
    data_hash: str = ""
    cv_metrics: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def save(self, path: str | Path) -> Path:
        import joblib

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format": "sqlarbiter-ranker", **self.__dict__}, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> RankerArtifact:
        import joblib

        p = resolve_artifact(path)
        if not p.is_file():
            raise FileNotFoundError(f"ranker artifact not found: {p}")
        d = joblib.load(p)
        if not isinstance(d, dict) or d.pop("format", None) != "sqlarbiter-ranker":
            raise ValueError(f"{p} is not a sqlarbiter ranker artifact")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"{p}: ranker artifact version {d.get('version')}, this build reads {FORMAT_VERSION}")
        if list(d.get("features", [])) != list(FEATURES):
            raise ValueError(f"{p}: the artifact's feature list differs from this build's; refit it")
        return cls(**d)

    def effective_priors(self, agreement: Mapping[str, float]) -> dict[str, float]:
        """Labelled priors where the artifact (or feedback) knows the source, else the agreement estimate."""
        out = dict(agreement)
        if self.prior_mode == "labelled":
            out.update(self.priors)
        return out

    def score_clusters(self, rows: list[list[float]]) -> list[float]:
        import numpy as np

        if not rows:
            return []
        return [float(p) for p in self.model.predict_proba(np.asarray(rows, dtype=float))[:, 1]]

    def calibrate(self, name: str, x: float) -> float:
        cal = self.calibrators.get(name)
        if cal is None:
            return float(x)
        return float(min(max(cal.predict([x])[0], 0.0), 1.0))


@dataclass(frozen=True)
class RankResult:
    """What `rank_select` decided: the chosen index (None: nothing executes), why, the raw model score of the
    chosen cluster, the clusters with their feature rows, and one score per cluster."""

    index: int | None
    reason: str
    raw: float | None
    features: Clusters
    scores: list[float]

    @property
    def clusters(self) -> Clustering:
        return self.features.clustering


def rank_select(cands: Sequence[ScoredCandidate], question: str, priors: Mapping[str, float],
                artifact: RankerArtifact | None) -> RankResult:
    """Rank the result clusters and choose. Without an artifact, clusters are ranked by their prior-weighted
    vote share (a weighted majority vote). Reads the candidates, never changes them."""
    cl = cluster_features(cands, question, priors)
    if not cl.members:
        return RankResult(None, "no candidate executes", None, cl, [])
    if artifact is not None:
        scores = artifact.score_clusters(cl.rows)
        how = "ranker"
    else:
        col = FEATURES.index("prior_share")
        scores = [r[col] for r in cl.rows]
        how = "prior-weighted vote (no ranker artifact loaded)"
    best = best_cluster(scores)
    if artifact is not None:
        why = vote_guard(artifact, len(cands), scores, best, cl.clustering.largest())
        if why is not None:  # vote's own pick: its largest cluster's first member
            kv = cl.clustering.largest()
            return RankResult(cl.members[kv][0], f"ranker -> vote: {why}", scores[kv], cl, scores)
    pri = [priors.get(source_key(c.candidate.source), DEFAULT_PRIOR) for c in cands]
    m = cl.members[best]
    i = m[_best_member(m, cands, pri)]
    return RankResult(i, f"{how}: best of {len(cl.members)} result clusters (score {scores[best]:.3f}, {len(m)} "
                         "members)", scores[best], cl, scores)


def best_cluster(scores: Sequence[float]) -> int:
    """The cluster the ranker picks: the highest score, the earliest on ties."""
    return argmax_first(range(len(scores)), scores.__getitem__)


def _defers(scores: Sequence[float], best: int, vote_cluster: int, margin: float) -> bool:
    """The guard's margin rule: the ranker's best cluster is not vote's and beats it by less than `margin`."""
    return best != vote_cluster and scores[best] - scores[vote_cluster] < margin


VOTE_MARGINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.01)  # the grid `fit_vote_guard` chooses from
SUPPORT_SLACK = 2.0  # a pool with more candidates than this times the most the ranker was trained on is outside it


def vote_guard(artifact: RankerArtifact, n_candidates: int, scores: Sequence[float], best: int,
               vote_cluster: int) -> str | None:
    """Why the ranker keeps vote's pick instead of its own (None: it does not): vote is the ranker's baseline, and
    the ranker leaves it only where it has learnt to. Two rules, both from the artifact (`meta["vote_guard"]`, set
    by `eval.select_fit` from held-out folds; an artifact without it never defers):
    - outside its training support: more candidates per question than `SUPPORT_SLACK` times the most it was
      trained on (its share, cluster-count and prior features live in ranges it never saw);
    - not sure enough: its best cluster beats vote's by less than the `margin` chosen out of fold."""
    g = (artifact.meta or {}).get("vote_guard") or {}
    most = g.get("max_candidates")
    if most and n_candidates > SUPPORT_SLACK * most:
        return (f"{n_candidates} candidates, more than {SUPPORT_SLACK:g}x the {most} per question the ranker was "
                "trained on: outside its training support")
    margin = float(g.get("margin") or 0.0)
    if _defers(scores, best, vote_cluster, margin):
        return (f"its best cluster scores {scores[best]:.3f}, vote's {scores[vote_cluster]:.3f}: less than the "
                f"margin {margin:g} it needs to leave vote")
    return None


GUARD_P = 0.05  # a margin is adopted only when it beats margin 0 by a one-sided sign test at this level


def fit_vote_guard(items: Sequence[tuple[Sequence[float], int, Sequence[bool | None]]],
                   max_candidates: int) -> dict[str, Any]:
    """The guard's margin from held-out questions, each `(cluster scores, vote's cluster, cluster labels)`. For each
    margin of `VOTE_MARGINS`, the questions where its pick (`vote_guard`'s rule) and the ranker's own differ in
    correctness are wins (only the guarded pick right) or losses; the margin with the most net wins is adopted only
    when a one-sided sign test puts its wins above its losses at `GUARD_P`, else the margin is 0 (the ranker as
    fitted). Small held-out sets therefore keep the ranker's own picks: moving off them needs evidence, as `auto`
    does."""
    best_m, best_net, best_p, best_wl = 0.0, 0, 1.0, (0, 0)
    for m in VOTE_MARGINS[1:]:
        wins = losses = 0
        for sc, kv, lab in items:
            if not sc:
                continue
            top = best_cluster(sc)
            if not _defers(sc, top, kv, m):
                continue  # the guard keeps the ranker's pick
            g, r = bool(lab[kv]), bool(lab[top])
            wins += g and not r
            losses += r and not g
        p = sign_test(wins, losses)
        if p <= GUARD_P and wins - losses > best_net:
            best_m, best_net, best_p, best_wl = m, wins - losses, p, (wins, losses)
    return {"margin": best_m, "max_candidates": int(max_candidates), "held_out_questions": len(items),
            "wins": best_wl[0], "losses": best_wl[1], "p": round(best_p, 6)}


def vote_share_of(cands: Sequence[ScoredCandidate], i: int | None) -> float:
    """Share of the candidates (by sample weight) whose result equals candidate i's (0 when it does not execute)."""
    return cluster(cands).share_of(i)


def plan_confidence(policy: str, cands: Sequence[ScoredCandidate], chosen: int | None, question: str,
                    priors: Mapping[str, float], artifact: RankerArtifact | None) -> float | None:
    """P(the chosen candidate is correct). With an artifact: its held-out calibrators (vote: of the
    vote share; other policies: of the model score of the chosen cluster). Without one: the vote share."""
    if chosen is None:
        return None
    if not executable(cands[chosen]):
        return 0.0
    if artifact is None:
        return vote_share_of(cands, chosen)
    if policy == "vote":
        return artifact.calibrate("vote", vote_share_of(cands, chosen))
    cl = cluster_features(cands, question, priors)
    k = next(k for k, m in enumerate(cl.members) if chosen in m)
    raw = artifact.score_clusters([cl.rows[k]])[0]
    return artifact.calibrate("ranker" if policy == "ranker" else "model", raw)


# --------------------------------------------------------------------------------------------------
# Serving state: the active artifact and the cross-question evidence
# --------------------------------------------------------------------------------------------------


class RankerState:
    """The active artifact (reloadable) plus the last `window` questions' {source: result} maps (agreement
    priors) and the feedback outcomes per source (labelled priors). Thread-safe."""

    def __init__(self, window: int = 500):
        self._lock = threading.Lock()
        self.artifact: RankerArtifact | None = None
        self.path: str | None = None
        self._seen: deque[dict[str, str | None]] = deque(maxlen=window)
        self._seen_pos: deque[dict[str, str | None]] = deque(maxlen=window)  # position -> result (order evidence)
        self._outcomes: dict[str, list[int]] = {}
        self._priors: dict[str, float] | None = None
        self._policy_outcomes: dict[str, list[dict[str, bool | None]]] = {}  # pair -> per labelled plan (auto)

    def load(self, path: str | Path | None) -> RankerArtifact | None:
        """Load (or, with None, unload) the artifact; a failed load keeps the previous one and raises."""
        art = RankerArtifact.load(path) if path else None
        with self._lock:
            self.artifact, self.path = art, (str(path) if path else None)
            self._priors = None
        return art

    def reload(self) -> RankerArtifact | None:
        return self.load(self.path)

    def observe(self, cands: Sequence[ScoredCandidate]) -> None:
        keys = question_keys(cands)
        if keys:
            with self._lock:
                self._seen.append({source_key(s): k for s, k in keys.items()})
                self._seen_pos.append(position_keys(cands))
                self._priors = None

    def feedback(self, cands: Sequence[ScoredCandidate], chosen: int | None, correct: bool) -> None:
        """A labelled outcome: every source whose result equals the chosen one was right (or wrong) with it."""
        if chosen is None:
            return
        k = result_key(cands[chosen])
        with self._lock:
            for c in cands:
                if k is not None and result_key(c) == k:
                    o = self._outcomes.setdefault(source_key(c.candidate.source), [0, 0])
                    o[0] += int(correct)
                    o[1] += 1
            self._priors = None

    def record_policy_outcome(self, pair: str | None, cands: Sequence[ScoredCandidate], picks: Mapping[str, int | None],
                              chosen: int | None, correct: bool | None, correct_fingerprint: str | None = None) -> None:
        """A labelled plan of `pair`, as evidence for `policy = "auto"`: which of first / vote / ranker would have
        been right (`policy_labels`; `picks`: what each of AUTO_CHOICES chose on `cands`, from `planner.select`)."""
        labels = policy_labels(cands, picks, chosen, correct, correct_fingerprint)
        if labels is None:
            return
        with self._lock:
            self._policy_outcomes.setdefault(pair or "", []).append(labels)

    def auto_default(self) -> str:
        return "ranker" if self.artifact is not None else "vote"

    def auto_choice(self, pair: str | None) -> AutoDecision:
        """What `policy = "auto"` uses for `pair` now, and why (`decide_auto`)."""
        with self._lock:
            rows = list(self._policy_outcomes.get(pair or "", []))
        return decide_auto(rows, self.auto_default())

    def auto_report(self) -> dict[str, Any]:
        """Per pair with logged outcomes: the decision, the evidence, the rule's constants."""
        with self._lock:
            pairs = {p: list(v) for p, v in self._policy_outcomes.items()}
        d = self.auto_default()
        return {"default": d, "min_labels": AUTO_MIN_LABELS, "alpha": AUTO_ALPHA, "choices": list(AUTO_CHOICES),
                "pairs": {p or "(none)": decide_auto(v, d).as_dict() for p, v in pairs.items()}}

    def priors(self) -> dict[str, float]:
        with self._lock:
            if self._priors is None:
                agree = {**agreement_priors(list(self._seen)), **position_priors(list(self._seen_pos))}
                base = self.artifact.effective_priors(agree) if self.artifact else agree
                logged = labelled_priors({s: (c, n) for s, (c, n) in self._outcomes.items()}, fallback=base)
                self._priors = {**base, **logged}
            return dict(self._priors)


# --------------------------------------------------------------------------------------------------
# policy = "auto": per pair, first / vote / ranker by their EX on the pair's logged outcomes
# --------------------------------------------------------------------------------------------------

AUTO_CHOICES = ("first", "vote", "ranker")
AUTO_MIN_LABELS = 20  # labelled plans of a pair before auto may move off its default
AUTO_ALPHA = 0.05  # one-sided sign test on the plans where the challenger and the default disagree in outcome


@dataclass(frozen=True)
class AutoDecision:
    policy: str
    reason: str
    labelled: int = 0
    ex: dict[str, float | None] = field(default_factory=dict)  # per policy, EX over the plans where it is known
    known: dict[str, int] = field(default_factory=dict)
    default: str = "vote"

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "reason": self.reason, "labelled": self.labelled, "default": self.default,
                "ex": self.ex, "known": self.known}


def policy_labels(cands: Sequence[ScoredCandidate], picks: Mapping[str, int | None], chosen: int | None,
                  correct: bool | None, correct_fingerprint: str | None) -> dict[str, bool | None] | None:
    """Which of first / vote / ranker would have been right on a labelled plan (None: unknown). A corrected SQL's
    result fingerprint labels every candidate (equal result = right); `correct=True` labels the chosen result
    right and every other one wrong; `correct=False` labels the chosen result wrong only. A pick that does not
    execute is wrong. `cands`: the plan's non-rejected candidates."""
    if not cands or (correct is None and correct_fingerprint is None):
        return None
    ck = result_key(cands[chosen]) if chosen is not None and 0 <= chosen < len(cands) else None

    def label(i: int | None) -> bool | None:
        if i is None:
            return None
        k = result_key(cands[i])
        if k is None:
            return False
        if correct_fingerprint is not None:
            return k == f"fp:{correct_fingerprint}"
        if ck is None:
            return None
        if k == ck:
            return bool(correct)
        return False if correct else None

    return {p: label(picks.get(p)) for p in AUTO_CHOICES}


def sign_test(wins: int, losses: int) -> float:
    """One-sided P(X >= wins), X ~ Binomial(wins + losses, 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2.0 ** n


def decide_auto(rows: Sequence[Mapping[str, bool | None]], default: str) -> AutoDecision:
    """The auto rule. Each policy's EX is measured on the logged plans where its outcome is known; first and vote
    have no parameters and the ranker's artifact is fitted elsewhere, so these are held-out figures. Auto stays on
    `default` until the pair has AUTO_MIN_LABELS labelled plans; then it moves to the challenger with the highest
    EX among those that beat the default on a one-sided sign test at AUTO_ALPHA over the plans where both outcomes
    are known and differ (with no losses that needs 5 such plans)."""
    n = len(rows)
    ex: dict[str, float | None] = {}
    known: dict[str, int] = {}
    for p in AUTO_CHOICES:
        vals = [r[p] for r in rows if r.get(p) is not None]
        known[p] = len(vals)
        ex[p] = round(100.0 * sum(bool(v) for v in vals) / len(vals), 2) if vals else None
    if n < AUTO_MIN_LABELS:
        return AutoDecision(default, f"default: {n} of {AUTO_MIN_LABELS} labelled plans needed before auto may move",
                            n, ex, known, default)
    best, best_ex, why = default, -1.0, ""
    for p in AUTO_CHOICES:
        if p == default:
            continue
        both = [r for r in rows if r.get(p) is not None and r.get(default) is not None]
        wins = sum(1 for r in both if r[p] and not r[default])
        losses = sum(1 for r in both if r[default] and not r[p])
        pv = sign_test(wins, losses)
        e = ex[p] if ex[p] is not None else -1.0
        if pv <= AUTO_ALPHA and wins > losses and e > best_ex:
            best, best_ex = p, e
            why = (f"{p} beats {default} on {wins} of {wins + losses} labelled plans where they differ (sign test "
                   f"p={pv:.3g} <= {AUTO_ALPHA}); EX {ex[p]} vs {ex[default]} over {n} labelled plans")
    if best == default:
        return AutoDecision(default, f"default: no policy beats {default} significantly over {n} labelled plans",
                            n, ex, known, default)
    return AutoDecision(best, why, n, ex, known, default)


# --------------------------------------------------------------------------------------------------
# Pipeline hooks: confidence and abstention on a Plan
# --------------------------------------------------------------------------------------------------

LOW_CONFIDENCE = "low_confidence"


def annotate_plan(plan, policy: str, state: RankerState | None = None) -> None:
    """Set `plan.confidence` for the chosen candidate (None when nothing was chosen), with `state`'s artifact
    and priors (None: no artifact, no priors)."""
    if plan.chosen is None:
        plan.confidence = None
        return
    eligible = [i for i, sc in enumerate(plan.candidates) if not sc.candidate.rejected]
    cands = [plan.candidates[i] for i in eligible]  # read only: no copy needed
    chosen = eligible.index(plan.chosen) if plan.chosen in eligible else None
    priors, artifact = (state.priors(), state.artifact) if state is not None else ({}, None)
    conf = plan_confidence(policy, cands, chosen, plan.question.text, priors, artifact)
    plan.confidence = None if conf is None else round(float(conf), 6)


def apply_abstention(plan, abstain_below: float | None) -> None:
    """Below the threshold an `ok` plan becomes `low_confidence`; it keeps the chosen candidate."""
    if abstain_below is None or plan.status != "ok" or plan.confidence is None:
        return
    if plan.confidence < abstain_below:
        plan.status = LOW_CONFIDENCE
        plan.reason = (f"{plan.reason}; confidence {plan.confidence:.3f} is below abstain_below {abstain_below:g}: "
                       "the best candidate is shown, ask a person or escalate")
