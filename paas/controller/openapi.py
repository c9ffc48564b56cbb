"""The OpenAPI 3 document of the controller's API, served at `/v1/openapi.json`.

Written by hand next to the routes; `tests/service/test_api.py` checks that every route the
application registers is described here, and nothing more.
"""

from __future__ import annotations

from typing import Any

_ERR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, ok: str = "200", *, body: dict[str, Any] | None = None,
        params: list[str] = (), query: list[tuple[str, str]] = (),  # type: ignore[assignment]
        auth: bool = True, errors: tuple[str, ...] = ("400", "401", "404")) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "success"}}}
    for code in errors:
        op["responses"][code] = _ERR
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in params]
    parameters += [{"name": q, "in": "query", "required": False,
                    "schema": {"type": kind}} for q, kind in query]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if not auth:
        op["security"] = []
    return op


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _release_post() -> dict[str, Any]:
    op = _op("Build a release from a gzip tar build context, or make one from an image already "
             "on the hosts. With stream=1 a build answers application/x-ndjson as its log "
             "comes: one object per line, {\"phase\": \"stack\"|\"package\", \"line\": ...} "
             "(the stack phase only while a stack's images are made, on first use), then a last "
             "{\"release\": {...}} or {\"error\", \"status\", \"log_tail\"}; an error "
             "before the first line is the usual JSON error", "201", params=["app"],
             query=[("source", "string"), ("stream", "integer")],
             errors=("400", "401", "404", "413", "422", "503"),
             body={"application/gzip": {"schema": {"type": "string", "format": "binary"}},
                   **_json({"type": "object", "required": ["image"],
                            "properties": {"image": {"type": "string"}}})})
    line = {"type": "object", "properties": {
        "phase": {"type": "string", "enum": ["stack", "package"]}, "line": {"type": "string"},
        "release": {"type": "object"}, "error": {"type": "string"},
        "status": {"type": "integer"}, "log_tail": {"type": "string"}}}
    op["responses"]["200"] = {"description": "stream=1: the build's log, then its outcome",
                              "content": {"application/x-ndjson": {"schema": line}}}
    return op


def _meta_paths() -> dict[str, Any]:
    """Liveness, metrics and this document."""
    return {
        "/healthz": {"get": _op("Liveness of the controller", auth=False, errors=())},
        "/metrics": {"get": _op("Prometheus metrics", auth=False, errors=())},
        "/sd/prometheus/{kind}": {"get": _op(
            "Prometheus' targets of one scrape job (http_sd_configs), read from Consul's "
            "catalog: kind apps (instances with a [metrics] path), paas (the daemons), "
            "haproxy (the router's exporter) or latency (its response-time histograms)",
            params=["kind"], auth=False, errors=("404", "503"))},
        "/v1/openapi.json": {"get": _op("This document", errors=("401",))},
        "/ui/": {"get": _op("The dashboard (its pages ask for the API token)", auth=False,
                            errors=())},
        "/ui/{file}": {"get": _op("The dashboard's script and style", params=["file"],
                                  auth=False, errors=("404",))},
    }


