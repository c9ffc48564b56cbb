"""What the controller placed, published for the router: `paas/placed/<app>` in Consul KV.

Defense in depth (issue 14): Consul alone cannot say who registered a service, so the router
routes an instance only if the controller placed it there, whatever Consul says: the value is
`{"<instance id>": {"node": "<Consul node name>", "address": "<node address>", "port": N}}`
for every instance row of the app (draining ones included, until their node reports them
gone). The port is null until the node reports the container's published port; the router
then checks the id, the node and the address. The node is the Consul agent's own name
(`<cluster>-<node>`, as paas.machines names it), which a registration made through that agent
cannot choose.

`Placements.run` publishes after every change of what nodes run (the store's
`on_assignments_changed`) and every report of a port (`poke`), and compares with KV every
`FULL_CHECK_S` seconds, so a value lost or changed in Consul is written again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.store import Store
from paas.names import consul_node_name

log = logging.getLogger("paas.controller.placements")

PLACED_PREFIX = "paas/placed/"
FULL_CHECK_S = 30.0


def placements(store: Store, cluster: str) -> dict[str, dict[str, dict[str, Any]]]:
    """app -> instance id -> where the controller placed it."""
    nodes = {n["name"]: n["address"] for n in store.list_nodes()}
    found: dict[str, dict[str, dict[str, Any]]] = {a["name"]: {} for a in store.list_apps()}
    for inst in store.list_instances(include_stopped=True):
        if inst["app"] in found and inst["node"] in nodes:
            found[inst["app"]][inst["id"]] = {
                "node": consul_node_name(cluster, inst["node"]),
                "address": nodes[inst["node"]], "port": inst["host_port"] or None}
    return found


class Placements:
    def __init__(self, *, store: Store, consul: ConsulClient, cluster: str) -> None:
        self.store = store
        self.consul = consul
        self.cluster = cluster
        self._published: dict[str, str] | None = None  # app -> the JSON in KV
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """What nodes run, or a port, changed: publish soon."""
        self._wake.set()

    async def run(self) -> None:
        checked = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=FULL_CHECK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if time.monotonic() - checked >= FULL_CHECK_S:
                    self._published = None  # read KV again
                    checked = time.monotonic()
                await self.publish()
            except ConsulUnavailable as exc:
                log.warning("placements not published yet: %s", exc)
                self._published = None
                await asyncio.sleep(1.0)
                self._wake.set()

    async def publish(self) -> None:
        """Make paas/placed/ equal to the store."""
        if self._published is None:
            found = (await self.consul.list_kv(PLACED_PREFIX)).value
            self._published = {k[len(PLACED_PREFIX):]: v.decode(errors="replace")
                               for k, v in found.items()}
        want = {app: json.dumps(placed, sort_keys=True)
                for app, placed in placements(self.store, self.cluster).items()}
        for app, value in want.items():
            if self._published.get(app) != value:
                await self.consul.put_kv(f"{PLACED_PREFIX}{app}", value)
                self._published[app] = value
        for app in set(self._published) - set(want):
            await self.consul.delete_kv(f"{PLACED_PREFIX}{app}")
            del self._published[app]
