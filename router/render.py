"""Rendering of HAProxy's configuration from a layout (pure: text in, text out).

`paas/templates/haproxy.cfg.j2` is rendered with Jinja2 with autoescaping off (this is not HTML), so
every value that goes in is validated here first: app names by `paas.names`, hostnames against
a strict DNS pattern, servers as IPv4 + port, the listen address as IPv4 + port, and the socket
path as a plain path. Backends are named `app_<name>`, slots `s1..sN`; an empty slot is a
`disabled` server that the runtime API can readdress and enable without a reload.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from paas import templating
from paas.names import validate_app_name
from router.plan import Backend, Layout
from router.routes import InvalidRoute, Server, validate_hostname

TEMPLATE_NAME = "haproxy.cfg.j2"

# Address HAProxy is given for an empty slot; the slot is `disabled`, so it is never used.
EMPTY_SLOT = "0.0.0.0:1"

_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class RenderOptions:
    """The parts of the configuration that do not come from Consul."""

    listen_host: str
    listen_port: int
    admin_socket: Path
    maxconn: int
    exporter_host: str = ""
    exporter_port: int = 0
    """Where HAProxy's built-in Prometheus exporter serves `/metrics`; port 0: nowhere."""
    latency_script: Path | None = None
    """paas/templates/latency.lua where HAProxy loads it: response-time histograms per app,
    at /latency on the exporter's port; None: none."""
    https_port: int = 0
    """Where HAProxy serves HTTPS, on listen_host; 0: no HTTPS (the rest is then unused)."""
    fallback_cert: Path | None = None
    """The PEM bundle served to a name no app's certificate has."""
    crt_list: Path | None = None
    """HAProxy's crt-list of the apps' certificates (router/certs.py keeps it)."""
    acme_map: Path | None = None
    """The map HAProxy answers ACME HTTP-01 challenges from (router/acme.py); None: none."""


def render_config(layout: Layout, options: RenderOptions, *,
                  templates_dir: Path | None = None) -> str:
    """Render the full HAProxy configuration for `layout`; raise InvalidRoute on a bad value.
    The template is the packaged one unless `templates_dir` names another folder."""
    env = templating.environment(directory=templates_dir, trim_blocks=True, lstrip_blocks=True)
    template = env.get_template(TEMPLATE_NAME)
    return template.render(
        listen=_listen(options),
        exporter=(_listen(RenderOptions(options.exporter_host, options.exporter_port,
                                        options.admin_socket, options.maxconn))
                  if options.exporter_port else ""),
        admin_socket=_socket_path(options.admin_socket),
        maxconn=_positive_int(options.maxconn, "maxconn"),
        latency_script=(_socket_path(options.latency_script)
                        if options.latency_script and options.exporter_port else ""),
        https=_https(options),
        backends=[_backend_view(layout[app]) for app in sorted(layout)],
    )


def _listen(options: RenderOptions) -> str:
    try:
        host = str(ipaddress.IPv4Address(options.listen_host))
    except (ValueError, TypeError):
        raise InvalidRoute(f"invalid listen address {options.listen_host!r}: need IPv4")
    port = options.listen_port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidRoute(f"invalid listen port {port!r}")
    return f"{host}:{port}"


def _https(options: RenderOptions) -> dict[str, str] | None:
    if not options.https_port:
        return None
    if options.fallback_cert is None or options.crt_list is None:
        raise InvalidRoute("HTTPS needs a fallback certificate and a crt-list")
    port = _positive_int(options.https_port, "https_port")
    return {"listen": _listen(RenderOptions(options.listen_host, options.https_port,
                                            options.admin_socket, options.maxconn)),
            "port_suffix": "" if port == 443 else f":{port}",
            "fallback_cert": _socket_path(options.fallback_cert),
            "crt_list": _socket_path(options.crt_list),
            "acme_map": _socket_path(options.acme_map) if options.acme_map else ""}


def _socket_path(path: Path) -> str:
    text = str(path)
    if not _SAFE_PATH_RE.fullmatch(text):
        raise InvalidRoute(f"socket path {text!r} must be absolute and use only [A-Za-z0-9._/-]")
    return text


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRoute(f"{name} must be a positive integer, got {value!r}")
    return value


def _backend_view(backend: Backend) -> dict[str, object]:
    validate_app_name(backend.app)
    hostnames = [validate_hostname(h) for h in backend.hostnames]
    if not backend.slots:
        raise InvalidRoute(f"backend of {backend.app} has no server slots")
    slots: list[str | None] = []
    for slot in backend.slots:
        if slot is None:
            slots.append(None)
        elif isinstance(slot, Server):
            Server(slot.host, slot.port)  # re-check: frozen dataclasses can be forged with object.__setattr__
            slots.append(str(slot))
        else:
            raise InvalidRoute(f"slot of {backend.app} holds {slot!r}, not a Server")
    return {"app": backend.app, "hostnames": hostnames, "slots": slots, "empty_slot": EMPTY_SLOT,
            "redirect": backend.https.redirect, "hsts": backend.https.hsts}
