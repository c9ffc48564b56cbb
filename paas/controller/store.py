"""The controller's state in SQLite: apps, releases, deployments, instances and nodes.

WAL journal with `synchronous=FULL`, so a commit survives a crash of the process or the host.
Every write happens in one short transaction on the event loop's thread; the controller is the
only writer. Rows come back as plain dicts ready for JSON. The schema and its versions live in
`migrations.py`; opening the store brings the file up to date or refuses it (`StoreRefused`).

The data directory holds secrets (tokens, app config), so `private_data_dir` makes it 0700
before anything is written into it, and `state.db` with its `-wal` and `-shm` files is 0600.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from paas.controller.migrations import StoreRefused, migrate

log = logging.getLogger("paas.controller.store")

_JSON_COLUMNS = {"hostnames", "config", "scale", "processes", "health", "policy", "labels",
                 "replicas", "options", "pending", "https"}


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if isinstance(out[key], str):
            out[key] = json.loads(out[key])
    return out


class Store:
    """All reads and writes of the controller's state."""

    def __init__(self, path: Path, *, on_assignments_changed: Callable[[], None] | None = None
                 ) -> None:
        """`on_assignments_changed` runs after every commit that changed what a node should
        run (the long-poll wakes its waiters there)."""
        self._on_changed = on_assignments_changed
        self._bumped = False
        private_data_dir(path.parent)
        try:
            _private_db_files(path)
            self._db = _open(path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreRefused(f"cannot open the controller's database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            self._bumped = False
            raise
        self._db.execute("COMMIT")
        if self._bumped:
            self._bumped = False
            if self._on_changed is not None:
                self._on_changed()

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return _row(self._db.execute(sql, args).fetchone())

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [_row(r) for r in self._db.execute(sql, args).fetchall()]  # type: ignore[misc]

    # --- apps -------------------------------------------------------------------------------
    def create_app(self, name: str, hostnames: list[str]) -> dict[str, Any]:
        with self.tx() as db:
            db.execute("INSERT INTO apps (name, hostnames, created_at) VALUES (?, ?, ?)",
                       (name, json.dumps(hostnames), time.time()))
        return self.get_app(name)  # type: ignore[return-value]

    def get_app(self, name: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM apps WHERE name = ?", name)

    def list_apps(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM apps ORDER BY name")

    def delete_app(self, name: str) -> list[str]:
        """Delete the app and its releases; mark its instances for stopping. Returns the
        nodes whose assignments changed."""
        with self.tx() as db:
            nodes = [r[0] for r in db.execute(
                "SELECT DISTINCT node FROM instances WHERE app = ? AND desired != 'stopped'",
                (name,))]
            db.execute("UPDATE instances SET desired = 'stopped', updated_at = ? WHERE app = ?",
                       (time.time(), name))
            db.execute("DELETE FROM releases WHERE app = ?", (name,))
            db.execute("DELETE FROM events WHERE app = ?", (name,))
            db.execute("DELETE FROM promotions WHERE app = ?", (name,))
            db.execute("DELETE FROM deployments WHERE app = ?", (name,))
            db.execute("DELETE FROM certs WHERE app = ?", (name,))
            db.execute("DELETE FROM apps WHERE name = ?", (name,))
            self._bump(db, nodes)
        return nodes

    # --- certificates -----------------------------------------------------------------------
    def put_cert(self, *, app: str, kind: str, source: str, cert: str, sealed_key: str,
                 hostnames: list[str], not_before: str, not_after: str,
                 fingerprint: str) -> None:
        """Add or replace the app's certificate of this kind."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO certs (app, kind, source, cert, sealed_key, "
                       "hostnames, not_before, not_after, fingerprint, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (app, kind, source, cert, sealed_key, json.dumps(hostnames),
                        not_before, not_after, fingerprint, time.time()))

    def list_certs(self, app: str | None = None) -> list[dict[str, Any]]:
        if app is None:
            return self._all("SELECT * FROM certs ORDER BY app, kind")
        return self._all("SELECT * FROM certs WHERE app = ? ORDER BY kind", app)

    def delete_cert(self, app: str, kind: str) -> bool:
        with self.tx() as db:
            return db.execute("DELETE FROM certs WHERE app = ? AND kind = ?",
                              (app, kind)).rowcount > 0

    def set_app_fields(self, name: str, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        args = [json.dumps(v) if k in _JSON_COLUMNS else v for k, v in values.items()]
        with self.tx() as db:
            db.execute(f"UPDATE apps SET {cols} WHERE name = ?", (*args, name))

    # --- releases ---------------------------------------------------------------------------
    def add_release(self, *, app: str, version: int, image: str, image_id: str, source: str,
                    config: dict[str, str], processes: dict[str, str],
                    test_command: str | None, health: dict[str, Any],
                    policy: dict[str, Any], created_by: str,
                    app_config: dict[str, str] | None = None,
                    stack: str | None = None,
                    metrics_path: str | None = None) -> dict[str, Any]:
        """Insert release `version`, which must be the app's next number (no gaps, no reuse);
        with `app_config`, set the app's config vars in the same transaction."""
        with self.tx() as db:
            row = db.execute("SELECT next_release FROM apps WHERE name = ?", (app,)).fetchone()
            if row is None or row[0] != version:
                raise RuntimeError(f"release v{version} is not the next release of {app}")
            db.execute(
                "INSERT INTO releases (app, version, image, image_id, source, config, processes,"
                " test_command, health, policy, created_at, created_by, stack, metrics_path)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app, version, image, image_id, source, json.dumps(config),
                 json.dumps(processes), test_command, json.dumps(health), json.dumps(policy),
                 time.time(), created_by, stack, metrics_path))
            db.execute("UPDATE apps SET next_release = ? WHERE name = ?", (version + 1, app))
            if app_config is not None:
                db.execute("UPDATE apps SET config = ? WHERE name = ?",
                           (json.dumps(app_config), app))
        return self.get_release(app, version)  # type: ignore[return-value]

    def set_pushed_image(self, app: str, version: int, ref: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE releases SET pushed_image = ? WHERE app = ? AND version = ?",
                       (ref, app, version))

    def get_release(self, app: str, version: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM releases WHERE app = ? AND version = ?", app, version)

    def latest_release(self, app: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM releases WHERE app = ? ORDER BY version DESC LIMIT 1",
                         app)

    def list_releases(self, app: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM releases WHERE app = ? ORDER BY version", app)

    # --- deployments ------------------------------------------------------------------------
    def create_deployment(self, *, app: str, release: int, replicas: dict[str, int],
                          kind: str = "deploy",
                          options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Insert a running deployment, unless one is already running for the app."""
        now = time.time()
        with self.tx() as db:
            running = db.execute(
                "SELECT id FROM deployments WHERE app = ? AND status = 'running'",
                (app,)).fetchone()
            if running is not None:
                raise DeploymentRunning(running[0])
            cur = db.execute(
                "INSERT INTO deployments (app, release, replicas, kind, options, status, step,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'running', 'pending', ?, ?)",
                (app, release, json.dumps(replicas), kind, json.dumps(options or {}), now, now))
            dep_id = cur.lastrowid
        return self.get_deployment(dep_id)  # type: ignore[arg-type,return-value]

    def get_deployment(self, dep_id: int) -> dict[str, Any] | None:
        return self._one("SELECT * FROM deployments WHERE id = ?", dep_id)

    def list_deployments(self, app: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM deployments WHERE app = ? ORDER BY id", app)

    def running_deployments(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM deployments WHERE status = 'running' ORDER BY id")

    def update_deployment(self, dep_id: int, **values: Any) -> None:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.tx() as db:
            db.execute(f"UPDATE deployments SET {cols} WHERE id = ?",
                       (*values.values(), dep_id))

    # --- events and promotions ---------------------------------------------------------------
    def add_event(self, *, app: str, deployment_id: int | None, step: str, message: str) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO events (app, deployment_id, at, step, message)"
                       " VALUES (?, ?, ?, ?, ?)", (app, deployment_id, time.time(), step, message))

    def list_events(self, app: str, *, after: int = 0,
                    deployment_id: int | None = None) -> list[dict[str, Any]]:
        if deployment_id is None:
            return self._all("SELECT * FROM events WHERE app = ? AND id > ? ORDER BY id",
                             app, after)
        return self._all("SELECT * FROM events WHERE app = ? AND id > ? AND deployment_id = ?"
                         " ORDER BY id", app, after, deployment_id)

    def promote(self, app: str, release: int) -> list[str]:
        """Mark `release` stable; returns the nodes whose assignments changed (stable tags)."""
        with self.tx() as db:
            db.execute("UPDATE apps SET stable_release = ? WHERE name = ?", (release, app))
            db.execute("INSERT INTO promotions (app, release, at) VALUES (?, ?, ?)",
                       (app, release, time.time()))
            nodes = [r[0] for r in db.execute(
                "SELECT DISTINCT node FROM instances WHERE app = ? AND desired != 'stopped'",
                (app,))]
            self._bump(db, nodes)
        return nodes

    def promotions(self, app: str) -> list[int]:
        """Releases in the order they were promoted (oldest first)."""
        return [r[0] for r in self._db.execute(
            "SELECT release FROM promotions WHERE app = ? ORDER BY id", (app,))]

    # --- instances --------------------------------------------------------------------------
    def add_instances(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.tx() as db:
            for r in rows:
                db.execute(
                    "INSERT INTO instances (id, app, release, process, role, node, desired,"
                    " deployment_id, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (r["id"], r["app"], r["release"], r["process"], r["role"], r["node"],
                     r.get("deployment_id"), now, now))
            self._bump(db, {r["node"] for r in rows})

    def set_desired(self, ids: list[str], desired: str) -> None:
        """Set the desired state of instances and bump their nodes' assignment index."""
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self.tx() as db:
            nodes = [r[0] for r in db.execute(
                f"SELECT DISTINCT node FROM instances WHERE id IN ({marks})", ids)]
            db.execute(f"UPDATE instances SET desired = ?, updated_at = ? WHERE id IN ({marks})",
                       (desired, time.time(), *ids))
            self._bump(db, nodes)

    def get_instance(self, instance_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM instances WHERE id = ?", instance_id)

    def list_instances(self, app: str | None = None, *,
                       include_stopped: bool = False) -> list[dict[str, Any]]:
        where = [] if include_stopped else ["desired != 'stopped'"]
        args: list[Any] = []
        if app is not None:
            where.append("app = ?")
            args.append(app)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return self._all(f"SELECT * FROM instances{clause} ORDER BY created_at, id", *args)

    def node_assignments(self, node: str) -> list[dict[str, Any]]:
        """The instances a node should run (desired running or draining), with their release."""
        return self._all(
            "SELECT i.id, i.app, i.release, i.process, i.role, i.desired, r.image, r.pushed_image,"
            " r.config,"
            " r.processes, r.health, r.policy, r.metrics_path, a.stable_release FROM instances i"
            " JOIN releases r ON r.app = i.app AND r.version = i.release"
            " JOIN apps a ON a.name = i.app"
            " WHERE i.node = ? AND i.desired IN ('running', 'draining') ORDER BY i.id", node)

    def count_stopping(self, node: str) -> int:
        """Instances the node was told to stop and has not yet reported gone."""
        row = self._one("SELECT COUNT(*) AS n FROM instances WHERE node = ?"
                        " AND desired = 'stopped'", node)
        return int(row["n"]) if row else 0

    def report_instances(self, node: str, reports: list[dict[str, Any]]) -> None:
        """Apply a node's heartbeat: update reported states and forget stopped instances
        the node no longer has."""
        now = time.time()
        seen = {r["id"] for r in reports}
        with self.tx() as db:
            for r in reports:
                # The pull's seconds and the last exit stay once reported (a later start
                # finds the image; a restarted container runs again).
                db.execute(
                    "UPDATE instances SET state = ?, container_id = ?, host_port = ?,"
                    " restarts = ?, error = ?, pull_s = COALESCE(?, pull_s),"
                    " exit_code = COALESCE(?, exit_code), ran_s = COALESCE(?, ran_s),"
                    " updated_at = ? WHERE id = ? AND node = ?",
                    (r["state"], r.get("container_id"), r.get("host_port"),
                     int(r.get("restarts") or 0), r.get("error"), r.get("pull_s"),
                     r.get("exit_code"), r.get("ran_s"), now, r["id"], node))
            gone = [row[0] for row in db.execute(
                "SELECT id FROM instances WHERE node = ? AND desired = 'stopped'", (node,))
                if row[0] not in seen]
            for instance_id in gone:
                db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
            db.execute("UPDATE nodes SET last_heartbeat = ? WHERE name = ?", (now, node))

    # --- nodes ------------------------------------------------------------------------------
    def upsert_node(self, *, name: str, address: str, cpu: float, memory_mb: int,
                    labels: dict[str, str], consul_url: str, agent_url: str) -> dict[str, Any]:
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO nodes (name, address, cpu, memory_mb, labels, consul_url, agent_url,"
                " last_heartbeat, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET address = excluded.address, cpu = excluded.cpu,"
                " memory_mb = excluded.memory_mb, labels = excluded.labels,"
                " consul_url = excluded.consul_url, agent_url = excluded.agent_url,"
                " last_heartbeat = excluded.last_heartbeat",
                (name, address, cpu, memory_mb, json.dumps(labels), consul_url, agent_url, now,
                 now))
        return self.get_node(name)  # type: ignore[return-value]

    def set_node_draining(self, name: str, draining: bool) -> None:
        with self.tx() as db:
            db.execute("UPDATE nodes SET draining = ? WHERE name = ?", (int(draining), name))

    def remove_node(self, name: str) -> int:
        """Forget a node and the instances recorded on it; returns how many instances."""
        with self.tx() as db:
            gone = db.execute("DELETE FROM instances WHERE node = ?", (name,)).rowcount
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))
        return gone

    def get_node(self, name: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM nodes WHERE name = ?", name)

    def list_nodes(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM nodes ORDER BY name")

    def _bump(self, db: sqlite3.Connection, nodes: Any) -> None:
        self._bumped = True
        for node in set(nodes):
            db.execute("UPDATE nodes SET assign_index = assign_index + 1 WHERE name = ?",
                       (node,))


def private_data_dir(path: Path) -> Path:
    """Make the data directory 0700 (parents as the umask says) and return it.

    An existing directory looser than 0700 is tightened, with a warning: controllers before
    this one left it 0755 with a world-readable `state.db`, and the directory is the
    controller's own (its `--data-dir`), so nobody else has a reason to read it.
    """
    try:
        existed = path.is_dir()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != 0o700:
            path.chmod(0o700)  # a new one too: mkdir's mode passes through the umask
            if existed:
                log.warning("data directory %s was mode %04o; now 0700", path, mode)
    except OSError as exc:
        raise StoreRefused(f"cannot make the data directory {path} private (0700): {exc}"
                           ) from exc
    return path


def _open(path: Path) -> sqlite3.Connection:
    """Connect, set the pragmas and migrate; the connection is closed if any of that fails."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _private_db_files(path: Path) -> None:
    """Create `state.db` 0600 before SQLite does (SQLite gives its `-wal` and `-shm` files
    the database's mode); tighten the files an older controller left readable."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if stat.S_IMODE(name.stat().st_mode) != 0o600:
                name.chmod(0o600)
        except FileNotFoundError:
            pass


class DeploymentRunning(Exception):
    """A deployment of the app is already running; carries its id."""

    def __init__(self, dep_id: int) -> None:
        super().__init__(dep_id)
        self.dep_id = dep_id
