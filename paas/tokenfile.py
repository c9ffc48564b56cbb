"""Secrets in files of their own (mode 0600). `write_private` is the one way this project
writes one (atomically, 0600 even over a looser file that was there): keys, certificates,
Consul's gossip configuration. `read_or_create` keeps a token: the controller's admin and join
tokens live this way, and `paas host install --role server` makes the join token before the
controller's first start, so it can print the command that joins a node."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` readable by its owner only: a 0600 file beside it, synced, then
    renamed over it, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_or_create(path: Path) -> str:
    """The token in `path`; a new random one (written with mode 0600) if there is none."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(32)
    write_private(path, value + "\n")
    return value
