"""Server database targets: the URL of a PostgreSQL or MySQL/MariaDB database, parsed into a password-free
`ServerTarget`, and the redaction of passwords from anything shown.

A target is a URL: ``postgresql://user@host:port/dbname`` or ``mysql://user@host:port/dbname``
(``postgres://``, ``mariadb://`` and SQLAlchemy driver forms such as ``postgresql+psycopg://`` too). Query
parameters this module understands (removed before connecting):

- ``id=NAME``: the database id (default: the database name);
- ``include=PAT,...`` / ``exclude=PAT,...``: which tables the schema shows, shell patterns over ``table``
  or ``schema.table`` (tables outside the default schema need an include pattern naming their schema);
- ``password_env=VAR`` / ``password_file=PATH``: where the password comes from. Passwords are never
  accepted inside the URL (they would end up in config files, shells and logs); without either, the
  driver's own environment applies (``PGPASSWORD``, ``~/.pgpass``; ``MYSQL_PWD`` for MySQL).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# kind -> sqlglot dialect
SERVER_DIALECTS = {"postgresql": "postgres", "mysql": "mysql"}
_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
_OUR_PARAMS = ("id", "include", "exclude", "password_env", "password_file")


class TargetError(ValueError):
    """A database URL that cannot be used (the message never contains a password)."""


def is_url(text: str) -> bool:
    """Whether `text` names a database server (``scheme://...``) rather than a file or folder."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://", str(text).strip())
    return bool(m) and m.group(1).lower() in _SCHEMES


def split_database_list(value: str) -> list[str]:
    """Split an ``os.pathsep``-separated list of files, folders and URLs (URLs contain ':' themselves)."""
    parts = value.split(os.pathsep)
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if (os.pathsep == ":" and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?", p) and i + 1 < len(parts)
                and parts[i + 1].startswith("//")):
            p = p + ":" + parts[i + 1]
            i += 1
            while i + 1 < len(parts) and re.match(r"^\d+(/|$|\?)", parts[i + 1]):  # host:PORT/db
                p = p + ":" + parts[i + 1]
                i += 1
        if p:
            out.append(p)
        i += 1
    return out


@dataclass(frozen=True)
class ServerTarget:
    """A server database: kind, the password-free URL, and the options of the module docstring."""

    kind: str  # postgresql | mysql
    url: str  # scheme://user@host:port/dbname (no password, no options)
    database: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    password_env: str | None = None
    password_file: str | None = None

    @property
    def dialect(self) -> str:
        return SERVER_DIALECTS[self.kind]

    def password(self) -> str | None:
        if self.password_file:
            try:
                return Path(self.password_file).expanduser().read_text().strip("\r\n")
            except OSError as e:
                raise TargetError(f"{self.url}: cannot read password_file {self.password_file}: "
                                  f"{e.strerror or type(e).__name__}") from None
        if self.password_env:
            if self.password_env not in os.environ:
                raise TargetError(f"{self.url}: environment variable {self.password_env} (password_env) is not set")
            return os.environ[self.password_env]
        if self.kind == "mysql":
            return os.environ.get("MYSQL_PWD")
        return None  # libpq reads PGPASSWORD / ~/.pgpass itself

    def sqlalchemy_url(self, database: str | None = None):
        from sqlalchemy.engine import make_url

        u = make_url(_DRIVERS[self.kind] + self.url[self.url.index("://"):])
        if database is not None:
            u = u.set(database=database)
        pw = self.password()
        return u.set(password=pw) if pw else u


    def keeps(self, schema: str | None, table: str, default_schema: str | None) -> bool:
        names = [table] if schema in (None, default_schema) else []
        if schema:
            names.append(f"{schema}.{table}")
        if self.include and not any(fnmatch.fnmatchcase(n.lower(), p.lower()) for n in names for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(n.lower(), p.lower()) for n in names for p in self.exclude)


def parse_target(url: str, *, db_id: str | None = None) -> tuple[str, ServerTarget]:
    """(database id, target) for a server URL. Raises TargetError (never echoing a password)."""
    text = str(url).strip()
    if not is_url(text):
        raise TargetError(f"not a database URL (expected postgresql://... or mysql://...): {_redact(text)!r}")
    parts = urlsplit(text)
    scheme = parts.scheme.split("+", 1)[0].lower()
    kind = _SCHEMES[scheme]
    if parts.password is not None:
        raise TargetError(f"{_redact(text)}: do not put the password in the URL; give it in the environment "
                          f"(?password_env=VAR) or a file (?password_file=PATH)")
    if not parts.hostname:
        raise TargetError(f"{_redact(text)}: the URL needs a host")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise TargetError(f"{_redact(text)}: bad port") from None
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise TargetError(f"{_redact(text)}: the URL needs a database name (scheme://user@host:port/DBNAME)")
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in params if k in _OUR_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OUR_PARAMS]
    if rest:
        raise TargetError(f"{_redact(text)}: unknown URL option(s) {', '.join(sorted({k for k, _ in rest}))}; "
                          f"known: {', '.join(_OUR_PARAMS)}")
    if ours.get("password_env") and ours.get("password_file"):
        raise TargetError(f"{_redact(text)}: give password_env or password_file, not both")
    netloc = parts.netloc.rsplit("@", 1)
    clean = urlunsplit((scheme if scheme != "postgres" else "postgresql", parts.netloc, "/" + quote(database), "", ""))
    del netloc
    split = lambda s: tuple(x.strip() for x in (s or "").split(",") if x.strip())  # noqa: E731
    target = ServerTarget(kind, clean, database, split(ours.get("include")), split(ours.get("exclude")),
                          ours.get("password_env") or None, ours.get("password_file") or None)
    ident = db_id or ours.get("id") or database
    return ident, target


def _redact(text: str) -> str:
    """The text with any ``user:password@`` password replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^@/]*@", r"\1***@", text)


def redact(text: str, target: ServerTarget | None = None) -> str:
    """An error message without the target's password (drivers may echo connection strings)."""
    out = _redact(str(text))
    if target is not None:
        try:
            pw = target.password()
        except TargetError:
            pw = None
        if pw:
            out = out.replace(pw, "***")
    return out


def error_text(e: BaseException, target: ServerTarget) -> str:
    """The first line of an error, with its type, without the target's password (at most 500 characters)."""
    s = str(e).strip()
    first = s.splitlines()[0] if s else ""
    return redact(f"{type(e).__name__}: {first}", target)[:500]


def quote_fn(kind: str):
    """How a server kind quotes a name: backticks (MySQL/MariaDB) or double quotes (PostgreSQL)."""
    if kind == "mysql":
        return lambda n: "`" + str(n).replace("`", "``") + "`"
    return lambda n: '"' + str(n).replace('"', '""') + '"'


def server_url_for(base_url: str, database: str) -> str:
    """`base_url` (a server URL, with or without a database and options) pointed at `database`; options
    such as password_env are kept, `id` is dropped."""
    parts = urlsplit(base_url.strip())
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "id"])
    return urlunsplit(parts._replace(path="/" + quote(database), query=query))
