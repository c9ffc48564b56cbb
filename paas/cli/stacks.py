"""The `stacks` verb: list the language stacks and the state of their images, or make them
ahead of time (`paas stacks build [NAME]`), so the first deploy of an app does not wait.

A stack's images are made on the controller's Docker engine (`POST /v1/stacks/NAME/build`);
the request answers when they are made, so it may take a minute or more the first time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from paas.cli.common import (EXIT_BUILD, EXIT_OK, CliError, age, client, emit, note,
                             remote_flags, table)
from paas.apiclient.client import ClientError

BUILD_TIMEOUT_S = 1800.0


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.0f} MB"


def _images(stack: dict[str, Any]) -> tuple[str, str]:
    """(sizes, age) of a stack's images, "being made" with its seconds, or ("not built", "-")."""
    images = stack["images"]
    job = stack.get("background") or {}
    if job.get("state") == "building":
        return f"being made ({time.time() - job['since']:.0f}s so far)", "-"
    if job.get("state") == "queued":
        return "queued to be made", "-"
    if not all(i["present"] for i in images):
        return ("not built" + (f" (the background build failed: {job['error']})"
                               if job.get("state") == "failed" else "")), "-"
    sizes = " / ".join(_mb(i["size_bytes"]) for i in images)
    if not all(i["current"] for i in images):
        sizes += " (stale: the folder changed)"
    created = [i["created_at"] for i in images if i["created_at"]]
    return sizes, age(time.time() - min(created)) if created else "-"


def table_stacks(stacks: list[dict[str, Any]]) -> str:
    rows = []
    for s in stacks:
        sizes, made = _images(s)
        rows.append({"name": s["name"], "version": s["version"],
                     "detect": " ".join(s["detect"]) or "-",
                     "images (build / run)": sizes, "age": made})
    return table(rows, ["name", "version", "detect", "images (build / run)", "age"])


def cmd_stacks_list(args: argparse.Namespace) -> int:
    stacks = client(args).get("/v1/stacks")["stacks"]
    emit(args, stacks, lambda: table_stacks(stacks))
    return EXIT_OK


def cmd_stacks_build(args: argparse.Namespace) -> int:
    api = client(args)
    names = [args.name] if args.name else [s["name"] for s in api.get("/v1/stacks")["stacks"]
                                           if not s["prebuilt"]]
    if args.background:
        result = api.post("/v1/stacks/build", {"stacks": names})
        emit(args, result, lambda: (f"making {', '.join(result['queued'])} in the background; "
                                    "'paas stacks' shows how far" if result["queued"]
                                    else "nothing to queue: those stacks are being made"))
        return EXIT_OK
    results = []
    for name in names:
        note(f"-----> stack: making {name}'s images unless they are current")
        started = time.monotonic()
        path = f"/v1/stacks/{name}/build" + ("?force=true" if args.force else "")
        try:
            result = api.request("POST", path, timeout=BUILD_TIMEOUT_S)
        except ClientError as exc:
            if exc.status != 422:
                raise
            tail = str(exc.body.get("log_tail") or "").rstrip()
            for line in tail.splitlines():
                note("  " + line)
            raise CliError(f"the {name} stack was not built: {exc.message.rstrip('.')}",
                           code=EXIT_BUILD, data={"log_tail": tail}) from None
        results.append(result)
        done = "made" if result["built"] else "already current"
        note(f"       {name}: {done} in {time.monotonic() - started:.1f}s")
    emit(args, results, lambda: table_stacks([r["stack"] for r in results]))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    remote = remote_flags()
    p = sub.add_parser("stacks", parents=[remote],
                       help="list the language stacks, or build their images ahead of time",
                       description="List the language stacks: version, the files that detect "
                       "them, their images' sizes and age, or 'not built'.")
    p.set_defaults(func=cmd_stacks_list)
    actions = p.add_subparsers(dest="stacks_command", metavar="ACTION")
    q = actions.add_parser("list", parents=[remote], help="list the stacks (the default)")
    q.set_defaults(func=cmd_stacks_list)
    q = actions.add_parser("build", parents=[remote],
                           help="make a stack's images now (default: every stack's)")
    q.add_argument("name", metavar="NAME", nargs="?", help="the stack, e.g. python")
    q.add_argument("--force", action="store_true",
                   help="make them again even when they are current")
    q.add_argument("--background", action="store_true",
                   help="queue them on the controller and return at once; 'paas stacks' "
                        "shows how far they are")
    q.set_defaults(func=cmd_stacks_build)
