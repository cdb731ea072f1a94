"""Issue 26: order and likelihood evidence, pools with and without logprobs, the pool-kind mix and its held-out
checks (no fold sees its test pool's generator), the auto rule, and the gap-closed share."""

from __future__ import annotations

import random

import pytest

from core.model import Candidate, ExecutionResult, ScoredCandidate
from eval import select_fit as sf
from eval import select_mix as sm
from planner.ranker import FEATURES, cluster_features, decide_auto


@pytest.fixture(autouse=True)
def _small_model(monkeypatch):
    from sklearn.ensemble import HistGradientBoostingClassifier

    monkeypatch.setattr(sf, "new_model", lambda: HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=7,
                                                                                   min_samples_leaf=10, random_state=0))


def _cand(fp: str, src: str, rows=((1,),), logprob=None, tokens=None) -> ScoredCandidate:
    ex = ExecutionResult(ok=True, fingerprint=fp, columns=["c"], rows=[list(r) for r in rows], row_count=len(rows))
    return ScoredCandidate(candidate=Candidate(sql=f"SELECT '{fp}'", source=src, logprob=logprob,
                                               logprob_tokens=tokens), execution=ex)


def _ranked_pool(seed: int, n_q: int = 90, shuffled: bool = False, gen: str = "g", p_first: float = 0.8,
                 p_other: float = 0.3, p_shared: float = 0.8) -> list[sf.LQ]:
    """One generator, 5 samples listed best-first: sample 0 is right with p_first, later ones with p_other, and
    a wrong sample gives the question's shared wrong answer with p_shared (defaults: the vote is fooled, the order
    is not). `shuffled`: the same, order destroyed."""
    rng = random.Random(seed)
    out = []
    for q in range(n_q):
        cands, labels = [], []
        for k in range(5):
            right = rng.random() < (p_first if k == 0 else p_other)
            fp = f"t{q}" if right else (f"w{q}" if rng.random() < p_shared else f"x{q}{k}")
            cands.append(_cand(fp, f"{gen}#{k}"))
            labels.append(right)
        if shuffled:
            order = list(range(5))
            rng.shuffle(order)
            cands, labels = [cands[i] for i in order], [labels[i] for i in order]
        out.append(sf.LQ(q, f"db{q % 6}", "How many things are there?", cands, labels))
    return out


def test_order_features_and_positional_lift_mean_something_only_where_order_does():
    kw = {"n_q": 200, "p_first": 0.9, "p_other": 0.6, "p_shared": 0.3}  # the majority is usually right
    ranked = sm.Pool("ranked", "subset-ranked", "a", _ranked_pool(0, **kw))
    shuffled = sm.Pool("shuffled", "shuffled", "b", _ranked_pool(0, shuffled=True, **kw))
    p0 = ranked.priors()["#pos:0"]
    others = [ranked.priors()[f"#pos:{k}"] for k in range(1, 5)]
    lift = p0 - sum(others) / len(others)
    assert lift > 0.05  # label-free: position 0 agrees with the rest more often
    sp = [shuffled.priors()[f"#pos:{k}"] for k in range(5)]
    assert abs(sp[0] - sum(sp[1:]) / 4) < lift / 2  # shuffled: no position stands out
    q = ranked.qs[0]
    cl = cluster_features(q.cands, q.question, ranked.priors())
    col = {f: FEATURES.index(f) for f in ("pos_first", "holds_first", "pos_lift_first", "has_logprob")}
    k0 = next(k for k, m in enumerate(cl.members) if 0 in m)
    assert cl.rows[k0][col["holds_first"]] == 1.0 and cl.rows[k0][col["pos_first"]] == 0.0
    assert cl.rows[k0][col["pos_lift_first"]] > 0 and all(r[col["has_logprob"]] == 0.0 for r in cl.rows)


