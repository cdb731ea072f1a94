"""The scoring benchmark's three variants give the same scores; its harness pieces (CLI, report, roofline) work.

Real parts only: the embedded SmolLM2-135M (real weights) and the small Qwen2 config with random weights, the demo
database's schema, the project's CoT prompt and discriminator. Tiny budgets (16 new tokens), 2 questions x 3
candidates; no timing assertions (figures belong in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import roofline, scoring
from benchmarks.archs import load_model

QUESTIONS = [
    ("How many singers are older than 30?",
     ["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer", "SELECT name FROM singer"]),
    ("List the names of all stadiums.",
     ["SELECT name FROM stadium", "SELECT * FROM stadium ORDER BY capacity DESC", "SELECT count(*) FROM stadium"]),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy 2-core machine two spinning OpenMP threads run many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_items() -> list[scoring.WorkItem]:
    from sqlbox.databases import registry_for
    from sqlbox.schema import schema_to_prompt

    reg = registry_for()
    schema = schema_to_prompt(reg.schema("demo"), max_tokens=120)
    return [scoring.WorkItem(i, "demo", q, schema, sqls) for i, (q, sqls) in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def small_random():
    return load_model("qwen2-small", device="cpu", seed=0)


def bench_args(*extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    scoring.add_arguments(p)
    return p.parse_args(["--device", "cpu", "--budget", "16", "--n", "3", "--cpu-batch", "6", "--no-append",
                         "--no-progress", "--bandwidth", "10", "--peak-tflops", "0.1", *extra])


def check_report(rep: scoring.ScoringReport, budget: int = 16, variants=("a", "b", "c")) -> None:
    assert set(rep.variants) == set(variants)
    for v in rep.variants.values():
        assert v.candidates == 6
        assert all(len(r.tokens) == budget and len(r.probs) == budget for r in v.rows.values())  # EOS ignored
        assert all(0.0 <= p <= 1.0 for r in v.rows.values() for p in r.probs)
    assert [a.variant for a in rep.agreements] == [v for v in variants if v != "a"] + ["c vs b"]
    for a in rep.agreements:
        assert a.rows == 6
        assert a.identical == 6, f"{a.variant}: generated tokens differ"
        assert max(a.max_first, a.max_final, a.max_any, a.max_soft) <= 1e-4, a
        assert a.ok
    assert rep.ok
    # (c) really batched across questions: both questions in one batch of 6 rows
    assert rep.variants["c"].batch_rows == 6
    assert rep.variants["b"].batch_rows == 3
    # the decode-only timing the roofline needs is reported for the batched variants
    assert rep.variants["c"].decode_s and rep.variants["c"].decode_tokens == 6 * (budget - 1)


def test_variants_identical_on_tiny_model(tiny, demo_items):
    """(a) score_reference, (b) score, (c) score_many of the project discriminator: same tokens, same probabilities;
    (c0), the same batch on transformers' own DynamicCache and attention, too."""
    rep = scoring.run_benchmark(bench_args("--variants", "a,b,c,c0"), items=demo_items, workload="demo", bm=tiny)
    check_report(rep, variants=("a", "b", "c", "c0"))
    # the same generated tokens also give the same soft score (parsed verdict or the fallback)
    for k, row in rep.variants["a"].rows.items():
        assert rep.variants["c"].rows[k].soft == pytest.approx(row.soft, abs=1e-4)


def test_random_weight_arch_path_runs_on_cpu(small_random, demo_items):
    """The GPU path (random-weight Qwen2 built from a config in code) on the small config, fp32 on CPU."""
    rep = scoring.run_benchmark(bench_args("--arch", "qwen2-small"), items=demo_items, workload="demo",
                                bm=small_random)
    check_report(rep)


def test_group_questions_packs_whole_questions():
    items = [scoring.WorkItem(i, "d", "q", "s", ["x"] * n) for i, n in enumerate([5, 5, 5, 3, 7])]
    assert scoring.group_questions(items, 10) == [[0, 1], [2, 3], [4]]
    assert scoring.group_questions(items, 4) == [[0], [1], [2], [3], [4]]
    assert scoring.group_questions(items, 10, [4, 3, 0, 1, 2]) == [[4, 3], [0, 1], [2]]


