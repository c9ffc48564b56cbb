"""Each instance's CPU and memory, from Docker, as Prometheus metrics on the agent's `/metrics`.

Read when Prometheus scrapes (one `docker stats` one-shot call per running instance container,
no sampling loop), and exported with the labels of the instance's target: app, release,
process, instance, node, role. Label values are bounded: no request paths, no ever-growing ids
beyond the instances that run.

- `paas_instance_cpu_seconds_total` (counter): CPU time the container used;
- `paas_instance_memory_bytes` (gauge): memory in use, without the inactive page cache (as
  `docker stats` shows it);
- `paas_instance_memory_limit_bytes` (gauge): its limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.assignments import (LABEL_APP, LABEL_INSTANCE, LABEL_NODE, LABEL_PROCESS,
                               LABEL_RELEASE, LABEL_ROLE)

LABELS = ("app", "release", "process", "instance", "node", "role")
_FROM_CONTAINER = (LABEL_APP, LABEL_RELEASE, LABEL_PROCESS, LABEL_INSTANCE, LABEL_NODE,
                   LABEL_ROLE)


@dataclass(frozen=True)
class InstanceUsage:
    labels: tuple[str, ...]  # in the order of LABELS
    cpu_seconds: float
    memory_bytes: float
    memory_limit_bytes: float


def usage_from_stats(container_labels: Mapping[str, str],
                     stats: Mapping[str, Any]) -> InstanceUsage | None:
    """One instance's usage from its container's labels and a `docker stats` answer (cgroup v1
    or v2); None when the answer has no CPU figure (the container just stopped)."""
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if not isinstance(cpu, (int, float)):
        return None
    memory = stats.get("memory_stats") or {}
    details = memory.get("stats") or {}
    # What `docker stats` shows: usage less the inactive page cache (v2, then v1 names).
    cache = details.get("inactive_file", details.get("total_inactive_file", 0)) or 0
    used = max(0, (memory.get("usage") or 0) - cache)
    return InstanceUsage(labels=tuple(container_labels.get(k, "") for k in _FROM_CONTAINER),
                         cpu_seconds=cpu / 1e9, memory_bytes=float(used),
                         memory_limit_bytes=float(memory.get("limit") or 0))


UsageFn = Callable[[], Awaitable[Sequence[InstanceUsage]]]


class UsageCollector(Collector):
    """Serves the last snapshot; `refresh` takes a new one (the admin's `/metrics` awaits it
    before it renders)."""

    def __init__(self, read: UsageFn) -> None:
        self._read = read
        self._last: Sequence[InstanceUsage] = ()

    async def refresh(self) -> None:
        self._last = await self._read()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cpu = CounterMetricFamily("paas_instance_cpu_seconds",
                                  "CPU time the instance's container used.", labels=LABELS)
        memory = GaugeMetricFamily("paas_instance_memory_bytes",
                                   "Memory the instance's container uses, without its "
                                   "inactive page cache.", labels=LABELS)
        limit = GaugeMetricFamily("paas_instance_memory_limit_bytes",
                                  "The instance container's memory limit.", labels=LABELS)
        for u in self._last:
            cpu.add_metric(u.labels, u.cpu_seconds)
            memory.add_metric(u.labels, u.memory_bytes)
            limit.add_metric(u.labels, u.memory_limit_bytes)
        yield from (cpu, memory, limit)
