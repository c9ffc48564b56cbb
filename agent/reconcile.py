"""The agent's reconciler: a pure function from desired and actual state to a plan of named groups.

Like Nomad's reconciler, it reads an immutable view (the controller's assignments, the containers
Docker reports, the services Consul holds, the restart backoff states and `now`) and sorts every
instance into groups the agent then acts on, in this order:

| group | meaning | the agent does |
| --- | --- | --- |
| `deregister` | registered, but not desired, draining, not running or not web | deregister |
| `stop_and_remove` | a container this node runs that is not assigned | SIGTERM, wait, remove |
| `start` | desired running, no container | create and start |
| `restart` | desired running, container stopped, backoff elapsed | start it again |
| `register` | desired running web, up with a host port, not (or wrongly) registered | register |
| `backoff` | would start/restart, but its backoff has not elapsed | wait |
| `ignore` | assigned and nothing to do | nothing |

No I/O, no clock: `now` comes in as data. Running it again after acting on its plan yields an
empty plan (apart from work that is waiting on the world, such as a start not yet visible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from agent.assignments import Assignment, service_tags
from agent.driver import ContainerInfo
from paas.consul import Service
from paas.retry import RestartState

DEFAULT_STOP_TIMEOUT_S = 10.0
STOPPED_STATES = frozenset({"created", "exited", "dead"})


@dataclass(frozen=True)
class Registration:
    """Register `assignment` in Consul on the container's host port."""

    assignment: Assignment
    host_port: int


@dataclass(frozen=True)
class Removal:
    """Stop (SIGTERM, then SIGKILL after `stop_timeout_s`) and remove an unassigned container."""

    instance_id: str
    container_id: str
    stop_timeout_s: float


@dataclass(frozen=True)
class Plan:
    start: tuple[Assignment, ...] = ()
    restart: tuple[Assignment, ...] = ()
    register: tuple[Registration, ...] = ()
    deregister: tuple[str, ...] = ()
    stop_and_remove: tuple[Removal, ...] = ()
    backoff: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @property
    def has_actions(self) -> bool:
        return bool(self.start or self.restart or self.register or self.deregister
                    or self.stop_and_remove)

    def summary(self) -> dict[str, list[str]]:
        """Instance ids per group, for logs and tests."""
        return {
            "start": [a.id for a in self.start],
            "restart": [a.id for a in self.restart],
            "register": [r.assignment.id for r in self.register],
            "deregister": list(self.deregister),
            "stop_and_remove": [r.instance_id for r in self.stop_and_remove],
            "backoff": list(self.backoff),
            "ignore": list(self.ignore),
        }


def reconcile(*, desired: Sequence[Assignment], containers: Sequence[ContainerInfo],
              registered: Mapping[str, Service] | None, address: str, now: float,
              restarts: Mapping[str, RestartState] | None = None) -> Plan:
    """Compare desired with actual state and return the plan.

    `registered` is None when Consul could not be asked: the plan then has no register or
    deregister work, and everything else proceeds.
    """
    restarts = restarts or {}
    wanted = {a.id: a for a in desired}
    actual = {c.instance_id: c for c in containers if c.instance_id}
    start: list[Assignment] = []
    restart: list[Assignment] = []
    register: list[Registration] = []
    deregister: set[str] = set()
    backoff: list[str] = []
    acted: set[str] = set()

    for a in sorted(wanted.values(), key=lambda a: a.id):
        c = actual.get(a.id)
        ready = now >= restarts.get(a.id, RestartState()).not_before
        if a.wants_running and (c is None or c.state in STOPPED_STATES):
            if not ready:
                backoff.append(a.id)
            elif c is None:
                start.append(a)
            else:
                restart.append(a)
        if registered is None:
            continue
        routable = (a.is_web and a.wants_running and c is not None and c.running
                    and c.host_port is not None)
        current = registered.get(a.id)
        if routable:
            assert c is not None and c.host_port is not None
            if current is None or not _matches(current, a, address=address,
                                               host_port=c.host_port):
                register.append(Registration(assignment=a, host_port=c.host_port))
        elif current is not None:
            deregister.add(a.id)

    if registered is not None:
        deregister.update(sid for sid in registered if sid not in wanted)

    removals = [
        Removal(instance_id=c.instance_id, container_id=c.container_id,
                stop_timeout_s=c.stop_timeout_s if c.stop_timeout_s is not None
                else DEFAULT_STOP_TIMEOUT_S)
        for iid, c in sorted(actual.items()) if iid not in wanted
    ]

    acted.update(a.id for a in start)
    acted.update(a.id for a in restart)
    acted.update(r.assignment.id for r in register)
    acted.update(deregister)
    acted.update(backoff)
    return Plan(
        start=tuple(start),
        restart=tuple(restart),
        register=tuple(register),
        deregister=tuple(sorted(deregister)),
        stop_and_remove=tuple(removals),
        backoff=tuple(backoff),
        ignore=tuple(sorted(i for i in wanted if i not in acted)),
    )


def _matches(current: Service, a: Assignment, *, address: str, host_port: int) -> bool:
    return (current.port == host_port and current.address == address
            and current.name == a.app and tuple(current.tags) == service_tags(a))
