"""The dataset registry: Spider/BIRD loaders and their filters, the Spider variants, the generic JSONL set."""

from __future__ import annotations

import json

import pytest

from eval.datasets import DatasetError, load_bird, load_examples, load_spider, read_index_file


def test_spider_dev_full(spider_root):
    ex = load_spider(spider_root)
    assert len(ex) == 1034
    assert [e.index for e in ex] == list(range(1034))
    e = ex[0]
    assert e.db_id == "concert_singer" and e.db_path.is_file() and e.gold_sql.lower().startswith("select")
    assert e.difficulty in ("easy", "medium", "hard", "extra") and e.evidence is None


def test_spider_filters(spider_root):
    assert [e.index for e in load_spider(spider_root, limit=5)] == [0, 1, 2, 3, 4]
    a = load_spider(spider_root, limit=10, seed=7)
    b = load_spider(spider_root, limit=10, seed=7)
    c = load_spider(spider_root, limit=10, seed=8)
    assert [e.index for e in a] == [e.index for e in b] != [e.index for e in c]
    assert [e.index for e in a] == sorted(e.index for e in a)
    assert [e.index for e in load_spider(spider_root, indices=[5, 3, 900])] == [3, 5, 900]
    dbs = load_spider(spider_root, db_ids=["pets_1"])
    assert dbs and {e.db_id for e in dbs} == {"pets_1"}
    hard = load_spider(spider_root, difficulty=["extra"])
    assert len(hard) == 166 and {e.difficulty for e in hard} == {"extra"}


def test_wta_index_file(spider_root):
    idx = read_index_file(spider_root / "dev_indices_needing_wta1_rankings.txt")
    assert len(idx) == 8 and {e.db_id for e in load_spider(spider_root, indices=idx)} == {"wta_1"}


def test_bird_dev_keeps_available_databases(bird_root):
    ex = load_bird(bird_root)
    assert len(ex) == 432  # the 3 shipped databases
    assert {e.db_id for e in ex} == {"superhero", "student_club", "toxicology"}
    assert all(e.difficulty in ("simple", "moderate", "challenging") for e in ex)
    assert any(e.evidence for e in ex)
    dev = json.loads((bird_root / "dev.json").read_text())
    assert all(dev[e.index]["question"] == e.question for e in ex)
    assert len(load_bird(bird_root, difficulty="challenging")) < 432


def test_bird_mini_dev(bird_root):
    ex = load_bird(bird_root, variant="mini_dev")
    assert len(ex) == 140
    assert all(e.question_id is not None for e in ex)
    assert load_examples("bird", bird_root / "mini_dev", limit=3)[0].db_path.is_file()


