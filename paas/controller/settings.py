"""The controller's settings: one typed object, read from flags and the environment at start.

Every field has its default beside it; `from_args` is the only place that reads argv or the
environment, so tests build settings directly.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    data_dir: Path = Path("var/controller")
    """Where the SQLite database and the tokens live (created, mode 0700)."""
    host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    port: int = 7070
    """Port the HTTP API listens on."""
    domain: str = "localhost"
    """Apps are served at `<app>.<domain>` by the router."""
    consul_url: str = "http://127.0.0.1:8500"
    """The Consul (server) agent the controller writes routes to and reads health from."""
    router_url: str = ""
    """The router's admin URL (`/routes`); when set, drains wait until it stops routing an instance."""
    docker_url: str = ""
    """Docker engine for builds; empty means the environment's default (DOCKER_HOST or the socket)."""
    max_replicas: int = 50
    """The largest replica count one deployment may ask for."""
    node_down_after: float = 6.0
    """Seconds without a heartbeat before a node counts as down (agents beat every 2 s)."""
    healthy_deadline: float = 60.0
    """Default seconds a new instance has to pass its health check."""
    drain_grace: float = 0.5
    """Seconds to wait after deregistering an instance when no router URL is known."""
    max_context_bytes: int = 100 * 1024 * 1024
    """Largest accepted build context upload."""
    cluster: str = "local"
    """Cluster id (labels on containers and Consul services)."""
    registry: str = ""
    """host:port of the private registry `publish` pushes releases to (agents pull from it);
    empty when every node shares the controller's Docker engine."""
    image_repo: str = "paas"
    """Release images are tagged `<image_repo>/<app>:v<N>`."""

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> "ControllerSettings":
        """Build settings from flags, then PAAS_CONTROLLER_<FIELD> variables, then defaults."""
        env = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(prog="paas-controller",
                                         description="Run the PaaS controller (HTTP API).")
        for f in fields(cls):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                                help=f"default: {f.default}")
        ns = parser.parse_args(argv)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = getattr(ns, f.name)
            if raw is None:
                raw = env.get("PAAS_CONTROLLER_" + f.name.upper())
            if raw is None:
                continue
            kind = type(f.default)
            values[f.name] = Path(raw) if kind is Path else kind(raw)
        return cls(**values)  # type: ignore[arg-type]
