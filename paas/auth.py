"""Reading credentials from an `Authorization` header: one place for the API's middleware and
the git server. A token comes as `Bearer <token>`, or as the password of `Basic` credentials
(git sends them that way: any user name, the token as password)."""

from __future__ import annotations

import base64
import binascii


def credentials(header: str) -> tuple[str, str]:
    """(user, token) of the header; ("", "") when it carries none."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return "", value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return "", ""
        user, _, token = decoded.partition(":")
        return user, token
    return "", ""
