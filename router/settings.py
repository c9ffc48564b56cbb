"""Settings of the router daemon: one frozen dataclass, read from flags and PAAS_ROUTER_* env vars.

Every field has its default beside it. `RouterSettings.from_args(argv, environ)` is the only
place that reads the command line or the environment, so tests build settings directly or pass
their own argv/environ; nothing is read at import time.

Precedence: command-line flag, then environment variable, then the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "PAAS_ROUTER_"

# Unix socket paths are limited to 108 bytes (sun_path); HAProxy needs room for a temp suffix.
MAX_SOCKET_PATH = 96


@dataclass(frozen=True)
class RouterSettings:
    """Everything the router needs to know to run; see `from_args` for flags and env vars."""

    consul_url: str = "http://127.0.0.1:8500"
    """Consul HTTP API the router watches (the server agent, or any agent of the cluster)."""

    listen_host: str = "127.0.0.1"
    """IPv4 address HAProxy binds for app traffic."""

    listen_port: int = 8080
    """Port HAProxy binds for app traffic."""

    admin_host: str = "127.0.0.1"
    """Address of the router's own HTTP server (/healthz, /metrics, /routes)."""

    admin_port: int = 7072
    """Port of the router's own HTTP server."""

    state_dir: Path = Path("/run/paas-router")
    """Folder for haproxy.cfg, the pid file, the master socket and the runtime API socket.
    Keep it short: socket paths must fit in 96 bytes."""

    haproxy_bin: str = "haproxy"
    """HAProxy binary: a path, or a name looked up on PATH and then in /usr/sbin."""

    templates_dir: Path | None = None
    """Folder holding haproxy.cfg.j2 (None: the one packaged in paas/templates/)."""

    initial_slots: int = 8
    """Server slots a new backend gets; doubled when its instances outgrow them (a reload)."""

    maxconn: int = 4000
    """HAProxy global maxconn (10000 does not start here: the fd limit is 20000)."""

    routes_prefix: str = "paas/routes/"
    """Consul KV prefix holding one JSON route per app."""

    consul_wait_s: float = 30.0
    """Longest a Consul blocking query waits before it returns unchanged."""

    debounce_s: float = 0.03
    """Quiet time gathering a burst of Consul changes into one apply."""

    backoff_max_s: float = 3.0
    """Cap of the exponential backoff between retries after a Consul or apply error."""

    stop_timeout_s: float = 5.0
    """On shutdown, how long HAProxy may finish open requests before it is killed."""

    log_level: str = "INFO"
    """Python logging level for the router's stderr log."""

    def __post_init__(self) -> None:
        for name in ("listen_host", "admin_host"):
            try:
                ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name} must be an IPv4 address, got {getattr(self, name)!r}")
        for name in ("listen_port", "admin_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"{name} must be a port number 1-65535, got {port!r}")
        if self.initial_slots < 1:
            raise ValueError("initial_slots must be at least 1")
        if self.maxconn < 1:
            raise ValueError("maxconn must be at least 1")
        if not self.routes_prefix.endswith("/"):
            raise ValueError("routes_prefix must end with '/'")
        if len(str(self.master_socket)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"state_dir {str(self.state_dir)!r} is too long for unix sockets: "
                f"choose a path under {MAX_SOCKET_PATH - 12} characters"
            )

    # Files inside state_dir: one place names them.
    @property
    def config_path(self) -> Path:
        return self.state_dir / "haproxy.cfg"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "haproxy.pid"

    @property
    def master_socket(self) -> Path:
        return self.state_dir / "master.sock"

    @property
    def admin_socket(self) -> Path:
        return self.state_dir / "admin.sock"

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> RouterSettings:
        """Build settings from command-line flags, then PAAS_ROUTER_<FIELD> env vars, then defaults."""
        environ = {} if environ is None else environ
        parser = build_parser()
        args = parser.parse_args(list(argv) if argv is not None else [])
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = getattr(args, f.name)
            if raw is None:
                raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.name, raw)
            except ValueError:
                parser.error(f"invalid value for {f.name}: {raw!r}")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            parser.error(str(exc))
            raise  # unreachable: parser.error exits


_INT_FIELDS = {"listen_port", "admin_port", "initial_slots", "maxconn"}
_FLOAT_FIELDS = {"consul_wait_s", "debounce_s", "backoff_max_s", "stop_timeout_s"}
_PATH_FIELDS = {"state_dir", "templates_dir"}


def _convert(name: str, raw: str) -> object:
    if name in _INT_FIELDS:
        return int(raw)
    if name in _FLOAT_FIELDS:
        return float(raw)
    if name in _PATH_FIELDS:
        return Path(raw)
    if name == "consul_url":
        return raw.rstrip("/")
    return raw


def build_parser() -> argparse.ArgumentParser:
    """The `paas-router` command line: one flag per settings field, all optional."""
    parser = argparse.ArgumentParser(
        prog="paas-router",
        description="Route HTTP traffic for PaaS apps: watch Consul, drive a private HAProxy.",
        epilog=f"Every flag can also be set as an env var {ENV_PREFIX}<NAME>, e.g. "
        f"{ENV_PREFIX}CONSUL_URL. Flags win over env vars.",
    )
    for f in dataclasses.fields(RouterSettings):
        default = f.default if f.default is not None else "the packaged one"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{_FIELD_HELP[f.name]} (default: {default})",
        )
    return parser


_FIELD_HELP = {
    "consul_url": "Consul HTTP API URL",
    "listen_host": "IPv4 address for app traffic",
    "listen_port": "port for app traffic",
    "admin_host": "address for /healthz, /metrics, /routes",
    "admin_port": "port for /healthz, /metrics, /routes",
    "state_dir": "folder for haproxy.cfg, pid file and sockets",
    "haproxy_bin": "HAProxy binary",
    "templates_dir": "folder holding haproxy.cfg.j2",
    "initial_slots": "server slots per new backend, doubled when outgrown",
    "maxconn": "HAProxy global maxconn",
    "routes_prefix": "Consul KV prefix of the routes",
    "consul_wait_s": "max wait of a Consul blocking query, seconds",
    "debounce_s": "quiet time gathering a burst of changes, seconds",
    "backoff_max_s": "cap of the retry backoff, seconds",
    "stop_timeout_s": "grace for HAProxy to finish requests on shutdown, seconds",
    "log_level": "logging level (DEBUG, INFO, WARNING)",
}
