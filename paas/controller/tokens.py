"""API tokens: an admin token for users and a join token for agents, made on first start and
kept in the data directory (0700, made by the store's `private_data_dir`) with mode 0600."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paas.controller.store import private_data_dir
from paas.tokenfile import read_or_create


@dataclass(frozen=True)
class Tokens:
    admin: str
    join: str


def load_tokens(data_dir: Path) -> Tokens:
    """Return the tokens in `data_dir`, creating any that are missing."""
    private_data_dir(data_dir)
    return Tokens(admin=read_or_create(data_dir / "admin.token"),
                  join=read_or_create(data_dir / "join.token"))
