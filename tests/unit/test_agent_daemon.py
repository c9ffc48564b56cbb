"""The agent daemon's behaviour with fake Docker, Consul and controller (agent/daemon.py).

The real collaborators are exercised in tests/integration/agent; here the fakes make outages,
orderings and clocks easy to control.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agent.assignments import Assignment, Assignments
from agent.daemon import Agent
from agent.driver import ContainerInfo, DockerUnavailable, ImageMissing
from agent.main import main
from agent.settings import AgentSettings
from paas.consul import ConsulUnavailable, Service

A = "hello-v1-web-aaaaaa"
SETTINGS = AgentSettings(node="n1", address="127.0.0.2", cluster="c1")


def web(iid: str = A, **kw: Any) -> Assignment:
    return Assignment(id=iid, app="hello", release=1, process="web", image="paas/hello:v1",
                      stop_timeout_s=3, **kw)


class FakeDriver:
    def __init__(self) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.calls: list[tuple[str, Any]] = []
        self.down = False
        self.fail_start: Exception | None = None
        self.next_port = 32768
        self.pulls: dict[str, float] = {}

    def _check(self) -> None:
        if self.down:
            raise DockerUnavailable("docker down")

    def add(self, iid: str, state: str = "running") -> ContainerInfo:
        self.next_port += 1
        info = ContainerInfo(instance_id=iid, container_id="cid-" + iid, state=state,
                             host_port=self.next_port if state == "running" else None,
                             exit_code=0 if state == "exited" else None, stop_timeout_s=3.0)
        self.containers[iid] = info
        return info

    async def start(self, spec: Assignment) -> ContainerInfo:
        self._check()
        self.calls.append(("start", spec.id))
        if self.fail_start:
            raise self.fail_start
        return self.add(spec.id)

    async def recover(self) -> list[ContainerInfo]:
        self._check()
        return list(self.containers.values())

    async def stop(self, instance_id: str, *, timeout_s: float) -> None:
        self.calls.append(("stop", (instance_id, timeout_s)))

    async def remove(self, instance_id: str) -> None:
        self.calls.append(("remove", instance_id))
        self.containers.pop(instance_id, None)

    async def logs(self, instance_id: str, *, tail: int = 100) -> str:
        return ""

    def close(self) -> None:
        pass


class FakeRegistry:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.services: dict[str, Service] = {}
        self.calls = calls
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConsulUnavailable("consul down")

    async def register(self, a: Assignment, *, host_port: int) -> None:
        self._check()
        self.calls.append(("register", (a.id, host_port)))
        self.services[a.id] = Service(id=a.id, name=a.app, address="127.0.0.2",
                                                port=host_port, tags=("live", "v1", "web"))

    async def deregister(self, instance_id: str) -> None:
        self._check()
        self.calls.append(("deregister", instance_id))
        self.services.pop(instance_id, None)

    async def registered(self) -> dict[str, Service]:
        self._check()
        return dict(self.services)

    async def close(self) -> None:
        pass


class FakeController:
    def __init__(self) -> None:
        self.heartbeats: list[dict[str, Any]] = []

    async def heartbeat(self, instances, *, index=None) -> None:
        self.heartbeats.append({"instances": instances, "index": index})

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    driver = FakeDriver()
    registry = FakeRegistry(driver.calls)
    controller = FakeController()
    clock = Clock()
    agent = Agent(SETTINGS, token="t", driver=driver, registry=registry,  # type: ignore[arg-type]
                  controller=controller, clock=clock)  # type: ignore[arg-type]
    return agent, driver, registry, controller, clock


def assign(agent: Agent, *instances: Assignment, index: int = 1) -> None:
    agent.assignments = Assignments(index=index, instances=tuple(instances))


async def test_start_then_register_in_one_reconcile(world) -> None:
    agent, driver, registry, _, _ = world
    assign(agent, web())
    plan = await agent.reconcile_once()
    assert driver.calls == [("start", A), ("register", (A, 32769))]
    assert plan is not None and not plan.has_actions


async def test_an_adopted_running_container_is_not_restarted(world) -> None:
    agent, driver, registry, _, _ = world
    driver.add(A)
    registry.services[A] = Service(id=A, name="hello", address="127.0.0.2",
                                             port=32769, tags=("live", "v1", "web"))
    assign(agent, web())
    await agent.reconcile_once()
    assert driver.calls == []


async def test_unassigned_is_deregistered_before_it_is_stopped(world) -> None:
    agent, driver, registry, _, _ = world
    driver.add(A)
    registry.services[A] = Service(id=A, name="hello", address="127.0.0.2",
                                             port=32769, tags=("live", "v1", "web"))
    assign(agent)
    await agent.reconcile_once()
    for task in list(agent.stopping.values()):
        await task
    assert driver.calls[0] == ("deregister", A)
    assert driver.calls[-2:] == [("stop", (A, 3.0)), ("remove", A)]
    assert driver.containers == {} and registry.services == {}


async def test_consul_outage_then_everything_is_registered_again(world, caplog) -> None:
    agent, driver, registry, _, _ = world
    caplog.set_level(logging.INFO, logger="agent")
    registry.down = True
    assign(agent, web())
    await agent.reconcile_once()
    await agent.reconcile_once()
    assert [c[0] for c in driver.calls] == ["start"]  # containers still run without Consul
    assert not agent.deps["consul"].up
    registry.down = False
    await agent.reconcile_once()
    assert A in registry.services and agent.deps["consul"].up
    registry.services.clear()  # the Consul agent restarted and lost its services
    await agent.reconcile_once()
    assert A in registry.services
    outage_lines = [r for r in caplog.records if "consul" in r.getMessage()]
    assert [r.levelname for r in outage_lines] == ["WARNING", "INFO"]


async def test_a_failed_start_backs_off_and_is_reported(world) -> None:
    agent, driver, _, controller, clock = world
    driver.fail_start = ImageMissing("image paas/hello:v1 is not on this node's Docker engine")
    assign(agent, web())
    await agent.reconcile_once()
    await agent.reconcile_once()
    assert driver.calls == [("start", A)]
    await agent.heartbeat_once()
    [report] = controller.heartbeats[-1]["instances"]
    assert (report["state"], report["error"]) == ("missing", str(driver.fail_start))
    clock.now += 60
    driver.fail_start = None
    await agent.reconcile_once()
    assert [c for c in driver.calls if c[0] == "start"] == [("start", A), ("start", A)]
    await agent.heartbeat_once()
    [report] = controller.heartbeats[-1]["instances"]
    assert (report["state"], report["error"]) == ("running", None)


async def test_a_crash_is_restarted_after_its_backoff(world) -> None:
    agent, driver, _, controller, clock = world
    assign(agent, web())
    await agent.reconcile_once()
    driver.add(A, state="exited")
    await agent.reconcile_once()  # within the first start's backoff: wait
    assert [c[0] for c in driver.calls].count("start") == 1
    clock.now += 1
    driver.add(A, state="exited")
    await agent.reconcile_once()
    await agent.heartbeat_once()
    [report] = controller.heartbeats[-1]["instances"]
    assert (report["state"], report["restarts"]) == ("running", 1)


async def test_nothing_is_touched_before_the_first_assignments(world) -> None:
    agent, driver, _, controller, _ = world
    driver.add(A)
    assert await agent.reconcile_once() is None
    await agent.heartbeat_once()
    assert controller.heartbeats[-1] == {"index": None, "instances": [
        {"id": A, "state": "running", "container_id": "cid-" + A, "host_port": 32769,
         "restarts": 0, "exit_code": None, "ran_s": None, "error": None,
         "pull_s": None}]}
    assert driver.calls == []


async def test_docker_outage_skips_the_pass(world) -> None:
    agent, driver, _, _, _ = world
    driver.down = True
    assign(agent, web())
    assert await agent.reconcile_once() is None
    assert not agent.deps["docker"].up and driver.calls == []


def test_a_bad_consul_url_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--node", "n1", "--consul-url", "127.0.0.2:8500"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("paas-agent: --consul-url (env PAAS_AGENT_CONSUL_URL): Consul URL "
                          "'127.0.0.2:8500'") and "Traceback" not in err
