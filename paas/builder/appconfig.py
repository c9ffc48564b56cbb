"""An app's own settings: its `Procfile` (process types) and optional `paas.toml` (health
check, integration test, deploy policy), parsed and validated into plain data with defaults.

Defaults (documented in README):

| key | default |
| --- | --- |
| `[health] path` | none: the instance is healthy once it accepts TCP connections on `$PORT` (Heroku's rule); with a path, `GET path` must answer 2xx |
| `[health] interval` | `1` s |
| `[health] timeout` | `1` s |
| `[metrics] path` | none: Prometheus does not scrape the app's instances; with a path (e.g. `/metrics`), it scrapes each web instance there, labelled app, release, process, instance, node and role |
| `[test] command` | none: the test step is skipped, visibly |
| `[test] timeout` | `120` s |
| `[deploy] max_parallel` | all at once: the old instances serve until every new one is healthy, so a smaller batch only slows a rollout (the control instance has already proved the release) |
| `[deploy] min_healthy_time` | `1` s |
| `[deploy] healthy_deadline` | `60` s |
| `[deploy] auto_promote` | `false` |
| `[deploy] auto_revert` | `false` |
| `[deploy] stop_timeout` | `10` s |
| `[deploy] drain_timeout` | `30` s: how long a drained instance's requests in flight may take before it is stopped |
| `[process.NAME] cpu` | `0.1` (cores reserved per instance) |
| `[process.NAME] memory` | `128` (MB reserved per instance, and the container's limit) |
| `[process.NAME] strategy` | `spread` for web, `binpack` for other process types |
| `[process.NAME] constraints` | none: a table of node labels, e.g. `{ zone = "a" }` |
| `[build] stack` | none: the stack is detected (`paas.builder.stacks`) |
| `[build] timeout` | `600` s (wall clock; from 10 s to 4 h): a longer build is stopped |
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from paas.names import InvalidName, validate_process_name

_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/%-]*$")
_STACK_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
DEFAULT_BUILD_TIMEOUT_S = 600.0
BUILD_TIMEOUT_RANGE_S = (10, 4 * 3600)


class BadAppConfig(ValueError):
    """The Procfile or paas.toml is invalid; the message says which line or key."""


@dataclass(frozen=True, kw_only=True)
class Health:
    path: str | None = None
    """The HTTP path whose GET must answer 2xx; None: a TCP connection to $PORT is enough."""
    interval_s: float = 1.0
    timeout_s: float = 1.0


@dataclass(frozen=True, kw_only=True)
class Policy:
    max_parallel: int | None = None
    """New live instances started per batch; None: all of them at once."""
    min_healthy_time: float = 1.0
    healthy_deadline: float = 60.0
    auto_promote: bool = False
    auto_revert: bool = False
    stop_timeout: float = 10.0
    drain_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class Resources:
    cpu: float = 0.1
    memory_mb: int = 128
    strategy: str = "spread"
    constraints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    processes: dict[str, str | None] = field(default_factory=lambda: {"web": None})
    health: Health = field(default_factory=Health)
    policy: Policy = field(default_factory=Policy)
    test_command: str | None = None
    test_timeout: float = 120.0
    resources: dict[str, Resources] = field(default_factory=dict)
    stack: str | None = None  # `[build] stack`
    metrics_path: str | None = None  # `[metrics] path`: where Prometheus scrapes each instance
    build_timeout: float = DEFAULT_BUILD_TIMEOUT_S  # `[build] timeout`, seconds of wall clock

    def health_dict(self) -> dict[str, Any]:
        return asdict(self.health)

    def policy_dict(self) -> dict[str, Any]:
        return {**asdict(self.policy), "test_timeout": self.test_timeout,
                "resources": {p: asdict(r) for p, r in self.resources.items()}}


def resources_of(policy: dict[str, Any], process: str) -> Resources:
    """A process type's reservations and placement rules from a release's policy."""
    raw = (policy.get("resources") or {}).get(process)
    if raw:
        return Resources(**raw)
    return Resources(strategy="spread" if process == "web" else "binpack")


def _resources(doc: dict[str, Any], processes: dict[str, str | None]) -> dict[str, Resources]:
    table = doc.get("process", {})
    if not isinstance(table, dict):
        raise BadAppConfig("paas.toml [process.NAME] sections must be tables")
    out: dict[str, Resources] = {}
    for name in processes:
        t = table.get(name, {})
        if not isinstance(t, dict):
            raise BadAppConfig(f"paas.toml [process.{name}] must be a table")
        where = f"process.{name}"
        strategy = t.get("strategy", "spread" if name == "web" else "binpack")
        if strategy not in ("spread", "binpack"):
            raise BadAppConfig(f"paas.toml {where}.strategy must be 'spread' or 'binpack'")
        constraints = t.get("constraints", {})
        if not isinstance(constraints, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in constraints.items()):
            raise BadAppConfig(f"paas.toml {where}.constraints must be a table of strings")
        out[name] = Resources(cpu=_number(t, "cpu", 0.1, low=0.01, high=64, where=where),
                              memory_mb=int(_number(t, "memory", 128, low=8, high=65536,
                                                    where=where)),
                              strategy=strategy, constraints=dict(constraints))
    for name in table:
        if name not in processes:
            raise BadAppConfig(f"paas.toml [process.{name}] names no process type of the "
                               "Procfile")
    return out


def _build_table(toml_text: str | None) -> dict[str, Any]:
    """paas.toml's `[build]` table, empty when there is none."""
    try:
        doc = tomllib.loads(toml_text) if toml_text else {}
    except tomllib.TOMLDecodeError as exc:
        raise BadAppConfig(f"paas.toml is not valid TOML: {exc}") from None
    table = doc.get("build", {})
    if not isinstance(table, dict):
        raise BadAppConfig("paas.toml [build] must be a table")
    return table


