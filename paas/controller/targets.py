"""Prometheus' targets, read from Consul: the answer of the controller's
`GET /sd/prometheus/{kind}`, in the format of Prometheus' `http_sd_configs`.

Debian's Prometheus is built without `consul_sd_configs` (its changelog: "Disable Consul SD
until its Debian package is back in shape"), so the controller stands in for it: each answer
is read from Consul's catalog when Prometheus asks (every few seconds), never from a list of
its own. Three kinds, one scrape job each (paas/templates/prometheus/prometheus.yml.j2):

- `apps`: every app instance whose release says `[metrics] path` (the agent put it in the
  service's meta), control instances too, labelled app, release, process, instance, node, role;
- `paas`: the platform's daemons (`paas.selfregister`), labelled component and node;
- `haproxy`: the router's HAProxy exporter;
- `latency`: the same HAProxy's response-time histograms per app (`/latency`,
  paas/templates/latency.lua).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paas.consul import HealthEntry
from paas.selfregister import PREFIX

KINDS = ("apps", "paas", "haproxy", "latency")
DAEMONS = tuple(f"{PREFIX}{c}" for c in ("controller", "agent", "router"))
EXPORTER = f"{PREFIX}haproxy"
LATENCY_PATH = "/latency"
_INSTANCE_LABELS = {"app": "paas_app", "release": "paas_release", "process": "paas_process",
                    "instance": "paas_instance", "node": "paas_node", "role": "paas_role"}


@dataclass(frozen=True)
class TargetGroup:
    target: str  # address:port
    labels: Mapping[str, str]

    def as_json(self) -> dict[str, object]:
        return {"targets": [self.target], "labels": dict(self.labels)}


def services_of(kind: str, catalog: Sequence[str]) -> list[str]:
    """Which of the catalog's services hold the targets of `kind`."""
    if kind == "apps":
        return [s for s in catalog if not s.startswith(PREFIX) and s != "consul"]
    if kind == "paas":
        return [s for s in catalog if s in DAEMONS]
    return [s for s in catalog if s == EXPORTER]  # haproxy, latency


def target_groups(kind: str, entries: Mapping[str, Sequence[HealthEntry]]) -> list[TargetGroup]:
    """The targets of `kind` among the services' entries (service name -> its instances),
    sorted by target."""
    found: list[TargetGroup] = []
    for name, rows in entries.items():
        for e in rows:
            meta, svc = e.service.meta, e.service
            path = LATENCY_PATH if kind == "latency" else meta.get("metrics_path", "")
            if not path.startswith("/") or not svc.address or not svc.port:
                continue
            labels = {"__metrics_path__": path}
            if kind == "apps":
                if not meta.get("paas_app"):
                    continue
                labels |= {label: meta[key] for label, key in _INSTANCE_LABELS.items()
                           if meta.get(key)}
            elif kind == "paas":
                labels |= {"component": meta.get("paas_component", name.removeprefix(PREFIX)),
                           "node": meta.get("paas_daemon_node", "")}
            found.append(TargetGroup(f"{svc.address}:{svc.port}", labels))
    return sorted(found, key=lambda g: g.target)
