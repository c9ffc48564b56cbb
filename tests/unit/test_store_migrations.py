"""Schema versions and migrations (paas/controller/migrations.py), through the store that runs
them (issue 8): a version-1 database, with or without its version stamp, opens with the current
code with every row intact; opening twice changes nothing; a migration that fails leaves the
database at the version before it; a database from a newer controller is refused in one sentence.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from paas.controller import migrations as m
from paas.controller.store import Store

NOW = 1_700_000_000.0


def write_v1(path: Path, *, stamp: bool = True, schema: str = m.BASELINE) -> None:
    """A database as version 1 wrote it (raw SQL, no current code): an app with two
    releases, a finished and a running deployment, events, a promotion, two instances and
    a node. `stamp=False` is a database from before versions (user_version 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    db.executescript(f"""
    BEGIN;
    INSERT INTO apps VALUES ('hello', '["hello.localhost"]', '{{"GREETING": "hi"}}',
        '{{"web": 2}}', 3, 1, 2, '{{}}', {NOW});
    INSERT INTO releases VALUES ('hello', 1, 'paas/hello:v1', 'sha256:aa', NULL, 'upload',
        '{{}}', '{{"web": "python app.py"}}', NULL, '{{"path": "/"}}', '{{}}', {NOW}, 'admin');
    INSERT INTO releases VALUES ('hello', 2, 'paas/hello:v2', 'sha256:bb', 'reg:5000/hello:v2',
        'git', '{{"GREETING": "hi"}}', '{{"web": "python app.py"}}', 'pytest',
        '{{"path": "/healthz"}}', '{{"batch": 1}}', {NOW + 1}, 'admin');
    INSERT INTO deployments VALUES (1, 'hello', 1, '{{"web": 2}}', 'deploy', '{{}}',
        'succeeded', 'done', NULL, NULL, NULL, {NOW}, {NOW + 5});
    INSERT INTO deployments VALUES (2, 'hello', 2, '{{"web": 2}}', 'deploy',
        '{{"skip_checks": false}}', 'running', 'rollout', NULL, 'log line', 'ok', {NOW + 6},
        {NOW + 7});
    INSERT INTO events VALUES (1, 'hello', 1, {NOW}, 'done', 'v1 is live');
    INSERT INTO events VALUES (2, 'hello', 2, {NOW + 6}, 'rollout', 'batch 1 of 2');
    INSERT INTO promotions VALUES (1, 'hello', 1, {NOW + 5});
    INSERT INTO instances VALUES ('hello-v1-web-aaaaaa', 'hello', 1, 'web', 'live', 'node-1',
        'running', 'healthy', 'c0ffee', 32768, 1, 1, {NOW}, {NOW + 2});
    INSERT INTO instances VALUES ('hello-v2-web-bbbbbb', 'hello', 2, 'web', 'live', 'node-1',
        'running', 'pending', NULL, NULL, 0, 2, {NOW + 6}, {NOW + 6});
    INSERT INTO nodes VALUES ('node-1', '127.0.0.2', 2.0, 2048, '{{"zone": "a"}}',
        'http://127.0.0.2:8500', 'http://127.0.0.2:7071', 0, 7, {NOW + 8}, {NOW});
    PRAGMA user_version = {1 if stamp else 0};
    COMMIT;
    """)
    db.close()


def v1_columns() -> dict[str, list[str]]:
    """The columns of each table of version 1 (later migrations add columns)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(m.BASELINE)
        tables = ["apps", "releases", "deployments", "events", "promotions", "instances",
                  "nodes"]
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table version 1 has, in rowid order, its version 1 columns."""
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY rowid").fetchall()
                for t, cols in v1_columns().items()}
    finally:
        db.close()


def version_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return m.user_version(db)
    finally:
        db.close()


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_migrations_are_numbered_from_one_and_version_two_exists() -> None:
    assert [x.version for x in m.MIGRATIONS] == list(range(1, m.LATEST + 1))
    assert m.LATEST >= 2


