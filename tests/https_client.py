"""HTTPS as a client sees it, for the HTTPS tests (router integration and end to end): one
request with its SNI, and a load of such requests while a certificate changes.

`https_get` opens a new connection per request (so a full handshake), sends SNI and Host
`name` to `address:port`, verifies against `cafile` when given, and returns the status, the
body and the SHA-256 fingerprint of the certificate served. `HttpsLoad` runs it from threads
until it leaves, counting requests and failures and the certificates it saw."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path


def https_get(address: str, port: int, name: str, cafile: Path | None, *,
              headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, body, fingerprint); `headers`, if given, gets the answer's (lower-case)."""
    if cafile is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((address, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            served = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    if headers is not None:
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return int(head.split()[1]), body, served


class HttpsLoad:
    """`get()` from `threads` threads while the block runs; a request fails when it raises or
    when `ok(status, body)` says no."""

    def __init__(self, get: Callable[[], tuple[int, str, str]],
                 ok: Callable[[int, str], bool], threads: int = 4) -> None:
        self.get, self.ok = get, ok
        self.count = 0
        self.failures: list[str] = []
        self.served: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body, cert = self.get()
                self.served.add(cert)
                self.count += 1
                if not self.ok(status, body):
                    self.failures.append(f"{status} {body[:80]}")
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> HttpsLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
