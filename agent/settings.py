"""The agent's settings: one frozen object, read from flags and PAAS_AGENT_* variables at start.

Every field documents its default beside it. `AgentSettings.from_args` is the only place that
reads argv or the environment (precedence: flag, then `PAAS_AGENT_<FIELD>`, then the default), so
tests build settings directly. The join token file, if any, is read by `read_join_token()` once
when the daemon starts.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

NODE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")  # the controller's rule for node names
CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
ENV_PREFIX = "PAAS_AGENT_"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the flag and what to fix."""


def default_docker_url(environ: Mapping[str, str]) -> str:
    """DOCKER_HOST from the environment, else the local engine's unix socket."""
    return environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    node: str = field(default_factory=lambda: socket.gethostname().lower())
    """Node name, unique in the cluster: lowercase letters, digits, '.', '-' (default: the host
    name)."""
    address: str = "127.0.0.1"
    """The node's address: containers publish here, Consul checks and the admin port use it."""
    controller_url: str = "http://127.0.0.1:7070"
    """Base URL of the controller's HTTP API."""
    join_token: str = ""
    """Bearer token for the controller (prefer --join-token-file: it stays out of `ps`)."""
    join_token_file: str = ""
    """File holding the join token, read once at start; used when --join-token is empty."""
    consul_url: str = ""
    """The local Consul agent; empty means `http://<address>:8500`."""
    cluster: str = "local"
    """Cluster id: the `paas.localcluster` label, so several clusters can share one Docker engine."""
    cpu: float = 1.0
    """Declared CPU capacity (cores) reported to the controller's scheduler."""
    memory_mb: int = 1024
    """Declared memory capacity (MiB) reported to the controller's scheduler."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Node labels for placement (`--label k=v`, repeatable; env: `k=v,k2=v2`)."""
    admin_port: int = 7071
    """Port on `address` serving GET /healthz and GET /metrics."""
    wait_s: float = 30.0
    """Long-poll wait asked of the controller per assignments request."""
    heartbeat_interval_s: float = 2.0
    """Seconds between heartbeats."""
    reconcile_interval_s: float = 5.0
    """Safety tick: reconcile at least this often, to notice crashed containers."""
    docker_url: str = ""
    """Docker engine URL; empty means DOCKER_HOST or unix:///var/run/docker.sock."""
    docker_init: bool = True
    """Run containers with Docker's init (tini) so the app gets SIGTERM and zombies are reaped."""
    log_level: str = "INFO"
    """Python logging level."""

    def __post_init__(self) -> None:
        if not NODE_RE.fullmatch(self.node):
            raise SettingsError(f"--node {self.node!r}: use lowercase letters, digits, '.' and '-'")
        if not CLUSTER_RE.fullmatch(self.cluster):
            raise SettingsError(
                f"--cluster {self.cluster!r}: use lowercase letters, digits, '.', '_' and '-'")
        if not self.address:
            raise SettingsError("--address must not be empty")
        for key in self.labels:
            if not LABEL_KEY_RE.fullmatch(key):
                raise SettingsError(f"--label {key!r}: bad label key")
        for name in ("wait_s", "heartbeat_interval_s", "reconcile_interval_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"--{_flag(name)} must be positive")
        if not 0 < self.admin_port < 65536:
            raise SettingsError("--admin-port must be a port number (1-65535)")

    @property
    def effective_consul_url(self) -> str:
        return (self.consul_url or f"http://{self.address}:8500").rstrip("/")

    @property
    def effective_docker_url(self) -> str:
        return self.docker_url or default_docker_url(os.environ)

    def read_join_token(self) -> str:
        """The join token: `join_token`, else the stripped content of `join_token_file`."""
        if self.join_token:
            return self.join_token
        if self.join_token_file:
            try:
                return Path(self.join_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(
                    f"--join-token-file {self.join_token_file}: cannot read it ({exc.strerror})"
                ) from None
        return ""

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> "AgentSettings":
        """Build settings from flags, then PAAS_AGENT_<FIELD> variables, then the defaults."""
        env = os.environ if environ is None else environ
        ns = build_parser().parse_args(argv)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = getattr(ns, f.name)
            if raw is None or raw == []:
                raw = env.get(env_name(f.name))
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw)
        if not values.get("docker_url"):
            values["docker_url"] = default_docker_url(env)
        return cls(**values)


def build_parser() -> argparse.ArgumentParser:
    """The `paas-agent` argument parser; its help is generated from the field docstrings."""
    parser = argparse.ArgumentParser(
        prog="paas-agent",
        description="Run the PaaS node agent: registers this node with the controller, runs its "
                    "assigned instances in Docker and registers them in the local Consul agent. "
                    f"Every flag can also be set as {ENV_PREFIX}<NAME> (e.g. {ENV_PREFIX}NODE).")
    docs = _field_docs()
    for f in fields(AgentSettings):
        flag = "--" + _flag(f.name)
        default = "" if f.name == "node" else f" (default: {_shown_default(f)})"
        help_text = docs.get(f.name, "") + default + f" [env {env_name(f.name)}]"
        if f.name == "labels":
            parser.add_argument("--label", dest="labels", action="append", default=None,
                                metavar="K=V", help=help_text)
        elif f.name == "docker_init":
            parser.add_argument(flag, dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)
    return parser


def env_name(name: str) -> str:
    """The environment variable of a field: PAAS_AGENT_ + its flag name (labels: LABELS)."""
    return ENV_PREFIX + ("labels" if name == "labels" else _flag(name)).upper().replace("-", "_")


def _flag(name: str) -> str:
    return {"wait_s": "wait", "heartbeat_interval_s": "heartbeat-interval",
            "reconcile_interval_s": "reconcile-interval"}.get(name, name.replace("_", "-"))


def _shown_default(f: Any) -> str:
    if f.name == "labels":
        return "none"
    value = f.default
    return repr(value) if value != "" else '""'


def _convert(name: str, raw: Any) -> Any:
    try:
        if name == "labels":
            return _parse_labels(raw)
        if name == "docker_init":
            return raw if isinstance(raw, bool) else _parse_bool(raw)
        if name in ("cpu", "wait_s", "heartbeat_interval_s", "reconcile_interval_s"):
            return float(raw)
        if name in ("memory_mb", "admin_port"):
            return int(raw)
    except ValueError:
        raise SettingsError(f"--{_flag(name)} {raw!r}: not a valid value") from None
    return str(raw)


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_labels(raw: str | list[str]) -> dict[str, str]:
    items = raw if isinstance(raw, list) else [p for p in raw.split(",") if p.strip()]
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise SettingsError(f"--label {item!r}: use k=v")
        labels[key] = value
    return labels


def _field_docs() -> dict[str, str]:
    """Read each field's docstring (the string literal after it) from this module's source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(AgentSettings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = nxt.value.value
    return docs
