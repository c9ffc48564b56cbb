"""paas.controller.placements: what the controller publishes for the router (issue 14): every
instance row of an app, on its node's Consul agent and address, the port once reported."""

from __future__ import annotations

from pathlib import Path

from paas.controller.placements import placements
from paas.controller.store import Store


def test_each_instance_on_its_consul_node_and_address_the_port_once_known(
        tmp_path: Path) -> None:
    poked: list[int] = []
    store = Store(tmp_path / "data" / "state.db", on_assignments_changed=lambda: poked.append(1))
    for name, address in (("node-1", "10.0.0.2"), ("node-2", "10.0.0.3")):
        store.upsert_node(name=name, address=address, cpu=2, memory_mb=4096, labels={},
                          consul_url="", agent_url="")
    store.create_app("shop", ["shop.localhost"])
    store.create_app("idle", ["idle.localhost"])
    store.add_instances([
        {"id": "shop-v1-web-a", "app": "shop", "release": 1, "process": "web", "role": "live",
         "node": "node-1"},
        {"id": "shop-v1-web-b", "app": "shop", "release": 1, "process": "web", "role": "live",
         "node": "node-2"}])
    assert poked  # a placement change wakes the publisher, as it wakes the agents
    store.report_instances("node-1", [{"id": "shop-v1-web-a", "state": "running",
                                       "host_port": 32768}])
    store.set_desired(["shop-v1-web-b"], "stopped")  # draining: still placed until gone
    assert placements(store, "prod") == {
        "idle": {},
        "shop": {"shop-v1-web-a": {"node": "prod-node-1", "address": "10.0.0.2",
                                   "port": 32768},
                 "shop-v1-web-b": {"node": "prod-node-2", "address": "10.0.0.3",
                                   "port": None}}}
    store.report_instances("node-2", [])  # node-2 no longer has it: gone
    assert list(placements(store, "prod")["shop"]) == ["shop-v1-web-a"]
