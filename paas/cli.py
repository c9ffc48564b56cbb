"""The `paas` command: the local cluster (`up`, `down`) and the verbs that talk to the
controller (`apps`, `deploy`, `ps`, `nodes`, `releases`).

Every failure prints one sentence and a hint on stderr and exits non-zero; no traceback
reaches the user. Exit codes are listed in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from paas.client import Client, ClientError, cluster_root, resolve_target

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUILD_FAILED = 3
EXIT_DEPLOY_FAILED = 4

DEMO_APP = "hello"
DEMO_REPLICAS = 2


class CliError(Exception):
    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


# --- output -------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str("" if r.get(c) is None else r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else human())


def client(args: argparse.Namespace) -> Client:
    return Client(resolve_target(url=args.url, token=args.token))


# --- local cluster ------------------------------------------------------------------------
def local_cluster() -> Any:
    from paas.cluster import LocalCluster

    return LocalCluster(root=cluster_root())


def cmd_up(args: argparse.Namespace) -> int:
    from paas.cluster import ClusterError

    cluster = local_cluster()
    started = time.monotonic()
    try:
        cluster.up()
    except ClusterError as exc:
        raise CliError(str(exc)) from None
    (cluster.root / "cluster.json").write_text(json.dumps({
        "controller_url": cluster.controller_url, "router_url": cluster.router_url}))
    print(f"cluster up in {time.monotonic() - started:.1f}s: controller {cluster.controller_url}, "
          f"router {cluster.router_url}, {cluster.nodes} nodes")
    if args.demo:
        return demo(cluster, args)
    return EXIT_OK


def demo(cluster: Any, args: argparse.Namespace) -> int:
    """Build and deploy examples/hello with 2 replicas, unless that is already what runs."""
    from paas.buildcontext import make_build_context

    api = Client(resolve_target(url=cluster.controller_url, token=cluster.admin_token()))
    apps = {a["name"] for a in api.get("/v1/apps")["apps"]}
    if DEMO_APP not in apps:
        api.post("/v1/apps", {"name": DEMO_APP})
    context = make_build_context(directory=Path(__file__).resolve().parent.parent / "examples" / "hello")
    import hashlib

    source = "upload:sha256:" + hashlib.sha256(context).hexdigest()[:16]
    releases = api.get(f"/v1/apps/{DEMO_APP}/releases")["releases"]
    release = next((r for r in releases if r["source"] == source), None)
    if release is None:
        release = api.request("POST", f"/v1/apps/{DEMO_APP}/releases?source={source}",
                              data=context, content_type="application/gzip")["release"]
        print(f"built {release['image']}")
    instances = api.get(f"/v1/apps/{DEMO_APP}/instances")["instances"]
    serving = [i for i in instances if i["release"] == release["version"]
               and i["state"] == "running" and i["desired"] == "running"]
    if len(serving) != DEMO_REPLICAS:
        wait_deployment(api, DEMO_APP, api.post(
            f"/v1/apps/{DEMO_APP}/deployments",
            {"release": release["version"], "replicas": DEMO_REPLICAS})["deployment"])
    url = f"http://{DEMO_APP}.{cluster.domain}:{cluster.http_port}/"
    print(f"\n{DEMO_APP} v{release['version']} answers at {url}")
    print(f"  try: curl -H 'Host: {DEMO_APP}.{cluster.domain}' {cluster.router_url}/")
    print("  stop the cluster with: make down   (or: .venv/bin/paas down)")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    cluster = local_cluster()
    cluster.down()
    print("cluster stopped")
    return EXIT_OK


# --- apps ---------------------------------------------------------------------------------
def cmd_apps_list(args: argparse.Namespace) -> int:
    apps = client(args).get("/v1/apps")["apps"]
    emit(args, apps, lambda: table(
        [{**a, "release": f"v{a['latest_release']}" if a["latest_release"] else "-",
          "url": " ".join(a["urls"])} for a in apps], ["name", "release", "url"]))
    return EXIT_OK


def cmd_apps_create(args: argparse.Namespace) -> int:
    app = client(args).post("/v1/apps", {"name": args.name})["app"]
    emit(args, app, lambda: f"created {app['name']}: {' '.join(app['urls'])}")
    return EXIT_OK


def cmd_apps_delete(args: argparse.Namespace) -> int:
    client(args).delete(f"/v1/apps/{args.name}")
    emit(args, {"deleted": args.name}, lambda: f"deleted {args.name}")
    return EXIT_OK


# --- deploy -------------------------------------------------------------------------------
def wait_deployment(api: Client, app: str, dep: dict[str, Any], *, quiet: bool = False
                    ) -> dict[str, Any]:
    """Follow a deployment to its end, printing its events (one per line) on stderr."""
    started = time.monotonic()
    seen = 0
    while True:
        events = api.get(f"/v1/apps/{app}/events?deployment={dep['id']}&after={seen}")["events"]
        for e in events:
            seen = e["id"]
            if not quiet:
                print(f"  {time.monotonic() - started:5.1f}s  {e['step']:<8} {e['message']}",
                      file=sys.stderr)
        if dep["status"] != "running":
            break
        dep = api.get(f"/v1/apps/{app}/deployments/{dep['id']}?wait=0.5", timeout=30)["deployment"]
    if dep["status"] != "succeeded":
        raise CliError(f"deployment {dep['id']} failed at {dep['step']}: {dep['reason']}",
                       hint=(dep.get("log_tail") or "").strip(), code=EXIT_DEPLOY_FAILED)
    return dep


def parse_version(text: str) -> int:
    try:
        value = int(text.lower().removeprefix("v"))
    except ValueError:
        raise CliError(f"{text!r} is not a release like v3", code=EXIT_USAGE) from None
    if value < 1:
        raise CliError(f"{text!r} is not a release like v3", code=EXIT_USAGE)
    return value


def cmd_deploy(args: argparse.Namespace) -> int:
    from paas.buildcontext import make_build_context

    api = client(args)
    if args.version:
        version = parse_version(args.version)
    else:
        directory = Path(args.dir)
        if not directory.is_dir():
            raise CliError(f"{args.dir} is not a directory", code=EXIT_USAGE)
        context = make_build_context(directory=directory)
        try:
            release = api.request("POST", f"/v1/apps/{args.app}/releases", data=context,
                                  content_type="application/gzip", timeout=600)["release"]
        except ClientError as exc:
            if exc.status == 422:
                raise CliError(exc.message, hint=exc.body.get("log_tail", ""),
                               code=EXIT_BUILD_FAILED) from None
            raise
        version = release["version"]
        if not args.json:
            print(f"built {release['image']} (release v{version})", file=sys.stderr)
    body: dict[str, Any] = {"release": version}
    if args.replicas is not None:
        body["replicas"] = args.replicas
    dep = api.post(f"/v1/apps/{args.app}/deployments", body)["deployment"]
    dep = wait_deployment(api, args.app, dep, quiet=args.json)
    emit(args, dep, lambda: f"deployed {args.app} v{dep['release']}: {dep['reason']}")
    return EXIT_OK


def finish(args: argparse.Namespace, api: Client, dep: dict[str, Any], verb: str) -> int:
    if not args.no_wait:
        dep = wait_deployment(api, args.app, dep, quiet=args.json)
    emit(args, dep, lambda: f"{verb} {args.app} v{dep['release']}: deployment {dep['id']} "
                            f"{dep['status']}" + (f" ({dep['reason']})" if dep["reason"] else ""))
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    body = {"release": parse_version(args.version)} if args.version else {}
    rel = client(args).post(f"/v1/apps/{args.app}/promote", body)["release"]
    emit(args, rel, lambda: f"{args.app} v{rel['version']} is now stable")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"skip_checks": args.no_checks}
    if args.version:
        body["release"] = parse_version(args.version)
    api = client(args)
    dep = api.post(f"/v1/apps/{args.app}/rollback", body)["deployment"]
    return finish(args, api, dep, "rolled back")


def cmd_scale(args: argparse.Namespace) -> int:
    counts: dict[str, int] = {}
    for pair in args.counts:
        name, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise CliError(f"{pair!r} is not PROCESS=COUNT, like web=3", code=EXIT_USAGE)
        counts[name] = int(value)
    api = client(args)
    dep = api.post(f"/v1/apps/{args.app}/scale", {"replicas": counts})["deployment"]
    return finish(args, api, dep, "scaled")


def _mask(value: str) -> str:
    return value[:2] + "*" * max(3, len(value) - 2) if len(value) > 4 else "****"


def cmd_config(args: argparse.Namespace) -> int:
    api = client(args)
    action = args.action
    if action in (None, "get"):
        config = api.get(f"/v1/apps/{args.app}/config")["config"]
        if args.names:
            config = {k: v for k, v in config.items() if k in args.names}
        shown = config if args.reveal else {k: _mask(v) for k, v in config.items()}
        emit(args, shown, lambda: "\n".join(f"{k}={v}" for k, v in sorted(shown.items()))
             or "(no config vars)")
        return EXIT_OK
    body: dict[str, Any] = {}
    if action == "set":
        pairs = {}
        for pair in args.names:
            name, sep, value = pair.partition("=")
            if not sep:
                raise CliError(f"{pair!r} is not NAME=VALUE", code=EXIT_USAGE)
            pairs[name] = value
        body["set"] = pairs
    else:
        body["unset"] = list(args.names)
    result = api.request("PATCH", f"/v1/apps/{args.app}/config", json_body=body)
    if result.get("deployment") and not args.no_wait:
        wait_deployment(api, args.app, result["deployment"], quiet=args.json)
    rel = result.get("release")
    emit(args, result, lambda: f"config of {args.app} changed" + (
        f"; release v{rel['version']} deployed" if rel and result.get("deployment")
        else f"; release v{rel['version']} made" if rel else ""))
    return EXIT_OK


# --- inspection ---------------------------------------------------------------------------
def cmd_ps(args: argparse.Namespace) -> int:
    rows = client(args).get(f"/v1/apps/{args.app}/instances")["instances"]
    emit(args, rows, lambda: table(
        [{**r, "release": f"v{r['release']}"} for r in rows],
        ["id", "release", "process", "role", "node", "state", "desired", "address"]))
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    rows = client(args).get("/v1/nodes")["nodes"]
    emit(args, rows, lambda: table(rows, ["name", "address", "status", "cpu", "memory_mb",
                                          "instances"]))
    return EXIT_OK


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cmd_releases(args: argparse.Namespace) -> int:
    rows = client(args).get(f"/v1/apps/{args.app}/releases")["releases"]
    now = time.time()
    emit(args, rows, lambda: table(
        [{**r, "age": age(now - r["created_at"]), "stable": "stable" if r["stable"] else ""}
         for r in rows], ["name", "status", "stable", "age", "source"]))
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="controller URL (default: $PAAS_URL, then the local cluster)")
    common.add_argument("--token", help="API token (default: $PAAS_TOKEN, then the local cluster)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(prog="paas", description="Deploy and run apps on the PaaS.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("up", help="start the local cluster in the background")
    p.add_argument("--demo", action="store_true", help="also build and deploy examples/hello")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the local cluster and remove its containers")
    p.set_defaults(func=cmd_down)

    apps = sub.add_parser("apps", help="create, list and delete apps")
    apps_sub = apps.add_subparsers(dest="apps_command", metavar="ACTION")
    apps_sub.required = True
    p = apps_sub.add_parser("list", parents=[common], help="list apps")
    p.set_defaults(func=cmd_apps_list)
    p = apps_sub.add_parser("create", parents=[common], help="create an app")
    p.add_argument("name")
    p.set_defaults(func=cmd_apps_create)
    p = apps_sub.add_parser("delete", parents=[common],
                            help="delete an app, its instances and its route")
    p.add_argument("name")
    p.set_defaults(func=cmd_apps_delete)

    p = sub.add_parser("deploy", parents=[common],
                       help="build a directory into a release and deploy it")
    p.add_argument("dir", nargs="?", default=".",
                   help="the app's directory (a Dockerfile or a Procfile at its root); default .")
    p.add_argument("--app", required=True, help="app name")
    p.add_argument("--replicas", type=int, help="web replicas (default: the app's current scale)")
    p.add_argument("--version", help="deploy an existing release (e.g. v3) instead of building")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("promote", parents=[common], help="mark a succeeded release stable")
    p.add_argument("app")
    p.add_argument("--version", help="the release (default: the last one deployed)")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", parents=[common],
                       help="deploy the previous stable release (or --version) again")
    p.add_argument("app")
    p.add_argument("--version", help="the release to go back to")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the control instance and integration test")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the deployment")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("scale", parents=[common], help="set replica counts per process type")
    p.add_argument("app")
    p.add_argument("counts", nargs="+", metavar="PROCESS=COUNT")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the deployment")
    p.set_defaults(func=cmd_scale)
    p = sub.add_parser("config", parents=[common],
                       help="show or change config vars (a change makes a new release)")
    p.add_argument("app")
    p.add_argument("action", nargs="?", choices=["get", "set", "unset"])
    p.add_argument("names", nargs="*", metavar="NAME[=VALUE]")
    p.add_argument("--reveal", action="store_true", help="show values instead of masking them")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the deployment")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("ps", parents=[common], help="list an app's instances")
    p.add_argument("app")
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("nodes", parents=[common], help="list the nodes")
    p.set_defaults(func=cmd_nodes)
    p = sub.add_parser("releases", parents=[common], help="list an app's releases")
    p.add_argument("app")
    p.set_defaults(func=cmd_releases)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ClientError) as exc:
        print(f"paas: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return getattr(exc, "code", EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
