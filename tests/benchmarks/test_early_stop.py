"""The early-stop benchmark's measurement on the real tiny model (tiny budget; no timing assertions)."""

from __future__ import annotations

import pytest

from benchmarks import early_stop
from discriminators.base import DiscriminationRequest
from discriminators.cot import CotDiscriminator


def test_measure_counts_steps_tokens_and_kinds(tiny_model):
    from sqlbox.databases import registry_for
    from sqlbox.demo import DEMO_QUESTION
    from sqlbox.schema import schema_to_prompt

    req = DiscriminationRequest(question=DEMO_QUESTION, schema=schema_to_prompt(registry_for().schema("demo")),
                                sqls=["SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer"])
    on = CotDiscriminator(loaded=tiny_model, name="t", budget=24, early_stop=True)
    off = CotDiscriminator(loaded=tiny_model, name="t", budget=24, early_stop=False)
    res = early_stop.measure(on, off, [req])
    v_on, v_off = res["variants"]["on"], res["variants"]["off"]
    assert v_on["rows"] == v_off["rows"] == 2 and len(res["pairs"]) == 2
    assert v_on["stopped"] >= 1 and v_on["after_verdict"] == 0 and v_off["stopped"] == 0
    assert v_on["generated_tokens"] < v_off["generated_tokens"] and v_on["decode_steps"] <= v_off["decode_steps"]
    assert v_off["after_verdict"] > 0  # the off run kept generating past the verdict early stop ends at
    assert sum(v_on["kinds"].values()) == sum(v_off["kinds"].values()) == 2


@pytest.mark.parametrize("argv", [["--budget", "0"], ["--questions", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        early_stop.main([*argv, "--no-append"])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
