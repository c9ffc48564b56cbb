"""The versions of the controller's SQLite schema and the ordered migrations between them.

`PRAGMA user_version` holds the version a database is at. `migrate` brings a database up to
the newest version this code knows: each migration runs in its own write transaction, and
`user_version` is set in that same transaction, so a migration that fails midway leaves the
database exactly at the version before it. A database written by a newer controller is
refused (`SchemaTooNew`); `paas-controller` prints the error's sentence and exits with status 1.

Version 1 is the schema as it was before versions existed, kept word for word. A database
from that time (`user_version` 0 with the tables present) is recognised as version 1 once its
tables and columns are checked against that schema; nothing is created again.

To add a migration:
1. Append `Migration(version=<last + 1>, name=..., apply=...)` to `MIGRATIONS`. `apply` is
   `sql("...")` for plain DDL or a function taking the connection; it must not commit, begin
   or roll back (the runner owns the transaction), so never use `executescript` in it.
2. Never edit a migration that has shipped: a database that ran it will not run it again.
3. Extend `tests/unit/test_store_migrations.py` with a database at the previous version
   holding rows, and check the rows survive and the new version's queries work.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger("paas.controller.migrations")

Apply = Callable[[sqlite3.Connection], None]


class StoreRefused(Exception):
    """The controller's store cannot be opened as it is; the message is one sentence saying
    why and what to do. The controller stops rather than guess."""


class SchemaTooNew(StoreRefused):
    """The database was written by a newer controller: run that version, or a newer one."""


class SchemaUnrecognised(StoreRefused):
    """The database has no schema version and its tables are not version 1's."""


class MigrationFailed(StoreRefused):
    """A migration raised; its transaction was rolled back, so the database is unchanged."""


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    """The `user_version` the database is at once this migration has run."""
    name: str
    """What it does, for the log and for errors."""
    apply: Apply
    """Changes the schema (and data) inside the runner's transaction."""


def sql(script: str) -> Apply:
    """A migration step that runs `script`'s statements one by one in the open transaction
    (`executescript` would commit it first)."""
    statements = split_statements(script)

    def apply(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)
    return apply


def split_statements(script: str) -> list[str]:
    """The statements of `script`, split where SQLite says one ends (so a `;` inside a string
    literal or a trigger body does not split). What follows the last `;` is kept as it is: a
    comment runs as nothing, an unfinished statement fails when the migration runs."""
    statements: list[str] = []
    *pieces, rest = script.split(";")
    pending = ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    if (pending + rest).strip():
        statements.append((pending + rest).strip())
    return statements