def _app_paths() -> dict[str, Any]:
    """Apps, their releases and host names."""
    app = ["app"]
    return {
        "/v1/apps": {
            "get": _op("List apps", errors=("401",)),
            "post": _op("Create an app", "201", errors=("400", "401", "409"), body=_json({
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string",
                                        "pattern": "^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$"}}})),
        },
        "/v1/apps/{app}": {
            "get": _op("Show an app", params=app),
            "delete": _op("Delete an app, its instances, services and route", params=app),
        },
        "/v1/apps/{app}/releases": {
            "get": _op("List releases", params=app),
            "post": _release_post(),
        },
        "/v1/apps/{app}/releases/{version}": {
            "get": _op("Show a release", params=["app", "version"]),
        },
        "/v1/apps/{app}/releases/{version}/publish": {
            "post": _op("Make a release's image available to every node",
                        params=["app", "version"], errors=("400", "401", "404", "409", "422")),
        },
        "/v1/apps/{app}/domains": {
            "put": _op("Set the app's host names (<app>.<domain> is always kept) and "
                       "publish its route", params=app, errors=("400", "401", "404", "409"),
                       body=_json({"type": "object", "properties": {
                           "hostnames": {"type": "array", "items": {"type": "string"}}}})),
        },
        "/v1/apps/{app}/https": {
            "put": _op("Set the app's HTTPS choices: redirect plain HTTP to HTTPS (308), and "
                       "HSTS on HTTPS answers; the route is published again",
                       params=app, errors=("400", "401", "404", "503"),
                       body=_json({"type": "object", "additionalProperties": False,
                                   "properties": {"redirect": {"type": "boolean"},
                                                  "hsts": {"type": "boolean"}}})),
        },
        "/v1/apps/{app}/certs": {
            "get": _op("List the app's certificates (kind platform: the cluster CA's for "
                       "<app>.<domain>; own: the user's), with their host names and expiry; "
                       "never a key", params=app),
            "post": _op("Serve the user's certificate for the app's own domains: the key must "
                        "match, it must cover them, be valid now and its chain in order; the "
                        "key is kept sealed", "201", params=app,
                        errors=("400", "401", "404", "503"),
                        body=_json({"type": "object", "required": ["cert", "key"],
                                    "properties": {"cert": {"type": "string"},
                                                   "key": {"type": "string"}}})),
        },
        "/v1/apps/{app}/certs/renew": {
            "post": _op("Renew the app's certificates now: the platform one from the cluster CA, "
                        "the own one from the ACME CA when it came from there (the answer waits "
                        "for the order; 503 with the CA's sentence when it fails)", params=app,
                        errors=("401", "404", "503")),
        },
        "/v1/apps/{app}/certs/{kind}": {
            "delete": _op("Stop serving the app's own certificate", params=["app", "kind"]),
        },
    }


def _deployment_paths() -> dict[str, Any]:
    """Deployments and the operations that start one (rollback, scale, config), promote, and
    the instances they leave running."""
    app = ["app"]
    return {
        "/v1/apps/{app}/deployments": {
            "get": _op("List deployments", params=app),
            "post": _op("Deploy a release (default: the latest) at a replica count", "202",
                        params=app, errors=("400", "401", "404", "409"), body=_json({
                            "type": "object", "properties": {
                                "release": {"type": "integer"},
                                "replicas": {"oneOf": [
                                    {"type": "integer", "minimum": 0},
                                    {"type": "object",
                                     "additionalProperties": {"type": "integer"}}]}}})),
        },
        "/v1/apps/{app}/deployments/{id}": {
            "get": _op("Show a deployment; ?wait=S blocks while it runs",
                       params=["app", "id"], query=[("wait", "number")]),
        },
        "/v1/apps/{app}/instances": {"get": _op("List an app's instances, each with its Consul health", params=app)},
        "/v1/apps/{app}/promote": {
            "post": _op("Mark a succeeded release stable (default: the last deployed)",
                        params=app, errors=("400", "401", "404", "409"), body=_json({
                            "type": "object",
                            "properties": {"release": {"type": "integer"}}})),
        },
        "/v1/apps/{app}/rollback": {
            "post": _op("Deploy an earlier release (default: the previous stable) through "
                        "the same flow", "202", params=app,
                        errors=("400", "401", "404", "409"), body=_json({
                            "type": "object", "properties": {
                                "release": {"type": "integer"},
                                "skip_checks": {"type": "boolean"}}})),
        },
        "/v1/apps/{app}/scale": {
            "post": _op("Change replica counts per process type", "202", params=app,
                        errors=("400", "401", "404", "409"), body=_json({
                            "type": "object", "required": ["replicas"], "properties": {
                                "replicas": {"type": "object",
                                             "additionalProperties": {"type": "integer"}}}})),
        },
        "/v1/apps/{app}/config": {
            "get": _op("Show config vars", params=app),
            "patch": _op("Set or unset config vars: makes a new release with the same image "
                         "and deploys it", params=app, errors=("400", "401", "404", "409"),
                         body=_json({"type": "object", "properties": {
                             "set": {"type": "object",
                                     "additionalProperties": {"type": "string"}},
                             "unset": {"type": "array", "items": {"type": "string"}}}})),
        },
    }


