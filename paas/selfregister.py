"""The platform's own daemons in Consul, so Prometheus finds them as it finds app instances
(`consul_sd_configs`, never a static list of targets).

Each daemon registers itself in the Consul agent it already talks to, under a `paas-` name
that no new app may take (`paas.names`): the controller (`paas-controller`), every node agent
(`paas-agent`), the router (`paas-router`) and the router's HAProxy, whose built-in exporter
serves `/metrics` on its own port (`paas-haproxy`). Its meta says where to scrape
(`metrics_path`) and what it is (`paas_component`, `paas_daemon_node`); it carries neither
`paas_app` nor `paas_node`, so no agent mistakes it for an app instance. A registration is
repeated every `every` seconds: Consul may have lost it (a client agent started afresh), and
a repeated one changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from paas.consul import ConsulUnavailable
from paas.names import RESERVED_PREFIX

log = logging.getLogger("paas.selfregister")

PREFIX = RESERVED_PREFIX
"""The Consul service names of the platform's own daemons start with this; apps' do not."""
CHECK_INTERVAL = "10s"
REGISTER_EVERY_S = 30.0


class Registers(Protocol):
    async def register_service(self, *, service_id: str, name: str, address: str, port: int,
                               tags: list[str], meta: dict[str, str],
                               check: dict[str, str]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class OwnService:
    """One daemon's endpoint as a Consul service."""

    component: str  # controller, agent, router, haproxy
    machine: str  # the node's name, or `server`
    address: str
    port: int
    metrics_path: str = "/metrics"
    health_path: str = "/healthz"

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.component}"

    @property
    def service_id(self) -> str:
        return f"{PREFIX}{self.component}-{self.machine}"

    def definition(self) -> dict[str, object]:
        """The arguments of `register_service`."""
        url = f"http://{self.address}:{self.port}{self.health_path}"
        return {
            "service_id": self.service_id, "name": self.name, "address": self.address,
            "port": self.port, "tags": ["paas"],
            "meta": {"paas_component": self.component, "paas_daemon_node": self.machine,
                     "metrics_path": self.metrics_path},
            "check": {"CheckID": f"{self.service_id}:health", "Name": f"{self.name} health",
                      "HTTP": url, "Method": "GET", "Interval": CHECK_INTERVAL,
                      "Timeout": "2s"},
        }


async def register(consul: Registers, services: list[OwnService]) -> bool:
    """Register every service once; False (and a warning) if Consul did not take them."""
    try:
        for service in services:
            await consul.register_service(**service.definition())  # type: ignore[arg-type]
    except ConsulUnavailable as exc:
        log.warning("not registered in Consul yet (%s); trying again", exc)
        return False
    except Exception:  # noqa: BLE001 - monitoring must never take its daemon down
        log.exception("registering in Consul failed; trying again")
        return False
    return True


async def keep_registered(consul: Registers, services: list[OwnService], *,
                          every: float = REGISTER_EVERY_S) -> None:
    """Register now and again every `every` seconds, soon again after a failure; forever
    (cancel the task to stop)."""
    while True:
        done = await register(consul, services)
        await asyncio.sleep(every if done else min(every, 2.0))
