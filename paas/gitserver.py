"""Git smart HTTP for apps: `http://<controller>/git/<app>.git`, a push deploys.

(Being written: see issue 4.)
"""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register the git routes on the controller application."""
