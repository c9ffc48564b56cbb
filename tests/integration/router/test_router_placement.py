"""Issue 14, defense in depth: with --require-placement the router routes an instance only if
the controller placed it (paas/placed/<app>: its id, Consul node and address), whatever
Consul says. A rogue registration made through the node's own Consul agent, passing check
and all, gets 0 of 1,000 requests; its refusal is logged and counted. Real Consul and HAProxy."""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytestmark = pytest.mark.docker


def place(consul, app: str, placed: dict[str, tuple[str, int | None]]) -> None:
    """Placements as the controller publishes them, on the test's Consul agent (node)."""
    node = json.loads(consul._call("GET", "/v1/agent/self"))["Config"]["NodeName"]
    consul._call("PUT", f"/v1/kv/paas/placed/{app}", json.dumps({
        iid: {"node": node, "address": address, "port": port}
        for iid, (address, port) in placed.items()}).encode())


def test_a_rogue_registration_on_a_nodes_own_agent_gets_no_traffic(
        consul, start_router, backends, wait_for) -> None:
    real, rogue = backends("real", "127.0.5.6"), backends("rogue", "127.0.5.7")
    consul.put_route("guarded", ["guarded.localhost"])
    try:
        with start_router(consul.url, extra=("--require-placement",)) as router:
            router.handover = False
            place(consul, "guarded", {"guarded-1": (real.host, None)})  # port not yet known
            consul.register(app="guarded", instance_id="guarded-1", address=real.host,
                            port=real.port)
            # The attacker: a passing registration under the app's name, through the same
            # node's agent, with an id of its own; another reusing the real id's name but at
            # its own address.
            consul.register(app="guarded", instance_id="guarded-rogue", address=rogue.host,
                            port=rogue.port)
            wait_for(lambda: len(consul.passing("guarded")) == 2, timeout=20,
                     what="both registrations passing in Consul")
            wait_for(lambda: router.servers("guarded") == {f"{real.host}:{real.port}"},
                     timeout=20, what="the placed instance routed")
            bodies = Counter(router.get("guarded.localhost")[2] for _ in range(1000))
            print(f"1,000 requests: {dict(bodies)}")
            assert bodies == {"real": 1000} and rogue.hits == 0
            assert router.metric("paas_router_unplaced_refused_total") == 1
            assert "refusing guarded instance 'guarded-rogue' at 127.0.5.7" in router.log()

            # Once the port is known, a registration at another port of the placed address
            # is refused too; placing the other instance is what lets it in.
            place(consul, "guarded", {"guarded-1": (real.host, real.port + 1)})
            wait_for(lambda: router.servers("guarded") == set(), timeout=20,
                     what="the instance at an unplaced port dropped")
            place(consul, "guarded", {"guarded-1": (real.host, real.port),
                                      "guarded-rogue": (rogue.host, rogue.port)})
            wait_for(lambda: len(router.servers("guarded") or ()) == 2, timeout=20,
                     what="both routed once both are placed")
    finally:
        for iid in ("guarded-1", "guarded-rogue"):
            consul.deregister(iid)
        consul.delete_route("guarded")
        consul._call("DELETE", "/v1/kv/paas/placed/guarded")