def test_held_out_never_trains_on_the_test_generator_and_learns_order_across_pools(monkeypatch):
    kw = {"n_q": 150, "p_first": 0.9, "p_other": 0.45, "p_shared": 0.7}  # best-first; the vote is often fooled
    test = sm.Pool("ranked-test", "single-generator", "g1", _ranked_pool(1, gen="g1", **kw))
    pools = [test, sm.Pool("ranked-train", "subset-ranked", "systems", _ranked_pool(2, gen="s", **kw)),
             sm.Pool("shuffled-train", "subset-shuffled", "systems", _ranked_pool(3, shuffled=True, gen="s", **kw)),
             sm.Pool("same-gen", "shuffled", "g1", _ranked_pool(4, shuffled=True, gen="g1", **kw))]
    assert test.priors()["#pos:ordered"] == 1.0 and pools[2].priors()["#pos:ordered"] == 0.0
    seen = []
    real = sm.fit_on

    def spy(ps, keep_db=lambda db: True, meta=None):
        seen.append(sorted(p.name for p in ps))
        return real(ps, keep_db, meta)

    monkeypatch.setattr(sm, "fit_on", spy)
    r = sm.held_out(test, pools, k=3)
    assert seen and all(s == ["ranked-train", "shuffled-train"] for s in seen)  # no pool of generator g1
    assert r["ex"]["ranker"] >= max(r["ex"]["first"], r["ex"]["vote"])
    assert r["ex"]["ranker"] > r["ex"]["vote"] + 5  # the order, learned on other generators' ranked pools
    lko = sm.held_out(test, pools, k=3, exclude_kind="multi-system")
    assert lko["trained_on"] == []  # everything left was of the test generator or the excluded kind


def test_order_features_are_neutral_where_the_majority_hides_a_ranked_first():
    """The label-free order test's blind spot (documented): a first candidate that is right but usually outvoted
    agrees with the others *less*, so the order is not detected and the order features stay neutral."""
    adversarial = sm.Pool("adv", "subset-ranked", "a", _ranked_pool(0))
    assert adversarial.priors()["#pos:ordered"] == 0.0
    q = adversarial.qs[0]
    cl = cluster_features(q.cands, q.question, adversarial.priors())
    cols = [FEATURES.index(f) for f in ("pos_first", "pos_mean", "pos_rep", "holds_first", "pos_lift_max")]
    assert all(r[i] == 0.0 for r in cl.rows for i in cols)


def test_likelihood_features_relative_within_the_question_and_missing_when_any_lacks_one():
    with_lp = [_cand("a", "g#0", logprob=-2.0, tokens=4), _cand("b", "g#1", logprob=-8.0, tokens=4),
               _cand("b", "g#2", logprob=-9.0, tokens=3)]
    cl = cluster_features(with_lp, "q", {})
    c = {f: FEATURES.index(f) for f in ("has_logprob", "lp_mean_gap", "lp_total_gap", "lp_mass", "lp_rank1")}
    assert cl.rows[0][c["has_logprob"]] == 1.0 and cl.rows[0][c["lp_rank1"]] == 1.0
    assert cl.rows[0][c["lp_total_gap"]] == 0.0 and cl.rows[1][c["lp_total_gap"]] == pytest.approx(-6.0)
    assert cl.rows[0][c["lp_mass"]] + cl.rows[1][c["lp_mass"]] == pytest.approx(1.0)
    assert cl.rows[1][c["lp_mean_gap"]] == pytest.approx(-2.0 + 0.5)  # its best mean -8/4 vs -2/4
    partial = [with_lp[0], _cand("b", "g#1"), with_lp[2]]
    plain = [_cand("a", "g#0"), _cand("b", "g#1"), _cand("b", "g#2")]
    rows_partial = cluster_features(partial, "q", {}).rows
    rows_plain = cluster_features(plain, "q", {}).rows
    assert rows_partial == rows_plain and all(r[c["has_logprob"]] == 0.0 for r in rows_plain)


