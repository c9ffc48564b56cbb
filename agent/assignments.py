"""What the controller asks this node to run: frozen assignment records parsed from the long-poll.

The controller's `GET /v1/nodes/{node}/assignments` answer (see docs/architecture.md) is parsed
once here into `Assignments`; everything downstream (reconcile, driver, registry) reads these
immutable records. The naming helpers for containers, labels and Consul tags live here too, so the
driver and the registry agree with each other and with the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from paas.names import (
    InvalidName,
    validate_app_name,
    validate_instance_id,
    validate_process_name,
)

DEFAULT_PORT = 5000
ROLES = ("live", "control")
DESIRED_STATES = ("running", "draining")

# Container labels (docs/architecture.md, "Container labels").
LABEL_CLUSTER = "paas.localcluster"
LABEL_NODE = "paas.node"
LABEL_APP = "paas.app"
LABEL_RELEASE = "paas.release"
LABEL_PROCESS = "paas.process"
LABEL_INSTANCE = "paas.instance"
LABEL_ROLE = "paas.role"


class InvalidAssignment(ValueError):
    """The controller sent an assignment this agent cannot run; the message says which field."""


@dataclass(frozen=True)
class HealthCheck:
    """The health check Consul runs against a web instance: `GET path` must answer 2xx, or,
    without a path, a TCP connection to the instance's port must open."""

    path: str | None = None
    interval_s: float = 1.0
    timeout_s: float = 1.0


@dataclass(frozen=True)
class Assignment:
    """One instance the controller wants on this node."""

    id: str
    app: str
    release: int
    process: str
    image: str
    role: str = "live"
    desired: str = "running"
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    memory_mb: int = 0
    cpu: float = 0.0
    health: HealthCheck = HealthCheck()
    stop_timeout_s: float = 10.0
    tags: tuple[str, ...] = ()
    """Extra Consul tags beyond [role, vN, process], e.g. `stable` once promoted."""
    metrics_path: str | None = None
    """Where Prometheus scrapes the instance (`[metrics] path`); None: it is not scraped."""

    @property
    def is_web(self) -> bool:
        """Only `web` processes get a Consul service and a health check."""
        return self.process == "web"

    @property
    def wants_running(self) -> bool:
        return self.desired == "running"


@dataclass(frozen=True)
class Assignments:
    """A long-poll answer: the node's assignment index and the full desired instance list."""

    index: int
    instances: tuple[Assignment, ...]

    def by_id(self) -> dict[str, Assignment]:
        return {a.id: a for a in self.instances}


def container_name(cluster: str, instance_id: str) -> str:
    """The Docker container name of an instance: `paas-<cluster>-<instance id>`."""
    return f"paas-{cluster}-{instance_id}"


def container_labels(assignment: Assignment, *, cluster: str, node: str) -> dict[str, str]:
    """The labels every container of the platform carries (how `recover` finds them)."""
    return {
        LABEL_CLUSTER: cluster,
        LABEL_NODE: node,
        LABEL_APP: assignment.app,
        LABEL_RELEASE: str(assignment.release),
        LABEL_PROCESS: assignment.process,
        LABEL_INSTANCE: assignment.id,
        LABEL_ROLE: assignment.role,
    }


def container_env(assignment: Assignment) -> dict[str, str]:
    """The assignment's env plus PORT and the PAAS_* variables (the platform's win on clashes)."""
    env = dict(assignment.env)
    env.update(
        PORT=str(assignment.port),
        PAAS_APP=assignment.app,
        PAAS_RELEASE=str(assignment.release),
        PAAS_PROCESS=assignment.process,
        PAAS_INSTANCE_ID=assignment.id,
        PAAS_ROLE=assignment.role,
    )
    return env


def service_tags(assignment: Assignment) -> tuple[str, ...]:
    """Consul tags: `[role, "v<N>", process]` then any extra tags, without duplicates."""
    tags: list[str] = [assignment.role, f"v{assignment.release}", assignment.process]
    for tag in assignment.tags:
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