def test_spider_workload():
    from core.settings import candidates_dir, spider_dir

    if not (spider_dir() / "dev.json").is_file() or not (candidates_dir() / "spider_dev_samples").is_dir():
        pytest.skip("Spider dev data / candidate samples not present under the shared data dir")
    items, desc = scoring.load_workload(3, 5)
    dev = json.loads((spider_dir() / "dev.json").read_text())
    assert len(items) == 3 and all(len(w.sqls) == 5 for w in items)
    for w in items:
        assert w.question == dev[w.idx]["question"] and w.db_id == dev[w.idx]["db_id"]
        assert "CREATE TABLE" in w.schema
    assert "3 Spider dev questions x 5 candidates" in desc


def test_roofline_counts_match_real_models(tiny, small_random):
    for bm in (tiny, small_random):
        pc = roofline.param_counts(bm.model.config)
        assert pc["total"] == bm.n_params
    cfg = small_random.model.config
    peaks = roofline.Peaks("test", bandwidth=100e9, flops=0.0, bandwidth_source="t", flops_source="t")
    b = roofline.decode_bound(cfg, dtype_bytes=2, batch=8, context=100, peaks=peaks)
    kv = roofline.kv_bytes_per_token(cfg, 2)
    assert kv == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    assert b.kv_bytes == 8 * 100 * kv
    assert b.bw_tokens_s == pytest.approx(8 * 100e9 / (b.weight_bytes + b.kv_bytes))
    assert b.tokens_s == b.bw_tokens_s and b.limiter == "memory"


def test_cli_list_and_bad_usage(capsys):
    from benchmarks.runner import main
    from cli.main import main as sqlarbiter

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("scoring", "roofline", "stage-profile", "qwen2-1.5b", "qwen2-7b", "smollm2-135m"):
        assert name in out
    assert main(["run", "no-such-bench"]) == 2
    assert sqlarbiter(["bench", "archs"]) == 0
    assert "qwen2-small" in capsys.readouterr().out


def test_report_appends_one_tagged_section(tmp_path, monkeypatch):
    from benchmarks import report

    target = tmp_path / "BENCH.md"
    target.write_text("# existing\n")
    monkeypatch.setenv("SQLARBITER_BENCHMARKS_MD", str(target))
    monkeypatch.delenv("SQLARBITER_BENCH_NO_APPEND", raising=False)
    table = report.markdown_table(["a", "b"], [[1, 2.5], ["x", None]])
    report.append_section("T", "python -m benchmarks x --y", table, notes=["note one"])
    text = target.read_text()
    assert text.startswith("# existing\n")
    assert "## T" in text and "`python -m benchmarks x --y`" in text and "note one" in text
    assert "- machine: " in text and "torch " in text and "| 1 | 2.50 |" in text


@pytest.mark.parametrize("name,expected", [("qwen2-1.5b", 1_543_714_304), ("qwen2-7b", 7_615_616_512)])
def test_gpu_archs_have_the_published_sizes(name, expected):
    """The configs written in code build the real architectures (on the meta device: no memory, no download)."""
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.archs import ARCHS, build_config

    cfg = build_config(ARCHS[name])
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    assert sum(p.numel() for p in m.parameters()) == expected == roofline.param_counts(cfg)["total"]
    assert next(m.parameters()).dtype == torch.bfloat16


def test_workload_file_carries_prompts_and_tokenizer(tmp_path, demo_items, tiny):
    """--save-workload / --workload: a machine without the Spider data or the embedded model gets the same prompts."""
    from benchmarks.archs import load_tokenizer

    path = tmp_path / "bundle" / "workload.json"
    scoring.save_workload(demo_items, "2 demo questions", path)
    items, desc = scoring.read_workload(path, None, 3)
    assert [w.__dict__ for w in items] == [w.__dict__ for w in demo_items]
    assert desc.startswith("2 of 2 demo questions")
    one, _ = scoring.read_workload(path, 1, 5)
    assert len(one) == 1 and one[0].sqls == (demo_items[0].sqls * 2)[:5]
    saved = load_tokenizer(tiny.model.config.vocab_size, path.parent / "tokenizer")
    text = demo_items[1].schema + demo_items[1].question
    assert saved.encode(text) == tiny.tokenizer.encode(text) and saved.kind == "smollm2"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(scoring.WorkloadUnavailable, match="cannot read workload file"):
        scoring.read_workload(tmp_path / "bad.json", None, 5)
