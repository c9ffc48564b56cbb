"""The deploy state machine (`paas.controller.deployer`) against fakes of everything outside
its store: agents that converge on their assignments, Consul's health, the router, the test
runner, and a virtual clock. A whole deployment runs in milliseconds; the end-to-end suite
keeps the real wiring (issue 8: "fast tests for the deploy state machine").

The store is the real SQLite store in a temporary folder: it is the deployer's state, not a
collaborator to fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from paas.builder.testrunner import TestOutcome as Outcome
from paas.consul import ConsulUnavailable
from paas.controller.deployer import Deployer
from paas.controller.deployments import Deployments
from paas.controller.metrics import Metrics
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.listeners import InstanceLook, Listener
from tests.waiting import wait_until_async

APP = "shop"
NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3"}


class Crash(BaseException):
    """The controller process dies here: nothing in the deployer may catch it."""


class CrashingStore(Store):
    """The real store, where the process can die right after a step is persisted, or SQLite
    can fail once."""

    crash_after_step: str | None = None
    error_after_step: tuple[str, Exception] | None = None

    def update_deployment(self, dep_id: int, **values: Any) -> None:
        super().update_deployment(dep_id, **values)
        if values.get("step") is not None and values.get("step") == self.crash_after_step:
            self.crash_after_step = None
            raise Crash()
        if self.error_after_step and values.get("step") == self.error_after_step[0]:
            error, self.error_after_step = self.error_after_step[1], None
            raise error


@dataclass
class World:
    """Agents, Consul and the router as the deployer sees them, driven by the fake clock."""

    store: Store
    now: float = 0.0
    healthy_after: float = 0.5
    never_healthy: set[int] = field(default_factory=set)
    """Releases whose instances never pass their health check."""
    crashing: set[int] = field(default_factory=set)
    """Releases whose containers exit as soon as they start."""
    down: set[str] = field(default_factory=set)
    consul_away: bool = False
    started: dict[str, float] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    routed_min: int | None = None
    """Once set: the fewest instances the router has served since."""
    unrouted: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    crash_when: Callable[["World"], bool] | None = None
    ticks: int = 0
    listening_of: dict[int, list[Listener]] = field(default_factory=dict)
    """What the containers of a release listen on (absent: nobody can tell)."""
    check_output: str = 'Get "http://127.0.0.2:30000/health": EOF'
    """What a failing check says in the catalog (Consul's health endpoint)."""
    node_check_output: str | None = None
    """What it says in the node's own Consul agent (None: the agent could not tell)."""
    unstartable: dict[int, str] = field(default_factory=dict)
    """Releases whose containers a node cannot start, and the reason it reports."""
    pull_s: float | None = None
    """What each start spent pulling the image (None: the image was there)."""
    stale_passing: set[int] = field(default_factory=set)
    """Releases whose check Consul still reports passing after their container stopped."""
    in_flight_for: float = 0.0
    """Seconds the requests in flight to a drained instance take to finish."""
    in_flight_count: int = 3
    in_flight_unknown: tuple[float, float] = (0.0, 0.0)
    """From when to when, in seconds of a drain, the router cannot say what is in flight."""
    in_flight_asked: list[float] = field(default_factory=list)
    drains: dict[frozenset[str], float] = field(default_factory=dict)

    # --- the agents: converge on the assignments, report in the heartbeat ----------------
    def tick(self) -> None:
        self.ticks += 1
        for node in NODES:
            if node in self.down:
                continue
            reports = []
            for a in self.store.node_assignments(node):
                self.started.setdefault(a["id"], self.now)
                port = self.ports.setdefault(a["id"], 30000 + len(self.ports))
                crashed = a["release"] in self.crashing
                if a["release"] in self.unstartable:
                    reports.append({"id": a["id"], "state": "missing", "restarts": 0,
                                    "error": self.unstartable[a["release"]]})
                    continue
                reports.append({"id": a["id"], "state": "exited" if crashed else "running",
                                "host_port": port, "restarts": int(crashed),
                                "container_id": "c-" + a["id"], "pull_s": self.pull_s,
                                **({"exit_code": 1, "ran_s": 0.42} if crashed else {})})
            # A node keeps reporting what it runs; report_instances forgets what it stopped.
            self.store.report_instances(node, reports)
        self._watch_routing()
        if self.crash_when is not None and self.crash_when(self):
            self.crash_when = None
            raise Crash()

    def _watch_routing(self) -> None:
        if self.routed_min is not None:
            self.routed_min = min(self.routed_min, len(self.routed()))

    def passing(self, inst: dict[str, Any]) -> bool:
        started = self.started.get(inst["id"])
        if started is not None and inst["release"] in self.stale_passing:
            return True
        return (started is not None and inst["state"] == "running"
                and inst["desired"] == "running" and inst["node"] not in self.down
                and inst["release"] not in self.never_healthy
                and self.now - started >= self.healthy_after)

    def routed(self) -> list[dict[str, Any]]:
        return [i for i in self.store.list_instances(APP)
                if i["role"] == "live" and i["process"] == "web" and self.passing(i)]

    # --- Consul ---------------------------------------------------------------------------
    async def service_health(self, app: str) -> list[dict[str, Any]]:
        if self.consul_away:
            raise ConsulUnavailable("consul is away")
        out = []
        for inst in self.store.list_instances(app):
            if inst["desired"] != "running" or not inst["host_port"] or inst["process"] != "web":
                continue  # draining instances are deregistered by their agent
            out.append({"id": inst["id"], "address": NODES[inst["node"]],
                        "port": inst["host_port"], "tags": [inst["role"]], "meta": {},
                        "status": "passing" if self.passing(inst) else "critical",
                        "output": "" if self.passing(inst) else self.check_output})
        return out

    # --- the agents' view into a container --------------------------------------------------
    async def look(self, instance_id: str) -> InstanceLook:
        inst = self.store.get_instance(instance_id)
        return InstanceLook(listening=self.listening_of.get(inst["release"]) if inst else None,
                            check_output=self.node_check_output)

    # --- the router -----------------------------------------------------------------------
    async def wait_unrouted(self, app: str, addresses: set[str]) -> None:
        self.unrouted.append((app, frozenset(addresses)))

    async def in_flight(self, app: str, addresses: set[str]) -> int | None:
        since = self.drains.setdefault(frozenset(addresses), self.now)
        self.in_flight_asked.append(self.now - since)
        if self.in_flight_unknown[0] <= self.now - since < self.in_flight_unknown[1]:
            return None  # the router cannot tell, for this while
        return self.in_flight_count if self.now - since < self.in_flight_for else 0


class FakeClock:
    def __init__(self, world: World) -> None:
        self.world = world

    def now(self) -> float:
        return self.world.now

    async def sleep(self, seconds: float) -> None:
        self.world.now += seconds
        self.world.tick()
        await asyncio.sleep(0)


@dataclass
class FakeTests:
    outcome: Outcome = Outcome(True, 0, "ok 1 - checkout works\n", "the integration test passed")
    calls: list[dict[str, Any]] = field(default_factory=list)
    crash: bool = False
    error: Exception | None = None  # raised by the next run (Docker failing, say)

    async def run(self, **kwargs: Any) -> Outcome:
        self.calls.append(kwargs)
        if self.crash:
            self.crash = False
            raise Crash()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.outcome


class FakeLogs:
    async def tail(self, instance_id: str, lines: int = 30) -> str:
        return f"last lines of {instance_id}"


@dataclass
class Harness:
    store: CrashingStore
    world: World
    tests: FakeTests
    settings: ControllerSettings
    promoted: list[tuple[str, int]] = field(default_factory=list)
    published: list[tuple[str, int]] = field(default_factory=list)
    publish_with: Callable[[str, int], Any] | None = None
    """A publish that replaces the registry's (one that fails, say)."""

    def deployer(self) -> Deployer:
        async def promote(app: str, version: int) -> None:
            self.store.promote(app, version)
            self.promoted.append((app, version))

        async def publish(app: str, version: int) -> dict[str, Any]:
            self.published.append((app, version))
            self.store.set_pushed_image(app, version, f"registry:5000/{app}:v{version}")
            return {"published": {"image": f"registry:5000/{app}:v{version}"}}

        return Deployer(store=self.store, settings=self.settings, health=self.world,
                        router=self.world, logs=FakeLogs(), looks=self.world,
                        tests=self.tests,
                        clock=FakeClock(self.world),
                        node_is_ready=lambda n: n["name"] not in self.world.down,
                        promote=promote, publish=self.publish_with or publish)

    def release(self, version: int, *, test: str | None = "./test.sh",
                health: dict[str, Any] | None = None, **policy: Any) -> None:
        self.store.add_release(app=APP, version=version, image=f"paas/{APP}:v{version}",
                               image_id=f"sha256:{version}", source=f"src{version}", config={},
                               processes={"web": "./web", "worker": "./work"},
                               test_command=test,
                               health={"path": "/health"} if health is None else health,
                               policy={"min_healthy_time": 1, "healthy_deadline": 10, **policy},
                               created_by="test")

    async def deploy(self, version: int, web: int, *, kind: str = "deploy",
                     **options: Any) -> dict[str, Any]:
        dep = self.store.create_deployment(app=APP, release=version, replicas={"web": web},
                                           kind=kind, options=options)
        await self.deployer().run(dep["id"])
        return self.store.get_deployment(dep["id"])  # type: ignore[return-value]

    def live(self, release: int | None = None) -> list[dict[str, Any]]:
        return [i for i in self.store.list_instances(APP)
                if i["role"] == "live" and i["desired"] == "running"
                and (release is None or i["release"] == release)]

    def events(self, dep_id: int) -> list[tuple[str, str]]:
        return [(e["step"], e["message"]) for e in
                self.store.list_events(APP, deployment_id=dep_id)]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    store = CrashingStore(tmp_path / "state.db")
    store.create_app(APP, [f"{APP}.localhost"])
    for name, address in NODES.items():
        store.upsert_node(name=name, address=address, cpu=4, memory_mb=8192, labels={},
                          consul_url="", agent_url="")
    world = World(store=store)
    settings = ControllerSettings(data_dir=tmp_path, healthy_deadline=10)
    return Harness(store=store, world=world, tests=FakeTests(), settings=settings)


async def serve(h: Harness, version: int, web: int, **policy: Any) -> None:
    """Release `version` live at `web` replicas, as a finished deployment leaves it."""
    h.release(version, **policy)
    dep = await h.deploy(version, web)
    assert dep["status"] == "succeeded", dep["reason"]
    h.store.set_app_fields(APP, scale={"web": web})


# --- the happy path, step by step ---------------------------------------------------------
async def test_first_deploy_proves_then_rolls_out(h: Harness) -> None:
    h.release(1)
    dep = await h.deploy(1, 2)
    assert (dep["status"], dep["step"]) == ("succeeded", "done")
    assert len(h.live(1)) == 2
    assert not [i for i in h.store.list_instances(APP) if i["role"] == "control"]
    steps = [s for s, _ in h.events(dep["id"])]
    assert steps.index("control") < steps.index("test") < steps.index("rollout") \
        < steps.index("finish")
    [call] = h.tests.calls
    assert call["target_url"].startswith("http://127.0.0.")
    assert call["env"]["PAAS_RELEASE"] == "1"
    assert dep["test_output"] == h.tests.outcome.output
    assert h.store.get_app(APP)["live_release"] == 1  # type: ignore[index]
    assert h.promoted == []


@pytest.mark.parametrize("test, max_parallel, replicas, batches", [
    ("./test.sh", None, 3, [3]),  # the default: all at once
    ("./test.sh", 1, 3, [1, 1, 1]),
    ("./test.sh", 2, 3, [2, 1]),
    (None, 3, 3, [3]),
    (None, 5, 2, [2]),
])
async def test_rollout_goes_in_batches_of_max_parallel(h: Harness, test: str | None,
                                                       max_parallel: int | None, replicas: int,
                                                       batches: list[int]) -> None:
    h.release(1, test=test, max_parallel=max_parallel)
    dep = await h.deploy(1, replicas)
    assert dep["status"] == "succeeded"
    healthy = [m for s, m in h.events(dep["id"]) if s == "rollout" and m.endswith(" healthy")]
    assert [len(m.removesuffix(" healthy").split(", ")) for m in healthy] == batches
    if test is None:
        assert any("test step skipped" in m for _, m in h.events(dep["id"]))
        assert h.tests.calls == []


async def test_a_new_release_replaces_the_old_without_dropping_below_its_count(
        h: Harness) -> None:
    await serve(h, 1, 3)
    old = {i["id"] for i in h.live(1)}
    h.release(2)
    h.world.routed_min = 3
    dep = await h.deploy(2, 3)
    assert dep["status"] == "succeeded"
    assert len(h.live(2)) == 3 and h.live(1) == []
    assert h.world.routed_min >= 3, "fewer instances were served than before the deploy"
    drained = set().union(*(addrs for _, addrs in h.world.unrouted))
    assert len(drained) == 3  # every old instance waited on the router before it stopped
    assert not old & {i["id"] for i in h.store.list_instances(APP, include_stopped=True)
                      if i["desired"] != "stopped"}


async def test_a_drain_waits_for_the_requests_in_flight_before_it_stops(h: Harness) -> None:
    await serve(h, 1, 1)
    h.release(2, test=None)
    h.world.in_flight_for = 2.0
    dep = await h.deploy(2, 1)
    assert dep["status"] == "succeeded", dep["reason"]
    messages = [m for s, m in h.events(dep["id"]) if s == "rollout"]
    draining = next(i for i, m in enumerate(messages) if m.startswith("draining "))
    assert re.fullmatch(r"requests in flight finished after 2\.[01]s", messages[draining + 1])
    assert messages[draining + 2].startswith("stopped shop-v1-web-")


@pytest.mark.parametrize("unknown, waits", [
    ((0.5, 1.0), 2.0),  # a moment the router cannot tell: the drain asks again
    ((0.0, 1000.0), 2.0),  # a router that never can: not waited on past UNKNOWN_FOR_S
])
async def test_a_drain_outlasts_a_router_that_cannot_tell_for_a_while(
        h: Harness, unknown: tuple[float, float], waits: float) -> None:
    await serve(h, 1, 1)
    h.release(2, test=None)
    h.world.in_flight_for = 2.0
    h.world.in_flight_unknown = unknown
    dep = await h.deploy(2, 1)
    assert dep["status"] == "succeeded", dep["reason"]
    assert waits <= max(h.world.in_flight_asked) < waits + 0.5  # asked until then, no longer


async def test_a_drain_stops_waiting_at_drain_timeout_and_says_what_it_closes(h: Harness) -> None:
    await serve(h, 1, 1)
    h.release(2, test=None, drain_timeout=5)
    h.world.in_flight_for = 1000.0
    began = h.world.now
    dep = await h.deploy(2, 1)
    assert dep["status"] == "succeeded", dep["reason"]
    assert ("rollout", "drain_timeout (5s) passed with 3 connection(s) still open; they are "
            "closed") in h.events(dep["id"])
    assert h.world.now - began < 15


# --- failures at each step leave the old release serving ---------------------------------
@dataclass(frozen=True)
class Failure:
    name: str
    arrange: Callable[[Harness], None]
    step: str
    reason: str
    log_tail: str


FAILURES = [
    Failure("test fails", lambda h: setattr(h.tests, "outcome", Outcome(
        False, 1, "not ok 1 - checkout\n", "the integration test exited with code 1")),
        "test", "exited with code 1", "not ok 1 - checkout"),
    Failure("control never healthy", lambda h: h.world.never_healthy.add(2),
            "control", "did not pass its health check within 10s", "last lines of shop-v2-web"),
    Failure("crashes on start", lambda h: h.world.crashing.add(2),
            "control", "the web process of instance shop-v2-web-", "last lines of shop-v2-web"),
    Failure("exits with its code", lambda h: h.world.crashing.add(2),
            "control", "exited with code 1 after 0.4 s (restarted once); its log below",
            "last lines of shop-v2-web"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: f.name)
async def test_a_failure_stops_what_it_started_and_keeps_the_old_release(
        h: Harness, failure: Failure) -> None:
    await serve(h, 1, 2)
    before = {i["id"] for i in h.live(1)}
    h.release(2)
    failure.arrange(h)
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", failure.step)
    assert failure.reason in dep["reason"]
    assert failure.log_tail in dep["log_tail"]
    assert {i["id"] for i in h.live(1)} == before
    assert [i for i in h.store.list_instances(APP) if i["release"] == 2] == []
    assert h.store.get_app(APP)["live_release"] == 1  # type: ignore[index]


async def test_an_image_a_node_cannot_pull_fails_the_deploy_with_its_reason(
        h: Harness) -> None:
    await serve(h, 1, 2)
    h.release(2, healthy_deadline=60)
    h.world.unstartable[2] = ("image registry:5000/shop:v2 could not be pulled: Get "
                              "http://registry:5000/v2/: connection refused")
    began = h.world.now
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", "control")
    assert dep["reason"].startswith("n1 cannot start instance shop-v2-web") or \
        dep["reason"].startswith("n2 cannot start instance shop-v2-web"), dep["reason"]
    assert dep["reason"].endswith("could not be pulled: Get http://registry:5000/v2/: "
                                  "connection refused")
    assert h.world.now - began == pytest.approx(5.0, abs=0.6)  # not the 60 s deadline
    assert len(h.live(1)) == 2


async def test_each_pull_a_node_reports_is_an_event_with_its_seconds(h: Harness) -> None:
    h.release(1)
    h.world.pull_s = 1.25
    dep = await h.deploy(1, 2)
    assert dep["status"] == "succeeded"
    pulls = [m for s, m in h.events(dep["id"]) if s == "pull"]
    assert len(pulls) == 3, pulls  # the control instance and two live ones, once each
    assert all(m.startswith(("n1 pulled the image of shop-v1-web-",
                             "n2 pulled the image of shop-v1-web-"))
               and m.endswith(" in 1.2s") for m in pulls), pulls


# (what v2's containers listen on, check output, seconds to the failure, the reason holds)
UNHEALTHY = [
    ([Listener("127.0.0.1", 5000)], None, 10.0,
     "cannot pass its health check: it listens on 127.0.0.1:5000, which only its own"),
    ([Listener("0.0.0.0", 8000)], None, 10.0, "it listens on 0.0.0.0:8000, not on $PORT"),
    ([Listener("0.0.0.0", 5000)], "HTTP GET http://127.0.0.2:30001/health: 404 NOT FOUND "
     "Output: nope", 10.0, "it answers GET /health with 404 NOT FOUND"),
    ([], None, 60.0, "did not pass its health check within 60s: nothing in its container"),
    (None, None, 60.0, 'within 60s: its health check said: Get "http://127.0.0.2:30000'),
    ([Listener("0.0.0.0", 5000)], None, 60.0, "within 60s: it listens on port 5000, but GET "
     "/health did not answer"),
]


@pytest.mark.parametrize("listening,output,seconds,reason", UNHEALTHY)
async def test_an_unhealthy_control_says_why_and_fails_early_when_waiting_cannot_help(
        h: Harness, listening: list[Listener] | None, output: str | None, seconds: float,
        reason: str) -> None:
    await serve(h, 1, 2)
    h.release(2, healthy_deadline=60)
    h.world.never_healthy.add(2)
    if listening is not None:
        h.world.listening_of[2] = listening
    if output is not None:
        h.world.check_output = output
    began = h.world.now
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", "control")
    assert reason in dep["reason"], dep["reason"]
    assert h.world.now - began == pytest.approx(seconds, abs=0.6)
    assert dep["log_tail"].startswith("last lines of shop-v2-web")
    assert len(h.live(1)) == 2


@pytest.mark.parametrize("listening,fails", [
    ([Listener("127.0.0.1", 5000)], True),  # Flask's app.run(): only its own container
    ([Listener("0.0.0.0", 5000)], False),
    ([Listener("::", 5000)], False),
    (None, False),  # the node cannot tell: the check's word stands
])
async def test_without_a_health_path_the_instance_must_accept_connections_from_outside(
        h: Harness, listening: list[Listener] | None, fails: bool) -> None:
    """A TCP check goes through Docker's proxy, which accepts on the host port whatever the
    container listens on; the node's view of the sockets decides."""
    await serve(h, 1, 2)
    h.release(2, health={}, healthy_deadline=60)
    if listening is not None:
        h.world.listening_of[2] = listening
    began = h.world.now
    dep = await h.deploy(2, 2)
    steps = h.events(dep["id"])
    assert ("control", "health check: it must accept connections on $PORT from outside its "
            "container (no [health] path in paas.toml; set one to check a page)") in steps
    if not fails:
        assert dep["status"] == "succeeded", dep["reason"]
        return
    assert (dep["status"], dep["step"]) == ("failed", "control")
    assert "it listens on 127.0.0.1:5000, which only its own container can reach" in \
        dep["reason"], dep["reason"]
    assert h.world.now - began == pytest.approx(10.0, abs=0.6)  # not the 60 s deadline


async def test_the_nodes_own_check_output_wins_over_the_catalogs_stale_one(h: Harness) -> None:
    """Consul's catalog keeps a critical check's first (empty) output for minutes; the node's
    agent has what the check says now."""
    await serve(h, 1, 2)
    h.release(2, healthy_deadline=60)
    h.world.never_healthy.add(2)
    h.world.listening_of[2] = [Listener("0.0.0.0", 5000)]
    h.world.check_output = ""
    h.world.node_check_output = "HTTP GET http://127.0.0.2:30001/health: 404 NOT FOUND Output: x"
    began = h.world.now
    dep = await h.deploy(2, 2)
    assert "it answers GET /health with 404 NOT FOUND" in dep["reason"], dep["reason"]
    assert h.world.now - began == pytest.approx(10.0, abs=0.6)


async def test_a_fault_that_mends_itself_in_time_does_not_fail_the_deploy(h: Harness) -> None:
    """An app that listens on another port for a few seconds before $PORT (a warm-up) passes."""
    await serve(h, 1, 2)
    h.release(2, healthy_deadline=60)
    h.world.listening_of[2] = [Listener("127.0.0.1", 9000)]
    h.world.healthy_after = 12.0  # without the mend, the fault fails it at 10 s
    began = h.world.now

    def mend(world: World) -> bool:  # $PORT opens 7 s in: 2 s of a "certain" fault, not 5
        if world.now >= began + 7.0:
            world.listening_of[2] = [Listener("0.0.0.0", 5000)]
        return False

    h.world.crash_when = mend
    dep = await h.deploy(2, 2)
    assert dep["status"] == "succeeded", dep["reason"]


def docker_fails(h: Harness) -> None:
    h.tests.error = RuntimeError("500 Server Error: the Docker engine is shutting down")


def sqlite_fails(step: str) -> Callable[[Harness], None]:
    def arrange(h: Harness) -> None:
        h.store.error_after_step = (step, sqlite3.OperationalError("disk I/O error"))
    return arrange


def registry_down(h: Harness) -> None:
    h.settings = dataclasses.replace(h.settings, registry="registry:5000")

    async def publish(app: str, version: int) -> dict[str, Any]:
        raise ConnectionRefusedError(111, "Connection refused")
    h.publish_with = publish


@pytest.mark.parametrize("arrange,step,error", [
    (registry_down, "publish", "ConnectionRefusedError: [Errno 111] Connection refused"),
    (sqlite_fails("control"), "control", "OperationalError: disk I/O error"),
    (docker_fails, "test", "RuntimeError: 500 Server Error: the Docker engine is shutting"),
    (sqlite_fails("rollout"), "rollout", "OperationalError: disk I/O error"),
], ids=["publish", "control", "test", "rollout"])
async def test_an_unexpected_error_fails_the_deployment_instead_of_leaving_it_running(
        h: Harness, arrange: Callable[[Harness], None], step: str, error: str) -> None:
    await serve(h, 1, 2)
    before = {i["id"] for i in h.live(1)}
    h.release(2)
    arrange(h)
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", step), dep
    assert f"an unexpected error in the {step} step: {error}" in dep["reason"]
    assert {i["id"] for i in h.live(1)} == before
    assert [i for i in h.store.list_instances(APP) if i["release"] == 2] == []
    # The app is free for the next deploy.
    h.store.error_after_step, h.tests.error = None, None
    h.publish_with = None
    assert (await h.deploy(2, 2))["status"] in ("succeeded", "failed")
    assert h.store.get_deployment(dep["id"])["status"] == "failed"  # type: ignore[index]


async def test_a_failure_in_the_finish_step_keeps_the_new_release_serving(h: Harness) -> None:
    """The old instances are drained by then: stopping the new ones would leave nothing."""
    await serve(h, 1, 2)
    h.release(2)
    sqlite_fails("finish")(h)
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", "finish"), dep
    assert len(h.live(2)) == 2 and h.live(1) == []
    assert h.store.get_app(APP)["live_release"] == 2  # type: ignore[index]


async def test_a_rollout_failure_after_the_checks_leaves_the_old_release(h: Harness) -> None:
    await serve(h, 1, 2)
    h.release(2, test=None)

    def fail_live_instances(world: World) -> bool:
        # The control passed; the live instances of v2 then never become healthy.
        if h.store.get_deployment(2)["step"] == "rollout":  # type: ignore[index]
            world.never_healthy.add(2)
        return False

    h.world.crash_when = fail_live_instances
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", "rollout")
    assert len(h.live(1)) == 2 and h.live(2) == []


async def test_auto_revert_goes_back_to_stable_after_a_failed_rollout(h: Harness) -> None:
    await serve(h, 1, 2)
    h.store.promote(APP, 1)
    h.release(2, test=None, auto_revert=True)
    h.world.crashing.add(2)
    dep = await h.deploy(2, 2, skip_checks=True)
    assert (dep["status"], dep["step"]) == ("failed", "rollout")
    revert = h.store.list_deployments(APP)[-1]
    assert (revert["kind"], revert["release"], revert["status"]) == ("revert", 1, "succeeded")
    assert any(m == "auto_revert: going back to stable v1" for _, m in h.events(dep["id"]))
    assert len(h.live(1)) == 2


async def test_auto_revert_without_another_stable_release_says_so(h: Harness) -> None:
    h.release(1, test=None, auto_revert=True)
    h.world.crashing.add(1)
    dep = await h.deploy(1, 1, skip_checks=True)
    assert dep["status"] == "failed"
    assert ("revert", "auto_revert: no other stable release to go back to") in h.events(dep["id"])
    assert len(h.store.list_deployments(APP)) == 1


async def test_a_node_lost_while_proving_fails_the_deployment(h: Harness) -> None:
    h.release(1)
    h.world.healthy_after = 3

    def lose_the_control_node(world: World) -> bool:
        controls = [i for i in h.store.list_instances(APP) if i["role"] == "control"]
        if controls and world.now > 1:
            world.down.add(controls[0]["node"])
        return False

    h.world.crash_when = lose_the_control_node
    dep = await h.deploy(1, 1)
    assert (dep["status"], dep["step"]) == ("failed", "control")
    assert "was lost" in dep["reason"]


async def test_waiting_for_health_outlasts_a_consul_outage(h: Harness) -> None:
    h.release(1, test=None)
    h.world.consul_away = True

    def consul_returns(world: World) -> bool:
        if world.now > 3:
            world.consul_away = False
        return False

    h.world.crash_when = consul_returns
    dep = await h.deploy(1, 1)
    assert dep["status"] == "succeeded"


async def test_nothing_can_be_placed_fails_at_the_step_that_placed(h: Harness) -> None:
    h.release(1, resources={"web": {"memory_mb": 100_000}})
    dep = await h.deploy(1, 1)
    assert (dep["status"], dep["step"]) == ("failed", "control")
    assert "cannot place" in dep["reason"]


# --- kinds: rollback, scale, publish, promote -------------------------------------------
async def test_a_rollback_promotes_its_release_and_auto_promote_promotes_a_deploy(
        h: Harness) -> None:
    h.release(1, auto_promote=True)
    await h.deploy(1, 1)
    assert h.promoted == [(APP, 1)]
    h.release(2)
    await h.deploy(2, 1)
    assert h.promoted == [(APP, 1)]
    dep = await h.deploy(1, 1, kind="rollback")
    assert dep["status"] == "succeeded"
    assert h.promoted == [(APP, 1), (APP, 1)]


async def test_a_scale_of_the_live_release_keeps_its_instances(h: Harness) -> None:
    await serve(h, 1, 2)
    before = {i["id"] for i in h.live(1)}
    dep = await h.deploy(1, 4, kind="scale")
    assert dep["status"] == "succeeded"
    assert before < {i["id"] for i in h.live(1)} and len(h.live(1)) == 4
    assert len(h.tests.calls) == 1  # only the first deploy ran the test
    assert any("control and test skipped" in m for _, m in h.events(dep["id"]))


@pytest.mark.parametrize("layout, keep, stopped_from", [
    ({"n1": 3, "n2": 1}, 2, {"n1": 2}),   # the scheduler stops where most run
    ({"n1": 2, "n2": 2}, 2, {"n1": 1, "n2": 1}),
    ({"n1": 1, "n2": 1}, 0, {"n1": 1, "n2": 1}),
])
async def test_a_scale_down_stops_what_the_scheduler_chooses(
        h: Harness, layout: dict[str, int], keep: int, stopped_from: dict[str, int]) -> None:
    h.release(1, test=None)
    rows = [{"id": f"{APP}-v1-web-{node}{n}", "app": APP, "release": 1, "process": "web",
             "role": "live", "node": node, "deployment_id": None}
            for node, count in layout.items() for n in range(count)]
    h.store.add_instances(rows)
    for _ in range(3):
        h.world.now += 1
        h.world.tick()
    dep = await h.deploy(1, keep, kind="scale")
    assert dep["status"] == "succeeded"
    gone: dict[str, int] = {}
    live = {i["id"] for i in h.live(1)}
    for r in rows:
        if r["id"] not in live:
            gone[r["node"]] = gone.get(r["node"], 0) + 1
    assert gone == stopped_from


async def test_with_a_registry_the_image_is_published_first_and_once(h: Harness) -> None:
    h.settings = ControllerSettings(data_dir=h.settings.data_dir, registry="127.0.0.1:5000")
    h.release(1, test=None)
    dep = await h.deploy(1, 1)
    assert dep["status"] == "succeeded"
    assert h.published == [(APP, 1)]
    assert ("publish", f"pushed registry:5000/{APP}:v1") in h.events(dep["id"])
    await h.deploy(1, 2, kind="scale")
    assert h.published == [(APP, 1)]


# --- a crash of the controller at each step, then a restart -------------------------------
@pytest.mark.parametrize("crash_at, while_", [
    ("control", "after the step began"),
    ("test", "after the step began"),
    ("test", "while the test runs"),
    ("rollout", "after the step began"),
    ("rollout", "while new instances start"),
    ("finish", "after the step began"),
])
async def test_a_deployment_resumes_after_a_controller_crash_at_each_step(
        h: Harness, crash_at: str, while_: str) -> None:
    await serve(h, 1, 2)
    h.release(2, max_parallel=1)  # one new instance at a time: a crash between the two
    if while_ == "while the test runs":
        h.tests.crash = True
    elif while_ == "while new instances start":
        h.world.crash_when = lambda world: len(
            [i for i in h.store.list_instances(APP) if i["release"] == 2
             and i["role"] == "live"]) == 1
    else:
        h.store.crash_after_step = crash_at
    dep = h.store.create_deployment(app=APP, release=2, replicas={"web": 2})
    with pytest.raises(Crash):
        await h.deployer().run(dep["id"])
    assert h.store.get_deployment(dep["id"])["status"] == "running"  # type: ignore[index]

    # A new controller process: resume what was running, through the real resume code.
    deployments = Deployments(settings=h.settings, store=h.store, deployer=h.deployer(),
                              metrics=Metrics())
    deployments.resume()
    await asyncio.gather(*deployments.tasks.values())
    done = h.store.get_deployment(dep["id"])
    assert (done["status"], done["step"]) == ("succeeded", "done"), done["reason"]  # type: ignore[index]
    assert len(h.live(2)) == 2 and h.live(1) == []
    assert [i for i in h.store.list_instances(APP) if i["role"] == "control"] == []
    assert (crash_at, "controller restarted: resuming this deployment") in h.events(dep["id"])
    assert not [i for i in h.store.list_instances(APP, include_stopped=True)
                if i["release"] == 1 and i["desired"] != "stopped"]


def never_ending(h: Harness) -> Deployments:
    """Deployments whose control instance never becomes healthy (nor reaches a deadline)."""
    h.release(1, healthy_deadline=10**6)
    h.world.healthy_after = 10**7
    return Deployments(settings=h.settings, store=h.store, deployer=h.deployer(),
                       metrics=Metrics())


async def test_a_deleted_app_cancels_its_deployment(h: Harness) -> None:
    deployments = never_ending(h)
    dep = await deployments.deploy(APP, release=1, replicas=1)
    await wait_until_async(lambda: h.world.ticks > 0, 10, 0,
                           what="the deployment to wait for its control instance's health")
    # As `Apps.delete` does: cancel the app's deployment, then delete its rows.
    deployments.cancel_app(APP)
    h.store.delete_app(APP)
    task = deployments.tasks[dep["id"]]
    with pytest.raises(asyncio.CancelledError):
        await task
    # The app's rows are gone with it; what the deployment started is told to stop.
    assert h.store.get_deployment(dep["id"]) is None
    assert h.store.list_instances(APP) == []
    assert [i["desired"] for i in h.store.list_instances(APP, include_stopped=True)] == ["stopped"]


async def test_a_cancelled_deployment_is_failed_even_if_the_app_stays(h: Harness) -> None:
    """The deletion may fail after the cancel (Consul, SQLite): the deployment is not left
    `running`, which would refuse every later deploy of the app with 409."""
    deployments = never_ending(h)
    dep = await deployments.deploy(APP, release=1, replicas=1)
    await wait_until_async(lambda: h.world.ticks > 0, 10, 0,
                           what="the deployment to wait for its control instance's health")
    deployments.cancel_app(APP)
    with pytest.raises(asyncio.CancelledError):
        await deployments.tasks[dep["id"]]
    done = h.store.get_deployment(dep["id"])
    assert (done["status"], done["step"], done["reason"]) == (  # type: ignore[index]
        "failed", "cancelled", "the app was deleted")


async def test_an_app_being_deleted_is_drained_like_a_deploys_old_instances(
        h: Harness) -> None:
    await serve(h, 1, 2)
    h.world.in_flight_for = 2.0
    began = h.world.now
    await h.deployer().retire_app(APP)
    assert 2.0 <= h.world.now - began < 2.5, "it waited for the requests in flight"
    [(app, addresses)] = h.world.unrouted
    assert app == APP and len(addresses) == 2
    assert {i["desired"] for i in h.store.list_instances(APP)} == {"draining"}
    assert h.store.get_app(APP)["scale"] == {}  # type: ignore[index] # nothing replaces them


async def test_a_deleted_apps_drain_stops_at_its_drain_timeout(h: Harness) -> None:
    await serve(h, 1, 1, drain_timeout=4)
    h.world.in_flight_for = 1000.0
    began = h.world.now
    await h.deployer().retire_app(APP)
    assert 4.0 <= h.world.now - began < 4.5


async def test_one_deployment_per_app_at_a_time(h: Harness) -> None:
    from paas.errors import Conflict

    deployments = never_ending(h)
    first = await deployments.deploy(APP, release=1, replicas=1)
    with pytest.raises(Conflict) as refused:
        await deployments.deploy(APP, release=1, replicas=2)
    assert refused.value.details == {"deployment_id": first["id"]}
    await deployments.stop()


async def test_without_a_health_path_an_instance_that_exits_is_never_counted_healthy(
        h: Harness) -> None:
    """Its TCP check may pass once before the process exits (Docker's proxy accepts); the node
    cannot look into a stopped container, and the instance is not running: not healthy."""
    await serve(h, 1, 2)
    h.release(2, health={}, healthy_deadline=60)
    h.world.crashing.add(2)
    h.world.stale_passing.add(2)
    dep = await h.deploy(2, 2)
    assert (dep["status"], dep["step"]) == ("failed", "control"), dep
    assert "exited with code 1" in dep["reason"]
    assert not any("healthy after" in m for _, m in h.events(dep["id"]))
