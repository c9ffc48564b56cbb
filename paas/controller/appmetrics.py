"""`GET /v1/apps/{app}/metrics`: an app's golden signals and its instances' usage over a
window, asked of the cluster's Prometheus (its HTTP API at `--prometheus-url`).

In total and per release: requests per second and the 5xx ratio, from HAProxy's exporter;
p50, p95 and the average of the response time, from the histograms HAProxy keeps per app and
server slot (paas/templates/latency.lua: its exporter has no histogram; in total, the average
is the exporter's own). Per release, the per-slot series are joined to the router's
`paas_router_server_info` (which instance address each server slot routes to) and the store's
instance addresses, and a release's buckets are summed before its quantiles are taken (as
Prometheus' histogram_quantile does); the figures of a slot that changed instance during the
window go to its current one. Per instance: CPU (cores, averaged over the window) and memory,
from the agents.
Without Prometheus (not configured, or not answering) the answer is one sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from paas.errors import BadRequest, Unavailable
from paas.names import validate_app_name

_SINCE_RE = re.compile(r"^([1-9][0-9]{0,4})([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
SINCE_RANGE_S = (60, 7 * 24 * 3600)


def parse_since(text: str) -> int:
    """`15m` -> 900; BadRequest for anything else or out of 1 minute to 7 days."""
    m = _SINCE_RE.fullmatch(text)
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)] if m else 0
    if not SINCE_RANGE_S[0] <= seconds <= SINCE_RANGE_S[1]:
        raise BadRequest("since must be a duration such as 90s, 15m or 2h, from 1 minute to "
                         "7 days")
    return seconds


@dataclass
class Signals:
    requests_per_s: float = 0.0
    error_ratio: float | None = None  # 5xx of all; None without requests
    avg_response_s: float | None = None
    p50_response_s: float | None = None  # from HAProxy's latency.lua buckets
    p95_response_s: float | None = None


@dataclass
class InstanceUsage:
    instance: str
    release: str
    cpu_cores: float | None = None
    memory_bytes: float | None = None


@dataclass
class AppMetrics:
    app: str
    since_s: int
    total: Signals
    releases: dict[str, Signals] = field(default_factory=dict)
    instances: list[InstanceUsage] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


Vector = list[tuple[Mapping[str, str], float]]


class Prometheus:
    """Queries on Prometheus' HTTP API."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.session = session

    async def _ask(self, api: str, params: dict[str, str]) -> Any:
        """The `data` of a successful answer of `/api/v1/<api>`; Unavailable otherwise."""
        if not self.url:
            raise Unavailable("this cluster runs no Prometheus (the controller's "
                              "--prometheus-url is not set)")
        try:
            async with self.session.get(f"{self.url}/api/v1/{api}", params=params,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"Prometheus at {self.url} did not answer "
                              f"({type(exc).__name__})") from None
        if body.get("status") != "success":
            raise Unavailable(f"Prometheus refused a query: {body.get('error', body)}")
        return body["data"]

    async def query(self, promql: str) -> Vector:
        data = await self._ask("query", {"query": promql})
        return [(row["metric"], float(row["value"][1])) for row in data["result"]]

    async def query_range(self, promql: str, *, since_s: int, step_s: int,
                          now: float) -> list[list[float]]:
        """`[[unix time, value], ...]` of a one-series query over the last `since_s`."""
        result = (await self._ask("query_range", {
            "query": promql, "start": f"{now - since_s:.0f}", "end": f"{now:.0f}",
            "step": f"{step_s}s"}))["result"]
        return [[float(t), float(v)] for t, v in result[0]["values"]] if result else []

    async def firing(self) -> dict[str, list[str]] | None:
        """The alerts firing now, by app (`{app: [alertname, ...]}`); None when Prometheus is
        not configured or does not answer within a second (a listing must not wait on it)."""
        if not self.url:
            return None
        try:
            async with self.session.get(f"{self.url}/api/v1/alerts",
                                        timeout=aiohttp.ClientTimeout(total=1)) as resp:
                body = await resp.json(content_type=None)
            alerts = body["data"]["alerts"]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            return None
        found: dict[str, list[str]] = {}
        for alert in alerts:
            labels = alert.get("labels") or {}
            if alert.get("state") == "firing" and labels.get("app"):
                names = found.setdefault(labels["app"], [])
                if labels.get("alertname") and labels["alertname"] not in names:
                    names.append(labels["alertname"])
        return found


def _ratio(errors: float, total: float) -> float | None:
    return errors / total if total > 0 else None


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram given as cumulative counts (or rates) by upper bound
    (`math.inf` included), interpolated linearly inside its bucket: Prometheus'
    histogram_quantile, for buckets summed here. None without observations; the highest
    finite bound when the quantile falls in the +Inf bucket."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    below_bound, below_count = 0.0, 0.0
    for bound in bounds[:-1]:
        count = buckets[bound]
        if count >= rank and count > below_count:
            return below_bound + (bound - below_bound) * (rank - below_count) / (
                count - below_count)
        below_bound, below_count = bound, count
    return bounds[-2] if len(bounds) > 1 else None


