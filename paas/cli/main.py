"""The `paas` command: every verb of the platform, against a local or a remote controller.

The verbs live by domain: `paas.cli.deploy` (assemble, package, publish, publish-deploy,
deploy, promote, rollback, scale), `paas.cli.apps` (apps, config, releases, ps, nodes, events,
logs, git-remote), `paas.cli.local` (up, down, login, logout, init), `paas.cli.stacks`
(stacks). This module builds the parser and
runs a verb: every failure is one sentence plus a hint on stderr and an exit code (listed in
README.md and in `paas.cli.common`), never a traceback; with `--json`, stdout is JSON only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from paas.cli import apps as cli_apps, deploy as cli_deploy, local as cli_local
from paas.cli import certs as cli_certs, host as cli_host, metrics as cli_metrics
from paas.cli import stacks as cli_stacks
from paas.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, CliError, remote_flags
from paas.apiclient.client import ClientError

EPILOG = """\
The controller: --url/--token, else PAAS_URL/PAAS_TOKEN, else 'paas login', else the local
cluster ('paas up'). Exit codes: 0 ok, 1 error, 2 usage, 3 build failed, 4 control failed,
5 test failed, 6 rollout failed, 7 finish failed, 8 publish failed, 130 interrupted.
'paas VERB --help' describes a verb."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paas", description="Build, deploy and run apps on the PaaS.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[remote_flags()])
    parser.set_defaults(url=None, token=None, json=False)
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    sub.required = True
    cli_local.add_parsers(sub)
    cli_deploy.add_parsers(sub)
    cli_apps.add_parsers(sub)
    cli_stacks.add_parsers(sub)
    cli_metrics.add_parsers(sub)
    cli_certs.add_parsers(sub)
    cli_host.add_parsers(sub)
    return parser


def split_hint(message: str, hint: str) -> tuple[str, str]:
    """The API writes `sentence; what to do`: show the second half as the hint."""
    if not hint and "; " in message:
        message, hint = message.split("; ", 1)
    return message.rstrip("."), hint


def report(exc: CliError | ClientError, *, as_json: bool) -> int:
    """Print the error (and with --json its JSON on stdout); return the exit code."""
    code = getattr(exc, "code", EXIT_ERROR)
    message, hint = split_hint(exc.message, exc.hint)
    if as_json:
        data = dict(getattr(exc, "data", {}) or {})
        print(json.dumps({"error": message, "hint": hint, "exit_code": code, **data}, indent=2))
    print(f"paas: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ClientError) as exc:
        return report(exc, as_json=bool(getattr(args, "json", False)))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `paas logs -f | head`: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a bug still gets one sentence, not a traceback
        if os.environ.get("PAAS_DEBUG"):
            raise
        return report(CliError(f"unexpected error: {type(exc).__name__}: {exc}",
                               hint="this is a bug in paas; PAAS_DEBUG=1 shows the traceback"),
                      as_json=bool(getattr(args, "json", False)))

if __name__ == "__main__":
    sys.exit(main())
