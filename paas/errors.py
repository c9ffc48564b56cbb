"""Errors named by what the caller should do, each mapped to one HTTP status in one place.

The message of every error is one sentence a user can act on; the API returns it as
`{"error": message}` (plus optional details such as a build log tail).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Base: `status` is the HTTP status, `message` one sentence, `details` extra JSON fields."""

    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    """The request is malformed or invalid: fix it and send it again."""

    status = 400


class Unauthorized(ApiError):
    """No token or a wrong one: send `Authorization: Bearer <token>`."""

    status = 401


class Forbidden(ApiError):
    """The token is valid but not for this route."""

    status = 403


class NotFound(ApiError):
    """The named app, release, deployment or node does not exist."""

    status = 404


class Conflict(ApiError):
    """The request clashes with the current state (already exists, a deploy is running)."""

    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class Unprocessable(ApiError):
    """Well-formed but cannot be carried out, e.g. a build that fails."""

    status = 422


class Unavailable(ApiError):
    """A dependency (Docker, Consul) is not reachable: retry later."""

    status = 503
