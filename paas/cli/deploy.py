"""The deploy flow's verbs, named after its steps: `assemble`, `package`, `publish`,
`publish-deploy`, `deploy` (all of them, then the control/test/rollout/finish phases, followed
live), `promote`, and the verbs that make deployments of existing releases: `rollback`,
`scale`.

Progress goes to stderr, the result to stdout (JSON with `--json`). A failed phase exits with
its own code (see `paas.cli.common`): 3 build, 4 control, 5 test, 6 rollout, 7 finish,
8 publish.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from paas.cli.common import (EXIT_BUILD, EXIT_INTERRUPTED, EXIT_OK, EXIT_PUBLISH, EXIT_USAGE,
                             CliError, add_app_argument, app_name, client, emit, human_size,
                             note, output_flags, parse_version, remote_flags, the_app, warn)
from paas.apiclient.buildlog import STACK_HEADER, PhaseLines, build_release
from paas.apiclient.follow import EventPrinter, failure, follow, phase_header
from paas.apiclient.source import Assembled, assemble, same_tree, write_context
from paas.apiclient.client import Client, ClientError
from paas.apiclient.reuse import reusable_release

BUILD_TIMEOUT_S = 1800.0


# --- the steps, shared by the verbs -------------------------------------------------------
def get_app(api: Client, app: str, *, create: bool = False) -> dict[str, Any]:
    """The app; with `create`, made first (and said so) when it does not exist."""
    try:
        return api.get(f"/v1/apps/{app}")["app"]
    except ClientError as exc:
        if exc.status != 404 or exc.no_such_route or not create:
            raise
    view = api.post("/v1/apps", {"name": app})["app"]
    note(phase_header("app", f"created {app}: {' '.join(view['urls'])}"))
    return view


def describe(assembled: Assembled) -> str:
    where = {"worktree": "git working tree", "head": "git HEAD",
             "directory": "directory"}[assembled.mode]
    commit = f" {assembled.commit[:12]}" if assembled.commit else ""
    state = " (uncommitted changes)" if assembled.dirty and assembled.mode == "worktree" else ""
    return (f"{assembled.directory}: {where}{commit}{state}, {assembled.files} files, "
            f"{human_size(len(assembled.data))}, {assembled.digest}")


def assemble_for(directory: Path, *, from_head: bool = False) -> Assembled:
    """Assemble `directory` (`--from-head`: its last commit), warning about uncommitted
    changes."""
    assembled = assemble(directory, from_head=from_head)
    if assembled.dirty and assembled.mode == "worktree":
        warn(f"{assembled.directory} has uncommitted changes; they are built, and the release "
             "will not name a commit",
             hint="commit them, or pass --from-head to build the last commit only")
    elif assembled.dirty:
        warn(f"{assembled.directory} has uncommitted changes; --from-head leaves them out")
    return assembled


def reusable(api: Client, app: str, assembled: Assembled, *,
             rebuild: bool = False) -> dict[str, Any] | None:
    """The release to reuse instead of building `assembled`, by the one rule
    (`paas.apiclient.reuse`): the latest, when built from the same source (so `make package
    deploy` does not build the same commit twice), unless `rebuild`."""
    commit = assembled.commit if assembled.source else None  # the files are that commit's
    return reusable_release(
        api.get(f"/v1/apps/{app}/releases")["releases"],
        sources={s for s in (assembled.source, assembled.upload_source) if s},
        force=rebuild,
        same_files=(lambda built: same_tree(assembled.directory, built, commit))
        if commit else None)


def upload(api: Client, app: str, assembled: Assembled,
           printer: PhaseLines | None = None) -> dict[str, Any]:
    """POST the context and follow the build's log (`printer` shows the stack phase and the
    package steps); a failed build exits 3 with the build log's tail."""
    try:
        return build_release(api, app, assembled.data, source=assembled.source or "",
                             on_line=printer or (lambda phase, line: None),
                             timeout=BUILD_TIMEOUT_S)
    except ClientError as exc:
        if exc.status != 422:
            raise
        tail = str(exc.body.get("log_tail") or "").rstrip()
        if tail:
            note_lines(["--- the build log (last lines)", *("  " + t for t in tail.splitlines())])
        raise CliError(f"the build of {app} failed: {exc.message.rstrip('.')}",
                       hint="fix the Dockerfile or the app, then package again",
                       code=EXIT_BUILD, data={"log_tail": tail}) from None