@pytest.mark.parametrize("stamp", [True, False], ids=["version-1", "before-versions"])
def test_version_1_database_opens_with_every_row_intact(tmp_path: Path, stamp: bool) -> None:
    path = tmp_path / "data" / "state.db"
    write_v1(path, stamp=stamp)
    before = dump(path)
    assert sum(len(rows) for rows in before.values()) == 11

    store = Store(path)
    try:
        app = store.get_app("hello")
        assert app is not None and app["hostnames"] == ["hello.localhost"]
        assert (app["scale"], app["stable_release"], app["live_release"]) == ({"web": 2}, 1, 2)
        assert [r["version"] for r in store.list_releases("hello")] == [1, 2]
        assert store.get_release("hello", 2)["pushed_image"] == "reg:5000/hello:v2"
        assert [d["id"] for d in store.running_deployments()] == [2]
        assert [d["status"] for d in store.list_deployments("hello")] == ["succeeded", "running"]
        assert [e["message"] for e in store.list_events("hello", deployment_id=2)] == [
            "batch 1 of 2"]
        assert store.promotions("hello") == [1]
        assert [a["id"] for a in store.node_assignments("node-1")] == [
            "hello-v1-web-aaaaaa", "hello-v2-web-bbbbbb"]
        assert store.get_node("node-1")["labels"] == {"zone": "a"}
    finally:
        store.close()
    assert dump(path) == before
    assert version_of(path) == m.LATEST

    store = Store(path)  # and it takes writes where version 1 left off
    assert store.add_release(app="hello", version=3, image="paas/hello:v3",
                             image_id="sha256:cc", source="upload", config={},
                             processes={"web": "x"}, test_command=None, health={},
                             policy={}, created_by="admin")["version"] == 3
    store.close()


def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.create_app("hello", ["hello.localhost"])
    store.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    Store(path).close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

    runs: list[int] = []
    counted = (*m.MIGRATIONS, m.Migration(version=m.LATEST + 1, name="counted",
                                          apply=lambda db: runs.append(1)))
    for _ in range(2):
        db = connect(path)
        assert m.migrate(db, migrations=counted) == m.LATEST + 1
        db.close()
    assert runs == [1]


def broken(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x INTEGER)")
    db.execute("UPDATE apps SET config = '{\"BROKEN\": \"1\"}'")
    raise RuntimeError("disk on fire")


@pytest.mark.parametrize("apply", [
    broken,
    m.sql("CREATE TABLE half_done (x INTEGER); UPDATE apps SET scale = '{}';"
          " SELECT no_such_function();"),
], ids=["function", "sql-script"])
def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path, apply: m.Apply) -> None:
    path = tmp_path / "state.db"
    write_v1(path)
    Store(path).close()
    before = dump(path)
    failing = (*m.MIGRATIONS, m.Migration(version=m.LATEST + 1, name="breaks", apply=apply))

    db = connect(path)
    with pytest.raises(m.MigrationFailed) as err:
        m.migrate(db, migrations=failing)
    assert not db.in_transaction
    db.close()

    assert f"version {m.LATEST + 1} (breaks) failed" in str(err.value)
    assert f"left at version {m.LATEST}, unchanged" in str(err.value)
    assert version_of(path) == m.LATEST
    assert dump(path) == before
    db = connect(path)
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    db.close()


def test_each_migration_commits_on_its_own(tmp_path: Path) -> None:
    """Version 1 to 3 where 3 fails: version 2 stays applied."""
    path = tmp_path / "state.db"
    write_v1(path)
    failing = (*m.MIGRATIONS[:2], m.Migration(version=3, name="breaks", apply=broken))
    db = connect(path)
    with pytest.raises(m.MigrationFailed):
        m.migrate(db, migrations=failing)
    db.close()
    assert version_of(path) == 2
    assert dump(path)["apps"][0][2] == '{"GREETING": "hi"}'