async def app_metrics(prom: Prometheus, app: str, since_s: int,
                      addresses: Mapping[str, tuple[str, str]]) -> AppMetrics:
    """The app's figures over the last `since_s` seconds; `addresses` maps each instance's
    `address:port` to its (instance id, release)."""
    a = validate_app_name(app)  # a DNS label: safe inside the queries
    w = f"[{since_s}s]"
    responses = f'haproxy_backend_http_responses_total{{app="{a}"}}'
    total_rps = sum(v for _, v in await prom.query(f"sum(rate({responses}{w}))"))
    errors = sum(v for _, v in await prom.query(
        f'sum(rate(haproxy_backend_http_responses_total{{app="{a}",code="5xx"}}{w}))'))
    avg = await prom.query(
        f'avg_over_time(haproxy_backend_response_time_average_seconds{{app="{a}"}}{w})')
    quantiles = []
    for q in (0.5, 0.95):
        found = await prom.query(
            f"histogram_quantile({q}, sum by (le) "
            f'(rate(paas_haproxy_response_seconds_bucket{{app="{a}"}}{w})))')
        quantiles.append(found[0][1] if found and not math.isnan(found[0][1]) else None)
    result = AppMetrics(app=app, since_s=since_s, total=Signals(
        requests_per_s=total_rps, error_ratio=_ratio(errors, total_rps),
        avg_response_s=avg[0][1] if avg else None, p50_response_s=quantiles[0],
        p95_response_s=quantiles[1]))

    per_slot = ('sum by (address) (rate(haproxy_server_http_responses_total{{app="{a}"{code}}}'
                '{w}) * on (app, server) group_left (address) '
                'paas_router_server_info{{app="{a}"}})')
    by_release: dict[str, list[float]] = {}
    for code, slot in (("", 0), (',code="5xx"', 1)):
        for labels, value in await prom.query(per_slot.format(a=a, code=code, w=w)):
            found = addresses.get(labels.get("address", ""))
            if found:
                by_release.setdefault(found[1], [0.0, 0.0])[slot] += value
    result.releases = {release: Signals(requests_per_s=rps, error_ratio=_ratio(err, rps))
                       for release, (rps, err) in sorted(by_release.items())}
    await _release_latency(prom, a, w, addresses, result.releases)
    result.releases = dict(sorted(result.releases.items()))

    usage: dict[str, InstanceUsage] = {}
    for promql, attr in ((f'rate(paas_instance_cpu_seconds_total{{app="{a}"}}{w})',
                          "cpu_cores"),
                         (f'paas_instance_memory_bytes{{app="{a}"}}', "memory_bytes")):
        for labels, value in await prom.query(promql):
            iid = labels.get("instance", "")
            row = usage.setdefault(iid, InstanceUsage(instance=iid,
                                                      release=labels.get("release", "")))
            setattr(row, attr, value)
    result.instances = sorted(usage.values(), key=lambda u: u.instance)
    return result


async def _release_latency(prom: Prometheus, a: str, w: str,
                           addresses: Mapping[str, tuple[str, str]],
                           releases: dict[str, Signals]) -> None:
    """Fill each release's p50, p95 and average response time from the per-slot histograms."""
    join = ("* on (app, server) group_left (address) "
            f'paas_router_server_info{{app="{a}"}}')
    series = "paas_haproxy_response_seconds"
    buckets: dict[str, dict[float, float]] = {}
    for labels, value in await prom.query(
            f'sum by (address, le) (rate({series}_bucket{{app="{a}"}}{w}) {join})'):
        found = addresses.get(labels.get("address", ""))
        if found and not math.isnan(value):
            le = float(labels.get("le", "nan"))
            per = buckets.setdefault(found[1], {})
            per[le] = per.get(le, 0.0) + value
    sums: dict[str, list[float]] = {}
    for slot, name in ((0, "sum"), (1, "count")):
        for labels, value in await prom.query(
                f'sum by (address) (rate({series}_{name}{{app="{a}"}}{w}) {join})'):
            found = addresses.get(labels.get("address", ""))
            if found and not math.isnan(value):
                sums.setdefault(found[1], [0.0, 0.0])[slot] += value
    for release, per in buckets.items():
        signals = releases.setdefault(release, Signals())
        signals.p50_response_s = bucket_quantile(0.5, per)
        signals.p95_response_s = bucket_quantile(0.95, per)
    for release, (total_s, count) in sums.items():
        if count > 0:
            releases.setdefault(release, Signals()).avg_response_s = total_s / count


async def app_series(prom: Prometheus, app: str, since_s: int, now: float,
                     deploys: list[float]) -> dict[str, Any]:
    """The dashboard's charts: requests/s, 5xx/s and the average response time over the last
    `since_s`, at about 60 points, with the times deployments started (`deploys`)."""
    a = validate_app_name(app)
    step = max(5, since_s // 60)
    w = f"[{max(step * 2, 30)}s]"
    responses = f'haproxy_backend_http_responses_total{{app="{a}"'
    return {
        "start": now - since_s, "end": now, "step_s": step,
        "requests_per_s": await prom.query_range(f"sum(rate({responses}}}{w}))",
                                                 since_s=since_s, step_s=step, now=now),
        "errors_per_s": await prom.query_range(f'sum(rate({responses},code="5xx"}}{w}))',
                                               since_s=since_s, step_s=step, now=now),
        "avg_response_s": await prom.query_range(
            f'max(haproxy_backend_response_time_average_seconds{{app="{a}"}})',
            since_s=since_s, step_s=step, now=now),
        "deploys": [t for t in deploys if t >= now - since_s],
    }
