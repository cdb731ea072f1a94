"""The CTE step format (sqlbox.steps, issue 28): parse, rewrite, continuation protocol and partial queries, with
real sqlglot and the real demo database (SQLite)."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from sqlbox import demo
from sqlbox.guard import guard
from sqlbox.steps import (
    Step,
    StepChain,
    StepParseError,
    cut_step,
    parse_chain,
    partial_query,
    prefix_for,
    prose_steps,
    split_step_texts,
    step_state,
    to_chain,
)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SQLARBITER_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    con = sqlite3.connect(f"file:{demo.build_demo()}?mode=ro", uri=True)
    yield con
    con.close()
    mp.undo()


@pytest.fixture(scope="module")
def schema(db):
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[1] for r in db.execute("SELECT * FROM pragma_table_info(?)", (t,))] for t in tables}


def rows(db, sql):
    return Counter(db.execute(sql).fetchall())


QUERIES = [
    "SELECT name FROM singer WHERE country = 'France'",
    "SELECT count(*) FROM (SELECT * FROM singer WHERE age > 30)",
    "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM singer_in_concert WHERE concert_id IN "
    "(SELECT concert_id FROM concert WHERE year >= 2023))",
    "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
    "SELECT country FROM singer WHERE age > 40 INTERSECT SELECT country FROM singer WHERE age < 30",
    "SELECT name FROM singer EXCEPT SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 "
    "ON T1.singer_id = T2.singer_id",
    "SELECT T1.name FROM singer AS T1 UNION SELECT name FROM stadium ORDER BY T1.name LIMIT 5",
    "SELECT T.country, T.n FROM (SELECT country, count(*) AS n FROM singer GROUP BY country) AS T WHERE T.n > 1",
    "SELECT name FROM stadium WHERE EXISTS (SELECT 1 FROM concert WHERE year = 2024) AND capacity > 10000",
    "WITH young AS (SELECT * FROM singer WHERE age < 30) SELECT count(*) FROM young "
    "WHERE country IN (SELECT country FROM stadium AS s JOIN concert AS c ON s.stadium_id = c.stadium_id "
    "JOIN young AS y ON 1 = 1)",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_to_chain_round_trips_and_returns_the_same_rows(db, schema, sql):
    chain = to_chain(sql, schema=schema)
    assert chain.complete and chain.final is chain.steps[-1] and chain.final.name is None
    again = parse_chain(chain.text)
    assert again == chain  # text -> parse_chain gives the same steps
    assert parse_chain("```sql\n" + chain.text + "\n```") == chain  # a fence is stripped
    guard(chain.text)  # the chain is an ordinary candidate query
    assert rows(db, chain.text) == rows(db, sql)
    for step in chain.steps:
        assert step.text.startswith("-- ") and not step.text.endswith("\n")
        assert "\n" not in step.comment and 0 < len(step.comment) <= 100
    assert list(chain.names) == [s.name for s in chain.steps[:-1]]


def test_to_chain_nested_in_makes_inner_steps_first(db):
    chain = to_chain(QUERIES[2])
    assert chain.names == ("s1", "s2")
    assert chain.steps[0].sql == "SELECT concert_id FROM concert WHERE year >= 2023"
    assert "IN (SELECT * FROM s1)" in chain.steps[1].sql
    assert chain.final.sql == "SELECT name FROM singer WHERE singer_id IN (SELECT * FROM s2)"
    assert chain.steps[0].comment == "concert_id of concert where year >= 2023"
    assert chain.final.comment == "name of singer where singer_id IN s2"


def test_to_chain_set_operation_branches_become_steps(db):
    chain = to_chain(QUERIES[4])
    assert [s.sql for s in chain.steps] == ["SELECT country FROM singer WHERE age > 40",
                                            "SELECT country FROM singer WHERE age < 30",
                                            "SELECT * FROM s1 INTERSECT SELECT * FROM s2"]
    assert chain.final.comment == "s1 INTERSECT s2"
    # ORDER BY / LIMIT of a compound stay on the final step; a qualified term becomes the output column's name
    chain = to_chain(QUERIES[6])
    assert chain.final.sql == "SELECT * FROM s1 UNION SELECT * FROM s2 ORDER BY name LIMIT 5"
    assert db.execute(chain.text).fetchall() == db.execute(QUERIES[6]).fetchall()
    # a compound inside a derived table: its branches, then the compound, then the outer query
    chain = to_chain("SELECT count(*) FROM (SELECT name FROM singer UNION SELECT name FROM stadium)")
    assert [s.sql for s in chain.steps] == ["SELECT name FROM singer", "SELECT name FROM stadium",
                                            "SELECT * FROM s1 UNION SELECT * FROM s2", "SELECT COUNT(*) FROM s3"]
    assert chain.steps[3].comment == "count of s3"


def test_to_chain_derived_table_keeps_its_alias_and_comments():
    chain = to_chain("SELECT count(*) FROM (SELECT * FROM singer WHERE country = 'France') AS f")
    assert chain.text == ("-- rows of singer where country = 'France'\n"
                          "WITH s1 AS (SELECT * FROM singer WHERE country = 'France')\n"
                          "-- count of s1\n"
                          "SELECT COUNT(*) FROM s1 AS f")


def test_correlated_subquery_stays_inline(db, schema):
    qualified = ("SELECT T1.name FROM singer AS T1 WHERE EXISTS "
                 "(SELECT 1 FROM singer_in_concert AS T2 WHERE T2.singer_id = T1.singer_id)")
    chain = to_chain(qualified, schema=schema)
    assert len(chain.steps) == 1 and "EXISTS(SELECT 1 FROM singer_in_concert" in chain.final.sql
    assert rows(db, chain.text) == rows(db, qualified)
    # unqualified correlation: only the schema tells that `age` is the outer singer's column
    unqualified = "SELECT name FROM singer WHERE 1 < (SELECT count(*) FROM stadium WHERE capacity > age * 1000)"
    chain = to_chain(unqualified, schema=schema)
    assert len(chain.steps) == 1
    assert rows(db, chain.text) == rows(db, unqualified)
    # an uncorrelated subquery inside a correlated one is still a step of its own
    nested = ("SELECT T1.name FROM singer AS T1 WHERE T1.age > (SELECT avg(T2.age) FROM singer AS T2 "
              "WHERE T2.country = T1.country AND T2.genre IN (SELECT genre FROM singer WHERE is_male = 1))")
    chain = to_chain(nested, schema=schema)
    assert chain.names == ("s1",) and chain.steps[0].sql == "SELECT genre FROM singer WHERE is_male = 1"
    assert "T2.country = T1.country" in chain.final.sql
    assert rows(db, chain.text) == rows(db, nested)


def test_to_chain_with_nothing_to_extract_is_one_step():
    chain = to_chain("SELECT name, age FROM singer ORDER BY age DESC LIMIT 3;")
    assert len(chain.steps) == 1 and chain.names == ()
    assert chain.text == "-- name, age of singer ordered by age DESC limit 3\n" \
                         "SELECT name, age FROM singer ORDER BY age DESC LIMIT 3"


def test_to_chain_refuses_what_is_not_a_query():
    with pytest.raises(StepParseError, match="does not parse"):
        to_chain("DELETE FROM singer")


def test_step_names_skip_names_the_query_uses(db):
    chain = to_chain("SELECT s1.name FROM singer AS s1 WHERE s1.age > (SELECT avg(age) FROM singer)")
    assert chain.names == ("s2",)
    assert rows(db, chain.text) == rows(db, "SELECT s1.name FROM singer AS s1 WHERE s1.age > "
                                            "(SELECT avg(age) FROM singer)")


# ------------------------------------------------------------------------------------------------ parse_chain

CHAIN = ("-- singers from France\n"
         "WITH s1 AS (SELECT * FROM singer WHERE country = 'France'),\n"
         "-- how many there are\n"
         "s2 AS (SELECT count(*) AS n FROM s1)\n"
         "-- the answer\n"
         "SELECT n FROM s2")


def test_parse_chain_of_the_contract_example(db):
    chain = parse_chain(CHAIN)
    assert chain.steps == (
        Step("s1", "singers from France", "SELECT * FROM singer WHERE country = 'France'",
             "-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France'),"),
        Step("s2", "how many there are", "SELECT count(*) AS n FROM s1",
             "-- how many there are\ns2 AS (SELECT count(*) AS n FROM s1)"),
        Step(None, "the answer", "SELECT n FROM s2", "-- the answer\nSELECT n FROM s2"),
    )
    assert chain.text == CHAIN and chain.names == ("s1", "s2") and chain.complete
    assert db.execute(chain.text).fetchall() == [(db.execute(
        "SELECT count(*) FROM singer WHERE country = 'France'").fetchone()[0],)]


@pytest.mark.parametrize("text, reason", [
    ("-- a\nWITH s1 AS (SELECT * FROM s2),\n-- b\ns2 AS (SELECT * FROM singer)\n-- c\nSELECT * FROM s1",
     "step 1 (s1) reads s2, which is step 2, a later step"),
    ("-- a\nWITH s1 AS (SELECT *\n-- b\nFROM singer)\n-- c\nSELECT * FROM s1",
     "step 1 is neither a CTE nor the final SELECT"),
    ("-- a\nSELECT * FROM singer\n-- b\nSELECT 1", "final SELECT before the last step"),
    ("-- a\nWITH s1 AS (SELECT 1),\n-- b\nS1 AS (SELECT 2)\n-- c\nSELECT * FROM s1", "step 2 repeats the name S1"),
    ("-- a\nSELECT FROM WHERE", "does not parse"),
    ("-- a\nWITH s1 AS (SELECT 1)", "no final SELECT"),
    ("-- a\nWITH s1 AS (SELECT 1), s2 AS (SELECT 2)\n-- c\nSELECT * FROM s2", "step 1 holds more than one step"),
    ("-- a\n-- b\nSELECT 1", "step 1 has no SQL after its comment"),
    ("-- a\nWITH s1 AS (SELECT * FROM s1)\n-- c\nSELECT * FROM s1", "reads s1, which is itself"),
    ("-- a\ns1 AS (SELECT 1)\n-- c\nSELECT * FROM s1", "must start with WITH"),
    ("-- a\nWITH s1 AS (SELECT 1),\n-- c\nSELECT * FROM s1", "step 2: CTE s1 ends with ','"),
    ("", "empty chain"),
])
def test_parse_chain_refuses_with_a_reason(text, reason):
    with pytest.raises(StepParseError, match=reason.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_chain(text)
    assert e.value.reason == str(e.value)


def test_plain_sql_is_a_chain():
    one = parse_chain("SELECT name FROM singer")
    assert one.steps == (Step(None, "", "SELECT name FROM singer", "SELECT name FROM singer"),)
    ctes = parse_chain("WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b;")
    assert [(s.name, s.comment, s.sql) for s in ctes.steps] == [
        ("a", "", "SELECT 1 AS x"), ("b", "", "SELECT x FROM a"), (None, "", "SELECT * FROM b")]
    assert [s.text for s in ctes.steps] == ["WITH a AS (SELECT 1 AS x),", "b AS (SELECT x FROM a)",
                                            "SELECT * FROM b;"]


def test_recursive_cte_may_read_itself():
    chain = parse_chain("-- n\nWITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3)\n"
                        "-- all\nSELECT n FROM c")
    assert chain.names == ("c",)


# ------------------------------------------------------------------------------------------------ text splitting


def test_split_step_texts():
    assert split_step_texts("```sql\n" + CHAIN + "\n```") == CHAIN.replace("\n-- ", "\0-- ").split("\0")
    # text before the first comment line is its own step; blank lines and indentation before `--` are fine
    assert split_step_texts("WITH s1 AS (SELECT 1),\n\n   -- b\ns2 AS (SELECT 2)") == \
        ["WITH s1 AS (SELECT 1),", "-- b\ns2 AS (SELECT 2)"]
    # a line that begins with -- inside a string literal or a block comment does not start a step
    text = "-- a\nSELECT 'x\n-- not a step' AS y, /* c\n-- nor this */ 1"
    assert split_step_texts(text) == [text]
    # prose before a fence is dropped, as is everything after the closing fence
    assert split_step_texts("Here it is:\n```sql\n-- a\nSELECT 1\n```\nDone.") == ["-- a\nSELECT 1"]
    assert split_step_texts("-- a\nSELECT 1\n```") == ["-- a\nSELECT 1"]


def test_prefix_and_cut_step_reassemble_the_chain():
    texts = parse_chain(CHAIN).texts()
    assert prefix_for([]) == "```sql\n--"  # the default opener: "--" (the model writes the space itself)
    assert prefix_for(texts[:1]) == "```sql\n" + texts[0] + "\n--"
    assert prefix_for([], opener="-- ") == "```sql\n-- "
    # the model writes step 2 and goes on into step 3's comment: cut at the boundary
    generated = texts[1][2:] + "\n-- the answer\nSELECT n FROM s2\n```"
    assert cut_step(generated) == (texts[1], "step")
    assert cut_step(texts[1][3:] + "\n-- x", opener="-- ") == (texts[1], "step")
    # the last step ends at the closing fence
    assert cut_step(" the answer\nSELECT n FROM s2\n```\nSome prose.") == (texts[2], "end")
    # or at the end of the output
    assert cut_step(" the answer\nSELECT n FROM s2  \n") == (texts[2], "eos")
    # the fence wins when it comes first
    assert cut_step(" x\nSELECT 1```\n-- y") == ("-- x\nSELECT 1", "end")
    assert prefix_for(texts) + " x" == "```sql\n" + CHAIN + "\n-- x"


def test_prose_steps():
    assert prose_steps("First, find the singers.\n\nThen count them.\n\n\n\nAnswer: 3\n") == [
        "First, find the singers.", "Then count them.", "Answer: 3"]


# ------------------------------------------------------------------------------------------------ state, partial


def test_step_state_expect_values():
    texts = parse_chain(CHAIN).texts()
    assert step_state([]).expect == "first"
    st = step_state(texts[:1])
    assert (st.expect, st.names, st.complete) == ("cte", ("s1",), False)
    assert st.columns["s1"] == ()  # SELECT * FROM a table: the step names no column
    st = step_state(texts[:2])
    assert (st.expect, st.names, st.columns["s2"]) == ("final", ("s1", "s2"), ("n",))
    st = step_state(texts)
    assert st.complete and st.expect == "any" and st.error is None
    st = step_state(["-- a\nWITH s1(a, b) AS (SELECT 1, 2)", "-- b"])
    assert st.expect == "any" and "no SQL" in st.error
    st = step_state(["-- a\nWITH s1(a, b) AS (SELECT 1, 2),", "-- b\ns2 AS (SELECT *, name AS who FROM s1)"])
    assert st.columns == {"s1": ("a", "b"), "s2": ("a", "b", "who")} and st.expect == "final"
    assert step_state(["-- a\nWITH s1 AS (SELECT 1"]).error == "CTE s1 is not closed"
    assert step_state(parse_chain(CHAIN)).complete  # a StepChain works too


def test_partial_query_runs_on_sqlite(db):
    chain = parse_chain(CHAIN)
    q1 = partial_query(chain, 1)
    assert q1 == ("-- singers from France\nWITH s1 AS (SELECT * FROM singer WHERE country = 'France')\n"
                  "SELECT * FROM s1 LIMIT 100")
    assert rows(db, q1) == rows(db, "SELECT * FROM singer WHERE country = 'France'")
    q2 = partial_query(chain.texts()[:2], limit=5)
    assert q2.endswith(")\nSELECT * FROM s2 LIMIT 5")
    assert db.execute(q2).fetchall() == db.execute(CHAIN).fetchall()
    assert partial_query(chain) == chain.text  # the final step: the chain itself
    for sql in QUERIES:
        c = to_chain(sql)
        for k in range(1, len(c.steps) + 1):
            db.execute(partial_query(c, k)).fetchall()
    with pytest.raises(StepParseError, match="no step 4"):
        partial_query(chain, 4)


def test_partial_query_quotes_a_quoted_step_name(db):
    texts = ['-- a\nWITH "my step" AS (SELECT name FROM singer),']
    assert partial_query(texts).endswith('\nSELECT * FROM "my step" LIMIT 100')
    assert len(db.execute(partial_query(texts)).fetchall()) > 0


def test_stepchain_properties():
    incomplete = StepChain((Step("s1", "a", "SELECT 1", "-- a\nWITH s1 AS (SELECT 1)"),))
    assert not incomplete.complete and incomplete.final is None and incomplete.names == ("s1",)
    assert incomplete.text == "-- a\nWITH s1 AS (SELECT 1)"


# ------------------------------------------------------------------------------------------------ Spider gold


def test_spider_dev_gold_round_trips(spider_root):
    from benchmarks.step_fidelity import run

    s = run(spider_root, "dev", limit=120, workers=1)
    assert s["total"] == 120 and s["multi_step"] > 0
    assert s["same_result"] == s["judged"], s["failures"][:3]
    assert not s["partial_errors"]


def test_the_prose_step_kind():
    from sqlbox.steps import STEP_KINDS, step_kind

    k = step_kind("prose")
    assert step_kind(None) is STEP_KINDS["cte"] and step_kind(k) is k
    with pytest.raises(ValueError, match="cte, prose"):
        step_kind("poem")
    assert k.prefix([]) == "" and k.prefix(["First.", "Second."]) == "First.\n\nSecond.\n\n"
    assert k.cut("Find the singers.\n\nThen") == ("Find the singers.", "step")
    assert k.cut(" Count them. ") == ("Count them.", "eos")
    steps = ["Find the singers.", "```sql\nSELECT count(*)", "FROM singer\n```"]  # a blank line inside the block
    assert not k.complete(steps[:2]) and k.runnable(steps[:2]) is None  # the block is not closed yet
    assert k.complete(steps) and k.answer(steps) == "SELECT count(*)\n\nFROM singer" == k.runnable(steps)
    assert k.answer(steps[:2]) == "SELECT count(*)"  # the model stopped inside the block: the answer so far
    with pytest.raises(StepParseError, match="no ```sql block"):
        k.answer(["The answer is 6."])
    with pytest.raises(StepParseError):
        k.answer(["```sql\nSELEC nothing FROM\n```"])
    cte = step_kind("cte")
    chain = ["-- every singer\nWITH s1 AS (SELECT * FROM singer)", "-- how many\nSELECT count(*) FROM s1"]
    assert cte.prefix(chain[:1]) == prefix_for(chain[:1]) and cte.complete(chain) and not cte.complete(chain[:1])
    assert cte.answer(chain) == "\n".join(chain) and cte.runnable(chain[:1]) == partial_query(chain[:1])
