"""The schema grammar: accepts the SQL Spider/BIRD write over the schema, refuses names the schema lacks."""

import pytest

from generators.grammar import accepts, sql_grammar, step_grammar
from sqlbox.databases import DatabaseInfo, introspect
from sqlbox.demo import build_demo
from sqlbox.schema import Column, Schema, Table


@pytest.fixture(scope="module")
def demo_grammar():
    schema = introspect(DatabaseInfo("demo", build_demo(), "sqlite"), samples=0)
    return sql_grammar(schema, wrap="none")


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM singer WHERE age > 30",
    "select T1.name, T2.year from singer AS T1 JOIN singer_in_concert AS T3 ON T1.singer_id = T3.singer_id "
    "JOIN concert AS T2 ON T2.concert_id = T3.concert_id ORDER BY T2.year DESC LIMIT 3;",
    'SELECT name FROM singer WHERE country = "France" AND name LIKE \'%a%\' GROUP BY name HAVING count(*) >= 1',
    "SELECT avg(age), max(age) FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)",
    "SELECT CAST(sum(CASE WHEN age > 30 THEN 1 ELSE 0 END) AS REAL) * 100 / count(*) FROM singer",
    "SELECT name FROM singer EXCEPT SELECT name FROM singer WHERE age BETWEEN 20 AND 30",
    "SELECT count(*) AS n FROM singer GROUP BY country ORDER BY n DESC",
    'SELECT "name", `age`, [country] FROM "singer"',
    "SELECT name\n    FROM singer T1\n    WHERE T1.age > 30",  # indentation, an alias without AS for a table
])
def test_accepts_real_sql_shapes(demo_grammar, sql):
    assert accepts(demo_grammar, sql)


@pytest.mark.parametrize("sql", [
    "SELECT SINGER_TRACKID FROM singer",  # no such column
    "SELECT name FROM album",  # no such table
    "SELECT album_release_year FROM singer WHERE age > 30",
    "SELECT made_up_table.name FROM singer",  # a long qualifier must be a table
    "DELETE FROM singer",  # not a query
    "SELECT name FROM singer; DROP TABLE singer",
    "SELECT name" + "\t" * 17 + "FROM singer",  # a whitespace run is at most 16 characters
    "SELECT count(*) cnt FROM singer",  # an output alias needs AS
    "SELECT T1 . name FROM singer AS T1",  # no space around a qualifier's dot
])
def test_refuses_unknown_names_and_other_statements(demo_grammar, sql):
    assert not accepts(demo_grammar, sql)


def test_fence_wrap_and_quoted_names():
    schema = Schema("x", [Table("Free Meals", [Column("Count (K-12)"), Column("id")])])
    g = sql_grammar(schema)
    assert accepts(g, '```sql\nSELECT `Count (K-12)` FROM "Free Meals"\n```')
    assert not accepts(g, "SELECT id FROM x")  # the fence is required
    with pytest.raises(ValueError, match="wrap"):
        sql_grammar(schema, wrap="json")


@pytest.mark.parametrize(("sql", "ok"), [
    ("SELECT age - -1 FROM singer", True),
    ("SELECT -1", True),
    ("SELECT age-1 FROM singer", True),
    ("SELECT - -age, age -\n-1, -(-age), age*-1, -+-age, 1e-5-2 FROM singer", True),
    ("SELECT '--', \"a--b\" FROM singer", True),  # inside a string it is no comment
    ("SELECT age--1 FROM singer", False),  # "--" starts a comment in SQL
    ("SELECT age - --1", False),
    ("SELECT --age FROM singer", False),
    ("SELECT age\n--1 FROM singer", False),
    ("SELECT\n--x\n1", False),
])
def test_no_comment_start_outside_strings(demo_grammar, sql, ok):
    assert accepts(demo_grammar, sql) is ok


def test_step_grammar_body_only_and_comma():
    schema = introspect(DatabaseInfo("demo", build_demo(), "sqlite"), samples=0)
    cte, final = "s2 AS (SELECT count(*) AS n FROM s1)", "SELECT n FROM s2\n```"

    def g(**kw):
        return step_grammar(schema, names=["s1", "s2"], columns={"s1": ["singer_id"], "s2": ["n"]}, **kw)

    body = g(expect="any", comment=False)
    assert accepts(body, cte) and accepts(body, cte + ",") and accepts(body, final)
    assert not accepts(body, "how many\n" + cte)  # the comment is in the prefix already
    assert accepts(g(expect="any"), "how many\n" + cte) and not accepts(g(expect="any"), cte)
    assert not accepts(body, cte + "\n--x")

    required = g(expect="cte", comment=False, comma=True)
    assert accepts(required, cte + ",") and accepts(required, cte + " ,") and not accepts(required, cte)
    assert not accepts(g(expect="any", comment=False, comma=True), final)  # another CTE follows: no final query
    forbidden = g(expect="any", comment=False, comma=False)
    assert accepts(forbidden, cte) and accepts(forbidden, final) and not accepts(forbidden, cte + ",")

    first = "WITH " + cte
    assert accepts(g(expect="first", comment=False), final) and accepts(g(expect="first", comment=False), first)
    only_cte = g(expect="first_cte", comment=False, comma=False)
    assert accepts(only_cte, first) and not accepts(only_cte, final) and not accepts(only_cte, first + ",")
    assert accepts(g(expect="first_cte", comma=True), "singers\n" + first + ",")
    with pytest.raises(ValueError, match="comma"):
        g(expect="final", comma=True)
