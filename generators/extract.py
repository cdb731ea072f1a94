"""SQL extraction from raw model output, shared by every generator backend.

Models wrap SQL in many ways: code fences (```sql ... ```), leading prose ("Here is the query: SELECT ..."),
several statements, trailing explanations, `<think>...</think>` reasoning blocks (DeepSeek-R1 style, whose
chat template may already have opened the `<think>` in the prompt). `extract_sql(text)` returns the first
SELECT/WITH statement of the answer, without a trailing semicolon, or "" when there is none.
"""

from __future__ import annotations

import re

_END_OF_TURN = re.compile(r"<\|(?:im_end|endoftext|eot_id|end|end_of_text)\|>|<｜end▁of▁sentence｜>|</s>")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
# A statement start: SELECT, a CTE (WITH name [(cols)] AS (), or a parenthesized SELECT.
_START = re.compile(
    r"(?P<kw>\bSELECT\b|\bWITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\([^()]*\)\s*)?AS\s*(?:NOT\s+MATERIALIZED\s*|MATERIALIZED\s*)?\(|\(\s*SELECT\b)",
    re.IGNORECASE,
)
# Lines that end an unterminated statement: prose/explanations after the SQL.
_PROSE_LINE = re.compile(
    r"^\s*(?:#{1,6}\s|\*\*|Explanation|Note|This (?:query|SQL|will|returns|selects)|The (?:query|above|SQL|result)|"
    r"It |Here|In this|Output|Result|Answer|I |We |Let me|To |If |Hope|</?\w+>|[-*] [A-Z])",
    re.IGNORECASE,
)
_SQL_LINE = re.compile(
    r"^\s*(?:SELECT|FROM|WHERE|JOIN|INNER|LEFT|RIGHT|FULL|CROSS|NATURAL|ON|AND|OR|NOT|GROUP|ORDER|HAVING|LIMIT|OFFSET|"
    r"UNION|INTERSECT|EXCEPT|WITH|AS|CASE|WHEN|THEN|ELSE|END|IN|EXISTS|BETWEEN|LIKE|IS|DESC|ASC|USING|WINDOW|OVER|"
    r"PARTITION|VALUES|DISTINCT|ALL|[(),*]|[\w\".`\[\]]+\s*(?:,|\)|=|<|>|$|AS\b|\.))",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(?:SQL(?:ite)?(?:\s+query)?|Query|Answer|Final answer)\s*:\s*", re.IGNORECASE)


def opens_thinking(prompt: str) -> bool:
    """The prompt leaves a `<think>` block open (R1-style chat templates): the output starts inside reasoning."""
    low = (prompt or "").lower()
    return low.rfind("<think>") > low.rfind("</think>")


def strip_reasoning(text: str, *, thinking: bool = False) -> str:
    """Drop `<think>` blocks. If a `</think>` closes a block opened in the prompt, keep what follows it;
    an unclosed `<think>` (the budget ran out while reasoning) keeps only what precedes it: SQL drafted
    inside unfinished reasoning is not an answer. `thinking`: the prompt opened the block, so an output without
    `</think>` is all unfinished reasoning (no answer)."""
    low = text.lower()
    if thinking and "</think>" not in low:
        return ""
    text = _THINK_BLOCK.sub("\n", text)
    low = text.lower()
    if "</think>" in low:
        text = text[low.rindex("</think>") + len("</think>"):]
        low = text.lower()
    if "<think>" in low:  # unfinished reasoning is not an answer
        text = text[: low.index("<think>")]
    return text


def split_statements(sql: str) -> list[str]:
    """Split on semicolons outside quotes, comments and parentheses. Keeps non-empty parts, stripped."""
    parts: list[str] = []
    buf: list[str] = []
    i, n, depth = 0, len(sql), 0
    quote: str | None = None
    while i < n:
        c = sql[i]
        if quote:
            buf.append(c)
            if c == quote:
                if i + 1 < n and sql[i + 1] == quote:  # doubled quote escape
                    buf.append(sql[i + 1])
                    i += 1
                else:
                    quote = None
        elif c in ("'", '"', "`"):
            quote = c
            buf.append(c)
        elif c == "[":
            quote = "]"
            buf.append(c)
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
            continue
        elif c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
            continue
        elif c == "(":
            depth += 1
            buf.append(c)
        elif c == ")":
            depth = max(0, depth - 1)
            buf.append(c)
        elif c == ";" and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def _strip_comments_front(s: str) -> str:
    while True:
        s = s.lstrip()
        if s.startswith("--"):
            j = s.find("\n")
            s = "" if j < 0 else s[j + 1:]
        elif s.startswith("/*"):
            j = s.find("*/")
            s = "" if j < 0 else s[j + 2:]
        else:
            return s


def _starts_statement(s: str) -> bool:
    m = _START.match(_strip_comments_front(s))
    return m is not None


def _trim_trailing_prose(stmt: str) -> str:
    """Cut an unterminated statement at the first line that reads as prose, or at a blank line followed
    by a line that does not look like SQL."""
    lines = stmt.split("\n")
    kept = [lines[0]]
    blank = False
    for line in lines[1:]:
        if not line.strip():
            blank = True
            continue
        if _PROSE_LINE.match(line) and not _SQL_LINE.match(line):
            break
        if blank and not _SQL_LINE.match(line):
            break
        if blank:
            kept.append("")
        blank = False
        kept.append(line)
    out = "\n".join(kept).rstrip()
    # inline trailing code-span marker or closing prose punctuation left by "`SELECT ...`."
    out = re.sub(r"`+\s*[.,]?\s*$", "", out).rstrip()
    return out


def _first_select(text: str, *, strict_case: bool) -> str:
    """The first SELECT/WITH statement inside free text."""
    for m in _START.finditer(text):
        kw = m.group("kw")
        word = kw.lstrip("( \t\n").split()[0]
        at_line_start = text[: m.start()].rstrip(" \t").endswith("\n") or m.start() == 0 or \
            text[: m.start()].rstrip().endswith((":", "`", '"'))
        if strict_case and not (word.isupper() or at_line_start):
            continue  # "we select the names" is prose
        rest = text[m.start():]
        stmts = split_statements(rest)
        if not stmts:
            continue
        stmt = _trim_trailing_prose(stmts[0])
        if stmt:
            return stmt
    return ""


def extract_sql(text: str, *, thinking: bool = False) -> str:
    """The SQL a model answered with ("" when there is none). See the module docstring. `thinking`: the prompt
    opened a `<think>` block (`opens_thinking(prompt)`): only text after `</think>` is an answer."""
    if not text or not text.strip():
        return ""
    body = strip_reasoning(_END_OF_TURN.split(text, maxsplit=1)[0] if _END_OF_TURN.search(text) else text,
                           thinking=thinking)
    # 1. code fences: sql-tagged first, then untagged/other; the first fence holding a SELECT/WITH statement
    fences = [(lang.lower(), content) for lang, content in _FENCE.findall(body)]
    ordered = [f for f in fences if f[0] in ("sql", "sqlite", "postgresql", "mysql", "duckdb")] + [
        f for f in fences if f[0] not in ("sql", "sqlite", "postgresql", "mysql", "duckdb")
    ]
    for _, content in ordered:
        for stmt in split_statements(content):
            if _starts_statement(stmt):
                return _clean(_strip_comments_front(stmt))
        found = _first_select(content, strict_case=False)
        if found:
            return _clean(found)
    # 2. free text: drop fence markers that did not pair up, labels like "SQL:", then the first statement
    plain = body.replace("```sql", "\n").replace("```", "\n")
    plain = "\n".join(_LABEL.sub("", line) for line in plain.split("\n"))
    found = _first_select(plain, strict_case=True) or _first_select(plain, strict_case=False)
    return _clean(found)


def _clean(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    # inline code spans: `SELECT ...`
    if sql.startswith("`") and not sql.startswith("```"):
        sql = sql.strip("`").strip()
    return sql
