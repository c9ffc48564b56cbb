"""ACME HTTP-01 challenges: the router answers `/.well-known/acme-challenge/<token>` on its
plain HTTP port for the controller, which orders certificates for apps' own domains.

The controller writes `paas/acme/<token>` = the key authorization while an order waits for
its validation, and deletes it after. HAProxy answers from a map file (`acme.map`: token ->
key authorization) that `ChallengeApplier.sync` keeps equal to KV: the file is written first
(a reload loads it), then `add map` / `del map` on the runtime API change the running worker
without a reload. Tokens and key authorizations are base64url text (RFC 8555), checked here
before they reach a file or a command; anything else is skipped with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from paas.tokenfile import write_private
from router.runtime_api import RuntimeApiError, send_command

log = logging.getLogger("router.acme")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_KEY_AUTHZ_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}$")


def parse_challenges(values: Mapping[str, bytes], prefix: str,
                     warn: Callable[[str], None]) -> dict[str, str]:
    """token -> key authorization, from the KV values under `prefix`."""
    found: dict[str, str] = {}
    for key, raw in values.items():
        token = key[len(prefix):]
        value = raw.decode(errors="replace").strip()
        if not _TOKEN_RE.fullmatch(token) or not _KEY_AUTHZ_RE.fullmatch(value) \
                or not value.startswith(token + "."):
            warn(f"ACME challenge {key!r} skipped: not a token and its key authorization")
            continue
        found[token] = value
    return found


class ChallengeApplier:
    """Keeps HAProxy's challenge map equal to `desired()`."""

    def __init__(self, *, admin_socket: Path, map_file: Path,
                 desired: Callable[[], Mapping[str, str]]) -> None:
        self.admin_socket = admin_socket
        self.map_file = map_file
        self.desired = desired
        self.loaded: dict[str, str] | None = None

    def prepare(self) -> None:
        """Before HAProxy starts: the map file exists."""
        if not self.map_file.exists():
            write_private(self.map_file, "")

    def forget(self) -> None:
        self.loaded = None

    def served(self) -> list[str]:
        """The tokens HAProxy answers now (the controller waits for its own)."""
        return sorted(self.loaded or {})

    async def sync(self, *, reload: Callable[[], Awaitable[None]]) -> int:
        want = dict(self.desired())
        if self.loaded is None:
            self.loaded = await self._read_loaded()
        loaded = self.loaded
        if loaded == want:
            return 0  # every apply asks; the map was written when this was last changed
        write_private(self.map_file, "".join(f"{token} {value}\n"
                                             for token, value in sorted(want.items())))
        sent = 0
        try:
            for token in [t for t in loaded if t not in want or loaded[t] != want[t]]:
                sent += await self._command(f"del map {self.map_file} {token}")
                del loaded[token]
            for token in [t for t in want if t not in loaded]:
                sent += await self._command(f"add map {self.map_file} {token} {want[token]}")
                loaded[token] = want[token]
        except RuntimeApiError as exc:
            log.warning("ACME challenges: runtime API failed (%s); reloading HAProxy", exc)
            await reload()
            self.loaded = want
        return sent

    async def _command(self, command: str) -> int:
        reply = (await send_command(self.admin_socket, command)).strip()
        if reply:  # add/del map answer nothing when they succeed
            raise RuntimeApiError(f"HAProxy refused {command.split()[0:2]}: {reply[:200]}")
        return 1

    async def _read_loaded(self) -> dict[str, str]:
        shown = await send_command(self.admin_socket, f"show map {self.map_file}")
        loaded: dict[str, str] = {}
        for line in shown.splitlines():
            parts = line.split()  # "<entry id> <key> <value>"
            if len(parts) == 3:
                loaded[parts[1]] = parts[2]
        return loaded
