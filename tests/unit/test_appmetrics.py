"""paas.controller.appmetrics: an app's figures from Prometheus' answers (a fake Prometheus
answering the queries the module sends; the real one runs in tests/e2e/test_monitoring.py)."""

from __future__ import annotations

import pytest

import math

from paas.controller.appmetrics import Vector, app_metrics, bucket_quantile, parse_since
from paas.errors import BadRequest


class FakePrometheus:
    def __init__(self, answers: dict[str, Vector]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def query(self, promql: str) -> Vector:
        self.asked.append(promql)
        for key, vector in self.answers.items():
            if key in promql:
                return vector
        return []


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("90s", 90), ("2h", 7200),
                                           ("168h", 604800)])
def test_since_is_a_short_duration(text: str, seconds: int) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "0m", "30s", "8d", "169h", "1.5h", "15 m", "-5m"])
def test_since_out_of_range_or_malformed_is_one_sentence(text: str) -> None:
    with pytest.raises(BadRequest, match="since must be a duration such as 90s, 15m or 2h"):
        parse_since(text)


async def test_figures_in_total_per_release_and_per_instance() -> None:
    prom = FakePrometheus({
        'sum(rate(haproxy_backend_http_responses_total{app="go"}[900s]))': [({}, 10.0)],
        'code="5xx"}[900s]))': [({}, 0.5)],  # the backend's 5xx
        "avg_over_time": [({"app": "go"}, 0.004)],
        "histogram_quantile(0.5,": [({}, 0.003)],
        "histogram_quantile(0.95,": [({}, float("nan"))],  # no request in the window
        'haproxy_server_http_responses_total{app="go",code="5xx"}': [
            ({"address": "127.0.0.2:32768"}, 0.5)],
        'haproxy_server_http_responses_total{app="go"}': [
            ({"address": "127.0.0.2:32768"}, 6.0), ({"address": "127.0.0.3:32769"}, 4.0),
            ({"address": "127.0.0.9:1"}, 1.0)],  # an address of no instance of the app
        "sum by (address, le) (rate(paas_haproxy_response_seconds_bucket": [
            *[({"address": "127.0.0.2:32768", "le": le}, v)
              for le, v in (("0.01", 4.0), ("0.1", 6.0), ("+Inf", 6.0))],
            ({"address": "127.0.0.9:1", "le": "+Inf"}, 1.0)],  # no instance of the app
        "rate(paas_haproxy_response_seconds_sum": [({"address": "127.0.0.2:32768"}, 0.12)],
        "rate(paas_haproxy_response_seconds_count": [({"address": "127.0.0.2:32768"}, 6.0)],
        "rate(paas_instance_cpu_seconds_total": [
            ({"instance": "go-v3-web-aaaaaa", "release": "3"}, 0.02)],
        "paas_instance_memory_bytes": [
            ({"instance": "go-v3-web-aaaaaa", "release": "3"}, 12e6),
            ({"instance": "go-v4-web-bbbbbb", "release": "4"}, 11e6)],
    })
    m = (await app_metrics(prom, "go", 900, {  # type: ignore[arg-type]
        "127.0.0.2:32768": ("go-v3-web-aaaaaa", "3"),
        "127.0.0.3:32769": ("go-v4-web-bbbbbb", "4")})).as_json()
    assert m["total"] == {"requests_per_s": 10.0, "error_ratio": 0.05, "avg_response_s": 0.004,
                          "p50_response_s": 0.003, "p95_response_s": None}
    none = {"avg_response_s": None, "p50_response_s": None, "p95_response_s": None}
    # Release 3's buckets: 4 of 6 requests within 10 ms, all 6 within 100 ms.
    assert m["releases"] == {
        "3": {"requests_per_s": 6.0, "error_ratio": 0.5 / 6, "avg_response_s": 0.02,
              "p50_response_s": 0.0075,
              "p95_response_s": pytest.approx(0.01 + 0.09 * (5.7 - 4) / 2)},
        "4": {"requests_per_s": 4.0, "error_ratio": 0.0, **none}}
    assert m["instances"] == [
        {"instance": "go-v3-web-aaaaaa", "release": "3", "cpu_cores": 0.02,
         "memory_bytes": 12e6},
        {"instance": "go-v4-web-bbbbbb", "release": "4", "cpu_cores": None,
         "memory_bytes": 11e6}]
    # The per-slot figures are joined to the instance each slot routes to now.
    assert any("group_left (address) paas_router_server_info" in q for q in prom.asked)


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, {0.1: 5, 0.5: 10, math.inf: 10}, 0.1),
    (0.75, {0.1: 5, 0.5: 10, math.inf: 10}, 0.3),  # halfway through the 0.1-0.5 bucket
    (0.5, {0.1: 0, 0.5: 10, math.inf: 10}, 0.3),  # empty first bucket: starts at 0.1
    (0.95, {0.1: 5, math.inf: 10}, 0.1),  # in +Inf: the highest finite bound
    (0.5, {math.inf: 10}, None),  # only +Inf: nothing to tell
    (0.5, {0.1: 0, math.inf: 0}, None),  # no request
    (0.5, {0.1: 3}, None),  # no +Inf bucket
    (0.5, {}, None),
])
def test_quantiles_of_summed_buckets_as_prometheus_takes_them(
        q: float, buckets: dict[float, float], expected: float | None) -> None:
    assert bucket_quantile(q, buckets) == (pytest.approx(expected) if expected else None)


async def test_an_app_without_traffic_has_no_ratio() -> None:
    m = await app_metrics(FakePrometheus({}), "go", 60, {})  # type: ignore[arg-type]
    assert (m.total.requests_per_s, m.total.error_ratio, m.releases, m.instances) == \
        (0.0, None, {}, [])


def test_paas_apps_shows_firing_alerts_only_when_prometheus_said() -> None:
    from paas.cli.apps import table_apps

    app = {"name": "go", "latest_release": 3, "stable_release": 3, "urls": ["http://go/"]}
    assert "ALERTS" not in table_apps([{**app, "alerts": None}])
    shown = table_apps([{**app, "alerts": ["AppErrorRatioHigh"]},
                        {**app, "name": "ok", "alerts": []}])
    assert shown.splitlines()[0].endswith("ALERTS")
    assert shown.splitlines()[1].endswith("AppErrorRatioHigh")
    assert shown.splitlines()[2].endswith("-")
