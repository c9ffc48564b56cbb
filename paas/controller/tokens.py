"""API tokens: an admin token for users and a join token for agents, made on first start and
kept in the data directory (0700, made by the store's `private_data_dir`) with mode 0600."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from paas.controller.store import private_data_dir


@dataclass(frozen=True)
class Tokens:
    admin: str
    join: str


def _read_or_create(path: Path) -> str:
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)
    return value


def load_tokens(data_dir: Path) -> Tokens:
    """Return the tokens in `data_dir`, creating any that are missing."""
    private_data_dir(data_dir)
    return Tokens(admin=_read_or_create(data_dir / "admin.token"),
                  join=_read_or_create(data_dir / "join.token"))
