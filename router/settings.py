"""Settings of the router daemon: one frozen dataclass, read by the shared loader at start.

Every field has its default and its help beside it (`paas.settings.setting`). The loader reads
flags, then `PAAS_ROUTER_<FLAG NAME>` variables, then the defaults, and writes `paas-router
--help` from the fields; `RouterSettings.from_args(argv, environ)` is the one call that does it,
so tests build settings directly or pass their own argv/environ. Nothing is read at import time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from paas.consul import InvalidConsulUrl, check_url
from paas.settings import LOG_LEVELS, InvalidSetting, load, setting

PROG = "paas-router"
DESCRIPTION = "Route HTTP traffic for PaaS apps: watch Consul, drive a private HAProxy."
ENV_PREFIX = "PAAS_ROUTER_"

# Unix socket paths are limited to 108 bytes (sun_path); HAProxy needs room for a temp suffix.
MAX_SOCKET_PATH = 96


@dataclass(frozen=True, kw_only=True)
class RouterSettings:
    """Everything the router needs to know to run."""

    consul_url: str = setting(
        "http://127.0.0.1:8500",
        "Consul HTTP API the router watches (the server agent, or any agent of the cluster).")
    listen_host: str = setting("127.0.0.1", "IPv4 address HAProxy binds for app traffic.")
    listen_port: int = setting(8080, "Port HAProxy binds for app traffic.")
    https_port: int = setting(
        0, "Port HAProxy binds for HTTPS app traffic, on listen_host (SNI picks each app's "
           "certificate from Consul KV); 0: no HTTPS.")
    certs_prefix: str = setting(
        "paas/certs/", "Consul KV prefix holding one certificate per app (its key sealed).")
    acme_prefix: str = setting(
        "paas/acme/", "Consul KV prefix of the ACME HTTP-01 challenges the router answers "
                      "(with HTTPS on).")
    seal_key_file: Path | None = setting(
        None, "The cluster's seal key (paas.sealing), which opens the certificates' keys; "
              "needed with https_port.", shown_default="none")
    placed_prefix: str = setting(
        "paas/placed/", "Consul KV prefix of the controller's placements (with "
                        "require_placement).")
    require_placement: bool = setting(
        False, "Route an instance only if the controller placed it (its id, Consul node and "
               "address under placed_prefix), whatever Consul says: a registration made "
               "through a node's Consul agent without the controller gets no traffic.")
    admin_host: str = setting(
        "127.0.0.1", "Address of the router's own HTTP server (/healthz, /metrics, /routes).")
    admin_port: int = setting(7072, "Port of the router's own HTTP server.")
    exporter_port: int = setting(
        7073, "Port on admin_host of HAProxy's built-in Prometheus exporter; 0: none.")
    state_dir: Path = setting(
        Path("/run/paas-router"),
        "Folder for haproxy.cfg, the pid file, the master socket and the runtime API socket; "
        f"keep it short: socket paths must fit in {MAX_SOCKET_PATH} bytes.")
    haproxy_bin: str = setting(
        "haproxy", "HAProxy binary: a path, or a name looked up on PATH and then in /usr/sbin.")
    templates_dir: Path | None = setting(
        None, "Folder holding haproxy.cfg.j2.", shown_default="the one packaged in paas/templates/")
    initial_slots: int = setting(
        8, "Server slots a new backend gets; doubled when its instances outgrow them (a reload).")
    maxconn: int = setting(
        4000, "HAProxy global maxconn (10000 does not start here: the fd limit is 20000).")
    routes_prefix: str = setting("paas/routes/", "Consul KV prefix holding one JSON route per app.")
    consul_wait_s: float = setting(
        30.0, "Longest a Consul blocking query waits before it returns unchanged, in seconds.")
    debounce_s: float = setting(
        0.03, "Quiet time gathering a burst of Consul changes into one apply, in seconds.")
    backoff_max_s: float = setting(
        3.0, "Cap of the exponential backoff between retries after a Consul or apply error, "
             "in seconds.")
    stop_timeout_s: float = setting(
        5.0, "When HAProxy is stopped (--stop-haproxy-on-exit), how long it may finish open "
             "requests before it is killed, in seconds.")
    stop_haproxy_on_exit: bool = setting(
        False, "Stop HAProxy when the router exits. By default it serves on, and the next "
               "router adopts it, so a restart costs no request.")
    log_level: str = setting("INFO", "Python logging level for the router's stderr log.",
                             choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        # One spelling of the URL, whatever the flag said: clients append paths to it.
        try:
            object.__setattr__(self, "consul_url", check_url(self.consul_url))
        except InvalidConsulUrl as exc:
            raise InvalidSetting("consul_url", str(exc)) from None
        for name in ("listen_host", "admin_host"):
            try:
                ipaddress.IPv4Address(getattr(self, name))
            except ValueError:
                raise InvalidSetting(
                    name, f"must be an IPv4 address, got {getattr(self, name)!r}") from None
        for name in ("listen_port", "admin_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidSetting(name, f"must be a port number 1-65535, got {port!r}")
        for name in ("exporter_port", "https_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 <= port < 65536:
                raise InvalidSetting(name, f"must be a port number 1-65535, or 0, got {port!r}")
        if self.https_port and self.seal_key_file is None:
            raise InvalidSetting("seal_key_file", "is needed with https_port: the certificates' "
                                                  "keys are sealed with it")
        for name in ("initial_slots", "maxconn"):
            if getattr(self, name) < 1:
                raise InvalidSetting(name, "must be at least 1")
        for name in ("consul_wait_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise InvalidSetting(name, "must be more than 0 seconds")
        for name in ("debounce_s", "stop_timeout_s"):
            if getattr(self, name) < 0:
                raise InvalidSetting(name, "must not be negative")
        for name in ("routes_prefix", "certs_prefix", "acme_prefix", "placed_prefix"):
            if not getattr(self, name).endswith("/"):
                raise InvalidSetting(name, "must end with '/'")
        if len(str(self.master_socket)) > MAX_SOCKET_PATH:
            raise InvalidSetting(
                "state_dir", f"{str(self.state_dir)!r} is too long for unix sockets: "
                             f"choose a path under {MAX_SOCKET_PATH - 12} characters")

    # Files inside state_dir: one place names them.
    @property
    def config_path(self) -> Path:
        return self.state_dir / "haproxy.cfg"

    @property
    def latency_script_path(self) -> Path:
        return self.state_dir / "latency.lua"

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def crt_list_path(self) -> Path:
        return self.state_dir / "certs.list"

    @property
    def acme_map_path(self) -> Path:
        return self.state_dir / "acme.map"

    @property
    def fallback_cert_path(self) -> Path:
        return self.state_dir / "fallback.pem"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "haproxy.pid"

    @property
    def layout_path(self) -> Path:
        return self.state_dir / "layout.json"

    @property
    def master_socket(self) -> Path:
        return self.state_dir / "master.sock"

    @property
    def admin_socket(self) -> Path:
        return self.state_dir / "admin.sock"

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> RouterSettings:
        """Settings from flags, `PAAS_ROUTER_*` variables and defaults (default: the process's)."""
        return load(cls, prog=PROG, description=DESCRIPTION, env_prefix=ENV_PREFIX,
                    argv=argv, environ=environ)
