"""The controller's HTTP API under `/v1`: request parsing and validation at the edge, errors
mapped to JSON in one middleware. The work itself is in `paas.controller.service.Controller`."""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import math
import json
import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paas.builder.builder import STACK_LOG_PREFIX
from paas.consul import ConsulUnavailable
from paas.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized, Unavailable
from paas.names import InvalidName, validate_app_name, validate_new_app_name, validate_node_name
from paas.controller import appmetrics, logstream, targets
from paas.git import server as gitserver
from paas.auth import credentials
from paas.controller.openapi import openapi_document
from paas.controller.service import CONTROLLER
from paas.controller.views import require_app

log = logging.getLogger("paas.controller.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = {"/healthz", "/metrics"}
PUBLIC_PREFIXES = ("/sd/", "/ui/")
"""Prometheus' targets, read by the cluster's own Prometheus on the server's private address
as `/metrics` is; the dashboard's files, whose pages ask for the token."""
UI_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
AGENT_ROUTES = {"node_register", "node_heartbeat", "node_assignments", "drain_node",
                "remove_node"}
"""What the join token may do: a node's agent registers, reports and takes its assignments,
and `paas host remove` on the machine drains the node and takes it out."""
TOKEN_KIND = web.RequestKey("token_kind", str)


def _json_error(status: int, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": message, **details}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json_error(exc.status, exc.message, **exc.details)
    except InvalidName as exc:
        return _json_error(400, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return _json_error(413, "the upload is too large")
    except web.HTTPException as exc:
        if exc.status == 404:
            return _json_error(404, f"no such route: {request.method} {request.path}")
        if exc.status == 405:
            return _json_error(405, f"method {request.method} is not allowed on {request.path}")
        return _json_error(exc.status, exc.reason)
    except Exception:  # noqa: BLE001 - the user sees one sentence, the log the traceback
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, "internal error in the controller; see its log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    ctl = request.app[CONTROLLER]
    _, token = credentials(request.headers.get("Authorization", ""))
    if not token:
        raise Unauthorized("this route needs a token: send 'Authorization: Bearer <token>'")
    is_admin = hmac.compare_digest(token, ctl.tokens.admin)
    is_join = hmac.compare_digest(token, ctl.tokens.join)
    if not (is_admin or is_join):
        raise Unauthorized("the token is not valid for this controller")
    route = request.match_info.route.name
    if is_join and not is_admin and route not in AGENT_ROUTES:
        raise Forbidden("the join token is for node agents; use an admin token")
    request[TOKEN_KIND] = "admin" if is_admin else "join"
    return await handler(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _app_name(request: web.Request) -> str:
    return validate_app_name(request.match_info["app"])


def _seconds(request: web.Request, name: str, upper: float) -> float:
    """A query parameter in seconds (default 0), clamped to [0, upper]."""
    try:
        value = float(request.query.get(name, "0") or 0)
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a number of seconds")
    return min(max(value, 0.0), upper)


def _release(body: dict[str, Any]) -> int | None:
    """The body's optional `release` (a number, or "vN")."""
    release = body.get("release")
    return None if release is None else _int(release, "release")


INT_MAX = 2**63 - 1  # SQLite's largest integer: beyond it a lookup fails instead of missing


def _int(value: Any, what: str, *, low: int = 1) -> int:
    """An integer from `low` to INT_MAX (a release, an id, a cursor); BadRequest otherwise."""
    sentence = f"{what} must be an integer from {low} to {INT_MAX}"
    if isinstance(value, bool):
        raise BadRequest(sentence)
    try:
        number = int(str(value).removeprefix("v"))
    except (TypeError, ValueError):
        raise BadRequest(sentence) from None
    if not low <= number <= INT_MAX:
        raise BadRequest(sentence)
    return number


# --- handlers -----------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CONTROLLER].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def create_app(request: web.Request) -> web.Response:
    body = await _json_body(request)
    name = validate_new_app_name(body.get("name"))
    return web.json_response({"app": await request.app[CONTROLLER].apps.create(name)},
                             status=201)


async def list_apps(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    apps = ctl.apps.listing()
    # Firing alerts per app; null when the cluster's Prometheus is not there to say.
    firing = await appmetrics.Prometheus(ctl.settings.prometheus_url, ctl.session).firing()
    for app in apps:
        app["alerts"] = None if firing is None else firing.get(app["name"], [])
    return web.json_response({"apps": apps})


async def show_app(request: web.Request) -> web.Response:
    return web.json_response({"app": request.app[CONTROLLER].apps.show(_app_name(request))})


async def prometheus_targets(request: web.Request) -> web.Response:
    """Prometheus' `http_sd_configs`: the targets of one scrape job, read from Consul now."""
    kind = request.match_info["kind"]
    if kind not in targets.KINDS:
        raise NotFound(f"no targets of kind {kind[:40]!r}: use one of {', '.join(targets.KINDS)}")
    consul = request.app[CONTROLLER].consul
    try:
        names = targets.services_of(kind, await consul.catalog_services())
        entries = {name: (await consul.health(name)).value for name in names}
    except ConsulUnavailable as exc:
        raise Unavailable(f"Consul did not answer: {exc}") from None
    return web.json_response([g.as_json() for g in targets.target_groups(kind, entries)])


async def app_metrics(request: web.Request) -> web.Response:
    """The app's golden signals and its instances' usage over `since` (default 15m)."""
    ctl = request.app[CONTROLLER]
    app = _app_name(request)
    require_app(ctl.store, app)
    since = appmetrics.parse_since(request.query.get("since", "15m"))
    nodes = {n["name"]: n["address"] for n in ctl.store.list_nodes()}
    addresses = {f"{nodes[i['node']]}:{i['host_port']}": (i["id"], str(i["release"]))
                 for i in ctl.store.list_instances(app, include_stopped=True)
                 if i["host_port"] and i["node"] in nodes}
    found = await appmetrics.app_metrics(
        appmetrics.Prometheus(ctl.settings.prometheus_url, ctl.session), app, since, addresses)
    return web.json_response({"metrics": found.as_json()})


async def app_metrics_series(request: web.Request) -> web.Response:
    """The dashboard's charts of the app over `since` (default 1h), deploys marked."""
    ctl = request.app[CONTROLLER]
    app = _app_name(request)
    require_app(ctl.store, app)
    since = appmetrics.parse_since(request.query.get("since", "1h"))
    deploys = [d["created_at"] for d in ctl.store.list_deployments(app)]
    series = await appmetrics.app_series(
        appmetrics.Prometheus(ctl.settings.prometheus_url, ctl.session), app, since,
        time.time(), deploys)
    return web.json_response({"series": series})


async def ui_file(request: web.Request) -> web.StreamResponse:
    """The dashboard's three files (paas/ui/), with a policy that allows no script but its
    own: no inline script, nothing from another origin."""
    name = request.match_info.get("file") or "index.html"
    if name not in UI_FILES:
        raise NotFound(f"no dashboard file {name[:40]!r}")
    body = importlib.resources.files("paas").joinpath("ui", name).read_bytes()
    return web.Response(body=body, content_type=UI_FILES[name], charset="utf-8", headers={
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                   "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                   "base-uri 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache"})


async def delete_app(request: web.Request) -> web.Response:
    name = _app_name(request)
    await request.app[CONTROLLER].apps.delete(name)
    gitserver.remove_repo(request.app[gitserver.GIT_HOST], name)
    return web.json_response({"deleted": request.match_info["app"]})


async def create_release(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    app = _app_name(request)
    require_app(ctl.store, app)
    if request.content_type == "application/json":
        body = await _json_body(request)
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise BadRequest("send a build context (application/gzip) or JSON {\"image\": ...}")
        release = await ctl.releases.release_from_image(app, image, token=request[TOKEN_KIND])
    else:
        data = await request.read()
        source = request.query.get("source", "")
        stream = request.query.get("stream", "0")
        if stream not in ("0", "1"):
            raise BadRequest("stream must be 0 or 1")

        def build(on_log: Callable[[str], None] | None) -> Awaitable[dict[str, Any]]:
            return ctl.releases.release_from_context(app, data, source=source,
                                                     token=request[TOKEN_KIND], on_log=on_log)
        if stream == "1":
            return await _stream_build(request, build)
        release = await build(None)
    return web.json_response({"release": release}, status=201)


def build_event(line: str) -> dict[str, str]:
    """One log line of a release build as a stream object: the stack image's lines (the
    builder prefixes them) are the `stack` phase, the rest the `package` phase."""
    if line.startswith(STACK_LOG_PREFIX):
        return {"phase": "stack", "line": line.removeprefix(STACK_LOG_PREFIX)}
    return {"phase": "package", "line": line}


def _ndjson(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


async def _stream_build(request: web.Request,
                        build: Callable[[Callable[[str], None]], Awaitable[dict[str, Any]]]
                        ) -> web.StreamResponse:
    """`?stream=1`: the build's log lines as `application/x-ndjson` as they come, then one
    last object, `{"release": ...}` or `{"error", "status", "log_tail"}`. An error before the
    first line (a bad context, no such app) is the usual JSON error with its HTTP status."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    # The build runs in a thread; its lines are handed to this loop in order.
    task = asyncio.ensure_future(build(lambda line: loop.call_soon_threadsafe(
        lines.put_nowait, line)))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a client gone: logged
    resp: web.StreamResponse | None = None
    while True:
        getter = asyncio.ensure_future(lines.get())
        await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        resp = resp or await _open_stream(request)
        await resp.write(_ndjson(build_event(getter.result())))
    if resp is None:  # nothing streamed: answer as without ?stream=1
        return web.json_response({"release": task.result()}, status=201)
    while not lines.empty():
        await resp.write(_ndjson(build_event(lines.get_nowait())))
    await resp.write(_ndjson(_last_object(request, task)))
    await resp.write_eof()
    return resp


async def _open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
    resp.content_type = "application/x-ndjson"
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


def _last_object(request: web.Request, task: "asyncio.Future[dict[str, Any]]") -> dict[str, Any]:
    """The stream's last object: the release, or the error the JSON answer would have had."""
    exc = task.exception()
    if exc is None:
        return {"release": task.result()}
    if isinstance(exc, ApiError):
        return {"error": exc.message, "status": exc.status, **exc.details}
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return {"error": "internal error in the controller; see its log", "status": 500}


async def list_releases(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    return web.json_response({"releases": ctl.releases.listing(_app_name(request))})


async def show_release(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    version = _int(request.match_info["version"], "release")
    return web.json_response({"release": ctl.releases.show(_app_name(request), version)})


async def publish_release(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    version = _int(request.match_info["version"], "release")
    return web.json_response(await ctl.releases.publish(_app_name(request), version))


async def set_domains(request: web.Request) -> web.Response:
    body = await _json_body(request)
    app = request.app[CONTROLLER].apps.set_domains(_app_name(request), body.get("hostnames", []))
    await request.app[CONTROLLER].apps.sync_route(app["name"])
    return web.json_response({"app": app})


async def set_https(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    app = ctl.apps.set_https(_app_name(request), await _json_body(request))
    await ctl.apps.sync_route(app["name"])
    return web.json_response({"app": app})


async def list_certs(request: web.Request) -> web.Response:
    """The app's certificates: kind, source, host names, expiry; never a key."""
    certs, app = request.app[CONTROLLER].certs, _app_name(request)
    return web.json_response({"certs": certs.listing(app), "acme": certs.acme_state(app)})


async def add_cert(request: web.Request) -> web.Response:
    body = await _json_body(request)
    cert = await request.app[CONTROLLER].certs.add(_app_name(request), body.get("cert"),
                                                   body.get("key"))
    return web.json_response({"cert": cert}, status=201)


async def renew_certs(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CONTROLLER].certs.renew(_app_name(request)))


async def remove_cert(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    await request.app[CONTROLLER].certs.remove(_app_name(request), kind)
    return web.json_response({"removed": kind})


async def create_deployment(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    app = _app_name(request)
    body = await _json_body(request)
    dep = await ctl.deployments.deploy(app, release=_release(body),
                                       replicas=body.get("replicas"))
    return web.json_response({"deployment": dep}, status=202)


async def list_deployments(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    return web.json_response({"deployments": ctl.deployments.listing(_app_name(request))})


async def show_deployment(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    dep_id = _int(request.match_info["id"], "deployment id")
    wait = _seconds(request, "wait", 60.0)
    dep = await ctl.deployments.show(_app_name(request), dep_id, wait=wait)
    return web.json_response({"deployment": dep})


async def promote(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    body = await _json_body(request)
    rel = await ctl.releases.promote(_app_name(request), _release(body))
    return web.json_response({"release": rel})


async def rollback(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    body = await _json_body(request)
    skip = body.get("skip_checks", False)
    if not isinstance(skip, bool):
        raise BadRequest("skip_checks must be true or false")
    dep = await ctl.deployments.rollback(_app_name(request), release=_release(body),
                                         skip_checks=skip)
    return web.json_response({"deployment": dep}, status=202)


async def scale(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    body = await _json_body(request)
    dep = await ctl.deployments.scale(_app_name(request), body.get("replicas"))
    return web.json_response({"deployment": dep}, status=202)


async def get_config(request: web.Request) -> web.Response:
    config = request.app[CONTROLLER].apps.get_config(_app_name(request))
    return web.json_response({"config": config})


async def set_config(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    body = await _json_body(request)
    result = await ctl.apps.set_config(_app_name(request), set_=body.get("set"),
                                       unset=body.get("unset"))
    return web.json_response(result)


async def list_events(request: web.Request) -> web.Response:
    ctl = request.app[CONTROLLER]
    after = _int(request.query.get("after", "0"), "after", low=0)
    dep = request.query.get("deployment")
    dep_id = _int(dep, "deployment") if dep else None
    events = ctl.deployments.events(_app_name(request), after=after, deployment_id=dep_id)
    return web.json_response({"events": events})


HEALTH_ASK_S = 2.0  # a listing does not wait longer on Consul than this


async def list_instances(request: web.Request) -> web.Response:
    """The app's instances, each with `health`: its Consul check status (passing, warning,
    critical), or null when it is not registered (not yet, or a process that is not routed)
    or Consul cannot say within HEALTH_ASK_S."""
    ctl = request.app[CONTROLLER]
    app = _app_name(request)
    rows = ctl.nodes.list_instances(app)
    status: dict[str, str] = {}
    try:
        async with asyncio.timeout(HEALTH_ASK_S):
            status = {s["id"]: s["status"] for s in await ctl.consul.service_health(app)}
    except (ConsulUnavailable, TimeoutError) as exc:
        log.warning("instances of %s listed without their health: %s", app, exc)
    return web.json_response({"instances": [{**r, "health": status.get(r["id"] or "")}
                                            for r in rows]})


async def list_stacks(request: web.Request) -> web.Response:
    return web.json_response({"stacks": await request.app[CONTROLLER].releases.stack_listing()})


async def build_stack(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    force = request.query.get("force", "false")
    if force not in ("true", "false"):
        raise BadRequest("force must be true or false")
    return web.json_response(await request.app[CONTROLLER].releases.build_stack(
        name, force=force == "true"))


async def build_stacks_in_background(request: web.Request) -> web.Response:
    body = await _json_body(request)
    names = body.get("stacks")
    if not isinstance(names, list) or not names or not all(
            isinstance(n, str) and 0 < len(n) <= 30 for n in names):
        raise BadRequest("stacks must be a non-empty list of stack names")
    result = await request.app[CONTROLLER].releases.build_stacks_in_background(names)
    return web.json_response(result, status=202)


async def list_nodes(request: web.Request) -> web.Response:
    return web.json_response({"nodes": request.app[CONTROLLER].nodes.listing()})


async def drain_node(request: web.Request) -> web.Response:
    node = validate_node_name(request.match_info["node"])
    body = await _json_body(request)
    drain = body.get("drain", True)
    if not isinstance(drain, bool):
        raise BadRequest("drain must be true or false")
    return web.json_response(await request.app[CONTROLLER].nodes.drain(node, drain))


async def remove_node(request: web.Request) -> web.Response:
    node = validate_node_name(request.match_info["node"])
    return web.json_response(request.app[CONTROLLER].nodes.remove(node))


async def node_register(request: web.Request) -> web.Response:
    node = validate_node_name(request.match_info["node"])
    body = await _json_body(request)
    return web.json_response({"node": request.app[CONTROLLER].nodes.register(node, body)})


async def node_heartbeat(request: web.Request) -> web.Response:
    node = validate_node_name(request.match_info["node"])
    body = await _json_body(request)
    request.app[CONTROLLER].nodes.heartbeat(node, body)
    request.app[CONTROLLER].placements.poke()  # a container's published port may be new
    return web.json_response({"ok": True})


async def node_assignments(request: web.Request) -> web.Response:
    node = validate_node_name(request.match_info["node"])
    index = _int(request.query.get("index", "0"), "index", low=0)
    wait = _seconds(request, "wait", 300.0)
    return web.json_response(await request.app[CONTROLLER].nodes.assignments(node, index, wait))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", healthz, name="healthz")
    r.add_get("/metrics", metrics, name="metrics")
    r.add_get("/v1/openapi.json", openapi, name="openapi")
    r.add_get("/sd/prometheus/{kind}", prometheus_targets, name="prometheus_targets")
    r.add_post("/v1/apps", create_app, name="create_app")
    r.add_get("/v1/apps", list_apps, name="list_apps")
    r.add_get("/v1/apps/{app}", show_app, name="show_app")
    r.add_delete("/v1/apps/{app}", delete_app, name="delete_app")
    r.add_post("/v1/apps/{app}/releases", create_release, name="create_release")
    r.add_get("/v1/apps/{app}/releases", list_releases, name="list_releases")
    r.add_get("/v1/apps/{app}/releases/{version}", show_release, name="show_release")
    r.add_post("/v1/apps/{app}/releases/{version}/publish", publish_release,
               name="publish_release")
    r.add_put("/v1/apps/{app}/domains", set_domains, name="set_domains")
    r.add_put("/v1/apps/{app}/https", set_https, name="set_https")
    r.add_get("/v1/apps/{app}/certs", list_certs, name="list_certs")
    r.add_post("/v1/apps/{app}/certs", add_cert, name="add_cert")
    r.add_post("/v1/apps/{app}/certs/renew", renew_certs, name="renew_certs")
    r.add_delete("/v1/apps/{app}/certs/{kind}", remove_cert, name="remove_cert")
    r.add_post("/v1/apps/{app}/deployments", create_deployment, name="create_deployment")
    r.add_get("/v1/apps/{app}/deployments", list_deployments, name="list_deployments")
    r.add_get("/v1/apps/{app}/deployments/{id}", show_deployment, name="show_deployment")
    r.add_get("/v1/apps/{app}/instances", list_instances, name="list_instances")
    r.add_post("/v1/apps/{app}/promote", promote, name="promote")
    r.add_post("/v1/apps/{app}/rollback", rollback, name="rollback")
    r.add_post("/v1/apps/{app}/scale", scale, name="scale")
    r.add_get("/v1/apps/{app}/config", get_config, name="get_config")
    r.add_patch("/v1/apps/{app}/config", set_config, name="set_config")
    r.add_get("/v1/apps/{app}/events", list_events, name="list_events")
    r.add_get("/v1/apps/{app}/metrics", app_metrics, name="app_metrics")
    r.add_get("/v1/apps/{app}/metrics/series", app_metrics_series, name="app_metrics_series")
    r.add_get("/ui/", ui_file, name="ui_index")
    r.add_get("/ui/{file}", ui_file, name="ui_file")
    r.add_get("/v1/stacks", list_stacks, name="list_stacks")
    r.add_post("/v1/stacks/{name}/build", build_stack, name="build_stack")
    r.add_post("/v1/stacks/build", build_stacks_in_background, name="build_stacks")
    r.add_get("/v1/nodes", list_nodes, name="list_nodes")
    r.add_put("/v1/nodes/{node}", node_register, name="node_register")
    r.add_delete("/v1/nodes/{node}", remove_node, name="remove_node")
    r.add_post("/v1/nodes/{node}/drain", drain_node, name="drain_node")
    r.add_post("/v1/nodes/{node}/heartbeat", node_heartbeat, name="node_heartbeat")
    r.add_get("/v1/nodes/{node}/assignments", node_assignments, name="node_assignments")
    gitserver.add_routes(app)
    logstream.add_routes(app)
