"""Issue 11, end to end: the cluster's Prometheus finds its targets through Consul (the
controller reads the catalog for it: Debian's Prometheus has no consul_sd_configs) and scrapes
the Go example's own counter, `fetch_errors_total{upstream}`, labelled with its app and
release; the platform's daemons and HAProxy's exporter, whose per-app response counts are the
golden signals of every app; each instance's CPU and memory from its agent; the API behind
`paas metrics`; a firing alert in the apps' listing. A new instance becomes a target, and a
stopped one leaves, within 15 s (printed)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.e2e.conftest import REPO, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = "gomet"
EMPTY = "gonone"
TARGET_WITHIN_S = 15.0


def prometheus(e2e, path: str, **params: str) -> Any:
    url = f"{e2e.cluster.prometheus_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the test's cluster
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def query(e2e, promql: str) -> list[dict[str, Any]]:
    return prometheus(e2e, "/api/v1/query", query=promql)["result"]


def targets(e2e, job: str) -> list[dict[str, Any]]:
    return [t for t in prometheus(e2e, "/api/v1/targets", state="active")["activeTargets"]
            if t["labels"].get("job") == job]


def through_router(e2e, path: str) -> int:
    req = urllib.request.Request(e2e.cluster.router_url + path,
                                 headers={"Host": f"{APP}.{e2e.cluster.domain}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def instance_targets(e2e) -> set[str]:
    return {t["labels"]["instance"] for t in targets(e2e, "apps")
            if t["labels"].get("app") == APP}


def scaled_to_targets(e2e, web: int) -> float:
    """Scale the app to `web` instances; the seconds from the ask until Prometheus has as many
    targets of it."""
    t0 = time.monotonic()
    scaled = e2e.api.post(f"/v1/apps/{APP}/scale", {"replicas": {"web": web}})["deployment"]
    assert e2e.finish(APP, scaled, 120)["status"] == "succeeded"
    wait_until(lambda: len(instance_targets(e2e)) == web, timeout=60, interval=0.5,
               what=f"{web} instance(s) as targets")
    return time.monotonic() - t0


def test_prometheus_scrapes_the_go_examples_counter_and_every_daemon(e2e) -> None:
    assert e2e.cluster.prometheus_url
    e2e.api.post("/v1/apps", {"name": APP})
    # An app routed with no instance: its "no healthy instance" alert fires after 30 s,
    # while the rest of the test runs.
    e2e.api.post("/v1/apps", {"name": EMPTY})
    try:
        release = e2e.build(APP, REPO / "examples" / "go-service")
        assert release["metrics_path"] == "/metrics"
        dep = e2e.deploy(APP, release["version"], 1, timeout=180)
        assert dep["status"] == "succeeded", dep
        [live] = [i for i in e2e.api.get(f"/v1/apps/{APP}/instances")["instances"]
                  if i["desired"] == "running"]
        wait_until(lambda: e2e.served(APP) == 1, what=f"{APP} routed")
        # `paas ps` and the dashboard count healthy instances from Consul's checks.
        assert [i["health"] for i in e2e.api.get(f"/v1/apps/{APP}/instances")["instances"]
                if i["id"] == live["id"]] == ["passing"]

        # The app's own counter, with the labels the platform adds.
        assert [through_router(e2e, "/fetch?upstream=db") for _ in range(3)] == [502] * 3
        found: list[dict[str, Any]] = []

        def counted() -> bool:
            found[:] = query(e2e, f'fetch_errors_total{{app="{APP}",upstream="db"}}')
            return bool(found) and float(found[0]["value"][1]) >= 3
        wait_until(counted, timeout=60, interval=1, what="fetch_errors_total in Prometheus")
        labels = found[0]["metric"]
        assert (labels["release"], labels["instance"], labels["process"], labels["role"],
                labels["node"], labels["job"]) == (str(release["version"]), live["id"], "web",
                                                   "live", live["node"], "apps"), labels

        # Golden signals without touching the app: HAProxy's count of its 5xx answers.
        def golden() -> bool:
            rows = query(e2e, f'haproxy_backend_http_responses_total{{app="{APP}",code="5xx"}}')
            return bool(rows) and float(rows[0]["value"][1]) >= 3
        wait_until(golden, timeout=60, interval=1, what="HAProxy's 5xx count of the app")

        # The agent's figures of the instance, labelled like it.
        memory = f'paas_instance_memory_bytes{{app="{APP}",instance="{live["id"]}"}}'
        wait_until(lambda: query(e2e, memory), timeout=60, interval=1,
                   what="the instance's memory from its agent")
        assert query(e2e, memory)[0]["metric"]["release"] == str(release["version"])

        # What `paas metrics` prints: the API asks Prometheus. Traffic goes on while it is
        # asked (a 2-minute window): 5xx from /fetch, 200 from /.
        def figures() -> dict[str, Any]:
            return e2e.api.get(f"/v1/apps/{APP}/metrics?since=2m")["metrics"]

        def served_and_measured() -> bool:
            assert [through_router(e2e, "/fetch?upstream=db") for _ in range(2)] == [502] * 2
            for _ in range(5):
                assert through_router(e2e, "/") == 200
            m = figures()
            mine = m["releases"].get(str(release["version"]), {})
            return (m["total"]["requests_per_s"] > 0 and (m["total"]["error_ratio"] or 0) > 0
                    and (mine.get("error_ratio") or 0) > 0
                    and m["total"]["p50_response_s"] is not None
                    and m["total"]["p95_response_s"] is not None
                    and mine.get("p95_response_s") is not None)
        wait_until(served_and_measured, timeout=90, interval=1,
                   what="the app's figures, its release's and their p50/p95 in the API")
        m = figures()
        assert 0 < m["total"]["p50_response_s"] <= m["total"]["p95_response_s"] < 1, m
        # One release serves: its quantiles, from its slots' buckets summed here, are the
        # app's, which Prometheus' histogram_quantile computed.
        mine = m["releases"][str(release["version"])]
        for q in ("p50_response_s", "p95_response_s"):
            assert mine[q] == pytest.approx(m["total"][q], rel=0.2), m
        assert 0 < mine["avg_response_s"] < 1, m
        assert [(i["instance"], i["release"]) for i in m["instances"]] == \
            [(live["id"], str(release["version"]))] and m["instances"][0]["memory_bytes"] > 0

        # Every daemon is a target, and up.
        def daemons() -> dict[str, int]:
            seen: dict[str, int] = {}
            for t in targets(e2e, "paas") + targets(e2e, "haproxy") + targets(e2e, "latency"):
                if t["health"] == "up":
                    name = t["labels"].get("component") or t["labels"]["job"]
                    seen[name] = seen.get(name, 0) + 1
            return seen
        wait_until(lambda: daemons() == {"controller": 1, "agent": 2, "router": 1,
                                         "haproxy": 1, "latency": 1}, timeout=60, interval=1,
                   what="controller, 2 agents, router, HAProxy and its histograms scraped")

        # A new instance becomes a target, and a stopped one leaves, within 15 s.
        before = instance_targets(e2e)
        appeared = scaled_to_targets(e2e, 2)
        [new] = instance_targets(e2e) - before
        left = scaled_to_targets(e2e, 1)
        print(f"a new instance ({new}) became a scrape target {appeared:.1f}s after the scale "
              f"to 2 was asked; a stopped one left {left:.1f}s after the scale to 1")
        assert appeared <= TARGET_WITHIN_S and left <= TARGET_WITHIN_S

        # Firing alerts show in the apps' listing (`paas apps`).
        def alerts() -> dict[str, list[str]]:
            return {a["name"]: a["alerts"] for a in e2e.api.get("/v1/apps")["apps"]}
        wait_until(lambda: alerts()[EMPTY] == ["AppNoHealthyInstance"], timeout=90,
                   interval=1, what=f"{EMPTY}'s alert to fire")
        assert "AppNoHealthyInstance" not in alerts()[APP]
    finally:
        e2e.api.delete(f"/v1/apps/{APP}")
        e2e.api.delete(f"/v1/apps/{EMPTY}")
