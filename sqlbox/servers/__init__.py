"""Database servers (PostgreSQL, MySQL/MariaDB) as targets, by concern:

- `sqlbox.servers.targets`: the URL of a server database (`parse_target`, `ServerTarget`, the URL options),
  password redaction (`redact`, `error_text`);
- `sqlbox.servers.pool`: the pooled SQLAlchemy engines (`engine_for`, `dispose_all`);
- `sqlbox.servers.execute`: one read-only, bounded, rolled-back query (`ServerConn`), its error classes, and
  PostgreSQL's plan check (`check_pg_plan`);
- `sqlbox.servers.introspect`: a server database's schema (`introspect_server`);
- `sqlbox.servers.translate`: the SQL that runs (`prepare_sql`, `sqlite_to_server`).

The configured role's privileges are checked by `sqlbox.privileges`; loading Spider onto a server is
`sqlbox.admin`. Import from the module that holds a name: this package re-exports nothing.
"""
