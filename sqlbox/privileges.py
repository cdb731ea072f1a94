"""Least privilege for server databases: what the configured role may do, checked before sqlarbiter uses it,
and the DDL of a role that passes.

A server database (`sqlbox.servers.targets`) is only used when its role can read and nothing else (`role_problems`):

- PostgreSQL: not a superuser; no CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS; no membership (direct or
  through other roles) in ``pg_read_server_files``, ``pg_write_server_files``, ``pg_execute_server_program``,
  ``pg_read_all_settings``, ``pg_write_all_data``, ``pg_signal_backend``, ``pg_checkpoint``,
  ``pg_create_subscription``, nor in any role with one of the attributes above; no INSERT, UPDATE, DELETE,
  TRUNCATE or TRIGGER on any table of the database (itself or through a role it belongs to); no CREATE on
  any of its schemas or on the database.
- MySQL/MariaDB: no FILE, SUPER or PROCESS; nothing but ``SELECT`` (and the ``USAGE`` placeholder); no grant
  on ``*.*`` (other than USAGE), on another database or on the ``mysql`` schema; no ``WITH GRANT OPTION``;
  no PROXY; granted roles are held to the same rules.

Each problem names what to change (``ALTER ROLE x NOSUPERUSER``, ``REVOKE pg_read_server_files FROM x``,
``REVOKE FILE ON *.* FROM 'x'@'h'``, ...). `sqlbox.databases.DatabaseRegistry.verify` runs the check once per
database before its schema is read or a query runs, and refuses a failing role with `PrivilegeError` unless the
configuration opts that database in by name (``privileged_databases``; every plan then carries a warning).

`grant_readonly_sql` / `grant_readonly` write (and, applied, run and verify) the DDL of a role that passes:
``sqlarbiter databases grant-readonly URL [--role NAME] [--apply]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlbox.servers.pool import engine_for
from sqlbox.servers.targets import ServerTarget, TargetError, error_text, parse_target

DEFAULT_ROLE = "sqlarbiter_ro"

# PostgreSQL predefined roles a read-only role must not belong to
PG_FORBIDDEN_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                      "pg_read_all_settings", "pg_write_all_data", "pg_signal_backend", "pg_checkpoint",
                      "pg_create_subscription")
_PG_ATTRS = (("rolsuper", "SUPERUSER", "NOSUPERUSER"), ("rolcreaterole", "CREATEROLE", "NOCREATEROLE"),
             ("rolcreatedb", "CREATEDB", "NOCREATEDB"), ("rolreplication", "REPLICATION", "NOREPLICATION"),
             ("rolbypassrls", "BYPASSRLS", "NOBYPASSRLS"))
_PG_WRITE = "INSERT,UPDATE,DELETE,TRUNCATE,TRIGGER"
_MY_ALLOWED = {"SELECT", "USAGE"}
_MY_NAMED = {"FILE": "reads and writes server files", "SUPER": "administers the server",
             "PROCESS": "sees every session's statements"}
_MY_SYSTEM_DBS = {"mysql", "information_schema", "performance_schema", "sys"}
FIX_HINT = "`sqlarbiter databases grant-readonly ADMIN_URL` prints its DDL; docs/databases.md"


class PrivilegeError(TargetError):
    """A server database whose role can do more than read, refused (the message says what to change)."""

    def __init__(self, db_id: str, url: str, problems: list[str]):
        self.db_id, self.url, self.problems = db_id, url, list(problems)
        super().__init__(
            f"database {db_id!r} ({url}) is refused: its role can do more than read: " + "; ".join(problems)
            + f". Use a read-only role ({FIX_HINT}), or opt this database in by name: "
            f'privileged_databases = ["{db_id}"] in the configuration')

    def __str__(self) -> str:
        return str(self.args[0])


class RoleCheckError(RuntimeError):
    """The role of a server database could not be checked (the server did not answer); the message is redacted."""


# --------------------------------------------------------------------------- the check


def role_problems(target: ServerTarget) -> list[str]:
    """What the target's role can do beyond reading, each with what to change; empty for a read-only role.
    Raises `RoleCheckError` when the server cannot be asked (never with a password in the message)."""
    from sqlalchemy import text

    try:
        with engine_for(target).connect() as c:
            if target.kind == "postgresql":
                return _pg_problems(c, text)
            return _mysql_problems(c, text, target.database)
    except TargetError:
        raise
    except Exception as e:  # noqa: BLE001 - a driver error: say which and why, redacted
        raise RoleCheckError(f"cannot check the privileges of {target.url}: {error_text(e, target)}") from None


def privilege_warnings(target: ServerTarget) -> list[str]:
    """`role_problems`, never raising: a server that cannot be asked comes back as one warning (for listings
    and startup logs)."""
    try:
        return role_problems(target)
    except (RoleCheckError, TargetError) as e:
        return [str(e)]


def pg_ident(name: str) -> str:
    """A PostgreSQL identifier as SQL (quoted unless plain lower-case)."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _pg_problems(c, text) -> list[str]:
    out: list[str] = []
    user = c.execute(text("SELECT current_user")).scalar()
    me = pg_ident(user)
    row = c.execute(text("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                         "FROM pg_roles WHERE rolname = current_user")).one()
    attrs = dict(zip([a[0] for a in _PG_ATTRS], row, strict=True))
    for col, name, fix in _PG_ATTRS:
        if attrs[col]:
            why = " (it can write every table, read server files and run programs)" if col == "rolsuper" else ""
            out.append(f"role {user} is {name}{why}: ALTER ROLE {me} {fix}")
    if attrs["rolsuper"]:  # a superuser passes every other check by definition: fix this first
        out.append("(the other checks are skipped for a superuser: it passes them all)")
        return out
    # the roles it belongs to (directly or not; with SET ROLE it can act as any of them)
    member_of = c.execute(text(
        "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls "
        "FROM pg_roles r WHERE r.rolname <> current_user AND pg_has_role(current_user, r.oid, 'MEMBER') "
        "ORDER BY 1")).all()
    direct = [r[0] for r in c.execute(text(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = current_user ORDER BY 1")).all()]

    def via(role: str) -> str:
        """The REVOKE that removes `role` from the user: the direct grant(s) it comes through."""
        paths = [g for g in direct if g == role or c.execute(
            text("SELECT pg_has_role(:g, :r, 'MEMBER')"), {"g": g, "r": role}).scalar()]
        return "; ".join(f"REVOKE {pg_ident(g)} FROM {me}" for g in (paths or [role]))

    names = {r[0] for r in member_of}
    for role in PG_FORBIDDEN_ROLES:
        if role in names:
            out.append(f"role {user} is a member of {role}: {via(role)}")
    for r in member_of:
        bad = [name for (col, name, _), v in zip(_PG_ATTRS, r[1:], strict=True) if v]
        if bad:
            out.append(f"role {user} is a member of {r[0]}, which is {'/'.join(bad)}: {via(r[0])}")
    # writes on tables, as itself or as any role it belongs to
    for who in [user, *sorted(names)]:
        rows = c.execute(text(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
            "AND n.nspname NOT LIKE 'pg\\_temp%' AND has_table_privilege(:who, c.oid, :p) ORDER BY 1, 2"),
            {"who": who, "p": _PG_WRITE}).all()
        if not rows:
            continue
        shown = ", ".join(f"{s}.{t}" for s, t, _ in rows[:5]) + (f", ... ({len(rows)} in all)" if len(rows) > 5 else "")
        schemas = sorted({s for s, _, _ in rows})
        owned = sorted({f"{s}.{t}" for s, t, o in rows if o == who})
        fix = "; ".join(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON ALL TABLES IN SCHEMA {pg_ident(s)} "
                        f"FROM {pg_ident(who)}" for s in schemas)
        if owned:
            fix += f" (it owns {len(owned)} of them: an owner can always write; use a role that owns nothing)"
        if who != user:
            fix += f", or REVOKE {pg_ident(who)} FROM {me}"
        prefix = f"role {user}" if who == user else f"role {user}, as member of {who},"
        out.append(f"{prefix} can write {len(rows)} table(s) ({shown}): {fix} (and from PUBLIC if granted there)")
    for (schema, owner) in c.execute(text(
            "SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE n.nspname NOT IN "
            "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE "
            "'pg\\_temp%' AND has_schema_privilege(n.oid, 'CREATE') ORDER BY 1")).all():
        fix = (f"it owns the schema: ALTER SCHEMA {pg_ident(schema)} OWNER TO another role" if owner == user else
               f"REVOKE CREATE ON SCHEMA {pg_ident(schema)} FROM PUBLIC; REVOKE CREATE ON SCHEMA {pg_ident(schema)} "
               f"FROM {me}")
        out.append(f"role {user} can CREATE in schema {schema}: {fix}")
    db, owner = c.execute(text("SELECT d.datname, pg_get_userbyid(d.datdba) FROM pg_database d "
                               "WHERE d.datname = current_database()")).one()
    if c.execute(text("SELECT has_database_privilege(current_database(), 'CREATE')")).scalar():
        fix = (f"it owns the database: ALTER DATABASE {pg_ident(db)} OWNER TO another role" if owner == user else
               f"REVOKE CREATE ON DATABASE {pg_ident(db)} FROM {me} (and from PUBLIC if granted there)")
        out.append(f"role {user} can CREATE schemas in database {db}: {fix}")
    return out


@dataclass
class _Grant:
    privileges: list[str]  # upper-case names, column lists removed; [] for a role grant
    on: str  # *.*, `db`.*, `db`.`t`, PROCEDURE `db`.`p`, ''@'%' (PROXY); the role for a role grant
    grantee: str
    grant_option: bool = False
    role: str | None = None  # GRANT `role` TO ...
    columns: dict[str, str] = field(default_factory=dict)


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside backticks, quotes and parentheses."""
    out, depth, quote, cur, i = [], 0, None, [], 0
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "`'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            out.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def parse_grant(line: str) -> _Grant | None:
    """One line of MySQL/MariaDB ``SHOW GRANTS`` (None for a line that is not a GRANT)."""
    s = line.strip()
    if not s.upper().startswith("GRANT "):
        return None
    body = s[6:]
    head_to = _split_top(body, " TO ")
    if len(head_to) < 2:
        return None
    head, to = head_to[0], " TO ".join(head_to[1:])
    grant_option = bool(re.search(r"\bWITH\b.*\bGRANT OPTION\b", to, re.I)) or \
        bool(re.search(r"\bWITH ADMIN OPTION\b", to, re.I))
    grantee = re.split(r"\s+(?:IDENTIFIED|REQUIRE|WITH|PASSWORD|ACCOUNT)\b", to, maxsplit=1, flags=re.I)[0].strip()
    parts = _split_top(head, " ON ")
    if len(parts) < 2:  # GRANT `role` TO user
        return _Grant([], parts[0].strip(), grantee, grant_option, role=parts[0].strip())
    privs_text, on = parts[0], " ON ".join(parts[1:]).strip()
    privs = []
    for p in _split_top(privs_text, ","):
        name = re.sub(r"\s*\(.*\)\s*$", "", p.strip(), flags=re.S).upper()
        if name:
            privs.append(re.sub(r"\s+", " ", name))
    return _Grant(privs, on, grantee, grant_option)


def _unquote_db(on: str) -> tuple[str | None, str | None]:
    """(database, object) of a grant's ON part: ('*', '*') for *.*, the database unescaped (`db\\_1` -> db_1)."""
    on = re.sub(r"^(PROCEDURE|FUNCTION|PACKAGE BODY|PACKAGE)\s+", "", on, flags=re.I)
    m = re.fullmatch(r"(`(?:[^`]|``)*`|\*|[^.\s]+)\.(`(?:[^`]|``)*`|\*|\S+)", on)
    if not m:
        return None, None
    unq = lambda x: x[1:-1].replace("``", "`") if x.startswith("`") else x  # noqa: E731
    return unq(m.group(1)), unq(m.group(2))


def _same_db(pattern: str, database: str) -> bool:
    """Whether a grant's database pattern names exactly `database` (``\\_``/``\\%`` escapes; an unescaped
    ``_`` matching itself is accepted, an unescaped ``%`` is a wildcard over other databases)."""
    if re.search(r"(?<!\\)%", pattern):
        return False
    return re.sub(r"\\([_%\\])", r"\1", pattern) == database


def _mysql_problems(c, text, database: str) -> list[str]:
    user = c.execute(text("SELECT CURRENT_USER()")).scalar()
    grants = [g for (g,) in c.execute(text("SHOW GRANTS")).all()]
    return _mysql_grant_problems(c, text, database, grants, str(user), set())


def _mysql_grant_problems(c, text, database: str, grants: list[str], user: str, seen: set[str]) -> list[str]:
    out: list[str] = []
    for line in grants:
        g = parse_grant(line)
        if g is None:
            continue
        if g.role is not None:  # a granted role: held to the same rules
            if g.role in seen:
                continue
            seen.add(g.role)
            try:
                inner = [r for (r,) in c.execute(text(f"SHOW GRANTS FOR {g.role}")).all()]
            except Exception as e:  # noqa: BLE001 - a grant that cannot be read is a problem to report, not a crash
                out.append(f"user {user} has role {g.role}, whose grants cannot be read ({type(e).__name__}): "
                           f"REVOKE {g.role} FROM {g.grantee}")
                continue
            for p in _mysql_grant_problems(c, text, database, inner, user, seen):
                out.append(f"{p} (through role {g.role}; or REVOKE {g.role} FROM {g.grantee})")
            if g.grant_option:
                out.append(f"user {user} may grant role {g.role} to others (WITH ADMIN OPTION): "
                           f"REVOKE ADMIN OPTION FOR {g.role} FROM {g.grantee}")
            continue
        if "PROXY" in g.privileges:
            out.append(f"user {user} has PROXY ON {g.on}: REVOKE PROXY ON {g.on} FROM {g.grantee}")
            continue
        db, _ = _unquote_db(g.on)
        everywhere = db == "*"
        other_db = not everywhere and (db is None or not _same_db(db, database))
        extra = [p for p in g.privileges if p not in _MY_ALLOWED]
        if g.grant_option:
            out.append(f"user {user} may pass its privileges on (WITH GRANT OPTION on {g.on}): "
                       f"REVOKE GRANT OPTION ON {g.on} FROM {g.grantee}")
        if "ALL PRIVILEGES" in g.privileges or "ALL" in g.privileges:
            out.append(f"user {user} has ALL PRIVILEGES on {g.on}: REVOKE ALL PRIVILEGES ON {g.on} FROM {g.grantee}"
                       + (f"; then GRANT SELECT ON `{database}`.* TO {g.grantee}" if not other_db or everywhere else ""))
            continue
        for p in [p for p in extra if p in _MY_NAMED]:
            out.append(f"user {user} has {p} (it {_MY_NAMED[p]}): REVOKE {p} ON {g.on} FROM {g.grantee}")
        rest = [p for p in extra if p not in _MY_NAMED]
        if rest:
            out.append(f"user {user} has {', '.join(rest)} on {g.on} (only SELECT is allowed): "
                       f"REVOKE {', '.join(rest)} ON {g.on} FROM {g.grantee}")
        reads = [p for p in g.privileges if p == "SELECT"]
        if reads and everywhere:
            out.append(f"user {user} has SELECT on *.* (every database, the mysql schema included): "
                       f"REVOKE SELECT ON *.* FROM {g.grantee}; GRANT SELECT ON `{database}`.* TO {g.grantee}")
        elif reads and other_db:
            what = "the mysql schema" if (db or "").lower() in _MY_SYSTEM_DBS else f"database {db}"
            out.append(f"user {user} has SELECT on {g.on} ({what}; only the registered database {database} is "
                       f"allowed): REVOKE SELECT ON {g.on} FROM {g.grantee}")
    return out


# --------------------------------------------------------------------------- the DDL of a read-only role


def _role_name(role: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", role or ""):
        raise TargetError(f"role name {role!r}: use letters, digits and _ (at most 63, not starting with a digit)")
    return role


def _pg_schemas(target: ServerTarget) -> list[str]:
    schemas = ["public"]
    for p in target.include:
        if "." in p:
            s = p.split(".", 1)[0]
            if not any(ch in s for ch in "*?[") and s not in schemas:
                schemas.append(s)
    return schemas


def _my_hosts(target: ServerTarget, hosts: list[str] | None) -> list[str]:
    if hosts:
        return list(hosts)
    from urllib.parse import urlsplit

    h = (urlsplit(target.url).hostname or "").lower()
    return ["127.0.0.1", "localhost"] if h in ("127.0.0.1", "localhost", "::1") else ["%"]


def _my_db_pattern(database: str) -> str:
    """`db` for a GRANT that names exactly that database (``_`` and ``%`` are wildcards there)."""
    return "`" + database.replace("`", "``").replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "`"


def grant_readonly_sql(target: ServerTarget, role: str = DEFAULT_ROLE, *, exists: bool = False,
                       hosts: list[str] | None = None) -> list[str]:
    """The statements (run as an admin connected to the target's database) that create `role` able to read the
    target's database and nothing else. `exists`: the PostgreSQL role exists already (ALTER instead of CREATE).
    `hosts`: MySQL account hosts (default: 127.0.0.1 and localhost for a local server, else %)."""
    role = _role_name(role)
    if target.kind == "postgresql":
        r = pg_ident(role)
        attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
        out = [f"ALTER ROLE {r} {attrs}" if exists else f"CREATE ROLE {r} {attrs}",
               f"ALTER ROLE {r} SET default_transaction_read_only = on",
               f"GRANT CONNECT ON DATABASE {pg_ident(target.database)} TO {r}"]
        for s in _pg_schemas(target):
            out += [f"REVOKE CREATE ON SCHEMA {pg_ident(s)} FROM PUBLIC",
                    f"GRANT USAGE ON SCHEMA {pg_ident(s)} TO {r}",
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA {pg_ident(s)} TO {r}",
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA {pg_ident(s)} GRANT SELECT ON TABLES TO {r}"]
        return out
    out = []
    for h in _my_hosts(target, hosts):
        acct = f"'{role}'@'{h}'"
        out += [f"CREATE USER IF NOT EXISTS {acct}", f"GRANT SELECT ON {_my_db_pattern(target.database)}.* TO {acct}"]
    return out


def role_url(admin: ServerTarget, role: str) -> str:
    """The URL of the target's database as `role` (no password, no options: set one and add ?password_env=)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin.url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def password_hint(target: ServerTarget, role: str, hosts: list[str] | None = None) -> list[str]:
    """How to give the role a password (never through the URL) and register it."""
    url = role_url(target, role)
    if target.kind == "postgresql":
        how = [f"ALTER ROLE {pg_ident(role)} PASSWORD '...';   (or \\password {role} in psql)"]
    else:
        how = [f"ALTER USER '{role}'@'{h}' IDENTIFIED BY '...';" for h in _my_hosts(target, hosts)]
    return ["set its password (not part of this DDL; never put it in the URL):", *[f"  {x}" for x in how],
            f"then register {url}?password_env=VAR (or ?password_file=PATH)"]


@dataclass
class GrantResult:
    statements: list[str]
    url: str  # the role's URL
    problems: list[str] | None = None  # after --apply: role_problems of the new role ([] = read-only)
    check_error: str | None = None  # after --apply: why the new role could not be checked


def grant_readonly(admin_url: str, role: str = DEFAULT_ROLE, *, apply: bool = False,
                   hosts: list[str] | None = None) -> GrantResult:
    """The DDL of a read-only `role` for the database `admin_url` points at (an admin connection to it);
    with `apply`, run it there (autocommit) and check the role with `role_problems` (connecting as the role,
    its password from the driver's environment: PGPASSWORD/~/.pgpass, MYSQL_PWD). Raises TargetError for a
    bad URL or role name; a failing statement raises the driver's error, redacted, as RoleCheckError."""
    from sqlalchemy import create_engine, text

    _, admin = parse_target(admin_url)
    role = _role_name(role)
    if not apply:
        return GrantResult(grant_readonly_sql(admin, role, hosts=hosts), role_url(admin, role))
    eng = create_engine(admin.sqlalchemy_url(), isolation_level="AUTOCOMMIT", hide_parameters=True)
    try:
        with eng.connect() as c:
            exists = admin.kind == "postgresql" and bool(
                c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar())
            stmts = grant_readonly_sql(admin, role, exists=exists, hosts=hosts)
            for s in stmts:
                try:
                    c.execute(text(s))
                except Exception as e:  # noqa: BLE001 - whatever the server raises, redacted and re-raised as RoleCheckError
                    raise RoleCheckError(f"{s}: {error_text(e, admin)}") from None
    except RoleCheckError:
        raise
    except Exception as e:  # noqa: BLE001 - cannot connect as the admin
        raise RoleCheckError(f"cannot connect to {admin.url}: {error_text(e, admin)}") from None
    finally:
        eng.dispose()
    url = role_url(admin, role)
    _, target = parse_target(url)
    res = GrantResult(stmts, url)
    try:
        res.problems = role_problems(target)
    except RoleCheckError as e:
        res.check_error = str(e)
    finally:
        engine_for(target).dispose()  # its connections; the engine reconnects if used again
    return res