def test_pool_logprob_fields_round_trip_and_replay_without_them_is_unchanged(spider_root, tmp_path):
    from eval.datasets import load_spider
    from eval.pool import PoolCandidate, PoolEntry, read_pool, write_pool
    from eval.replay import replay

    examples = load_spider(spider_root, indices=[0])
    e = examples[0]
    sqls = ["SELECT count(*) + 1 FROM singer", "SELECT count(*) FROM singer", "SELECT count(singer_id) FROM singer"]
    plain = [PoolEntry(0, e.db_id, [PoolCandidate(s, f"g#{k}") for k, s in enumerate(sqls)])]
    with_lp = [PoolEntry(0, e.db_id, [PoolCandidate(s, f"g#{k}", -1.0 - k, 5) for k, s in enumerate(sqls)])]
    write_pool(with_lp, tmp_path / "lp.jsonl")
    write_pool(plain, tmp_path / "plain.jsonl")
    assert "logprob" not in (tmp_path / "plain.jsonl").read_text()
    back = read_pool(tmp_path / "lp.jsonl")
    assert [(c.logprob, c.logprob_tokens) for c in back[0].candidates] == [(-1.0, 5), (-2.0, 5), (-3.0, 5)]
    kept_plain: list = []
    kept_lp: list = []
    a = replay(read_pool(tmp_path / "plain.jsonl"), examples, workers=1, progress=False, keep=kept_plain)
    b = replay(back, examples, workers=1, progress=False, keep=kept_lp)
    assert a["questions"][0]["chosen"] == b["questions"][0]["chosen"] == {"first": 0, "vote": 1, "hybrid": 1, "ranker": 1}
    assert a["summary"]["policies"] == b["summary"]["policies"]
    sbs = a["summary"]["side_by_side"]  # every policy next to the best single source and the oracle
    assert set(sbs["policies"]) == {"first", "vote", "hybrid", "ranker"} and sbs["oracle"] == 100.0
    assert sbs["best_single"]["ex"] == 100.0 and sbs["policies"]["first"]["gap_closed"] is None  # vote = oracle
    assert [c.candidate.logprob for c in kept_lp[0][1]] == [-1.0, -2.0, -3.0]
    assert all(c.candidate.logprob is None for c in kept_plain[0][1])


def test_auto_rule_needs_min_labels_and_a_significant_win():
    from planner.ranker import AUTO_MIN_LABELS

    win = {"first": True, "vote": False, "ranker": False}
    tie = {"first": True, "vote": True, "ranker": True}
    assert decide_auto([win] * (AUTO_MIN_LABELS - 1), "vote").policy == "vote"
    assert decide_auto([win] * AUTO_MIN_LABELS, "vote").policy == "first"
    assert decide_auto([win] * 4 + [tie] * 30, "vote").policy == "vote"  # 4 discordant wins: p = 1/16 > 0.05
    assert decide_auto([win] * 5 + [tie] * 30, "vote").policy == "first"  # 5: p = 1/32
    unknown = {"first": None, "vote": False, "ranker": None}
    assert decide_auto([unknown] * 40, "vote").policy == "vote"


def test_gap_closed():
    assert sm.gap_closed(84.0, 80.0, 90.0) == pytest.approx(0.4)
    assert sm.gap_closed(80.0, 80.0, 80.0) is None


def test_the_shipped_default_loads_by_name_and_selects():
    from planner.ranker import DEFAULT_ARTIFACT, RankerArtifact, RankerState, rank_select

    assert DEFAULT_ARTIFACT.is_file(), "planner/data/ranker_default.joblib: python -m benchmarks.selection_mix fit"
    art = RankerArtifact.load("default")
    assert art.prior_mode == "agreement" and art.priors == {} and art.meta["issue"] == 26
    assert {"subset-ranked", "subset-shuffled", "shuffled", "multi-system", "single-generator"} <= set(
        art.meta["pool_kinds"])
    cands = [_cand("a", "g#0"), _cand("b", "g#1"), _cand("b", "g#2")]
    assert rank_select(cands, "How many?", {}, art).index in (0, 1)
    st = RankerState()
    st.load("default")
    assert st.artifact is not None and st.auto_default() == "ranker"