def test_version_3_releases_record_their_stack(tmp_path: Path) -> None:
    """Issue 9: a release records the stack it was built with; older releases have none."""
    path = tmp_path / "state.db"
    write_v1(path)
    store = Store(path)
    try:
        assert version_of(path) >= 3
        assert [r["stack"] for r in store.list_releases("hello")] == [None, None]
        store.create_app("py", ["py.localhost"])
        release = store.add_release(app="py", version=1, image="paas/py:v1", image_id="sha256:c",
                                    source="upload", config={}, processes={"web": "x"},
                                    test_command=None, health={}, policy={}, created_by="t",
                                    stack="python")
        assert release["stack"] == "python"
    finally:
        store.close()


def test_version_6_releases_say_where_prometheus_scrapes(tmp_path: Path) -> None:
    """Monitoring: a release records its `[metrics] path`, and a node's assignments carry it;
    older releases have none (not scraped)."""
    path = tmp_path / "state.db"
    write_v1(path)
    store = Store(path)
    try:
        assert version_of(path) >= 6
        assert [r["metrics_path"] for r in store.list_releases("hello")] == [None, None]
        assert {a["metrics_path"] for a in store.node_assignments("node-1")} == {None}
        store.create_app("go", ["go.localhost"])
        release = store.add_release(app="go", version=1, image="paas/go:v1", image_id="sha256:d",
                                    source="upload", config={}, processes={"web": "x"},
                                    test_command=None, health={}, policy={}, created_by="t",
                                    metrics_path="/metrics")
        assert release["metrics_path"] == "/metrics"
        assert dump(path)["releases"][0][0] == "hello"  # the version 1 columns are intact
    finally:
        store.close()


def test_version_4_instances_say_why_they_cannot_start_and_what_their_pull_took(
        tmp_path: Path) -> None:
    """Real hosts: a node reports why it cannot start an instance (an image it cannot pull)
    and how long a pull took; older instance rows have neither."""
    path = tmp_path / "state.db"
    write_v1(path)
    store = Store(path)
    try:
        assert version_of(path) >= 4
        a, b = "hello-v1-web-aaaaaa", "hello-v2-web-bbbbbb"
        assert [(i["error"], i["pull_s"]) for i in store.list_instances("hello")] == \
            [(None, None), (None, None)]
        store.report_instances("node-1", [
            {"id": a, "state": "running", "container_id": "c0ffee", "host_port": 32768,
             "restarts": 0, "error": None, "pull_s": 1.5},
            {"id": b, "state": "missing", "restarts": 0, "error": "could not be pulled"}])
        store.report_instances("node-1", [  # a later start found the image: the pull stays
            {"id": a, "state": "running", "container_id": "c0ffee", "host_port": 32768,
             "restarts": 0, "error": None, "pull_s": None},
            {"id": b, "state": "starting", "restarts": 0, "error": None}])
        rows = {i["id"]: i for i in store.list_instances("hello")}
        assert (rows[a]["pull_s"], rows[a]["error"]) == (1.5, None)
        assert (rows[b]["state"], rows[b]["error"]) == ("starting", None)
        assert dump(path)["instances"][0][0] == a  # the version 1 columns are intact

        # Version 5: how it last exited stays after a restart made it run again.
        assert version_of(path) >= 5
        store.report_instances("node-1", [
            {"id": b, "state": "exited", "restarts": 0, "exit_code": 3, "ran_s": 0.4}])
        store.report_instances("node-1", [
            {"id": b, "state": "running", "restarts": 1, "exit_code": None, "ran_s": None}])
        row = store.get_instance(b)
        assert (row["state"], row["restarts"], row["exit_code"], row["ran_s"]) == \
            ("running", 1, 3, 0.4)
    finally:
        store.close()