def parse_assignments(payload: Any) -> Assignments:
    """Parse the long-poll JSON body; raise InvalidAssignment on anything malformed."""
    if not isinstance(payload, dict):
        raise InvalidAssignment("assignments: expected a JSON object")
    index = payload.get("index")
    raw = payload.get("instances")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise InvalidAssignment("assignments: 'index' must be a non-negative integer")
    if not isinstance(raw, list):
        raise InvalidAssignment("assignments: 'instances' must be a list")
    instances = tuple(parse_assignment(item) for item in raw)
    ids = [a.id for a in instances]
    if len(set(ids)) != len(ids):
        raise InvalidAssignment("assignments: duplicate instance ids")
    return Assignments(index=index, instances=instances)


def parse_assignment(item: Any) -> Assignment:
    """Parse one instance object of the long-poll answer."""
    if not isinstance(item, dict):
        raise InvalidAssignment("assignment: expected a JSON object")
    try:
        ident = validate_instance_id(item.get("id"))
        app = validate_app_name(item.get("app"))
        process = validate_process_name(item.get("process"))
    except InvalidName as exc:
        raise InvalidAssignment(f"assignment {item.get('id')!r}: {exc}") from None
    where = f"assignment {ident}"
    release = _int(item.get("release"), f"{where}: release", minimum=1)
    image = item.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidAssignment(f"{where}: 'image' must be a non-empty string")
    role = item.get("role", "live")
    if role not in ROLES:
        raise InvalidAssignment(f"{where}: 'role' must be one of {', '.join(ROLES)}")
    desired = item.get("desired", "running")
    if desired not in DESIRED_STATES:
        raise InvalidAssignment(f"{where}: 'desired' must be one of {', '.join(DESIRED_STATES)}")
    return Assignment(
        id=ident,
        app=app,
        release=release,
        process=process,
        image=image,
        role=role,
        desired=desired,
        command=_command(item.get("command"), where),
        env=_env(item.get("env"), where),
        port=_int(item.get("port", DEFAULT_PORT) or DEFAULT_PORT, f"{where}: port",
                  minimum=1, maximum=65535),
        memory_mb=_int(item.get("memory_mb") or 0, f"{where}: memory_mb", minimum=0),
        cpu=_float(item.get("cpu") or 0.0, f"{where}: cpu"),
        health=_health(item.get("health"), where),
        stop_timeout_s=_float(_default(item.get("stop_timeout_s"), 10),
                              f"{where}: stop_timeout_s"),
        tags=_tags(item.get("tags"), where),
        metrics_path=_metrics_path(item.get("metrics_path"), where),
    )


def _metrics_path(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidAssignment(f"{where}: 'metrics_path' must be a path starting with '/'")
    return value


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _int(value: Any, what: str, *, minimum: int | None = None,
         maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAssignment(f"{what} must be an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidAssignment(f"{what} is out of range")
    return value


def _float(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise InvalidAssignment(f"{what} must be a non-negative number")
    return float(value)


def _command(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidAssignment(f"{where}: 'command' must be null or a non-empty list of strings")
    return tuple(value)


def _env(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str)
        for k, v in value.items()
    ):
        raise InvalidAssignment(f"{where}: 'env' must map names to strings")
    return dict(value)


def _health(value: Any, where: str) -> HealthCheck:
    if value is None:
        return HealthCheck()
    if not isinstance(value, dict):
        raise InvalidAssignment(f"{where}: 'health' must be an object")
    path = value.get("path") or None
    if path is not None and (not isinstance(path, str) or not path.startswith("/")
                             or any(c.isspace() for c in path)):
        raise InvalidAssignment(f"{where}: health 'path' must start with '/'")
    interval = _float(value.get("interval_s") or 1, f"{where}: health interval_s")
    timeout = _float(value.get("timeout_s") or 1, f"{where}: health timeout_s")
    return HealthCheck(path=path, interval_s=interval or 1.0, timeout_s=timeout or 1.0)


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise InvalidAssignment(f"{where}: 'tags' must be a list of strings")
    return tuple(value)
