"""benchmarks.example_encoding on a small grid (real Spider train, the real encoder)."""

import json

import pytest

from core.settings import spider_dir


def test_the_grid_and_its_agreement(tmp_path, capsys):
    if not (spider_dir() / "train_spider.json").is_file():
        pytest.skip("Spider train not found under core.settings.spider_dir() (../shared/data)")
    from benchmarks.example_encoding import main

    out = tmp_path / "enc.json"
    assert main(["--sample", "48", "--batches", "16,48", "--threads", "1", "--skip-full", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [(r["batch"], r["threads"], r["texts"]) for r in d["rows"]] == [(16, 1, 48), (48, 1, 48)]
    assert d["max_diff_across_batches"] < 1e-4  # batching pads; the pooled vectors stay the same
    assert "| grid | 48 | 16 | 1 |" in capsys.readouterr().out
