"""Table-driven tests of the agent's pure reconciler (agent/reconcile.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from agent.assignments import Assignment
from agent.driver import ContainerInfo
from agent.reconcile import Plan, reconcile
from paas.consul import Service
from paas.retry import RestartState

ADDR = "127.0.0.2"
NOW = 100.0


def web(iid: str = "hello-v1-web-aaaaaa", **kw: object) -> Assignment:
    base = Assignment(id=iid, app=iid.split("-v")[0], release=1, process="web",
                      image="paas/hello:v1")
    return replace(base, **kw)  # type: ignore[arg-type]


def worker(iid: str = "hello-v1-worker-bbbbbb", **kw: object) -> Assignment:
    return replace(web(iid), process="worker", **kw)  # type: ignore[arg-type]


def box(iid: str, state: str = "running", port: int | None = 32768,
        exit_code: int | None = None, stop_timeout: float | None = 7.0) -> ContainerInfo:
    return ContainerInfo(instance_id=iid, container_id="c-" + iid, state=state,
                         host_port=port if state == "running" else None, exit_code=exit_code,
                         stop_timeout_s=stop_timeout)


def svc(iid: str, port: int = 32768, tags: tuple[str, ...] = ("live", "v1", "web"),
        address: str = ADDR, name: str | None = None) -> Service:
    return Service(id=iid, name=name or iid.split("-v")[0], address=address,
                             port=port, tags=tags)


A = "hello-v1-web-aaaaaa"
B = "hello-v1-web-bbbbbb"
W = "hello-v1-worker-bbbbbb"


@dataclass
class Case:
    name: str
    desired: list[Assignment]
    containers: list[ContainerInfo] = field(default_factory=list)
    registered: list[Service] | None = field(default_factory=list)
    restarts: dict[str, RestartState] = field(default_factory=dict)
    expect: dict[str, list[str]] = field(default_factory=dict)


CASES = [
    Case("nothing desired, nothing there", [], expect={}),
    Case("desired, no container: start", [web(A)], expect={"start": [A]}),
    Case("desired worker, no container: start", [worker(W)], expect={"start": [W]}),
    Case("draining, no container: nothing to start", [web(A, desired="draining")],
         expect={"ignore": [A]}),
    Case("running web, not registered: register", [web(A)], [box(A)],
         expect={"register": [A]}),
    Case("running web, registered alike: ignore", [web(A)], [box(A)], [svc(A)],
         expect={"ignore": [A]}),
    Case("running web, registered on an old port: register again", [web(A)],
         [box(A, port=40000)], [svc(A, port=32768)], expect={"register": [A]}),
    Case("tags changed (promoted to stable): register again", [web(A, tags=("stable",))],
         [box(A)], [svc(A)], expect={"register": [A]}),
    Case("registered with another address: register again", [web(A)], [box(A)],
         [svc(A, address="127.0.0.9")], expect={"register": [A]}),
    Case("running worker: never registered", [worker(W)], [box(W)], expect={"ignore": [W]}),
    Case("worker somehow registered: deregister", [worker(W)], [box(W)], [svc(W)],
         expect={"deregister": [W]}),
    Case("running web without a host port: cannot register yet", [web(A)],
         [box(A, port=None)], expect={"ignore": [A]}),
    Case("draining and registered: deregister, keep the container", [web(A, desired="draining")],
         [box(A)], [svc(A)], expect={"deregister": [A]}),
    Case("draining, deregistered already: ignore", [web(A, desired="draining")], [box(A)],
         expect={"ignore": [A]}),
    Case("draining and exited: not restarted", [web(A, desired="draining")],
         [box(A, "exited", exit_code=1)], expect={"ignore": [A]}),
    Case("exited, no backoff: restart and deregister", [web(A)],
         [box(A, "exited", exit_code=137)], [svc(A)],
         expect={"restart": [A], "deregister": [A]}),
    Case("created but never started: restart", [web(A)], [box(A, "created")],
         expect={"restart": [A]}),
    Case("dead: restart", [worker(W)], [box(W, "dead")], expect={"restart": [W]}),
    Case("exited within backoff: wait", [web(A)], [box(A, "exited", exit_code=1)],
         restarts={A: RestartState(restarts=3, streak=3, not_before=NOW + 5)},
         expect={"backoff": [A]}),
    Case("exited, backoff elapsed: restart", [web(A)], [box(A, "exited", exit_code=1)],
         restarts={A: RestartState(restarts=3, streak=3, not_before=NOW)},
         expect={"restart": [A]}),
    Case("start failed recently: wait before trying again", [web(A)],
         restarts={A: RestartState(streak=1, not_before=NOW + 1)}, expect={"backoff": [A]}),
    Case("restarting / paused containers are left alone", [web(A), web(B)],
         [box(A, "restarting"), box(B, "paused")], expect={"ignore": [A, B]}),
    Case("container not assigned: stop and remove", [], [box(A)], [svc(A)],
         expect={"stop_and_remove": [A], "deregister": [A]}),
    Case("exited container not assigned: remove too", [], [box(A, "exited", exit_code=0)],
         expect={"stop_and_remove": [A]}),
    Case("stale registration without a container: deregister", [], [], [svc(A)],
         expect={"deregister": [A]}),
    Case("Consul unknown: containers only, no (de)registration", [web(A), web(B)],
         [box(A), box(W)], None, expect={"start": [B], "stop_and_remove": [W], "ignore": [A]}),
    Case("mixed", [web(A), web(B, desired="draining"), worker(W)],
         [box(A), box(B), box("other-v2-web-cccccc", "exited", exit_code=0)],
         [svc(B), svc("gone-v1-web-dddddd")],
         expect={"register": [A], "start": [W],
                 "deregister": ["gone-v1-web-dddddd", B],
                 "stop_and_remove": ["other-v2-web-cccccc"]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reconcile_groups(case: Case) -> None:
    registered = None if case.registered is None else {s.id: s for s in case.registered}
    plan = reconcile(desired=case.desired, containers=case.containers, registered=registered,
                     address=ADDR, now=NOW, restarts=case.restarts)
    got = {k: v for k, v in plan.summary().items() if v}
    assert got == case.expect


def test_register_uses_the_containers_host_port() -> None:
    plan = reconcile(desired=[web(A)], containers=[box(A, port=41234)], registered={},
                     address=ADDR, now=NOW)
    assert [(r.assignment.id, r.host_port) for r in plan.register] == [(A, 41234)]


def test_removal_takes_the_stop_timeout_from_the_container() -> None:
    plan = reconcile(desired=[], containers=[box(A, stop_timeout=3.0), box(B, stop_timeout=None)],
                     registered={}, address=ADDR, now=NOW)
    assert [(r.instance_id, r.container_id, r.stop_timeout_s) for r in plan.stop_and_remove] == [
        (A, "c-" + A, 3.0), (B, "c-" + B, 10.0)]


def test_a_converged_state_plans_nothing() -> None:
    desired = [web(A), web(B, desired="draining"), worker(W)]
    plan = reconcile(desired=desired, containers=[box(A), box(B), box(W)],
                     registered={A: svc(A)}, address=ADDR, now=NOW)
    assert plan == Plan(ignore=(A, B, W))
    assert not plan.has_actions


def test_acting_on_the_plan_converges() -> None:
    """Apply the plan to a toy world and reconcile again: the second plan has no actions."""
    desired = [web(A), worker(W)]
    containers = {"stale-v1-web-eeeeee": box("stale-v1-web-eeeeee")}
    registered = {"stale-v1-web-eeeeee": svc("stale-v1-web-eeeeee")}
    for _ in range(3):
        plan = reconcile(desired=desired, containers=list(containers.values()),
                         registered=registered, address=ADDR, now=NOW)
        for iid in plan.deregister:
            registered.pop(iid)
        for r in plan.stop_and_remove:
            containers.pop(r.instance_id)
        for a in (*plan.start, *plan.restart):
            containers[a.id] = box(a.id)
        for r in plan.register:
            registered[r.assignment.id] = svc(r.assignment.id, port=r.host_port)
    assert not plan.has_actions
    assert sorted(containers) == sorted([A, W])
    assert list(registered) == [A]
