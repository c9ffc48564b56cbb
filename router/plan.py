"""The decision at the heart of the router: runtime update or reload.

`plan_changes(current, desired)` is a pure function from the layout HAProxy runs now (each
app's backend with its numbered server slots) and the desired routing table to a `Plan`: the
next layout, whether HAProxy must reload, and otherwise the slot changes to send through the
runtime API. A reload is needed only when the set of apps, their hostnames or their HTTPS
policy (redirect, HSTS) change, or when a backend has more servers than slots; instance changes
fill and empty slots.

Slots are stable: a server keeps its slot while it stays, so the runtime changes touch only the
servers that came or went, and new servers take slots that were already empty before reusing
one emptied in the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.routes import AppRoute, HttpsPolicy, InvalidRoute, RoutingTable, Server


@dataclass(frozen=True)
class Backend:
    """One app's HAProxy backend: hostnames routed to it and its server slots (None = empty)."""

    app: str
    hostnames: tuple[str, ...]
    slots: tuple[Server | None, ...]
    https: HttpsPolicy = HttpsPolicy()

    @property
    def servers(self) -> tuple[Server, ...]:
        return tuple(sorted(s for s in self.slots if s is not None))

    def route(self) -> AppRoute:
        return AppRoute(app=self.app, hostnames=self.hostnames, servers=self.servers,
                        https=self.https)


Layout = Mapping[str, Backend]
"""App name -> backend: what HAProxy runs (or is about to run)."""


@dataclass(frozen=True)
class SlotChange:
    """Put `server` into slot `slot` (1-based) of app's backend, or empty it when None."""

    app: str
    slot: int
    server: Server | None
    previous: Server | None


@dataclass(frozen=True)
class Plan:
    """The next layout and how to get there."""

    layout: Layout
    reload: bool
    reasons: tuple[str, ...]
    changes: tuple[SlotChange, ...]

    @property
    def noop(self) -> bool:
        return not self.reload and not self.changes

    def summary(self) -> str:
        """One line for the log: what changed and how it is applied."""
        parts = list(self.reasons)
        for change in self.changes:
            if change.previous is not None and change.previous != change.server:
                parts.append(f"{change.app} -{change.previous}")
            if change.server is not None and change.server != change.previous:
                parts.append(f"{change.app} +{change.server}")
        how = "reload" if self.reload else "runtime"
        return f"{how}: {', '.join(parts) if parts else 'no change'}"


def slots_needed(count: int, initial: int) -> int:
    """Slot count for `count` servers: `initial`, doubled until it fits."""
    if initial < 1:
        raise ValueError("initial slot count must be at least 1")
    size = initial
    while size < count:
        size *= 2
    return size


def plan_changes(current: Layout, desired: RoutingTable, *, initial_slots: int) -> Plan:
    """Decide how to move HAProxy from `current` to `desired` (pure; see the module docstring)."""
    reasons: list[str] = []
    added = sorted(set(desired) - set(current))
    removed = sorted(set(current) - set(desired))
    if added:
        reasons.append("apps added: " + ", ".join(
            f"{app} ({len(desired[app].servers)} servers)" for app in added))
    if removed:
        reasons.append("apps removed: " + " ".join(removed))

    layout: dict[str, Backend] = {}
    changes: list[SlotChange] = []
    for app in sorted(desired):
        route = desired[app]
        old = current.get(app)
        if old is None:
            size = slots_needed(len(route.servers), initial_slots)
            slots = tuple(route.servers) + (None,) * (size - len(route.servers))
            layout[app] = Backend(app=app, hostnames=route.hostnames, slots=slots,
                                  https=route.https)
            continue
        if old.hostnames != route.hostnames:
            reasons.append(f"hostnames of {app}: {' '.join(route.hostnames) or '(none)'}")
        if old.https != route.https:
            reasons.append(f"https of {app}: redirect {route.https.redirect}, "
                           f"hsts {route.https.hsts}")
        backend, app_changes, grown = _fill_slots(old, route, initial_slots)
        if grown:
            reasons.append(f"slots of {app}: {len(old.slots)} -> {len(backend.slots)}")
        layout[app] = backend
        changes.extend(app_changes)

    reload = bool(reasons)
    _check_unique_hostnames(layout)
    return Plan(layout=layout, reload=reload, reasons=tuple(reasons),
                changes=() if reload else tuple(changes))


def _fill_slots(
    old: Backend, route: AppRoute, initial_slots: int
) -> tuple[Backend, list[SlotChange], bool]:
    """Keep staying servers in place, empty the slots of gone ones, fill free slots with new ones."""
    wanted = set(route.servers)
    size = max(len(old.slots), slots_needed(len(wanted), initial_slots))
    slots: list[Server | None] = list(old.slots) + [None] * (size - len(old.slots))
    vacated: list[int] = []
    for i, server in enumerate(slots):
        if server is not None and server not in wanted:
            slots[i] = None
            vacated.append(i)
    staying = {s for s in slots if s is not None}
    newcomers = sorted(wanted - staying)
    # Prefer slots that were empty before, so a just-vacated slot keeps draining undisturbed.
    free = [i for i, s in enumerate(slots) if s is None and i not in vacated] + vacated
    for server, i in zip(newcomers, free):
        slots[i] = server
    changes = [
        SlotChange(app=old.app, slot=i + 1, server=slots[i],
                   previous=old.slots[i] if i < len(old.slots) else None)
        for i in range(size)
        if (old.slots[i] if i < len(old.slots) else None) != slots[i]
    ]
    backend = Backend(app=old.app, hostnames=route.hostnames, slots=tuple(slots),
                      https=route.https)
    return backend, changes, size > len(old.slots)


def _check_unique_hostnames(layout: Layout) -> None:
    seen: dict[str, str] = {}
    for backend in layout.values():
        for hostname in backend.hostnames:
            if hostname in seen:
                raise InvalidRoute(f"hostname {hostname} routed to both {seen[hostname]} and {backend.app}")
            seen[hostname] = backend.app


def runtime_commands(change: SlotChange) -> list[str]:
    """HAProxy runtime API commands for one slot change, in order.

    An emptied slot goes to maintenance: new requests stop at once, requests in flight finish.
    A filled slot is taken out of service first if it held another server, readdressed, then
    made ready.
    """
    name = f"app_{change.app}/s{change.slot}"
    if change.server is None:
        return [f"set server {name} state maint"]
    commands = []
    if change.previous is not None:
        commands.append(f"set server {name} state maint")
    commands.append(f"set server {name} addr {change.server.host} port {change.server.port}")
    commands.append(f"set server {name} state ready")
    return commands


def ordered_changes(changes: tuple[SlotChange, ...]) -> list[SlotChange]:
    """Fill empty slots first and empty slots last, so a backend never runs dry mid-update."""
    def rank(change: SlotChange) -> int:
        if change.previous is None:
            return 0
        return 2 if change.server is None else 1
    return sorted(changes, key=rank)