def test_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_spider(tmp_path)
    (tmp_path / "dev.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_spider(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_examples("wikisql", tmp_path)


# --------------------------------------------------------------------------------------------------
# The registry, the Spider variants and the generic JSONL set
# --------------------------------------------------------------------------------------------------
# The variants are not in the shared data: these tests build small files with the published file and
# field names (github ygan/Spider-Syn, zenodo 5205322, github ygan/Spider-DK) from real Spider dev
# records, in a tmp folder, and evaluate them on the real Spider databases.


def _spider_records(spider_root, n=6, db="concert_singer"):
    return [r for r in json.loads((spider_root / "dev.json").read_text()) if r["db_id"] == db][:n]


def _syn_folder(spider_root, tmp_path):
    d = tmp_path / "Spider-Syn"
    d.mkdir()
    recs = [{"db_id": r["db_id"], "SpiderQuestion": r["question"], "SpiderSynQuestion": "syn: " + r["question"],
             "query": r["query"]} for r in _spider_records(spider_root)]
    (d / "dev.json").write_text(json.dumps(recs, indent=2))
    (d / "train_spider.json").write_text(json.dumps(recs[:2], indent=2))
    return d


def _realistic_folder(spider_root, tmp_path):
    d = tmp_path / "spider-realistic"
    d.mkdir()
    recs = [{"db_id": r["db_id"], "query": r["query"], "query_toks": r["query_toks"], "question": "real: " + r["question"],
             "question_toks": r["question_toks"]} for r in _spider_records(spider_root, db="pets_1")]
    (d / "spider-realistic.json").write_text(json.dumps(recs, indent=2))
    return d


def _dk_folder(spider_root, tmp_path):
    """Spider-DK.json on new_pets_1 (its own database/: a copy of pets_1 with one pet more) and on Spider's
    concert_singer, plus tables.json."""
    import shutil
    import sqlite3

    d = tmp_path / "Spider-DK"
    db = d / "database" / "new_pets_1" / "new_pets_1.sqlite"
    db.parent.mkdir(parents=True)
    shutil.copy(spider_root / "database" / "pets_1" / "pets_1.sqlite", db)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO Pets VALUES (9001, 'dog', 3, 99.0)")
    recs = [{"type": 0, "db_id": "new_pets_1", "query": "SELECT count(*) FROM pets WHERE weight  >  10",
             "question": "How many pets have a greater weight than 10?"},
            {"type": 2, "db_id": "new_pets_1", "query": "SELECT max(weight) FROM pets",
             "question": "What is the weight of the heaviest pet?"}]
    recs += [{"type": 0, "db_id": r["db_id"], "query": r["query"], "question": r["question"]}
             for r in _spider_records(spider_root, n=3)]
    (d / "Spider-DK.json").write_text(json.dumps(recs, indent=2))
    (d / "tables.json").write_text("[]")
    return d


def test_registry_declares_each_dataset_once():
    from eval.datasets import DATASETS, dataset_names, dataset_spec, ex_rule
    from eval.exec_match import rule_of

    assert set(dataset_names()) >= {"spider", "bird", "spider-syn", "spider-realistic", "spider-dk", "jsonl"}
    assert {n: ex_rule(n) for n in ("spider", "spider-syn", "spider-realistic", "spider-dk", "jsonl", "bird")} == {
        "spider": "spider", "spider-syn": "spider", "spider-realistic": "spider", "spider-dk": "spider",
        "jsonl": "spider", "bird": "bird"}
    assert dataset_spec("spider-syn").question_field == "SpiderSynQuestion"
    assert dataset_spec("bird").evidence_field == "evidence" and dataset_spec("bird").difficulty == "field"
    assert DATASETS.info("spider-dk").variant_of == "spider"
    assert rule_of("spider-realistic") == "spider"
    with pytest.raises(DatasetError, match="unknown dataset 'wikisql'; choose one of: bird, jsonl, spider"):
        dataset_spec("wikisql")
    with pytest.raises(ValueError, match="unknown dataset"):
        rule_of("wikisql")


def test_spider_syn_loads_the_synonym_question(spider_root, tmp_path):
    d = _syn_folder(spider_root, tmp_path)
    ex = load_examples("spider-syn", d)
    assert len(ex) == 6 and all(e.question.startswith("syn: ") for e in ex)
    assert all(e.db_path == spider_root / "database" / "concert_singer" / "concert_singer.sqlite" for e in ex)
    assert all(e.difficulty in ("easy", "medium", "hard", "extra") for e in ex)
    assert len(load_examples("spider-syn", d, split="train")) == 2
    assert len(load_examples("spider-syn", d / "dev.json", limit=2)) == 2  # the file itself


def test_spider_dk_uses_its_own_databases_then_spiders(spider_root, tmp_path):
    d = _dk_folder(spider_root, tmp_path)
    ex = load_examples("spider-dk", d)
    assert [e.db_id for e in ex] == ["new_pets_1"] * 2 + ["concert_singer"] * 3
    assert ex[0].db_path == d / "database" / "new_pets_1" / "new_pets_1.sqlite"
    assert ex[2].db_path == spider_root / "database" / "concert_singer" / "concert_singer.sqlite"
    # --db-dir is searched first: a folder without new_pets_1 falls through to the own databases
    assert load_examples("spider-dk", d, db_dir=tmp_path / "none")[0].db_path == ex[0].db_path


def test_detect_dataset_from_the_published_files(spider_root, tmp_path):
    from eval.datasets import detect_dataset

    syn, real, dk = _syn_folder(spider_root, tmp_path), _realistic_folder(spider_root, tmp_path), _dk_folder(spider_root, tmp_path)
    assert detect_dataset("spider", syn) == "spider-syn"
    assert detect_dataset("spider", real) == "spider-realistic"
    assert detect_dataset("spider", dk) == "spider-dk"
    assert detect_dataset("spider", dk / "Spider-DK.json") == "spider-dk"
    assert detect_dataset("spider", spider_root) == "spider"
    assert detect_dataset("spider", None) == "spider"
    assert detect_dataset("bird", dk) == "bird"  # BIRD has no registered variants
    both = tmp_path / "both"
    both.mkdir()
    (both / "Spider-DK.json").write_text((dk / "Spider-DK.json").read_text())
    (both / "spider-realistic.json").write_text((real / "spider-realistic.json").read_text())
    with pytest.raises(DatasetError, match="several datasets"):
        detect_dataset("spider", both)
    (both / "dev.json").write_text((spider_root / "dev.json").read_text())  # a Spider folder with variant files
    assert detect_dataset("spider", both) == "spider"


def _pred_file(examples, path, wrong=()):
    path.write_text("".join(("SELECT 1" if e.index in wrong else e.gold_sql) + f"\t{e.db_id}\n" for e in examples))
    return path


@pytest.mark.parametrize("variant", ["spider-syn", "spider-realistic", "spider-dk"])
def test_eval_spider_cli_on_a_variant_folder(spider_root, tmp_path, variant, capsys):
    from cli.main import main

    d = {"spider-syn": _syn_folder, "spider-realistic": _realistic_folder, "spider-dk": _dk_folder}[variant](
        spider_root, tmp_path)
    ex = load_examples(variant, d)
    pf = _pred_file(ex, tmp_path / "pred.sql", wrong={1})
    out = tmp_path / "run"
    rc = main(["eval", "spider", "--data", str(d), "--predictions", str(pf), "--out", str(out), "--quiet",
               "--workers", "1", "--no-plots"])
    assert rc == 0
    assert f"{variant} (detected" in capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["meta"]["dataset"] == variant and rep["n"] == len(ex) and rep["n_correct"] == len(ex) - 1
    # the wta_1 index list applies to Spider-Syn (aligned with Spider dev), not to the other variants
    assert ("excluding" in rep) == (variant == "spider-syn")
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["index"]: r["ex"] for r in lines} == {e.index: e.index != 1 for e in ex}
    # the explicit name gives the same verdicts
    out2 = tmp_path / "run2"
    assert main(["eval", variant, "--data", str(d), "--predictions", str(pf), "--out", str(out2), "--quiet",
                 "--workers", "1", "--no-plots"]) == 0
    assert json.loads((out2 / "report.json").read_text())["n_correct"] == len(ex) - 1


