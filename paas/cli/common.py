"""What every `paas` verb shares: exit codes and the one error type (from
`paas.apiclient.errors`), output (tables, `--json`), masking, and parsing of app names,
versions and durations.

Verbs raise `CliError` (or let `ClientError` through); `paas.cli.main` prints it as one
sentence plus a hint on stderr and exits with its code. With `--json`, stdout carries only
JSON: the result, or on failure `{"error": ..., "hint": ..., "exit_code": ...}`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Callable

from paas.apiclient.client import Client, resolve_target
# The exit codes and the one error type live with the API client (the git hook raises them
# too); the verbs take them from here.
from paas.apiclient.errors import (EXIT_BUILD, EXIT_CONTROL, EXIT_ERROR,  # noqa: F401
                                   EXIT_FINISH, EXIT_INTERRUPTED, EXIT_OK, EXIT_PUBLISH,
                                   EXIT_ROLLOUT, EXIT_TEST, EXIT_USAGE, STEP_EXIT_CODES,
                                   CliError, exit_code_for_step)
from paas.names import InvalidName, validate_app_name


# --- output -----------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Left-aligned columns under upper-case headers; `(none)` for no rows."""
    if not rows:
        return "(none)"
    cells = [[str("" if r.get(c) is None else r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    """Print `data` as JSON with `--json`, else the human text."""
    print(json.dumps(data, indent=2) if args.json else human(), flush=True)


def note(text: str) -> None:
    """A progress line: on stderr, so that stdout stays the result (and JSON with --json)."""
    print(text, file=sys.stderr, flush=True)


def warn(text: str, hint: str = "") -> None:
    print(f"paas: warning: {text}", file=sys.stderr, flush=True)
    if hint:
        print(f"hint: {hint}", file=sys.stderr, flush=True)


def mask(value: str) -> str:
    """A config value as listings show it: neither its length nor a short secret shows; a
    long value keeps its first two characters so that one can tell values apart."""
    if not value:
        return ""
    return value[:2] + "*****" if len(value) >= 12 else "*****"


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GB"


# --- arguments --------------------------------------------------------------------------
def app_name(name: str | None) -> str:
    """A valid app name, checked before any request is made."""
    if not name:
        raise CliError("which app? name it", hint="pass the app's name, e.g. --app hello",
                       code=EXIT_USAGE)
    try:
        return validate_app_name(name)
    except InvalidName as exc:
        raise CliError(str(exc), hint="an app name is one DNS label, like my-app",
                       code=EXIT_USAGE) from None


def the_app(args: argparse.Namespace) -> str:
    """The app named by the positional APP or by --app (either works on every verb)."""
    positional, option = getattr(args, "app_pos", None), getattr(args, "app", None)
    if positional and option and positional != option:
        raise CliError(f"two apps named: {positional!r} and --app {option!r}",
                       hint="name the app once", code=EXIT_USAGE)
    return app_name(positional or option)


def parse_version(text: str) -> int:
    """`v3` or `3` → 3."""
    try:
        value = int(text.strip().lower().removeprefix("v"))
    except ValueError:
        value = 0
    if value < 1:
        raise CliError(f"{text!r} is not a release", hint="name a release like v3",
                       code=EXIT_USAGE)
    return value


_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                          r"(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `5m`, `1h30m`, `2d` → seconds."""
    text = text.strip().lower()
    match = _DURATION_RE.fullmatch(text)
    try:
        value = float(text)
    except ValueError:
        value = 0.0
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (float(g or 0) for g in match.groups())
            value = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if not value > 0 or value == float("inf"):
        raise CliError(f"{text!r} is not a duration", hint="use e.g. 30s, 5m, 1h30m or 2d",
                       code=EXIT_USAGE)
    return value


def client(args: argparse.Namespace) -> Client:
    return Client(resolve_target(url=getattr(args, "url", None),
                                 token=getattr(args, "token", None)))


# --- shared flags -----------------------------------------------------------------------
def output_flags() -> argparse.ArgumentParser:
    """`--json`, for verbs that do not talk to a controller."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON on stdout (and nothing else)")
    return parent


def remote_flags() -> argparse.ArgumentParser:
    """`--url`, `--token`, `--json`, for verbs that talk to the controller."""
    parent = argparse.ArgumentParser(add_help=False, parents=[output_flags()])
    parent.add_argument("--url", default=argparse.SUPPRESS,
                        help="controller URL (default: $PAAS_URL, then 'paas login', "
                             "then the local cluster)")
    parent.add_argument("--token", default=argparse.SUPPRESS,
                        help="API token (default: $PAAS_TOKEN, then 'paas login', "
                             "then the local cluster)")
    return parent


def add_app_argument(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """APP as a positional and/or `--app NAME` (both resolve through `the_app`)."""
    if positional:
        parser.add_argument("app_pos", nargs="?", metavar="APP", help="the app's name")
    parser.add_argument("--app", help="the app's name" + (" (instead of APP)" if positional
                                                          else ""))
