"""The verbs that act on this machine: `up` and `down` (the local cluster), `login` and
`logout` (the saved controller), and `init` (an app repository's Makefile, Procfile and
paas.toml from `paas/templates/init/`)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paas import templating
from paas.builder import stacks
from paas.builder.appconfig import BadAppConfig, parse_app_config
from paas.cli.common import EXIT_OK, EXIT_USAGE, CliError, app_name, emit, note, output_flags
from paas.cli.deploy import package, wait
from paas.apiclient.client import (Client, ClientError, Target, cluster_root, forget_login,
                                   normalise_url, paas_home, save_login)
from paas.names import InvalidName, validate_new_app_name

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = "hello"
DEMO_REPLICAS = 2


# --- local cluster ------------------------------------------------------------------------
def local_cluster() -> Any:
    from paas.localcluster import LocalCluster

    return LocalCluster(root=cluster_root(), monitoring=True)


def cmd_up(args: argparse.Namespace) -> int:
    from paas.localcluster import ClusterError

    cluster = local_cluster()
    started = time.monotonic()
    try:
        cluster.up()
    except ClusterError as exc:
        raise CliError(str(exc).rstrip("."), hint="'paas down' stops what did start; the "
                       f"logs are in {cluster.root / 'logs'}") from None
    (cluster.root / "cluster.json").write_text(json.dumps({
        "controller_url": cluster.controller_url, "router_url": cluster.router_url,
        "prometheus_url": cluster.prometheus_url}))
    result: dict[str, Any] = {"controller_url": cluster.controller_url,
                              "router_url": cluster.router_url,
                              "router_https_url": cluster.router_https_url,
                              "ca": str(cluster.ca_path), "nodes": cluster.nodes,
                              "prometheus_url": cluster.prometheus_url}
    line = (f"cluster up in {time.monotonic() - started:.1f}s: controller "
            f"{cluster.controller_url}, router {cluster.router_url} and "
            f"{cluster.router_https_url}, {cluster.nodes} nodes, Prometheus "
            f"{cluster.prometheus_url}; the cluster's CA: {cluster.ca_path}")
    if not args.demo:
        emit(args, result, lambda: line)
        return EXIT_OK
    note(line)
    result["demo"] = demo(cluster)
    result["stacks_queued"] = prepare_stacks(cluster)
    emit(args, result, lambda: demo_text(cluster, result["demo"], result["stacks_queued"]))
    return EXIT_OK


def prepare_stacks(cluster: Any) -> list[str]:
    """Once the demo serves, make the language stacks' images in the background, the most
    common first, so that a newcomer's first push a minute later does not wait for them."""
    api = Client(Target(cluster.controller_url, cluster.admin_token()))
    try:
        queued = api.post("/v1/stacks/build", {"stacks": list(stacks.DETECT_ORDER)})["queued"]
        return list(queued)
    except ClientError as exc:  # the demo serves; the stacks are made on first use instead
        note(f"the language stacks were not queued: {exc.message}")
        return []


def demo(cluster: Any) -> dict[str, Any]:
    """Build and deploy examples/hello with 2 replicas, unless that is already what runs: it
    is packaged as `paas package examples/hello` does, so the release is reused by the same
    rule."""
    api = Client(Target(cluster.controller_url, cluster.admin_token()))
    if DEMO_APP not in {a["name"] for a in api.get("/v1/apps")["apps"]}:
        api.post("/v1/apps", {"name": DEMO_APP})
    release, _ = package(api, DEMO_APP, REPO / "examples" / "hello")
    instances = api.get(f"/v1/apps/{DEMO_APP}/instances")["instances"]
    serving = [i for i in instances if i["release"] == release["version"]
               and i["state"] == "running" and i["desired"] == "running"]
    if len(serving) != DEMO_REPLICAS:
        dep = api.post(f"/v1/apps/{DEMO_APP}/deployments",
                       {"release": release["version"], "replicas": DEMO_REPLICAS})["deployment"]
        wait(api, DEMO_APP, dep)
    return {"app": DEMO_APP, "release": release["version"],
            "url": f"http://{DEMO_APP}.{cluster.domain}:{cluster.http_port}/",
            "https_url": f"https://{DEMO_APP}.{cluster.domain}:{cluster.https_port}/"}