def test_next_version_code_opens_a_database_written_by_this_one(tmp_path: Path) -> None:
    """What the next version's code does to today's database: a hypothetical version
    LATEST + 1 adds a column, and every row written through the store survives."""
    path = tmp_path / "state.db"
    write_v1(path)
    store = Store(path)
    store.create_app("other", ["other.localhost"])
    store.promote("other", 1)
    store.close()
    before = dump(path)

    add_note = m.Migration(version=m.LATEST + 1, name="apps get a note",
                           apply=m.sql("ALTER TABLE apps ADD COLUMN note TEXT"))
    db = connect(path)
    assert m.migrate(db, migrations=(*m.MIGRATIONS, add_note)) == m.LATEST + 1
    db.close()

    assert dump(path) == before
    db = sqlite3.connect(path)
    notes = db.execute("SELECT note FROM apps ORDER BY rowid").fetchall()
    db.close()
    assert notes == [(None,)] * len(before["apps"])

    # and this code, now the older one, refuses the newer file instead of guessing
    with pytest.raises(m.SchemaTooNew) as err:
        Store(path)
    assert str(err.value) == (
        f"the database is at schema version {m.LATEST + 1} but this controller only knows "
        f"versions up to {m.LATEST}: run the controller version that wrote it, or a newer one")
    assert version_of(path) == m.LATEST + 1


def test_a_database_from_an_older_build_without_versions_is_refused(tmp_path: Path) -> None:
    """Before versions the schema grew without ALTERs: such a file lacks columns that
    CREATE TABLE IF NOT EXISTS never added. It is refused, not stamped version 1."""
    path = tmp_path / "state.db"
    old = m.BASELINE.replace("    pushed_image TEXT,\n", "").replace(
        "    agent_url TEXT NOT NULL DEFAULT '',\n", "")
    assert old != m.BASELINE
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(old)
    db.close()
    with pytest.raises(m.SchemaUnrecognised) as err:
        Store(path)
    assert "lacks releases.pushed_image, nodes.agent_url:" in str(err.value)
    assert version_of(path) == 0


@pytest.mark.parametrize("sql, plan_uses", [
    ("SELECT * FROM deployments WHERE status = 'running' ORDER BY id", "deployments_running"),
    ("SELECT release FROM promotions WHERE app = 'a' ORDER BY id", "promotions_app"),
])
def test_version_2_indexes_serve_the_store_queries(tmp_path: Path, sql: str,
                                                   plan_uses: str) -> None:
    """The reconcile loop lists running deployments every second; rollback reads
    promotions by app. Both searched whole tables at version 1."""
    path = tmp_path / "state.db"
    Store(path).close()
    db = connect(path)
    plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
    db.close()
    assert f"USING INDEX {plan_uses}" in plan


@pytest.mark.parametrize("script, statements", [
    ("CREATE TABLE a (x); CREATE TABLE b (y);", ["CREATE TABLE a (x);", "CREATE TABLE b (y);"]),
    ("INSERT INTO a VALUES ('x;y');\n-- done\n", ["INSERT INTO a VALUES ('x;y');", "-- done"]),
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM b; DELETE FROM c; END;",
     ["CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM b; DELETE FROM c; END;"]),
    ("  ;\n", []),
    ("CREATE TABLE a (x); CREATE TABLE b (y", ["CREATE TABLE a (x);", "CREATE TABLE b (y"]),
])
def test_split_statements(script: str, statements: list[str]) -> None:
    assert m.split_statements(script) == statements


def test_migrations_out_of_order_are_a_programming_error(tmp_path: Path) -> None:
    db = connect(tmp_path / "state.db")
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        m.migrate(db, migrations=(m.MIGRATIONS[0], m.Migration(version=3, name="gap",
                                                               apply=m.sql(""))))
    assert m.user_version(db) == 0
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_daemon_refuses_a_newer_database_in_one_sentence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "state.db")
    db.execute(f"PRAGMA user_version = {m.LATEST + 7}")
    db.close()
    proc = subprocess.run(
        [sys.executable, "-m", "paas.controller.server", "--data-dir", str(data),
         "--port", str(free_port()), "--consul-url", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"paas-controller: the database is at schema version {m.LATEST + 7} but this "
        f"controller only knows versions up to {m.LATEST}: run the controller version that "
        "wrote it, or a newer one")
    assert not (data / "admin.token").exists()

