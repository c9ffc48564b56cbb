"""An app's logs, streamed from the agents of the nodes its instances run on.

(Being written: see issue 4.)
"""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register `GET /v1/apps/{app}/logs` on the controller application."""