def demo_text(cluster: Any, result: dict[str, Any], queued: list[str] = ()) -> str:
    return "\n".join([
        f"\n{DEMO_APP} v{result['release']} answers at {result['url']}",
        f"  try: curl -H 'Host: {DEMO_APP}.{cluster.domain}' {cluster.router_url}/",
        f"  or over HTTPS: curl --cacert {cluster.ca_path} {result['https_url']}",
        *([f"  the {', '.join(queued)} stacks' images are being made in the background "
           "('paas stacks' shows how far), so your own app's first push does not wait"]
          if queued else []),
        "  stop the cluster with: make down   (or: .venv/bin/paas down)"])


def cmd_down(args: argparse.Namespace) -> int:
    cluster = local_cluster()
    cluster.down()
    emit(args, {"stopped": str(cluster.root)}, lambda: "cluster stopped")
    return EXIT_OK


# --- login --------------------------------------------------------------------------------
def read_token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("PAAS_TOKEN", "")
    if not token and sys.stdin.isatty():
        token = getpass.getpass("API token: ")
    elif not token:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("no token given", hint="pass --token T (the controller's admin.token)",
                       code=EXIT_USAGE)
    return token


def cmd_login(args: argparse.Namespace) -> int:
    url = normalise_url(args.controller)
    token = read_token(args)
    api = Client(Target(url, token), timeout=15)
    apps = api.get("/v1/apps")["apps"]  # proves both the URL and the token
    path = save_login(url, token)
    emit(args, {"url": url, "config": str(path), "apps": len(apps)},
         lambda: f"logged in to {url} ({len(apps)} apps); saved in {path}")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    removed = forget_login()
    path = paas_home() / "config.json"
    emit(args, {"removed": removed, "config": str(path)},
         lambda: f"forgot the saved controller ({path})" if removed
         else "no controller was saved")
    return EXIT_OK


# --- init ---------------------------------------------------------------------------------
INIT_FILES = (("Makefile", "Makefile.j2"), ("Procfile", "Procfile.j2"),
              ("paas.toml", "paas.toml.j2"))


def default_app_name(directory: Path) -> str:
    name = directory.resolve().name.lower().replace("_", "-").replace(".", "-")
    try:
        return validate_new_app_name(name)
    except InvalidName:
        raise CliError(f"{directory.resolve().name!r} does not make a valid app name",
                       hint="name the app with --app, e.g. --app my-app",
                       code=EXIT_USAGE) from None


@dataclass(frozen=True)
class Found:
    """What `paas init` finds in an app's directory: how the builder will build it."""

    stack: str  # a stack's name, "dockerfile", or "" when nothing decides yet
    reason: str  # what decided it, for the comments: "requirements.txt", "the Dockerfile"
    default_start: bool  # the stack starts the web process when the Procfile names none
    start_sh: bool  # a ./start.sh to run


def find_stack(directory: Path) -> Found:
    """Detect the stack as the builder does (`paas.builder.stacks.detect`, the one function),
    from the directory's top-level entries and paas.toml's `[build] stack`."""
    names = [p.name for p in directory.iterdir()]
    configured = None
    try:
        configured = parse_app_config(procfile=None, toml_text=(
            directory / "paas.toml").read_text()).stack
    except (OSError, BadAppConfig):
        pass  # no paas.toml, or one the build will refuse with its own sentence
    start_sh = (directory / "start.sh").is_file()
    try:
        found = stacks.detect(names, configured=configured)
    except stacks.NoStack:
        return Found("", "", False, start_sh)  # the Procfile init writes makes it busybox
    if found.stack == stacks.DOCKERFILE:
        return Found(found.stack, found.reason, True, start_sh)
    stack = stacks.get_stack(found.stack)
    return Found(stack.name, found.reason, bool(stack.default_start), start_sh)


