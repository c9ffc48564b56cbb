"""A secret token kept in a file of its own (mode 0600): read it, or make one if the file is
missing or empty. The controller's admin and join tokens live this way, and `paas host install
--role server` makes the join token before the controller's first start, so it can print the
command that joins a node."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_or_create(path: Path) -> str:
    """The token in `path`; a new random one (written with mode 0600) if there is none."""
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
