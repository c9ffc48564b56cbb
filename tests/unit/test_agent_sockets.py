"""agent.sockets: the listening sockets of a network namespace, from /proc/<pid>/net/tcp{,6}."""

from __future__ import annotations

import pytest

from agent.sockets import listeners, parse_proc_net_tcp
from paas.listeners import Listener

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
TAIL = " 00000000:00000000 00:00000000 00000000 10001 0 171872 1 0000000000000000 100 0 0 10 0"


def row(local: str, state: str, remote: str = "00000000:0000") -> str:
    return f"   0: {local} {remote} {state}{TAIL}\n"


@pytest.mark.parametrize("local,state,expected", [
    ("0100007F:1388", "0A", [Listener("127.0.0.1", 5000)]),
    ("00000000:1388", "0A", [Listener("0.0.0.0", 5000)]),
    ("0200A8C0:1F90", "0A", [Listener("192.168.0.2", 8080)]),
    ("0100007F:1388", "01", []),  # an established connection, not a listener
    ("00000000000000000000000000000000:1F40", "0A", [Listener("::", 8000)]),
    ("00000000000000000000000001000000:1388", "0A", [Listener("::1", 5000)]),
    ("0000000000000000FFFF00000100007F:1388", "0A", [Listener("127.0.0.1", 5000)]),  # v4-mapped
    ("nothex:1388", "0A", []),
    ("0100007F", "0A", []),
])
def test_a_line_of_proc_net_tcp(local: str, state: str, expected: list[Listener]) -> None:
    assert parse_proc_net_tcp(HEADER + row(local, state)) == expected


def test_duplicates_and_order() -> None:
    text = HEADER + row("0100007F:1388", "0A") + row("00000000:0050", "0A") \
        + row("0100007F:1388", "0A") + "garbage\n"
    assert parse_proc_net_tcp(text) == [Listener("0.0.0.0", 80), Listener("127.0.0.1", 5000)]
    assert [x.everywhere for x in parse_proc_net_tcp(text)] == [True, False]


def test_listeners_reads_both_files_and_a_missing_process_is_an_oserror(tmp_path) -> None:
    net = tmp_path / "42" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(HEADER + row("0100007F:1388", "0A"))
    assert listeners(42, proc=tmp_path) == [Listener("127.0.0.1", 5000)]  # no tcp6: no IPv6
    (net / "tcp6").write_text(HEADER + row("00000000000000000000000000000000:1F40", "0A"))
    assert listeners(42, proc=tmp_path) == [Listener("127.0.0.1", 5000), Listener("::", 8000)]
    with pytest.raises(OSError):
        listeners(43, proc=tmp_path)