def render_init(name: str, *, app: str, found: Found | None = None) -> str:
    env = templating.environment("init")
    return env.get_template(name).render(app=app, found=found or Found("", "", False, False))


def init_plan(directory: Path, found: Found) -> list[tuple[str, str | None]]:
    """(file, why it is skipped or None) for each file init writes."""
    plan: list[tuple[str, str | None]] = []
    for name, _ in INIT_FILES:
        if (directory / name).exists():
            plan.append((name, "exists"))
        elif name == "Procfile" and found.stack == stacks.DOCKERFILE:
            plan.append((name, "the Dockerfile's CMD starts the app"))
        elif name == "Procfile" and found.default_start:
            plan.append((name, f"the {found.stack} stack starts the app when the Procfile "
                               "names no web command"))
        else:
            plan.append((name, None))
    return plan


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory", hint="create it first, or name "
                       "the app's directory")
    app = app_name(args.app) if args.app else default_app_name(directory)
    try:
        validate_new_app_name(app)
    except InvalidName as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    written, skipped = [], {}
    found = find_stack(directory)
    for (name, why), (_, template) in zip(init_plan(directory, found), INIT_FILES):
        if why:
            skipped[name] = why
            continue
        try:
            with open(directory / name, "x") as handle:  # "x": never overwrite
                handle.write(render_init(template, app=app, found=found))
        except FileExistsError:
            skipped[name] = "exists"
            continue
        except OSError as exc:
            raise CliError(f"cannot write {directory / name}: {exc.strerror or exc}",
                           hint="check the directory's permissions") from None
        written.append(name)
    result = {"app": app, "directory": str(directory), "stack": found.stack or None,
              "detected_from": found.reason or None, "written": written, "skipped": skipped}
    emit(args, result, lambda: init_text(result))
    return EXIT_OK


def init_text(result: dict[str, Any]) -> str:
    lines = [f"stack: {result['stack']} (from {result['detected_from']})" if result["stack"]
             else "stack: none found yet (no Dockerfile, no manifest such as requirements.txt, "
                  "package.json, go.mod, pom.xml or Gemfile)"]
    lines += [f"wrote {name}" for name in result["written"]]
    lines += [f"skipped {name} ({why})" for name, why in result["skipped"].items()]
    lines.append(f"next: make deploy   (app {result['app']}; 'make help' lists the steps)")
    return "\n".join(lines)


# --- parsers ------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    out = output_flags()
    p = sub.add_parser("up", parents=[out], help="start the local cluster in the background")
    p.add_argument("--demo", action="store_true", help="also build and deploy examples/hello")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", parents=[out],
                       help="stop the local cluster and remove its containers")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("login", parents=[out],
                       help="check and save a controller URL and token for later commands",
                       description="Check URL and the token against the controller, then save "
                       "both in $PAAS_HOME/config.json (default ~/.paas, mode 0600). The token "
                       "comes from --token, $PAAS_TOKEN, or a prompt.")
    p.add_argument("controller", metavar="URL", help="the controller, e.g. http://10.0.0.5:7070")
    p.add_argument("--token", help="the API token (an admin token)")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", parents=[out], help="forget the saved controller and token")
    p.set_defaults(func=cmd_logout)
    p = sub.add_parser("init", parents=[out],
                       help="write a Makefile, Procfile and paas.toml for an app repository",
                       description="Write a Makefile whose targets (assemble, package, publish, "
                       "publish-deploy, deploy, promote) call paas, plus a Procfile and a "
                       "commented paas.toml where they are missing. Never overwrites a file.")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="the app's directory (default: .)")
    p.add_argument("--app", help="the app's name (default: the directory's name)")
    p.set_defaults(func=cmd_init)
