"""What a node sees of an instance's health, the record of the agent's `GET
/v1/instances/{id}/health`: the listening TCP sockets of its container (read from the kernel by
`agent/sockets.py`) and what its health check said in the node's Consul agent. The agent writes
it (`InstanceLook.view`), the controller reads it back (`InstanceLook.from_view`) to say why an
instance fails its health check (`paas/controller/unhealthy.py`)."""

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


@dataclass(frozen=True)
class InstanceLook:
    """What a node sees of an instance's health."""

    listening: list[Listener] | None = None  # None: not running, or nobody could look
    check_output: str | None = None  # None: no check there, or its Consul agent did not answer

    def view(self) -> dict[str, Any]:
        return {"known": self.listening is not None,
                "listening": [x.view() for x in self.listening or ()],
                "check": self.check_output}

    @classmethod
    def from_view(cls, answer: Any) -> InstanceLook:
        """The record from its `view()`; what is malformed counts as unknown."""
        if not isinstance(answer, dict):
            return cls()
        raw, check = answer.get("listening"), answer.get("check")
        return cls(listening=listeners(raw) if answer.get("known") and isinstance(raw, list)
                   else None, check_output=check if isinstance(check, str) else None)
