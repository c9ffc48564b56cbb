"""paas.selfregister: the platform's daemons as Consul services Prometheus finds."""

from __future__ import annotations

import asyncio

import pytest

from paas.consul import ConsulUnavailable
from paas.selfregister import OwnService, keep_registered, register


class FakeConsul:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[dict] = []
        self.fail_first = fail_first

    async def register_service(self, **kwargs: object) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConsulUnavailable("connection refused")
        self.calls.append(kwargs)


def test_a_daemon_is_a_service_with_where_to_scrape_and_a_health_check() -> None:
    body = OwnService(component="agent", machine="node-1", address="127.0.0.2",
                      port=7071).definition()
    assert (body["service_id"], body["name"], body["port"]) == (
        "paas-agent-node-1", "paas-agent", 7071)
    assert body["meta"] == {"paas_component": "agent", "paas_daemon_node": "node-1",
                            "metrics_path": "/metrics"}
    assert body["check"]["HTTP"] == "http://127.0.0.2:7071/healthz"  # type: ignore[index]
    # An agent takes services with paas_app/paas_node in their meta for its instances.
    assert not {"paas_app", "paas_node", "paas_cluster"} & set(body["meta"])  # type: ignore[arg-type]


async def test_registering_says_whether_consul_took_it() -> None:
    consul = FakeConsul(fail_first=1)
    services = [OwnService(component="router", machine="server", address="127.0.0.1", port=1)]
    assert await register(consul, services) is False
    assert await register(consul, services) is True
    assert [c["name"] for c in consul.calls] == ["paas-router"]


async def test_registration_is_kept_up_after_consul_was_away() -> None:
    consul = FakeConsul(fail_first=2)
    task = asyncio.create_task(keep_registered(
        consul, [OwnService(component="controller", machine="server", address="127.0.0.1",
                            port=7070)], every=0.01))
    try:
        for _ in range(500):
            if len(consul.calls) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(consul.calls) >= 2  # registered once Consul answered, and again after
