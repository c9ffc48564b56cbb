"""A listening TCP socket of an instance's container: the record the agent reads from the
kernel (`agent/sockets.py`) and sends in `GET /v1/instances/{id}/health`, and the controller
reads back to say why an instance fails its health check (`paas/controller/unhealthy.py`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Listener:
    address: str
    port: int

    @property
    def everywhere(self) -> bool:
        """Bound to every address (0.0.0.0 or ::), so a published port reaches it."""
        return self.address in ("0.0.0.0", "::")

    def view(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


def listeners(raw: Iterable[Mapping[str, Any]]) -> list[Listener]:
    """`{"address", "port"}` records as Listeners, sorted; malformed ones are left out."""
    found = []
    for item in raw:
        address, port = item.get("address"), item.get("port")
        if isinstance(address, str) and isinstance(port, int) and 0 < port < 65536:
            found.append(Listener(address=address, port=port))
    return sorted(set(found))
