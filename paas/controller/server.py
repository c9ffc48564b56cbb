"""The controller daemon: builds the aiohttp application and runs it.

`make_app(settings)` is what tests use in-process; `main()` is the `paas-controller` script.
Background work (the route reconcile loop) starts and stops with the app via `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web

from paas.controller.api import add_routes, auth_middleware, error_middleware
from paas.consul import ConsulUnavailable
from paas.controller.longpoll import AssignmentWaiters
from paas.controller.migrations import StoreRefused
from paas.controller.service import CONTROLLER, Controller
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.controller.tokens import load_tokens
from paas.controller.views import require_app
from paas.git import server as gitserver
from paas.selfregister import OwnService, keep_registered
from paas.retry import Outage
from paas.sealing import SealError

log = logging.getLogger("paas.controller.server")
ROUTE_RECONCILE_INTERVAL = 5.0
RECONCILE_INTERVAL = 1.0


async def _route_loop(ctl: Controller) -> None:
    """Keep Consul's route and certificate keys equal to the store, whatever was missed while
    Consul was away; issue and renew the certificates that are due."""
    consul = Outage("consul", doing="route keys are reconciled when it is back", logger=log)
    while True:
        try:
            await ctl.apps.reconcile_routes()
            await ctl.certs.reconcile()
            consul.ok()
        except ConsulUnavailable as exc:
            consul.failed(exc)
        await asyncio.sleep(ROUTE_RECONCILE_INTERVAL)


async def _reconcile_loop(ctl: Controller) -> None:
    """Between deployments: replace instances lost with their node, place what is pending."""
    while True:
        await asyncio.sleep(RECONCILE_INTERVAL)
        try:
            ctl.nodes.reconcile_once()
        except Exception:  # noqa: BLE001 - the loop must outlive a bug in one pass
            log.exception("reconcile pass failed")


def make_app(settings: ControllerSettings) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=settings.max_context_bytes + 1024)
    add_routes(app)
    waiters = AssignmentWaiters()

    async def stopping(app: web.Application) -> None:
        waiters.close()  # held long-polls answer now instead of holding the shutdown

    app.on_shutdown.append(stopping)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        changed: list[Callable[[], None]] = [waiters.notify]  # the placements' poke joins

        def assignments_changed() -> None:
            for hook in changed:
                hook()
        store = Store(settings.data_dir / "state.db", on_assignments_changed=assignments_changed)
        session = aiohttp.ClientSession()
        ctl = Controller.assemble(settings=settings, store=store,
                                  tokens=load_tokens(settings.data_dir), waiters=waiters,
                                  session=session)
        app[CONTROLLER] = ctl
        changed.append(ctl.placements.poke)
        app[gitserver.GIT_HOST] = gitserver.GitHost(
            repos_dir=settings.data_dir / "git",
            controller_url=gitserver.callback_url(settings.host, settings.port),
            admin_token=ctl.tokens.admin, join_token=ctl.tokens.join,
            app_created_at=lambda name: repr(require_app(store, name)["created_at"]))
        ctl.deployments.resume()
        ctl.placements.poke()
        tasks = [asyncio.create_task(_route_loop(ctl)), asyncio.create_task(_reconcile_loop(ctl)),
                 asyncio.create_task(ctl.placements.run(), name="placements"),
                 asyncio.create_task(keep_registered(ctl.consul, [OwnService(
                     component="controller", machine="server", address=settings.host,
                     port=settings.port)]))]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctl.deployments.stop()
        await ctl.consul.close()
        await session.close()
        store.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    settings = ControllerSettings.from_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("controller on http://%s:%s, data in %s", settings.host, settings.port,
             settings.data_dir)
    try:
        web.run_app(make_app(settings), host=settings.host, port=settings.port, print=None,
                    access_log=None, shutdown_timeout=5)
    except (StoreRefused, SealError) as exc:
        sys.exit(f"paas-controller: {exc}")


if __name__ == "__main__":
    main()
