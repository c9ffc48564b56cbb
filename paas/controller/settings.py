"""The controller's settings: one frozen dataclass, read by the shared loader at start.

Every field has its default and its help beside it (`paas.settings.setting`). The loader reads
flags, then `PAAS_CONTROLLER_<FLAG NAME>` variables, then the defaults, and writes
`paas-controller --help` from the fields; `ControllerSettings.from_args(argv, environ)` is the
one call that does it, so tests build settings directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from paas.settings import InvalidSetting, load, setting

PROG = "paas-controller"
DESCRIPTION = "Run the PaaS controller (HTTP API)."
ENV_PREFIX = "PAAS_CONTROLLER_"


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    data_dir: Path = setting(
        Path("var/controller"),
        "Where the SQLite database and the tokens live (created, mode 0700).")
    host: str = setting("127.0.0.1", "Address the HTTP API listens on.")
    port: int = setting(7070, "Port the HTTP API listens on.")
    domain: str = setting("localhost", "Apps are served at <app>.<domain> by the router.")
    consul_url: str = setting(
        "http://127.0.0.1:8500",
        "The Consul (server) agent the controller writes routes to and reads health from.")
    router_url: str = setting(
        "", "The router's admin URL (/routes); when set, drains wait until it stops routing an "
            "instance.")
    prometheus_url: str = setting(
        "", "The cluster's Prometheus (its HTTP API), which `GET /v1/apps/{app}/metrics` "
            "asks; empty: there is none.")
    docker_url: str = setting(
        "", "Docker engine for builds; empty means the environment's default (DOCKER_HOST or "
            "the socket).")
    max_replicas: int = setting(50, "The largest replica count one deployment may ask for.")
    node_down_after: float = setting(
        6.0, "Seconds without a heartbeat before a node counts as down (agents beat every 2 s).")
    healthy_deadline: float = setting(
        60.0, "Default seconds a new instance has to pass its health check.")
    drain_grace: float = setting(
        0.5, "Seconds to wait after deregistering an instance when no router URL is known.")
    max_context_bytes: int = setting(100 * 1024 * 1024, "Largest accepted build context upload.")
    cluster: str = setting("local", "Cluster id (labels on containers and Consul services).")
    registry: str = setting(
        "", "host:port of the private registry `publish` pushes releases to (agents pull from "
            "it); empty when every node shares the controller's Docker engine.")
    image_repo: str = setting("paas", "Release images are tagged <image_repo>/<app>:v<N>.")
    public_port: int = setting(
        80, "The port the router serves apps on, for the URLs the API shows (80 is left out).")
    public_https_port: int = setting(
        0, "The port the router serves apps on over HTTPS, for the URLs the API shows (443 is "
           "left out); 0: no HTTPS.")
    tls_dir: Path | None = setting(
        None, "The cluster's CA (ca.pem, ca.key), which issues each app a certificate for "
              "<app>.<domain>, and the seal key (seal.key) its keys pass to the router under; "
              "made by `paas up` or the server's install.", shown_default="none: no HTTPS")

    acme_directory: str = setting(
        "", "An ACME CA's directory URL: certificates for apps' own domains are ordered from "
            "it (HTTP-01, answered by the router). Empty: none; users add their own.")
    acme_email: str = setting("", "The contact address of the controller's ACME account.")
    acme_ca_bundle: Path | None = setting(
        None, "CA certificates to trust for the ACME CA's own HTTPS (a test CA such as "
              "pebble); default: the system's.", shown_default="the system's")

    def __post_init__(self) -> None:
        if self.acme_directory and not self.acme_directory.startswith("https://"):
            raise InvalidSetting("acme_directory", "must be an https:// URL")
        if not 0 <= self.public_https_port < 65536:
            raise InvalidSetting("public_https_port", f"must be a port number 1-65535, or 0, "
                                                      f"got {self.public_https_port}")
        for name in ("port", "public_port"):
            if not 0 < getattr(self, name) < 65536:
                raise InvalidSetting(name, f"must be a port number 1-65535, got "
                                           f"{getattr(self, name)}")
        for name in ("max_replicas", "max_context_bytes"):
            if getattr(self, name) < 1:
                raise InvalidSetting(name, "must be at least 1")
        for name in ("node_down_after", "healthy_deadline"):
            if getattr(self, name) <= 0:
                raise InvalidSetting(name, "must be more than 0 seconds")
        if self.drain_grace < 0:
            raise InvalidSetting("drain_grace", "must not be negative")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> ControllerSettings:
        """Settings from flags, `PAAS_CONTROLLER_*` variables and defaults (default: the
        process's)."""
        return load(cls, prog=PROG, description=DESCRIPTION, env_prefix=ENV_PREFIX,
                    argv=argv, environ=environ)
