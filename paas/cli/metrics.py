"""The `metrics` verb: an app's golden signals and its instances' usage over a window
(`GET /v1/apps/{app}/metrics`, which asks the cluster's Prometheus)."""

from __future__ import annotations

import argparse
from typing import Any

from paas.cli.common import EXIT_OK, add_app_argument, client, emit, remote_flags, table, the_app


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _mb(size: float | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


def text(m: dict[str, Any], since: str) -> str:
    total = m["total"]
    lines = [f"{m['app']} over the last {since}: {total['requests_per_s']:.2f} req/s, "
             f"5xx {_pct(total['error_ratio'])}, response p50 {_ms(total['p50_response_s'])}, "
             f"p95 {_ms(total['p95_response_s'])}, average {_ms(total['avg_response_s'])}", ""]
    lines.append(table([{"release": f"v{r}", "req/s": f"{s['requests_per_s']:.2f}",
                         "5xx": _pct(s["error_ratio"]), "p50": _ms(s["p50_response_s"]),
                         "p95": _ms(s["p95_response_s"]), "average": _ms(s["avg_response_s"])}
                        for r, s in m["releases"].items()],
                       ["release", "req/s", "5xx", "p50", "p95", "average"]))
    lines.append("")
    lines.append(table([{"instance": i["instance"], "release": f"v{i['release']}",
                         "cpu": "-" if i["cpu_cores"] is None else f"{i['cpu_cores']:.3f}",
                         "memory": _mb(i["memory_bytes"])} for i in m["instances"]],
                       ["instance", "release", "cpu", "memory"]))
    return "\n".join(lines)


def cmd_metrics(args: argparse.Namespace) -> int:
    app = the_app(args)
    found = client(args).get(f"/v1/apps/{app}/metrics?since={args.since}")["metrics"]
    emit(args, found, lambda: text(found, args.since))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("metrics", parents=[remote_flags()],
                       help="an app's requests per second, 5xx ratio and response time, in "
                            "total and per release, and each instance's CPU and memory")
    add_app_argument(p)
    p.add_argument("--since", default="15m", metavar="DURATION",
                   help="the window: 90s, 15m, 2h (1 minute to 7 days; default 15m)")
    p.set_defaults(func=cmd_metrics)
