"""Sealing: private keys pass through Consul KV encrypted, readable only by who holds the key.

The controller seals a certificate's private key before it writes it to `paas/certs/<app>`;
the router unseals it. Both read the cluster's seal key from a file (mode 0600) that `paas up`
or the host installer writes: Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`),
so a key that was changed in KV, or sealed with another cluster's key, is refused, not used.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from paas.tokenfile import write_private


class SealError(Exception):
    """A seal key that cannot be read, or a sealed text that does not open; one sentence."""


def create_key_file(path: Path) -> None:
    """Write a new seal key to `path` (mode 0600) unless one is there."""
    if not path.exists():
        write_private(path, Fernet.generate_key() + b"\n")


class Sealer:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key.strip())
        except ValueError:
            raise SealError("the seal key is not a valid key (32 bytes, url-safe base64)") \
                from None

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise SealError(f"cannot read the seal key {path}: {exc.strerror}") from None

    def seal(self, data: bytes) -> str:
        return self._fernet.encrypt(data).decode()

    def unseal(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode())
        except (InvalidToken, ValueError):
            raise SealError("a sealed key does not open with this cluster's seal key") from None
