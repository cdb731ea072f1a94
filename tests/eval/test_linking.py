"""eval.linking: gold tables/columns from gold SQL (qualified through aliases and scopes), and the
`sqlarbiter eval linking` command end to end on a small Spider-layout folder (real SQLite, real MiniLM)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from cli.main import main
from eval.linking import gold_elements
from sqlbox.databases import DatabaseRegistry


@pytest.fixture()
def spider_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "spider"
    d = root / "database" / "music"
    d.mkdir(parents=True)
    con = sqlite3.connect(d / "music.sqlite")
    con.executescript("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INT);\n"
                      "CREATE TABLE song (sid INT, singer_id INT REFERENCES singer(id), title TEXT);\n"
                      "INSERT INTO singer VALUES (1, 'Ann', 31); INSERT INTO song VALUES (1, 1, 'Hello');")
    con.commit()
    con.close()
    qs = [("How many singers are there?", "SELECT count(*) FROM singer"),
          ("Titles of songs by Ann?", "SELECT T2.title FROM singer AS T1 JOIN song AS T2 ON T1.id = T2.singer_id WHERE T1.name = 'Ann'")]
    (root / "dev.json").write_text(json.dumps([{"db_id": "music", "question": q, "query": s} for q, s in qs]))
    (root / "dev_gold.sql").write_text("".join(f"{s}\tmusic\n" for _, s in qs))
    return root


def test_gold_elements_resolve_aliases_and_subqueries(spider_dir):
    reg = DatabaseRegistry()
    reg.register("music", spider_dir / "database" / "music" / "music.sqlite")
    schema = reg.schema("music")
    t, c = gold_elements("SELECT T2.title FROM singer AS T1 JOIN song AS T2 ON T1.id = T2.singer_id WHERE T1.name = 'Ann'", schema)
    assert t == {"singer", "song"}
    assert c == {("song", "title"), ("singer", "id"), ("song", "singer_id"), ("singer", "name")}
    t, c = gold_elements("SELECT name FROM singer WHERE id NOT IN (SELECT singer_id FROM song)", schema)
    assert c == {("singer", "name"), ("singer", "id"), ("song", "singer_id")}
    assert gold_elements("SELECT count(*) FROM singer", schema) == ({"singer"}, set())
    assert gold_elements("not sql ((", schema)[0] == set()


def test_cli_writes_reports(spider_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "linking", "--data", str(spider_dir), "--top-k", "1", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    s = rep["summary"]
    assert s["n"] == 2 and 0.0 <= s["table_recall"] <= 1.0 and s["latency_ms_p95"] >= s["latency_ms_p50"] > 0
    assert s["full_tokens_mean"] > 0 and (out / "report.md").read_text().startswith("# Schema linking: spider")
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert rows[1]["gold_tables"] == ["singer", "song"]
    # --merged over this folder: one merged database holding music__singer and music__song
    out2 = tmp_path / "run2"
    assert main(["eval", "linking", "--data", str(spider_dir), "--merged", "--out", str(out2)]) == 0
    rows = [json.loads(x) for x in (out2 / "results.jsonl").read_text().splitlines()]
    assert rows[1]["gold_tables"] == ["music__singer", "music__song"] and rows[1]["table_recall"] == 1.0


@pytest.mark.parametrize("argv", [["--top-k", "0"], ["--schema-max-tokens", "10"], ["--dataset", "bird", "--merged"]])
def test_cli_bad_usage_exits_2(spider_dir, argv, capsys):
    assert main(["eval", "linking", "--data", str(spider_dir), *argv]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_merged_gold_check(spider_dir, tmp_path, capsys):
    out = tmp_path / "gc"
    assert main(["eval", "linking", "--data", str(spider_dir), "--merged", "--gold-check", "--out", str(out)]) == 0
    r = json.loads((out / "gold_check.json").read_text())
    assert r["n"] == 2 and r["ex_equal"] == 2 and r["identical_rows"] == 2
    assert "2/2 equal" in capsys.readouterr().out
    assert main(["eval", "linking", "--data", str(spider_dir), "--gold-check"]) == 2