def test_eval_replay_on_spider_dk(spider_root, tmp_path):
    """The DK gold on new_pets_1 differs from Spider's pets_1 (one pet more): the verdicts show which
    database ran."""
    from cli.main import main

    d = _dk_folder(spider_root, tmp_path)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"index": 0, "db_id": "new_pets_1", "candidates": [
        {"sql": "SELECT count(*) FROM pets WHERE weight > 10", "source": "a"},
        {"sql": "SELECT 1", "source": "b"}]}) + "\n")
    out = tmp_path / "run"
    assert main(["eval", "spider-dk", "--data", str(d), "--replay", str(pool), "--policy", "first", "--out", str(out),
                 "--quiet", "--workers", "1", "--no-plots"]) == 0
    r = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert r["labels"] == [True, False] and r["ex"] is True
    # Spider's pets_1 has one pet fewer over 10: the DK gold's count differs there
    import sqlite3

    n_dk = sqlite3.connect(d / "database" / "new_pets_1" / "new_pets_1.sqlite").execute(
        "SELECT count(*) FROM pets WHERE weight > 10").fetchone()[0]
    n_sp = sqlite3.connect(spider_root / "database" / "pets_1" / "pets_1.sqlite").execute(
        "SELECT count(*) FROM pets WHERE weight > 10").fetchone()[0]
    assert n_dk == n_sp + 1


def test_jsonl_dataset_cli(spider_root, tmp_path):
    from cli.main import main

    recs = _spider_records(spider_root, n=4)
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps({"db_id": r["db_id"], "question": r["question"], "sql": r["query"],
                                     **({"evidence": "hint", "difficulty": "tricky"} if i == 0 else {})}) + "\n"
                         for i, r in enumerate(recs)) + "\n")
    ex = load_examples("jsonl", f, db_dir=spider_root / "database")
    assert len(ex) == 4 and ex[0].evidence == "hint" and ex[0].difficulty == "tricky" and ex[1].evidence is None
    assert ex[1].difficulty in ("easy", "medium", "hard", "extra")  # no field: Spider hardness of the SQL
    assert load_examples("jsonl", f, db_dir=spider_root)[0].db_path == ex[0].db_path  # a Spider root works too
    pf = _pred_file(ex, tmp_path / "pred.sql", wrong={3})
    out = tmp_path / "run"
    assert main(["eval", "jsonl", "--data", str(f), "--db-dir", str(spider_root / "database"), "--predictions", str(pf),
                 "--out", str(out), "--quiet", "--workers", "1", "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["meta"]["dataset"] == "jsonl" and rep["n"] == 4 and rep["n_correct"] == 3
    assert set(rep["by_difficulty"]) >= {"tricky", "all"}
    # usage errors: no --data (argparse), no databases there, a malformed line
    with pytest.raises(SystemExit) as e:
        main(["eval", "jsonl", "--predictions", str(pf)])
    assert e.value.code == 2
    assert main(["eval", "jsonl", "--data", str(f), "--db-dir", str(tmp_path / "nowhere"), "--predictions", str(pf),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"db_id": "concert_singer", "question": "q"}\n')
    with pytest.raises(DatasetError, match="example 0 lacks 'sql/SQL/query'"):
        load_examples("jsonl", bad, db_dir=spider_root / "database")


def test_eval_help_lists_the_registered_datasets(capsys):
    from cli.main import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert all(n in out for n in ("spider-syn", "spider-realistic", "spider-dk", "jsonl", "bird"))
    with pytest.raises(SystemExit):
        main(["eval", "spider", "--help"])
    out = capsys.readouterr().out
    assert "--db-dir" in out and "Spider-DK" in out and "--split" in out
    with pytest.raises(SystemExit):
        main(["eval", "jsonl", "--help"])
    assert "--data DATA" in capsys.readouterr().out


def test_systems_pools_are_spider_dev_only(spider_root, tmp_path, capsys):
    from cli.main import main

    d = _dk_folder(spider_root, tmp_path)
    assert main(["eval", "spider-dk", "--data", str(d), "--systems", "all", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "Spider dev only" in capsys.readouterr().err