def _app_stream_paths() -> dict[str, Any]:
    """git push, logs and the deployment history."""
    app = ["app"]
    return {
        "/v1/apps/{app}/git": {
            "get": _op("The app's git push URL and deploy branch (null: main or master)",
                       params=app),
            "put": _op("Set the deploy branch; {\"branch\": null} goes back to main or "
                       "master", params=app, body=_json({
                           "type": "object", "required": ["branch"],
                           "properties": {"branch": {"type": "string", "nullable": True}}})),
        },
        "/v1/apps/{app}/logs": {
            "get": _op("The app's logs as text lines '<instance> | <line>', from the agents; "
                       "?follow=1 keeps streaming", params=app,
                       query=[("follow", "boolean"), ("instance", "string"),
                              ("since", "number"), ("tail", "integer")]),
        },
        "/v1/apps/{app}/events": {
            "get": _op("Deployment events, step by step", params=app,
                       query=[("after", "integer"), ("deployment", "integer")]),
        },
        "/v1/apps/{app}/metrics": {
            "get": _op("The app's requests per second, 5xx ratio and average response time, "
                       "in total and per release, and each instance's CPU and memory, over "
                       "`since` (90s, 15m, 2h: 1 minute to 7 days; default 15m), asked of the "
                       "cluster's Prometheus; 503 with one sentence without it", params=app,
                       query=[("since", "string")], errors=("400", "401", "404", "503")),
        },
        "/v1/apps/{app}/metrics/series": {
            "get": _op("The dashboard's charts: requests/s, 5xx/s and average response time "
                       "over `since` (default 1h) at about 60 points, [[unix time, value]], "
                       "and the times deployments started", params=app,
                       query=[("since", "string")], errors=("400", "401", "404", "503")),
        },
    }


def _stack_paths() -> dict[str, Any]:
    """The language stacks."""
    return {
        "/v1/stacks": {"get": _op("List the language stacks and the state of their images",
                                  errors=("401", "503"))},
        "/v1/stacks/build": {
            "post": _op("Make these stacks' images in the background, one after the other "
                        "(answers at once, 202); GET /v1/stacks shows each one's progress",
                        "202", errors=("400", "401", "404", "503"), body=_json({
                            "type": "object", "required": ["stacks"], "properties": {
                                "stacks": {"type": "array", "items": {"type": "string"}}}})),
        },
        "/v1/stacks/{name}/build": {
            "post": _op("Make a stack's images now unless they are current (force=true: "
                        "make them again); answers when done, with the log's tail",
                        params=["name"], query=[("force", "boolean")],
                        errors=("400", "401", "404", "422", "503")),
        },
    }


def _node_paths() -> dict[str, Any]:
    """Nodes and what their agents call."""
    return {
        "/v1/nodes": {"get": _op("List nodes", errors=("401",))},
        "/v1/nodes/{node}": {
            "put": _op("Register a node (join token)", params=["node"], body=_json({
                "type": "object", "required": ["address"], "properties": {
                    "address": {"type": "string"}, "cpu": {"type": "number"},
                    "memory_mb": {"type": "integer"}, "labels": {"type": "object"},
                    "consul_url": {"type": "string"}}})),
            "delete": _op("Take a node out of the cluster once its agent is down (admin or "
                          "join token); 409 while it still reports",
                          params=["node"], errors=("400", "401", "404", "409")),
        },
        "/v1/nodes/{node}/drain": {
            "post": _op("Drain a node (move its instances elsewhere under the rolling rules) "
                        "or make it eligible again with {\"drain\": false}",
                        params=["node"], errors=("400", "401", "404", "409"),
                        body=_json({"type": "object",
                                    "properties": {"drain": {"type": "boolean"}}})),
        },
        "/v1/nodes/{node}/heartbeat": {
            "post": _op("Report a node's instance states (join token)", params=["node"],
                        body=_json({"type": "object", "properties": {
                            "instances": {"type": "array", "items": {"type": "object"}}}})),
        },
        "/v1/nodes/{node}/assignments": {
            "get": _op("Long-poll a node's assignments (join token)", params=["node"],
                       query=[("index", "integer"), ("wait", "number")]),
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "paas controller", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
        "security": [{"bearer": []}],
        "paths": {**_meta_paths(), **_app_paths(), **_deployment_paths(),
                  **_app_stream_paths(), **_stack_paths(), **_node_paths()},
    }