def note_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


def package(api: Client, app: str, directory: Path, *, from_head: bool = False,
            rebuild: bool = False, assembled: Assembled | None = None
            ) -> tuple[dict[str, Any], bool]:
    """Assemble (unless `assembled` is given) and build, or reuse the latest release of the
    same source. Returns the release and whether it was reused."""
    assembled = assembled or assemble_for(directory, from_head=from_head)
    note(phase_header("assemble", describe(assembled)))
    release = reusable(api, app, assembled, rebuild=rebuild)
    if release is not None:
        note(phase_header("package", f"{release['name']} was built from "
                                     f"{release['source']}; reusing it "
                                     "(--rebuild builds again)"))
        return release, True
    started = time.monotonic()
    printer = PhaseLines(header=lambda phase: note(phase_header(phase, {
        "stack": STACK_HEADER, "package": f"building {app}"}[phase])),
        detail=lambda line: note(f"  {line}"))
    release = upload(api, app, assembled, printer)
    done = (f"built {release['image']} (release {release['name']}, stack "
            f"{release.get('stack') or 'unknown'}) in {time.monotonic() - started:.1f}s")
    note(f"  {done}" if printer.phase == "package" else phase_header("package", done))
    return release, False


def package_args(api: Client, app: str, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """`package` with DIR, --from-head and --rebuild from the command line."""
    return package(api, app, Path(args.dir), from_head=args.from_head, rebuild=args.rebuild)


def latest_version(view: dict[str, Any], app: str) -> int:
    if not view.get("latest_release"):
        raise CliError(f"{app} has no release yet",
                       hint=f"build one with 'paas package DIR --app {app}'")
    return int(view["latest_release"])


def publish(api: Client, app: str, version: int) -> dict[str, Any]:
    """Make the release's image available to every node; a failure exits 8."""
    try:
        result = api.post(f"/v1/apps/{app}/releases/{version}/publish")
    except ClientError as exc:
        if exc.status not in (409, 422):
            raise
        raise CliError(f"v{version} of {app} cannot be published: {exc.message.rstrip('.')}",
                       hint="package the app again", code=EXIT_PUBLISH) from None
    done = result["published"]
    nodes = ", ".join(done["nodes"]) or "no node yet"
    where = f" via {done['registry']}" if done.get("registry") else ""
    note(phase_header("publish", f"{done['image']} available to {nodes}{where}"))
    return result


def route(api: Client, app: str, view: dict[str, Any], hostnames: list[str] | None
          ) -> dict[str, Any]:
    """PUT the app's host names (the current ones when none are given) and so its route."""
    body = {"hostnames": hostnames if hostnames is not None else view["hostnames"]}
    return api.put(f"/v1/apps/{app}/domains", body)["app"]


def start_deployment(api: Client, app: str, version: int,
                     replicas: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"release": version}
    if replicas is not None:
        body["replicas"] = replicas
    return api.post(f"/v1/apps/{app}/deployments", body)["deployment"]


def wait(api: Client, app: str, dep: dict[str, Any]) -> dict[str, Any]:
    """Follow the deployment live; raise its phase's error when it fails."""
    printer = EventPrinter(origin=dep["created_at"])
    try:
        dep = follow(api, app, dep, printer=printer)
    except KeyboardInterrupt:
        raise CliError(f"stopped following deployment {dep['id']} of {app}; it goes on",
                       hint=f"follow it again with 'paas events {app} --deployment "
                            f"{dep['id']}'", code=EXIT_INTERRUPTED) from None
    if dep["status"] != "succeeded":
        raise failure(app, dep, printer=printer)
    return dep


def placement(api: Client, app: str, version: int) -> str:
    """`2 web on node-0, node-1` for the release's live instances."""
    rows = [i for i in api.get(f"/v1/apps/{app}/instances")["instances"]
            if i["release"] == version and i["role"] == "live" and i["desired"] == "running"]
    placed = [r for r in rows if r.get("node")]
    parts = []
    for process in sorted({r["process"] for r in placed}):
        mine = [r for r in placed if r["process"] == process]
        parts.append(f"{len(mine)} {process} on {', '.join(sorted({r['node'] for r in mine}))}")
    if len(placed) < len(rows):
        parts.append(f"{len(rows) - len(placed)} pending")
    return "; ".join(parts) or "no instances"


# --- verbs --------------------------------------------------------------------------------
def cmd_assemble(args: argparse.Namespace) -> int:
    assembled = assemble_for(Path(args.dir), from_head=args.from_head)
    if args.output:
        write_context(assembled, Path(args.output))
    data = {**assembled.summary(), "output": args.output}
    emit(args, data, lambda: describe(assembled) + (f"\nwritten to {args.output}"
                                                    if args.output else ""))
    return EXIT_OK


def cmd_package(args: argparse.Namespace) -> int:
    app = app_name(args.app)
    api = client(args)
    get_app(api, app)
    release, reused = package_args(api, app, args)
    emit(args, {"release": release, "reused": reused},
         lambda: f"{app} release {release['name']}: {release['image']}")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    app = app_name(args.app)
    api = client(args)
    view = get_app(api, app)
    version = parse_version(args.version) if args.version else latest_version(view, app)
    result = publish(api, app, version)
    emit(args, result, lambda: f"published {app} v{version}: {result['published']['image']}")
    return EXIT_OK


def cmd_publish_deploy(args: argparse.Namespace) -> int:
    app = app_name(args.app)
    api = client(args)
    view = route(api, app, get_app(api, app, create=True), args.hostname)
    emit(args, view, lambda: "\n".join(view["urls"]))
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    app = app_name(args.app)
    api = client(args)
    started = time.monotonic()
    # The source first: a directory that cannot be assembled leaves no new app behind.
    assembled = None if args.version else assemble_for(Path(args.dir), from_head=args.from_head)
    view = get_app(api, app, create=True)
    if args.version:
        version, reused = parse_version(args.version), True
    else:
        release, reused = package(api, app, Path(args.dir), rebuild=args.rebuild,
                                  assembled=assembled)
        version = release["version"]
    publish(api, app, version)
    if args.hostname is not None:
        view = route(api, app, view, args.hostname)
        note(phase_header("route", " ".join(view["urls"])))
    dep = start_deployment(api, app, version, args.replicas)
    note(phase_header("deploy", f"deployment {dep['id']}: v{version}, "
                      + ", ".join(f"{n} {p}" for p, n in sorted(dep["replicas"].items()))))
    result = {"app": app, "release": version, "built": not reused, "urls": view["urls"]}
    if args.no_wait:
        emit(args, {**result, "deployment": dep},
             lambda: f"deployment {dep['id']} of {app} v{version} started; follow it with "
                     f"'paas events {app} --deployment {dep['id']}'")
        return EXIT_OK
    dep = wait(api, app, dep)
    where = placement(api, app, version)
    took = time.monotonic() - started
    emit(args, {**result, "deployment": dep},
         lambda: f"deployed {app} v{version} in {took:.1f}s: {where}; {' '.join(view['urls'])}")
    return EXIT_OK


def finish(args: argparse.Namespace, api: Client, app: str, dep: dict[str, Any],
           verb: str) -> int:
    """Follow a deployment (unless --no-wait) and print the one-line outcome."""
    if not args.no_wait:
        dep = wait(api, app, dep)
    state = "started" if dep["status"] == "running" else dep["status"]
    emit(args, dep, lambda: f"{verb} {app} to v{dep['release']}: deployment {dep['id']} "
                            f"{state}" + (f" ({dep['reason']})" if dep["reason"] else ""))
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    app = the_app(args)
    body = {"release": parse_version(args.version)} if args.version else {}
    rel = client(args).post(f"/v1/apps/{app}/promote", body)["release"]
    emit(args, rel, lambda: f"{app} {rel['name']} is now stable")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    app = the_app(args)
    body: dict[str, Any] = {"skip_checks": args.no_checks}
    if args.version:
        body["release"] = parse_version(args.version)
    api = client(args)
    dep = api.post(f"/v1/apps/{app}/rollback", body)["deployment"]
    note(phase_header("rollback", f"deployment {dep['id']}: back to v{dep['release']}"))
    return finish(args, api, app, dep, "rolled back")


def parse_counts(words: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in words:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value.isdigit():
            raise CliError(f"{pair!r} is not PROCESS=COUNT", hint="e.g. paas scale hello web=3",
                           code=EXIT_USAGE)
        counts[name] = int(value)
    if not counts:
        raise CliError("no counts given", hint="e.g. paas scale hello web=3 worker=1",
                       code=EXIT_USAGE)
    return counts


def cmd_scale(args: argparse.Namespace) -> int:
    words = list(args.words)
    if args.app is None and words and "=" not in words[0]:
        args.app_pos = words.pop(0)
    app = the_app(args)
    counts = parse_counts(words)
    api = client(args)
    dep = api.post(f"/v1/apps/{app}/scale", {"replicas": counts})["deployment"]
    note(phase_header("scale", f"deployment {dep['id']}: "
                      + ", ".join(f"{p}={n}" for p, n in sorted(counts.items()))))
    return finish(args, api, app, dep, "scaled")


# --- parsers ------------------------------------------------------------------------------
def _source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="the app's directory (a Dockerfile or a Procfile at its root); "
                        "default: .")
    p.add_argument("--from-head", action="store_true",
                   help="pack the last commit (git archive HEAD), not the working tree")


def _build_flags(p: argparse.ArgumentParser) -> None:
    _source_flags(p)
    p.add_argument("--rebuild", action="store_true",
                   help="build even when the latest release has the same source")


def add_parsers(sub: Any) -> None:
    remote = remote_flags()
    p = sub.add_parser("assemble", parents=[output_flags()],
                       help="pack an app directory into a build context; print its digest",
                       description="Pack DIR into the gzip tar the controller builds from: the "
                       "git working tree (respecting .gitignore), HEAD with --from-head, or the "
                       "plain directory outside git.")
    _source_flags(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the build context to FILE")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("package", parents=[remote],
                       help="assemble DIR and build it into a new release",
                       description="Assemble DIR and build release N of the app (the image "
                       "paas/APP:vN). A failed build prints the build log's tail; exit 3.")
    _build_flags(p)
    p.add_argument("--app", required=True, help="the app's name")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("publish", parents=[remote],
                       help="make a release's image available to every node",
                       description="Make a release's image available to every node (exit 8 "
                       "when it cannot be).")
    p.add_argument("--app", required=True, help="the app's name")
    p.add_argument("--version", help="the release, e.g. v3 (default: the latest)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("publish-deploy", parents=[remote],
                       help="route the app's host names (creating the app if needed)",
                       description="Set the app's host names and publish its route; "
                       "APP.<domain> is always kept. Creates the app when it does not exist.")
    p.add_argument("--app", required=True, help="the app's name")
    p.add_argument("--hostname", action="append", metavar="H",
                   help="an extra host name (repeat for several; replaces the extra ones; "
                        "default: keep them)")
    p.set_defaults(func=cmd_publish_deploy)

    p = sub.add_parser("deploy", parents=[remote],
                       help="assemble, package, publish, route, then deploy live",
                       description="Build DIR into a new release (or take --version), publish "
                       "it, then deploy it: control instance, integration test, rollout, "
                       "finish, followed live. Exit codes: 3 build, 4 control, 5 test, "
                       "6 rollout, 7 finish, 8 publish.")
    _build_flags(p)
    p.add_argument("--app", required=True, help="the app's name (created if it does not exist)")
    p.add_argument("--replicas", type=int, metavar="N",
                   help="web replicas (default: the app's current scale, at least 1)")
    p.add_argument("--version", help="deploy this existing release (e.g. v3) instead of building")
    p.add_argument("--hostname", action="append", metavar="H",
                   help="also set the app's extra host names, as publish-deploy does")
    p.add_argument("--no-wait", action="store_true",
                   help="start the deployment and return without following it")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("promote", parents=[remote], help="mark a succeeded release stable")
    add_app_argument(p)
    p.add_argument("--version", help="the release (default: the last one deployed)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[remote],
                       help="deploy the previous stable release (or --version) again")
    add_app_argument(p)
    p.add_argument("--version", help="the release to go back to")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the control instance and the integration test")
    p.add_argument("--no-wait", action="store_true", help="do not follow the deployment")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("scale", parents=[remote], help="set replica counts per process type",
                       usage="paas scale [-h] [APP] PROCESS=COUNT... [--app APP] [--no-wait] "
                             "[--json] [--url URL] [--token TOKEN]")
    p.add_argument("words", nargs="+", metavar="[APP] PROCESS=COUNT",
                   help="the app (unless --app) and counts, e.g. hello web=3 worker=1")
    p.add_argument("--app", help="the app's name (instead of APP)")
    p.add_argument("--no-wait", action="store_true", help="do not follow the deployment")
    p.set_defaults(func=cmd_scale)