BASELINE = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    hostnames TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    scale TEXT NOT NULL DEFAULT '{}',
    next_release INTEGER NOT NULL DEFAULT 1,
    stable_release INTEGER,
    live_release INTEGER,
    pending TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    app TEXT NOT NULL,
    version INTEGER NOT NULL,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    pushed_image TEXT,
    source TEXT NOT NULL,
    config TEXT NOT NULL,
    processes TEXT NOT NULL,
    test_command TEXT,
    health TEXT NOT NULL,
    policy TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    release INTEGER NOT NULL,
    replicas TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'deploy',
    options TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    reason TEXT,
    log_tail TEXT,
    test_output TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_app ON deployments (app, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    deployment_id INTEGER,
    at REAL NOT NULL,
    step TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_app ON events (app, id);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    release INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    release INTEGER NOT NULL,
    process TEXT NOT NULL,
    role TEXT NOT NULL,
    node TEXT NOT NULL,
    desired TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    container_id TEXT,
    host_port INTEGER,
    restarts INTEGER NOT NULL DEFAULT 0,
    deployment_id INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_app ON instances (app);
CREATE INDEX IF NOT EXISTS instances_node ON instances (node);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    labels TEXT NOT NULL,
    consul_url TEXT NOT NULL,
    agent_url TEXT NOT NULL DEFAULT '',
    draining INTEGER NOT NULL DEFAULT 0,
    assign_index INTEGER NOT NULL DEFAULT 1,
    last_heartbeat REAL,
    registered_at REAL NOT NULL
);
"""
"""Version 1: the schema before versions, unchanged (the store ran it on every start)."""

# The reconcile loop asks for the running deployments every second and the deployments table
# keeps every deployment ever made: a partial index holds only the running ones, in id order.
# Rollback and app deletion look up promotions by app, which had no index at all.
QUERY_INDEXES = """
CREATE INDEX deployments_running ON deployments (id) WHERE status = 'running';
CREATE INDEX promotions_app ON promotions (app, id);
"""

RELEASE_STACK = """
ALTER TABLE releases ADD COLUMN stack TEXT;
"""

INSTANCE_START = """
ALTER TABLE instances ADD COLUMN error TEXT;
ALTER TABLE instances ADD COLUMN pull_s REAL;
"""

INSTANCE_EXIT = """
ALTER TABLE instances ADD COLUMN exit_code INTEGER;
ALTER TABLE instances ADD COLUMN ran_s REAL;
"""

RELEASE_METRICS = """
ALTER TABLE releases ADD COLUMN metrics_path TEXT;
"""

# An app's certificates: `platform` is the cluster CA's for <app>.<domain>, `own` the user's
# (or an ACME CA's) for its own domains. The private key is kept sealed (paas.sealing), as it
# is written to Consul KV for the router: the database holds no key in the clear.
CERTIFICATES = """
CREATE TABLE certs (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    cert TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    hostnames TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (app, kind)
);
"""

# An app's HTTPS choices, published with its route: {"redirect": bool, "hsts": bool}.
APP_HTTPS = """
ALTER TABLE apps ADD COLUMN https TEXT NOT NULL DEFAULT '{}';
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, name="baseline schema", apply=sql(BASELINE)),
    Migration(version=2, name="indexes for running deployments and promotions",
              apply=sql(QUERY_INDEXES)),
    Migration(version=3, name="the stack a release was built with",
              apply=sql(RELEASE_STACK)),
    Migration(version=4, name="why an instance could not start, and its image pull's seconds",
              apply=sql(INSTANCE_START)),
    Migration(version=5, name="how an instance last exited: its code and how long it ran",
              apply=sql(INSTANCE_EXIT)),
    Migration(version=6, name="where Prometheus scrapes a release's instances",
              apply=sql(RELEASE_METRICS)),
    Migration(version=7, name="apps' certificates, their keys sealed", apply=sql(CERTIFICATES)),
    Migration(version=8, name="an app's HTTPS redirect and HSTS", apply=sql(APP_HTTPS)),
)
LATEST = MIGRATIONS[-1].version


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, *,
            migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database up to the last of `migrations` and return its version.

    `db` must be in autocommit mode (`isolation_level=None`) with no transaction open. Each
    step takes the write lock before it reads the version, so two processes opening the same
    file cannot both apply a migration. On a current database nothing is written.
    """
    _check_order(migrations)
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            done = _advance(db, migrations)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if done is None:
            return user_version(db)
        log.info("database %s", done)


def _advance(db: sqlite3.Connection, migrations: Sequence[Migration]) -> str | None:
    """Take one step inside the open transaction and say what it was; None when current."""
    current = user_version(db)
    if current == 0 and _has_tables(db):
        _recognise_baseline(db, migrations[0])
        db.execute("PRAGMA user_version = 1")
        return "from before schema versions recognised as version 1"
    step = _next_step(current, migrations)
    if step is None:
        return None
    try:
        step.apply(db)
    except Exception as exc:
        raise MigrationFailed(
            f"the database migration to schema version {step.version} ({step.name}) failed:"
            f" {exc}; the database was left at version {current}, unchanged") from exc
    db.execute(f"PRAGMA user_version = {step.version:d}")
    return f"migrated to schema version {step.version}: {step.name}"


def _next_step(current: int, migrations: Sequence[Migration]) -> Migration | None:
    latest = migrations[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"the database is at schema version {current} but this controller only knows "
            f"versions up to {latest}: run the controller version that wrote it, or a newer one")
    return next((m for m in migrations if m.version == current + 1), None)


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... in order, not {versions}")


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                      " AND name NOT LIKE 'sqlite_%' LIMIT 1").fetchone() is not None


def _columns(db: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                       " AND name NOT LIKE 'sqlite_%'")]
    return {t: [r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)", (t,))]
            for t in tables}


def _recognise_baseline(db: sqlite3.Connection, baseline: Migration) -> None:
    """A database from before versions: version 1 if every table and column of version 1 is
    there (an older build had fewer columns, and its rows would fail later, mid-request)."""
    expected = sqlite3.connect(":memory:", isolation_level=None)
    try:
        baseline.apply(expected)
        want = _columns(expected)
    finally:
        expected.close()
    have = _columns(db)
    missing = [f"{table}.{col}" for table, cols in want.items()
               for col in cols if col not in have.get(table, [])]
    if missing:
        raise SchemaUnrecognised(
            "the database has no schema version and lacks " + ", ".join(missing[:5])
            + (" and more" if len(missing) > 5 else "")
            + ": it was written by an older or a foreign program; move it aside and start "
            "afresh, or copy its data into a new database")
