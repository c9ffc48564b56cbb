"""Between the store and the pure scheduler: the cluster as the scheduler sees it, a process
type's placement request, and the ids of new instances. Used by the deployer (rollouts) and by
the reconcile between deployments (replacing what a lost node ran)."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from paas.builder.appconfig import resources_of
from paas.controller import scheduler
from paas.controller.store import Store

NodeReady = Callable[[dict[str, Any]], bool]
CONTAINER_PORT = 5000  # $PORT inside every instance's container; the agent publishes it


def placement_request(app: str, process: str, count: int,
                      policy: dict[str, Any]) -> scheduler.PlacementRequest:
    res = resources_of(policy, process)
    return scheduler.PlacementRequest(app=app, process=process, count=count, cpu=res.cpu,
                                      memory_mb=res.memory_mb, constraints=res.constraints,
                                      strategy=res.strategy)  # type: ignore[arg-type]


def new_instance_id(app: str, release: int, process: str) -> str:
    return f"{app}-v{release}-{process}-{secrets.token_hex(3)}"


def cluster_view(store: Store, *, is_ready: NodeReady,
                 retiring: set[str] | frozenset[str] = frozenset(),
                 avoid: str | None = None) -> list[scheduler.Node]:
    """The scheduler's view: nodes and what they hold. Instances in `retiring` count against
    capacity but not towards spreading (they are about to go); node `avoid` takes nothing new
    (it is being drained), nor does a node that is down or draining."""
    by_node: dict[str, list[scheduler.Instance]] = {}
    policies: dict[tuple[str, int], dict[str, Any]] = {}
    for inst in store.list_instances():
        key = (inst["app"], inst["release"])
        if key not in policies:
            rel = store.get_release(*key)
            policies[key] = rel["policy"] if rel else {}
        res = resources_of(policies[key], inst["process"])
        app = inst["app"] + ("~retiring" if inst["id"] in retiring else "")
        by_node.setdefault(inst["node"], []).append(scheduler.Instance(
            app=app, process=inst["process"], cpu=res.cpu,
            memory_mb=res.memory_mb, instance_id=inst["id"]))
    return [scheduler.Node(name=n["name"], address=n["address"], cpu=n["cpu"],
                           memory_mb=n["memory_mb"], labels=n["labels"],
                           ready=is_ready(n) and n["name"] != avoid and not n["draining"],
                           instances=tuple(by_node.get(n["name"], ())))
            for n in store.list_nodes()]