def test_select_fit_estimates_positions_per_pool():
    """Two pools fitted together (`select fit --replay A --replay B`): each keeps its own order evidence."""
    kw = {"n_q": 150, "p_first": 0.9, "p_other": 0.45, "p_shared": 0.7}
    ranked, shuffled = _ranked_pool(1, **kw), _ranked_pool(1, shuffled=True, **kw)
    for q in ranked:
        q.pool = "ranked"
    for q in shuffled:
        q.pool = "shuffled"
    both = ranked + shuffled
    per = sf.per_question_priors(both, sf.pool_agreement(both))
    assert per[0]["#pos:ordered"] == 1.0 and per[-1]["#pos:ordered"] == 0.0
    assert sf.per_question_priors(ranked, {"a": 0.5}) == [{"a": 0.5}] * len(ranked)  # one pool: as given


def test_seeded_database_splits_keep_databases_whole_and_differ():
    qs = _ranked_pool(5, n_q=120)
    for q in qs:
        q.db_id = f"db{q.index % 12}"

    def test_dbs(folds):
        return [frozenset(qs[i].db_id for i in te) for _, te in folds]

    plain = sf._folds(qs, 4)
    assert test_dbs(plain) == test_dbs(sf._folds(qs, 4))  # GroupKFold's own split is deterministic
    for seed in (0, 1):
        folds = sf._folds(qs, 4, seed)
        assert test_dbs(folds) == test_dbs(sf._folds(qs, 4, seed))  # a seed is one split, repeatably
        for tr, te in folds:
            assert not {qs[i].db_id for i in tr} & {qs[i].db_id for i in te}  # no database on both sides
        assert sorted(i for _, te in folds for i in te) == list(range(len(qs)))
    assert {frozenset(test_dbs(sf._folds(qs, 4, s))) for s in (None, 0, 1, 2)} != {frozenset(test_dbs(plain))}


def test_held_out_with_own_trains_on_the_test_generator_but_never_on_its_test_databases(monkeypatch):
    kw = {"n_q": 120, "p_first": 0.9, "p_other": 0.45, "p_shared": 0.7}
    test = sm.Pool("own-test", "single-generator", "g1", _ranked_pool(1, gen="g1", **kw))
    pools = [test, sm.Pool("other", "subset-ranked", "systems", _ranked_pool(2, gen="s", **kw))]
    seen = []
    real = sm.fit_on

    def spy(ps, keep_db=lambda db: True, meta=None):
        dbs = {q.db_id for p in ps for q in p.qs}
        seen.append((sorted(p.name for p in ps), {db for db in dbs if keep_db(db)}))
        return real(ps, keep_db, meta)

    monkeypatch.setattr(sm, "fit_on", spy)
    r = sm.held_out(test, pools, k=3, own=True, seed=1)
    folds = sf._folds(test.qs, 3, 1)
    assert [names for names, _ in seen] == [["other", "own-test"]] * 3
    for (_, kept), (_, te) in zip(seen, folds, strict=True):
        assert kept and not kept & {test.qs[i].db_id for i in te}
    assert len(r["per_question"]) == len(test.qs) and r["ex"]["ranker"] >= r["ex"]["vote"]


def test_splits_benchmark_reports_every_recipe_and_split(monkeypatch, tmp_path, capsys):
    import json

    from benchmarks import selection_mix as bm

    kw = {"n_q": 60, "p_first": 0.9, "p_other": 0.45, "p_shared": 0.7}
    bases = [sm.Pool("g1", "single-generator", "g1", _ranked_pool(1, gen="g1", **kw)),
             sm.Pool("g2", "single-generator", "g2", _ranked_pool(2, gen="g2", **kw))]
    monkeypatch.setattr(bm, "CACHE", tmp_path)
    monkeypatch.setattr(bm, "base_pools", lambda names=None: bases)
    assert bm.main(["splits", "--cv", "3", "--seeds", "1"]) == 0
    out = json.loads((tmp_path / "splits.json").read_text())
    assert out["seeds"] == [None, 0] and set(out["pools"]) == {"g1", "g2"}
    for row in out["pools"].values():
        assert set(row) == set(bm.RECIPES)
        for r in row.values():
            assert len(r["splits"]) == 2 and r["min_minus_vote"] <= r["mean_minus_vote"] <= r["max_minus_vote"]
            assert all(0.0 <= s["p_worse"] <= 1.0 for s in r["splits"])
    assert "| g1 | default+own |" in capsys.readouterr().out
