"""What the agent reports in its heartbeats: one state record per assigned instance (pure).

States (docs/architecture.md): `running` (container running), `starting` (not tried yet, a start
in flight, or Docker is creating/restarting it), `exited` (the container stopped; `exit_code`
says how) and
`missing` (assigned, but no container although the agent tried: its start failed, and `error`
says why, or the container was removed behind the agent's back). A container that is no longer
assigned is reported as `stopping` until it is removed, so the controller knows when an
instance is really gone.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from agent.assignments import Assignment
from agent.driver import ContainerInfo
from paas.retry import RestartState

STARTING_DOCKER_STATES = frozenset({"created", "restarting"})


def container_state(container: ContainerInfo | None, *, starting: bool) -> str:
    """The reported state of one instance; `starting` if a (first) start is pending or running."""
    if container is None:
        return "starting" if starting else "missing"
    if container.running or container.state == "paused":
        return "running"
    if container.state in STARTING_DOCKER_STATES or starting:
        return "starting"
    return "exited"


def instance_reports(*, desired: Sequence[Assignment] | None,
                     containers: Sequence[ContainerInfo],
                     restarts: Mapping[str, RestartState],
                     starting: Collection[str] = (),
                     errors: Mapping[str, str] | None = None,
                     pulls: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Heartbeat records: one per assigned instance (every found container before the first
    assignments arrive), sorted by instance id, then one `stopping` record per container that
    is no longer assigned. `pulls`: the seconds an instance's start spent pulling its image
    (`pull_s`, None when it pulled nothing)."""
    errors, pulls = errors or {}, pulls or {}
    by_id = {c.instance_id: c for c in containers if c.instance_id}
    wanted = {a.id: a for a in desired} if desired is not None else None
    ids = list(wanted) if wanted is not None else list(by_id)
    reports = []
    for iid in sorted(ids):
        c = by_id.get(iid)
        a = wanted.get(iid) if wanted is not None else None
        # Assigned to run but never tried yet: about to start, not missing.
        pending = c is None and a is not None and a.wants_running and iid not in restarts
        reports.append({
            "id": iid,
            "state": container_state(c, starting=iid in starting or pending),
            "container_id": c.container_id if c else None,
            "host_port": c.host_port if c and c.running else None,
            "restarts": restarts.get(iid, RestartState()).restarts,
            "exit_code": c.exit_code if c else None,
            "ran_s": c.ran_s if c else None,
            "error": errors.get(iid),
            "pull_s": round(pulls[iid], 3) if iid in pulls else None,
        })
    if wanted is not None:
        for iid in sorted(set(by_id) - set(wanted)):
            c = by_id[iid]
            reports.append({"id": iid, "state": "stopping", "container_id": c.container_id,
                            "host_port": None, "restarts": 0, "exit_code": c.exit_code,
                            "ran_s": c.ran_s, "error": None, "pull_s": None})
    return reports
