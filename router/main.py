"""`paas-router`: the router daemon's entry point and wiring.

Startup, in the aiohttp app's cleanup context: adopt the HAProxy an earlier router left
serving, or start one on the last applied layout (kept on disk), then the Consul watcher, the
applier and a supervisor that restarts HAProxy if it dies; then the admin server (`/healthz`,
`/metrics`, `/routes`) binds. SIGTERM or SIGINT stops the router's tasks and leaves HAProxy
serving for the next router (`--stop-haproxy-on-exit` stops it too), so an upgrade or a
kill -9 of the router costs no request.

Run `paas-router --help` (or `python -m router.main --help`) for the flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from paas.consul import ConsulClient
from paas.retry import Backoff
from paas.sealing import SealError, Sealer
from paas.selfregister import OwnService, keep_registered
from router.admin import STATE, RouterState, add_routes
from router.applier import Applier
from router.acme import ChallengeApplier
from router.certs import CertApplier
from router.haproxy import HAProxy, HAProxyError, resolve_binary
from router.metrics import RouterMetrics
from router.render import RenderOptions
from router.settings import RouterSettings
from router.watch import RouteWatcher

log = logging.getLogger("router")


def build_app(settings: RouterSettings) -> web.Application:
    """The admin web app; its cleanup context runs HAProxy and the watchers for its lifetime."""
    app = web.Application()
    app.cleanup_ctx.append(_router_context(settings))
    add_routes(app)
    return app


def _router_context(
    settings: RouterSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        metrics = RouterMetrics()
        haproxy = HAProxy(
            binary=resolve_binary(settings.haproxy_bin),
            config_path=settings.config_path, pid_path=settings.pid_path,
            master_socket=settings.master_socket, admin_socket=settings.admin_socket,
            stop_timeout_s=settings.stop_timeout_s,
        )
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # HAProxy loads the response-time histograms' script from beside its configuration.
        settings.latency_script_path.write_bytes(
            importlib.resources.files("paas").joinpath("templates", "latency.lua").read_bytes())
        # With HTTPS, a seal key that cannot be read stops the start (SealError: one line).
        sealer = Sealer.from_file(settings.seal_key_file) if settings.https_port \
            and settings.seal_key_file else None
        consul = ConsulClient(settings.consul_url)
        tasks: list[asyncio.Task[None]] = []
        try:
            watcher = RouteWatcher(
                client=consul,
                prefix=settings.routes_prefix, wait_s=settings.consul_wait_s,
                backoff_max_s=settings.backoff_max_s, min_interval_s=settings.debounce_s,
                metrics=metrics, on_change=lambda: applier.notify(),
                certs_prefix=settings.certs_prefix if sealer else None, sealer=sealer,
                acme_prefix=settings.acme_prefix if sealer else None,
                placed_prefix=settings.placed_prefix if settings.require_placement else None,
            )
            certs = CertApplier(
                admin_socket=settings.admin_socket, certs_dir=settings.certs_dir,
                crt_list=settings.crt_list_path, fallback=settings.fallback_cert_path,
                desired=lambda: watcher.certs) if sealer else None
            challenges = ChallengeApplier(
                admin_socket=settings.admin_socket, map_file=settings.acme_map_path,
                desired=lambda: watcher.challenges) if sealer else None
            applier = Applier(
                haproxy=haproxy,
                options=RenderOptions(listen_host=settings.listen_host,
                                      listen_port=settings.listen_port,
                                      admin_socket=settings.admin_socket,
                                      maxconn=settings.maxconn,
                                      exporter_host=settings.admin_host,
                                      exporter_port=settings.exporter_port,
                                      latency_script=settings.latency_script_path,
                                      https_port=settings.https_port,
                                      fallback_cert=settings.fallback_cert_path,
                                      crt_list=settings.crt_list_path,
                                      acme_map=settings.acme_map_path),
                templates_dir=settings.templates_dir, initial_slots=settings.initial_slots,
                debounce_s=settings.debounce_s, backoff_max_s=settings.backoff_max_s,
                metrics=metrics, desired=watcher.desired, layout_path=settings.layout_path,
                certs=certs, challenges=challenges,
            )
            await applier.start_haproxy()
            metrics.watch_slots(lambda: applier.layout)
            app[STATE] = RouterState(haproxy=haproxy, applier=applier, metrics=metrics)
            tasks = [
                asyncio.create_task(applier.run(), name="apply"),
                asyncio.create_task(watcher.run(), name="watch-routes"),
                asyncio.create_task(_supervise(haproxy, applier, metrics, settings),
                                    name="supervise-haproxy"),
                asyncio.create_task(keep_registered(consul, own_services(settings)),
                                    name="register-in-consul"),
            ]
            log.info("routing %s:%d%s from Consul %s (routes under %s)", settings.listen_host,
                     settings.listen_port,
                     f", HTTPS on :{settings.https_port}" if settings.https_port else "",
                     settings.consul_url, settings.routes_prefix)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if settings.stop_haproxy_on_exit:
                await haproxy.stop()
            else:
                haproxy.release()  # it serves on; the next router adopts it
            await consul.close()

    return context


async def _supervise(haproxy: HAProxy, applier: Applier, metrics: RouterMetrics,
                     settings: RouterSettings) -> None:
    """Restart HAProxy on the last applied layout if it exits while the router runs."""
    backoff = Backoff(first=0.5, cap=settings.backoff_max_s)
    started = time.monotonic()
    while True:
        code = await haproxy.wait()
        if time.monotonic() - started > 30:
            backoff.reset()
        delay = backoff.next()
        log.error("HAProxy exited unexpectedly (code %s); restarting it in %.1f s", code, delay)
        metrics.haproxy_restarts.inc()
        await asyncio.sleep(delay)
        started = time.monotonic()
        try:
            await applier.start_haproxy()
            metrics.watch_slots(lambda: applier.layout)
        except HAProxyError as exc:
            log.error("HAProxy restart failed: %s", exc)
        applier.notify()


async def serve(settings: RouterSettings) -> int:
    """Run the router until SIGTERM/SIGINT; return the process exit code."""
    runner = web.AppRunner(build_app(settings), access_log=None)
    try:
        await runner.setup()
    except (HAProxyError, SealError, OSError) as exc:
        log.error("router cannot start: %s", exc)
        return 1
    try:
        site = web.TCPSite(runner, settings.admin_host, settings.admin_port)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot serve the admin API on %s:%d: %s", settings.admin_host,
                      settings.admin_port, exc)
            return 1
        log.info("admin API on http://%s:%d (/healthz, /metrics, /routes)",
                 settings.admin_host, settings.admin_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        return 0
    finally:
        await runner.cleanup()


def own_services(settings: RouterSettings) -> list[OwnService]:
    """The router's endpoints Prometheus scrapes: its own `/metrics`, and HAProxy's exporter."""
    found = [OwnService(component="router", machine="server", address=settings.admin_host,
                        port=settings.admin_port)]
    if settings.exporter_port:
        found.append(OwnService(component="haproxy", machine="server",
                                address=settings.admin_host, port=settings.exporter_port,
                                health_path="/metrics"))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `paas-router`; a bad setting exits 2 with one line on stderr."""
    settings = RouterSettings.from_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
