"""agent.usage: an instance's CPU and memory from a `docker stats` answer, as metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from agent.usage import InstanceUsage, UsageCollector, usage_from_stats

LABELS = {"paas.app": "go", "paas.release": "3", "paas.process": "web",
          "paas.instance": "go-v3-web-abcdef", "paas.node": "node-1", "paas.role": "live",
          "paas.localcluster": "c1"}
CGROUP_V2 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
             "memory_stats": {"usage": 30_000_000, "limit": 134_217_728,
                              "stats": {"inactive_file": 5_000_000}}}
CGROUP_V1 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}},
             "memory_stats": {"usage": 20_000_000, "limit": 67_108_864,
                              "stats": {"total_inactive_file": 4_000_000}}}


def test_usage_is_what_docker_stats_shows_on_either_cgroup_version() -> None:
    v2 = usage_from_stats(LABELS, CGROUP_V2)
    assert v2 == InstanceUsage(labels=("go", "3", "web", "go-v3-web-abcdef", "node-1", "live"),
                               cpu_seconds=2.5, memory_bytes=25_000_000,
                               memory_limit_bytes=134_217_728)
    v1 = usage_from_stats(LABELS, CGROUP_V1)
    assert v1 is not None and (v1.cpu_seconds, v1.memory_bytes) == (1.0, 16_000_000)


def test_a_container_that_just_stopped_has_no_usage() -> None:
    assert usage_from_stats(LABELS, {"cpu_stats": {}, "memory_stats": {}}) is None


async def test_the_collector_serves_its_last_snapshot_with_the_instances_labels() -> None:
    async def read() -> list[InstanceUsage]:
        return [usage_from_stats(LABELS, CGROUP_V2)]  # type: ignore[list-item]

    registry = CollectorRegistry()
    collector = UsageCollector(read)
    registry.register(collector)
    assert b"paas_instance_cpu_seconds_total{" not in generate_latest(registry)
    await collector.refresh()
    text = generate_latest(registry).decode()
    assert ('paas_instance_cpu_seconds_total{app="go",instance="go-v3-web-abcdef",'
            'node="node-1",process="web",release="3",role="live"} 2.5') in text
    assert 'paas_instance_memory_bytes{app="go",' in text
