"""The controller's reconcile of what runs against what should run, between deployments.

A pure function in the manner of Nomad's reconciler: frozen views in, a plan out, sorted into
named groups. `lost` instances sit on nodes that stopped heartbeating (they are stopped, and
their agent removes them if the node comes back); `place` asks the scheduler for replacements
so each app runs its scale again on the nodes that are left; apps with a deployment running
are left to it (`ignore`). The controller applies the plan; running it twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True, kw_only=True)
class AppView:
    name: str
    live_release: int | None
    scale: Mapping[str, int]
    deploying: bool = False


@dataclass(frozen=True, kw_only=True)
class InstanceView:
    id: str
    app: str
    release: int
    process: str
    role: str
    node: str
    desired: str


@dataclass(frozen=True, kw_only=True)
class Placement:
    app: str
    release: int
    process: str
    count: int


@dataclass(frozen=True, kw_only=True)
class Plan:
    lost: tuple[str, ...] = ()
    place: tuple[Placement, ...] = ()
    ignore: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.lost and not self.place


def reconcile(*, apps: list[AppView], instances: list[InstanceView],
              ready_nodes: set[str]) -> Plan:
    """What to stop and what to place so every app runs its scale on ready nodes."""
    lost: list[str] = []
    place: list[Placement] = []
    ignore: list[str] = []
    by_app: dict[str, list[InstanceView]] = {}
    for inst in instances:
        by_app.setdefault(inst.app, []).append(inst)
    for app in sorted(apps, key=lambda a: a.name):
        mine = by_app.get(app.name, [])
        if app.deploying:
            ignore.append(app.name)
            continue
        for inst in mine:
            if inst.desired in ("running", "draining") and inst.node not in ready_nodes:
                lost.append(inst.id)
        if app.live_release is None:
            continue
        for process, target in sorted(app.scale.items()):
            healthy = sum(1 for i in mine if i.process == process and i.role == "live"
                          and i.desired == "running" and i.node in ready_nodes)
            if target > healthy:
                place.append(Placement(app=app.name, release=app.live_release,
                                       process=process, count=target - healthy))
    return Plan(lost=tuple(lost), place=tuple(place), ignore=tuple(ignore))
