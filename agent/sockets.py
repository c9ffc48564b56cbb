"""What an instance listens on, read from its container's network namespace.

When an instance fails its health check, a deploy wants to say why: the app listens on
127.0.0.1 (which only the container itself reaches), on another port than `$PORT`, or on
nothing yet. The kernel knows: `/proc/<pid>/net/tcp` and `tcp6` of any process in the
container list the sockets of its network namespace, and those in state `0A` listen. The agent
runs on the host as root, so it reads them for the container's main process (Docker's
`State.Pid`); nothing runs inside the container.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from paas.listeners import Listener

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp (include/net/tcp_states.h)


def _address(hex_address: str) -> str:
    """A /proc/net/tcp address (hex, each 32-bit word in host byte order, little-endian here)
    as text: "0100007F" -> "127.0.0.1"."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The listening sockets of a /proc/net/tcp or /proc/net/tcp6 text (its header skipped,
    malformed lines ignored), sorted, without duplicates."""
    found = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        try:
            found.add(Listener(address=_address(address), port=int(port, 16)))
        except ValueError:
            continue
    return sorted(found)


def listeners(pid: int, *, proc: Path = Path("/proc")) -> list[Listener]:
    """What the network namespace of process `pid` listens on (TCP over IPv4 and IPv6).
    Raises OSError when the process is gone or its files cannot be read."""
    found: set[Listener] = set()
    for name in ("tcp", "tcp6"):
        path = proc / str(pid) / "net" / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            if name == "tcp6":
                continue  # a kernel without IPv6
            raise
        found.update(parse_proc_net_tcp(text))
    return sorted(found)
