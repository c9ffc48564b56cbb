"""The verbs that manage and inspect apps: `apps`, `config`, `releases`, `ps`, `nodes`,
`events`, `logs` and `git-remote`.

Each is one or two API calls; the human output is a table or a few lines, `--json` prints what
the API returned (config values stay masked unless `--reveal`).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import urllib.parse
from typing import Any

from paas.cli.common import (EXIT_OK, EXIT_USAGE, CliError, add_app_argument, age, app_name,
                             client, emit, mask, parse_duration, remote_flags, table, the_app)
from paas.cli.deploy import wait
from paas.apiclient.follow import EventPrinter
from paas.apiclient.client import Client, ClientError

CONFIG_ACTIONS = ("get", "set", "unset")


# --- apps ---------------------------------------------------------------------------------
def cmd_apps_list(args: argparse.Namespace) -> int:
    apps = client(args).get("/v1/apps")["apps"]
    emit(args, apps, lambda: table_apps(apps))
    return EXIT_OK


def table_apps(apps: list[dict[str, Any]]) -> str:
    """Name, releases and URLs; the firing alerts too when the cluster's Prometheus said
    (`?` for an app it said nothing of)."""
    columns = ["name", "release", "stable", "urls"]
    if any(a.get("alerts") is not None for a in apps):
        columns.append("alerts")
    return table([{"name": a["name"],
                   "release": f"v{a['latest_release']}" if a["latest_release"] else "-",
                   "stable": f"v{a['stable_release']}" if a.get("stable_release") else "-",
                   "urls": " ".join(a["urls"]),
                   "alerts": ("?" if a.get("alerts") is None
                              else ", ".join(a["alerts"]) or "-")} for a in apps],
                 columns)


def cmd_apps_create(args: argparse.Namespace) -> int:
    app = client(args).post("/v1/apps", {"name": app_name(args.name)})["app"]
    emit(args, app, lambda: f"created {app['name']}: {' '.join(app['urls'])}")
    return EXIT_OK


def cmd_apps_delete(args: argparse.Namespace) -> int:
    name = app_name(args.name)
    client(args).delete(f"/v1/apps/{name}")
    emit(args, {"deleted": name}, lambda: f"deleted {name}: its instances, services and "
                                          "route are going away")
    return EXIT_OK


# --- config -------------------------------------------------------------------------------
def split_config_words(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """`[APP] [get|set|unset] [NAME[=VALUE]...]` → (app, action, names)."""
    words = list(args.words)
    if args.app is None:
        if not words:
            raise CliError("which app? name it", hint="e.g. paas config hello", code=EXIT_USAGE)
        args.app_pos = words.pop(0)
    app = the_app(args)
    action = words.pop(0) if words and words[0] in CONFIG_ACTIONS else "get"
    return app, action, words


def parse_pairs(words: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for pair in words:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"{pair!r} is not NAME=VALUE", hint="e.g. paas config hello set "
                           "GREETING=hi", code=EXIT_USAGE)
        pairs[name] = value
    if not pairs:
        raise CliError("nothing to set", hint="e.g. paas config hello set GREETING=hi",
                       code=EXIT_USAGE)
    return pairs


def shown(config: dict[str, str], reveal: bool) -> dict[str, str]:
    return dict(config) if reveal else {k: mask(v) for k, v in config.items()}


def cmd_config(args: argparse.Namespace) -> int:
    app, action, names = split_config_words(args)
    api = client(args)
    if action == "get":
        config = api.get(f"/v1/apps/{app}/config")["config"]
        if names:
            config = {k: v for k, v in config.items() if k in names}
        values = shown(config, args.reveal)
        emit(args, values, lambda: "\n".join(f"{k}={v}" for k, v in sorted(values.items()))
             or "(no config vars)")
        return EXIT_OK
    if action == "set":
        body: dict[str, Any] = {"set": parse_pairs(names)}
    elif names:
        body = {"unset": names}
    else:
        raise CliError("nothing to unset", hint="e.g. paas config hello unset GREETING",
                       code=EXIT_USAGE)
    result = api.patch(f"/v1/apps/{app}/config", body)
    dep = result.get("deployment")
    if dep and not args.no_wait:
        result["deployment"] = dep = wait(api, app, dep)
    result["config"] = shown(result["config"], args.reveal)
    emit(args, result, lambda: config_outcome(app, result, args.no_wait))
    return EXIT_OK


def config_outcome(app: str, result: dict[str, Any], no_wait: bool) -> str:
    rel, dep = result.get("release"), result.get("deployment")
    if rel is None:
        return f"config of {app} changed; the next release will carry it"
    if dep is None:
        return f"config of {app} changed: release {rel['name']} made (nothing was running)"
    if no_wait:
        return f"config of {app} changed: release {rel['name']}, deployment {dep['id']} started"
    return f"config of {app} changed: release {rel['name']} deployed"


# --- inspection ---------------------------------------------------------------------------
def cmd_ps(args: argparse.Namespace) -> int:
    app = the_app(args)
    rows = client(args).get(f"/v1/apps/{app}/instances")["instances"]
    emit(args, rows, lambda: table(
        [{**r, "id": r["id"] or "(pending)", "release": f"v{r['release']}" if r["release"]
          else "-", "state": r["state"] + (f": {r['reason']}" if r.get("reason") else ""),
          "health": r.get("health") or "-"}
         for r in rows],
        ["id", "release", "process", "role", "node", "state", "health", "desired", "address"]))
    return EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    api = client(args)
    if args.action in ("drain", "undrain"):
        if not args.node:
            raise CliError(f"'paas nodes {args.action}' needs the node's name", code=EXIT_USAGE)
        result = api.post(f"/v1/nodes/{args.node}/drain", {"drain": args.action == "drain"})
        deployments = result["deployments"]
        if not args.json:
            moved = ", ".join(f"{d['app']} (deployment {d['id']})" for d in deployments)
            print(f"node {args.node} is {result['node']['status']}"
                  + (f"; moving {moved}" if moved else ""), file=sys.stderr)
        if not args.no_wait:
            deployments = [wait(api, d["app"], d) for d in deployments]
        emit(args, {**result, "deployments": deployments},
             lambda: f"node {args.node}: {result['node']['status']}, "
                     f"{len(deployments)} app(s) moved")
        return EXIT_OK
    if args.action == "remove":
        if not args.node:
            raise CliError("'paas nodes remove' needs the node's name", code=EXIT_USAGE)
        result = api.delete(f"/v1/nodes/{args.node}")
        emit(args, result, lambda: f"node {args.node} removed; "
                                   f"{result['instances_forgotten']} instance record(s) forgotten")
        return EXIT_OK
    if args.action not in (None, "list"):
        raise CliError(f"unknown action {args.action!r}: use list, drain, undrain or remove",
                       code=EXIT_USAGE)
    rows = api.get("/v1/nodes")["nodes"]
    emit(args, rows, lambda: table(rows, ["name", "address", "status", "cpu", "memory_mb",
                                          "instances"]))
    return EXIT_OK


def cmd_releases(args: argparse.Namespace) -> int:
    app = the_app(args)
    rows = client(args).get(f"/v1/apps/{app}/releases")["releases"]
    now = time.time()
    emit(args, rows, lambda: table(
        [{**r, "age": age(now - r["created_at"]), "stable": "stable" if r["stable"] else ""}
         for r in rows], ["name", "status", "stable", "age", "source"]))
    return EXIT_OK


# --- events -------------------------------------------------------------------------------
def deployment_header(dep: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(dep["created_at"]))
    outcome = dep["status"] + (f" at {dep['step']}" if dep["status"] == "failed" else "")
    reason = f": {dep['reason']}" if dep.get("reason") else ""
    return f"deployment {dep['id']}  {dep['kind']} v{dep['release']}  {when}  {outcome}{reason}"


def render_events(events: list[dict[str, Any]], deployments: dict[int, dict[str, Any]]) -> str:
    """Events grouped by deployment, each under its header, phase by phase."""
    out = io.StringIO()
    current: object = object()
    printer = EventPrinter(stream=out, describe=False)
    for event in events:
        dep_id = event["deployment_id"]
        if dep_id != current:
            current = dep_id
            dep = deployments.get(dep_id) if dep_id is not None else None
            if out.tell():
                print(file=out)
            print(deployment_header(dep) if dep else "app events", file=out)
            printer = EventPrinter(stream=out, origin=dep["created_at"] if dep else None,
                                   describe=False)
        printer(event)
    return out.getvalue().rstrip() or "(no events)"


def cmd_events(args: argparse.Namespace) -> int:
    app = the_app(args)
    api = client(args)
    query = {"after": str(args.after)}
    if args.deployment is not None:
        query["deployment"] = str(args.deployment)
    events = api.get(f"/v1/apps/{app}/events?{urllib.parse.urlencode(query)}")["events"]
    deployments = {d["id"]: d for d in api.get(f"/v1/apps/{app}/deployments")["deployments"]}
    if args.deployment is not None and args.deployment not in deployments:
        raise CliError(f"deployment {args.deployment} of {app} does not exist",
                       hint=f"'paas events {app}' lists every deployment")
    emit(args, events, lambda: render_events(events, deployments))
    return EXIT_OK


# --- logs ---------------------------------------------------------------------------------
def logs_path(app: str, args: argparse.Namespace) -> str:
    query: dict[str, str] = {}
    if args.follow:
        query["follow"] = "1"
    if args.instance:
        query["instance"] = args.instance
    if args.since:
        seconds = parse_duration(args.since)
        query["since"] = str(int(seconds) if seconds == int(seconds) else seconds)
    if args.tail is not None:
        query["tail"] = str(args.tail)
    return f"/v1/apps/{app}/logs" + (f"?{urllib.parse.urlencode(query)}" if query else "")


def log_record(line: str) -> dict[str, str]:
    instance, sep, text = line.partition(" | ")
    return {"instance": instance, "line": text} if sep else {"instance": "", "line": line}


def cmd_logs(args: argparse.Namespace) -> int:
    app = the_app(args)
    api = client(args)
    lines = api.stream_lines(logs_path(app, args), timeout=None if args.follow else 60)
    try:
        if args.json and not args.follow:
            print(json.dumps([log_record(line) for line in lines], indent=2))
            return EXIT_OK
        for line in lines:
            print(json.dumps(log_record(line)) if args.json else line, flush=True)
    except ClientError as exc:
        if exc.no_such_route:
            raise CliError(f"the controller at {api.target.url} does not stream logs yet",
                           hint="upgrade the controller") from None
        raise
    return EXIT_OK


# --- git remote ---------------------------------------------------------------------------
def git_info(api: Client, app: str, branch: str | None) -> dict[str, Any]:
    """The push URL and deploy branch from the controller, else derived from its URL."""
    try:
        if branch is not None:
            return api.put(f"/v1/apps/{app}/git", {"branch": branch or None})
        return api.get(f"/v1/apps/{app}/git")
    except ClientError as exc:
        if not exc.no_such_route:
            raise
    api.get(f"/v1/apps/{app}")  # an unknown app still says so
    if branch:
        raise CliError("this controller has no deploy branch setting",
                       hint="upgrade the controller, or push to main")
    return {"url": f"{api.target.url}/git/{app}.git", "branch": None}


def add_remote(name: str, url: str) -> str:
    """`git remote add` (or `set-url` when it exists) in the current repository."""
    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["git", *argv], capture_output=True, text=True, timeout=30,
                                  check=False)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            raise CliError("git could not be run", hint="install git") from None

    if git("rev-parse", "--git-dir").returncode != 0:
        raise CliError("the current directory is not in a git repository",
                       hint="run 'git init' first, or run this inside the app's repository")
    exists = git("remote", "get-url", name).returncode == 0
    done = git("remote", "set-url" if exists else "add", name, url)
    if done.returncode != 0:
        raise CliError(f"git could not {'update' if exists else 'add'} the remote {name!r}: "
                       f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}",
                       hint="check 'git remote -v'")
    return "updated" if exists else "added"


def cmd_git_remote(args: argparse.Namespace) -> int:
    app = the_app(args)
    info = git_info(client(args), app, args.branch)
    result = {"app": app, "url": info["url"], "branch": info.get("branch"),
              "remote": args.remote if args.add else None}
    if args.add:
        result["action"] = add_remote(args.remote, info["url"])
    emit(args, result, lambda: git_remote_text(app, result))
    return EXIT_OK


def git_remote_text(app: str, result: dict[str, Any]) -> str:
    branch = result["branch"] or "main"
    lines = [result["url"]]
    if result.get("action"):
        lines.append(f"remote {result['remote']!r} {result['action']}; deploy with: "
                     f"git push {result['remote']} HEAD:{branch}")
    lines.append("git asks for a password: give the API token (any user name), e.g. through a "
                 "credential helper; the URL never carries it")
    return "\n".join(lines)


# --- parsers ------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    remote = remote_flags()
    apps = sub.add_parser("apps", parents=[remote], help="list, create and delete apps",
                          description="List apps (the default), create or delete one.")
    apps.set_defaults(func=cmd_apps_list)
    apps_sub = apps.add_subparsers(dest="apps_command", metavar="ACTION")
    p = apps_sub.add_parser("list", parents=[remote], help="list apps and their URLs")
    p.set_defaults(func=cmd_apps_list)
    p = apps_sub.add_parser("create", parents=[remote],
                            help="create an app, routed at NAME.<domain>")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_apps_create)
    p = apps_sub.add_parser("delete", parents=[remote],
                            help="delete an app, its instances, Consul services and route")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_apps_delete)

    p = sub.add_parser("config", parents=[remote],
                       help="show, set or unset config vars (a change is a new release)",
                       usage="paas config [-h] [APP] [get|set|unset] [NAME[=VALUE]...] "
                             "[--app APP] [--reveal] [--no-wait] [--json] [--url URL] "
                             "[--token TOKEN]",
                       description="Show config vars (masked unless --reveal), or set/unset "
                       "them: a new release with the same image, deployed like any other.")
    p.add_argument("words", nargs="*", metavar="[APP] [get|set|unset] [NAME[=VALUE]...]",
                   help="the app (unless --app), the action (default get), names or pairs")
    p.add_argument("--app", help="the app's name (instead of APP)")
    p.add_argument("--reveal", action="store_true", help="show values instead of masking them")
    p.add_argument("--no-wait", action="store_true", help="do not follow the deployment")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("releases", parents=[remote],
                       help="list an app's releases: status, stable mark, age, source")
    add_app_argument(p)
    p.set_defaults(func=cmd_releases)
    p = sub.add_parser("ps", parents=[remote],
                       help="list an app's instances: node, state, address")
    add_app_argument(p)
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("nodes", parents=[remote],
                       help="list the nodes; drain one (its instances move elsewhere), "
                            "undrain it, or remove one that is down")
    p.add_argument("action", nargs="?", choices=["list", "drain", "undrain", "remove"],
                   help="list (default), drain NODE, undrain NODE, or remove NODE (once its "
                        "agent is down: a lost machine, or after `paas host remove` on it)")
    p.add_argument("node", nargs="?", metavar="NODE", help="the node to act on")
    p.add_argument("--no-wait", action="store_true", help="do not follow the moves")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("events", parents=[remote],
                       help="an app's deployment history, step by step")
    add_app_argument(p)
    p.add_argument("--deployment", type=int, metavar="N", help="only deployment N")
    p.add_argument("--after", type=int, default=0, metavar="ID",
                   help="only events after event ID")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("logs", parents=[remote],
                       help="an app's logs from every instance ('<instance> | <line>')",
                       description="Print an app's logs, each line prefixed with its instance "
                       "id. With --json: a JSON array, or with -f one JSON object per line.")
    add_app_argument(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    p.add_argument("--instance", metavar="ID", help="only this instance")
    p.add_argument("--since", metavar="DURATION", help="only lines newer than this, e.g. 10m")
    p.add_argument("--tail", type=int, metavar="N", help="at most the last N lines per instance")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("git-remote", parents=[remote],
                       help="print the app's git push URL; --add makes it the remote 'paas'")
    add_app_argument(p)
    p.add_argument("--add", action="store_true",
                   help="git remote add (or set-url) in the current repository")
    p.add_argument("--remote", default="paas", metavar="NAME",
                   help="the remote's name (default: paas)")
    p.add_argument("--branch", metavar="B",
                   help="set the branch whose pushes deploy ('' for the default, main)")
    p.set_defaults(func=cmd_git_remote)
