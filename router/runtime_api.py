"""A small client for HAProxy's two unix-socket CLIs: the worker's runtime API and the master CLI.

Both speak the same line protocol: one command per connection, the reply is everything up to
EOF. The master CLI waits for the client to half-close before answering, so every command is
followed by a write EOF. Replies are plain text; `check_set_server_reply` tells success from
the error sentences `set server` can return, and `parse_show_proc` reads the master's
`show proc` table (reload counters and worker pids).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path


class RuntimeApiError(Exception):
    """A socket could not be reached, or HAProxy refused a command; the message says which."""


async def send_command(socket_path: Path, command: str, *, timeout: float = 5.0,
                       payload: str | None = None) -> str:
    """Send one command on a unix-socket CLI and return HAProxy's whole reply. A `payload`
    (such as the PEM of `set ssl cert`) follows the command as HAProxy's `<<` block: its
    lines up to an empty one, so it must hold no empty line."""
    if "\n" in command or ";" in command:
        raise RuntimeApiError(f"one command per call, got {command!r}")
    if payload is not None:
        lines = payload.strip("\n").split("\n")
        if not all(line.strip() for line in lines):
            raise RuntimeApiError(f"the payload of {command!r} holds an empty line")
        command = command + " <<\n" + "\n".join(lines) + "\n"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path)), timeout
        )
    except (OSError, asyncio.TimeoutError) as exc:
        raise RuntimeApiError(f"cannot reach HAProxy socket {socket_path}: {exc!r}") from exc
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        data = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise RuntimeApiError(f"no reply from {socket_path} to {command!r}: {exc!r}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.decode("utf-8", "replace")


# `set server ... addr` says "IP changed from ..." or "no need to change ..."; `state` says nothing.
_OK_REPLY_RE = re.compile(r"^(|.*changed from .*|no need to change.*)$", re.DOTALL)


def check_set_server_reply(command: str, reply: str) -> None:
    """Raise RuntimeApiError unless `reply` is a success reply to a `set server` command."""
    text = reply.strip()
    if not _OK_REPLY_RE.fullmatch(text):
        raise RuntimeApiError(f"HAProxy refused {command!r}: {text}")


@dataclass(frozen=True)
class ProcTable:
    """The master CLI's `show proc`: the master's reload counters and the current workers."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[int, ...]
    old_workers: tuple[int, ...]


_MASTER_RE = re.compile(r"^(\d+)\s+master\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?")
_WORKER_RE = re.compile(r"^(\d+)\s+worker\b")


def parse_show_proc(text: str) -> ProcTable:
    """Parse `show proc` (HAProxy 2.6 layout: master line, `# workers`, `# old workers`)."""
    master: tuple[int, int, int] | None = None
    workers: list[int] = []
    old: list[int] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").lower()
            continue
        if m := _MASTER_RE.match(line):
            master = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        elif m := _WORKER_RE.match(line):
            (old if section.startswith("old") else workers).append(int(m.group(1)))
    if master is None:
        raise RuntimeApiError(f"unexpected reply to 'show proc': {text[:200]!r}")
    return ProcTable(master_pid=master[0], reloads=master[1], failed_reloads=master[2],
                     workers=tuple(workers), old_workers=tuple(old))


def parse_info_pid(text: str) -> int:
    """The worker's pid from the runtime API's `show info`."""
    for line in text.splitlines():
        if line.startswith("Pid:"):
            return int(line.split(":", 1)[1])
    raise RuntimeApiError(f"unexpected reply to 'show info': {text[:200]!r}")


def parse_sessions(text: str) -> dict[str, dict[str, int]]:
    """From `show stat` (CSV): the current sessions of each app backend's servers, by the
    server's address (`host:port`), `{app: {address: sessions}}`. A slot emptied by a runtime
    update keeps its address while its requests in flight finish, so this is what a drain
    waits on. Backends that are not an app's (`app_<name>`) and rows without an address are
    left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    try:
        px, sv, scur, addr = (header.index(k) for k in ("pxname", "svname", "scur", "addr"))
    except ValueError:
        return {}
    found: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        row = line.split(",")
        if len(row) <= max(px, sv, scur, addr) or row[sv] in ("FRONTEND", "BACKEND"):
            continue
        if not row[px].startswith("app_") or not row[addr] or not row[scur].isdigit():
            continue
        app = row[px][len("app_"):]
        found.setdefault(app, {})
        found[app][row[addr]] = found[app].get(row[addr], 0) + int(row[scur])
    return found