def build_stack(toml_text: str | None) -> str | None:
    """paas.toml's `[build] stack`: the stack to build with instead of detecting one."""
    table = _build_table(toml_text)
    stack = table.get("stack")
    if stack is not None and (not isinstance(stack, str) or not _STACK_RE.fullmatch(stack)):
        raise BadAppConfig("paas.toml build.stack must be a stack's name, like \"python\"")
    return stack


def build_timeout(toml_text: str | None) -> float:
    """paas.toml's `[build] timeout`: the seconds a release build may run before it is stopped."""
    table = _build_table(toml_text)
    value = table.get("timeout", DEFAULT_BUILD_TIMEOUT_S)
    low, high = BUILD_TIMEOUT_RANGE_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadAppConfig(f"paas.toml build.timeout must be a number of seconds from {low} to "
                           f"{high}, like 600")
    return float(value)


def parse_procfile(text: str) -> dict[str, str]:
    """`name: command` lines; blank lines and `#` comments are skipped."""
    processes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not command.strip():
            raise BadAppConfig(f"Procfile line {number} is not 'name: command'")
        try:
            validate_process_name(name.strip())
        except InvalidName as exc:
            raise BadAppConfig(f"Procfile line {number}: {exc}") from None
        processes[name.strip()] = command.strip()
    if not processes:
        raise BadAppConfig("the Procfile names no process type")
    return processes


def _number(table: dict[str, Any], key: str, default: float, *, low: float, high: float,
            where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadAppConfig(f"paas.toml {where}.{key} must be a number from {low} to {high}")
    return float(value)


def _bool(table: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise BadAppConfig(f"paas.toml {where}.{key} must be true or false")
    return value


def parse_app_config(*, procfile: str | None, toml_text: str | None) -> AppConfig:
    """Validate and combine the Procfile and paas.toml texts (either may be missing)."""
    processes: dict[str, str | None] = dict(parse_procfile(procfile)) if procfile else {"web": None}
    try:
        doc = tomllib.loads(toml_text) if toml_text else {}
    except tomllib.TOMLDecodeError as exc:
        raise BadAppConfig(f"paas.toml is not valid TOML: {exc}") from None
    for section in ("health", "test", "deploy", "build", "metrics"):
        if not isinstance(doc.get(section, {}), dict):
            raise BadAppConfig(f"paas.toml [{section}] must be a table")
    h, t, d = doc.get("health", {}), doc.get("test", {}), doc.get("deploy", {})
    path = h.get("path")
    if path is not None and (not isinstance(path, str) or not _PATH_RE.fullmatch(path)
                             or len(path) > 200):
        raise BadAppConfig("paas.toml health.path must be an absolute URL path like /health")
    metrics_path = doc.get("metrics", {}).get("path")
    if metrics_path is not None and (not isinstance(metrics_path, str) or len(metrics_path) > 200
                                     or not _PATH_RE.fullmatch(metrics_path)):
        raise BadAppConfig("paas.toml metrics.path must be an absolute URL path like /metrics")
    command = t.get("command")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise BadAppConfig("paas.toml test.command must be a non-empty string")
    health = Health(path=path,
                    interval_s=_number(h, "interval", 1, low=0.2, high=60, where="health"),
                    timeout_s=_number(h, "timeout", 1, low=0.1, high=60, where="health"))
    policy = Policy(
        max_parallel=(int(_number(d, "max_parallel", 1, low=1, high=100, where="deploy"))
                      if "max_parallel" in d else None),
        min_healthy_time=_number(d, "min_healthy_time", 1, low=0, high=600, where="deploy"),
        healthy_deadline=_number(d, "healthy_deadline", 60, low=1, high=3600, where="deploy"),
        auto_promote=_bool(d, "auto_promote", False, "deploy"),
        auto_revert=_bool(d, "auto_revert", False, "deploy"),
        stop_timeout=_number(d, "stop_timeout", 10, low=0, high=600, where="deploy"),
        drain_timeout=_number(d, "drain_timeout", 30, low=0, high=3600, where="deploy"))
    return AppConfig(processes=processes, health=health, policy=policy,
                     test_command=command.strip() if command else None,
                     test_timeout=_number(t, "timeout", 120, low=1, high=3600, where="test"),
                     resources=_resources(doc, processes), stack=build_stack(toml_text),
                     metrics_path=metrics_path,
                     build_timeout=build_timeout(toml_text))
