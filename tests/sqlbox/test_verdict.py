"""sqlbox.verdict: one verdict for `sqlarbiter check` and POST /check (ok / rejected / failed)."""

from sqlbox.databases import registry_for
from sqlbox.executor import Executor
from sqlbox.verdict import check_sql


def test_check_sql_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLARBITER_DATA_DIR", str(tmp_path / "data"))
    with Executor(registry_for([])) as ex:
        ok = check_sql(ex, "demo", "SELECT count(*) FROM singer")
        assert ok["verdict"] == "ok" and ok["db"] == "demo" and ok["ok"] and ok["rows"]
        assert check_sql(ex, "demo", "SELECT * FROM read_csv('/etc/passwd')")["verdict"] == "rejected"
        failed = check_sql(ex, "demo", "SELECT nope FROM singer")
        assert failed["verdict"] == "failed" and not failed["ok"]
