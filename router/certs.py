"""HTTPS certificates: from Consul KV to HAProxy's SNI table, replaced without a reload.

The controller writes one JSON value per certificate under `paas/certs/<app>/<kind>` (an app
may have several: the cluster CA's for `<app>.<domain>`, and one for its own domains): `cert`
(the PEM chain, server's first) and `key` (its private key, sealed with the cluster's seal
key: paas.sealing).
`parse_certs` opens them into the PEM bundles HAProxy loads; an entry that does not parse or
open is left out with a warning, so one bad value takes no other app's certificate down.

HAProxy's HTTPS bind loads `crt <fallback.pem>` (served to a name no app has) and
`crt-list <certs.list>`, a list of files `<certs_dir>/<app>.<kind>.pem` (0600, in a 0700
folder);
SNI picks among them by the names in each certificate. `CertApplier.sync` moves HAProxy to
the desired bundles: the files and the list are written first (so any later reload or restart
loads what is desired), then the runtime API changes the running worker in place:

- added: `new ssl cert`, `set ssl cert` with the PEM, `commit ssl cert`, `add ssl crt-list`;
- replaced: `set ssl cert` and `commit ssl cert` (connections that are open keep theirs);
- removed: `del ssl crt-list`, then `del ssl cert`.

What the worker holds is read from it once (`show ssl crt-list`, `show ssl cert`: each one's
SHA-1 fingerprint), as a router may adopt an HAProxy an earlier one left; afterwards it is
tracked here. If the runtime API refuses anything, HAProxy is reloaded on the same
configuration instead, and loads the files.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from paas.names import InvalidName, validate_app_name
from paas.sealing import SealError, Sealer
from paas.tlscerts import CertError, load_chain, self_signed
from paas.tokenfile import write_private
from router.runtime_api import RuntimeApiError, send_command

log = logging.getLogger("router.certs")

FALLBACK_NAME = "paas-router.invalid"  # a name no client asks for (RFC 6761's .invalid)


_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class ServedCert:
    """One certificate as HAProxy loads it; `name` (`<app>.<kind>`) names its file."""

    name: str
    bundle: str  # the PEM chain, then the key; no empty line
    sha1: str  # the server certificate's SHA-1 fingerprint, upper-case hex (as HAProxy says)


def _pem_lines(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) + "\n"


def _sha1(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 (HAProxy's own id)


def parse_certs(values: Mapping[str, bytes], prefix: str, sealer: Sealer,
                warn: Callable[[str], None]) -> dict[str, ServedCert]:
    """The KV values under `prefix` as bundles by name (`<app>.<kind>`); bad ones are
    skipped with `warn`."""
    found: dict[str, ServedCert] = {}
    for key, raw in values.items():
        app, _, kind = key[len(prefix):].partition("/")
        try:
            validate_app_name(app)
            if not _KIND_RE.fullmatch(kind):
                raise ValueError("not under paas/certs/<app>/<kind>")
            value = json.loads(raw)
            chain = load_chain(value["cert"])
            private = sealer.unseal(value["key"]).decode()
        except (InvalidName, ValueError, KeyError, TypeError, CertError, SealError) as exc:
            warn(f"certificate {key!r} skipped: {exc}")
            continue
        name = f"{app}.{kind}"
        found[name] = ServedCert(name=name, bundle=_pem_lines(value["cert"]) + _pem_lines(private),
                                sha1=_sha1(chain[0]))
    return found


_FINGERPRINT_RE = re.compile(r"^SHA1 FingerPrint:\s*([0-9A-F]+)\s*$", re.MULTILINE)


class CertApplier:
    """Keeps HAProxy's SNI certificates equal to `desired()`; see the module's docstring."""

    def __init__(self, *, admin_socket: Path, certs_dir: Path, crt_list: Path,
                 fallback: Path, desired: Callable[[], Mapping[str, ServedCert]]) -> None:
        self.admin_socket = admin_socket
        self.certs_dir = certs_dir
        self.crt_list = crt_list
        self.fallback = fallback
        self.desired = desired
        self.loaded: dict[str, str] | None = None  # name -> SHA-1, as the worker holds them

    def prepare(self) -> None:
        """Before HAProxy starts: the folder, the list and a fallback certificate exist."""
        self.certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.crt_list.exists():
            write_private(self.crt_list, "")
        if not self.fallback.exists():
            cert, key = self_signed([FALLBACK_NAME])
            write_private(self.fallback, cert + key)

    def path(self, name: str) -> Path:
        return self.certs_dir / f"{name}.pem"

    def forget(self) -> None:
        """HAProxy was started or reloaded: it loaded the files; read it again next time."""
        self.loaded = None

    async def sync(self, *, reload: Callable[[], Awaitable[None]]) -> int:
        """Apply the desired certificates; return the runtime commands sent (0: none needed).
        `reload` reloads HAProxy on its configuration, when the runtime API refuses."""
        want = dict(self.desired())
        if self.loaded is None:
            self.loaded = await self._read_loaded()
        loaded = self.loaded
        if loaded == {name: cert.sha1 for name, cert in want.items()}:
            return 0  # every apply asks; the files were written when this was last changed
        self._write_files(want)
        added = [a for a in want if a not in loaded]
        replaced = [a for a in want if a in loaded and loaded[a] != want[a].sha1]
        removed = [a for a in loaded if a not in want]
        sent = 0
        try:
            for name in added + replaced:
                path = str(self.path(name))
                if name in added:
                    sent += await self._command(f"new ssl cert {path}", "New empty")
                sent += await self._command(f"set ssl cert {path}", "Transaction",
                                            payload=want[name].bundle)
                sent += await self._command(f"commit ssl cert {path}", "Success")
                if name in added:
                    sent += await self._command(f"add ssl crt-list {self.crt_list} {path}",
                                                "Success")
                loaded[name] = want[name].sha1
            for name in removed:
                path = str(self.path(name))
                sent += await self._command(f"del ssl crt-list {self.crt_list} {path}",
                                            "deleted")
                sent += await self._command(f"del ssl cert {path}", "deleted")
                del loaded[name]
        except RuntimeApiError as exc:
            log.warning("certificates: runtime API failed (%s); reloading HAProxy instead", exc)
            await reload()
            self.loaded = {name: cert.sha1 for name, cert in want.items()}
            return sent
        log.info("certificates: %d added, %d replaced, %d removed, without a reload",
                 len(added), len(replaced), len(removed))
        return sent

    def _write_files(self, want: Mapping[str, ServedCert]) -> None:
        for name, cert in want.items():
            path = self.path(name)
            if not path.exists() or path.read_text() != cert.bundle:
                write_private(path, cert.bundle)
        listing = "".join(f"{self.path(name)}\n" for name in sorted(want))
        if not self.crt_list.exists() or self.crt_list.read_text() != listing:
            write_private(self.crt_list, listing)
        for path in self.certs_dir.glob("*.pem"):
            if path.stem not in want:
                path.unlink(missing_ok=True)

    async def _command(self, command: str, expect: str, *, payload: str | None = None) -> int:
        reply = await send_command(self.admin_socket, command, payload=payload)
        if expect not in reply:
            raise RuntimeApiError(f"HAProxy refused {command!r}: {reply.strip()[:200]}")
        return 1

    async def _read_loaded(self) -> dict[str, str]:
        """What the running worker serves from the list: name -> SHA-1 fingerprint."""
        listing = await send_command(self.admin_socket, f"show ssl crt-list {self.crt_list}")
        loaded: dict[str, str] = {}
        for line in listing.splitlines():
            path = Path(line.split()[0]) if line.strip() and not line.startswith("#") else None
            if path is None or path.parent != self.certs_dir:
                continue
            shown = await send_command(self.admin_socket, f"show ssl cert {path}")
            if m := _FINGERPRINT_RE.search(shown):
                loaded[path.stem] = m.group(1)
        return loaded

