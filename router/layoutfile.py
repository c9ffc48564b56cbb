"""The layout HAProxy runs, kept on disk after every apply (`layout.json` in the state dir).

A router that starts again reads it: it adopts the HAProxy that kept serving while it was away
(the layout says which server sits in which slot, so runtime updates go on from there), or it
starts HAProxy on these last routes when none runs, before Consul answers. It never starts
empty for an app that was routed. A file that is missing or does not parse is an empty layout,
with a warning: Consul's routes fill it on the first apply.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from paas.names import InvalidName, validate_app_name
from router.plan import Backend, Layout
from router.routes import HttpsPolicy, InvalidRoute, Server, validate_hostname

log = logging.getLogger("router.layout")


def dump(layout: Layout) -> dict[str, Any]:
    return {"apps": {app: {"hostnames": list(b.hostnames),
                           "slots": [str(s) if s else None for s in b.slots],
                           "https": {"redirect": b.https.redirect, "hsts": b.https.hsts}}
                     for app, b in sorted(layout.items())}}


def parse(doc: Any) -> dict[str, Backend]:
    """The layout in `doc`; raises ValueError (InvalidRoute, InvalidName) on anything wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("apps"), dict):
        raise ValueError("no 'apps' object")
    layout = {}
    for app, entry in doc["apps"].items():
        validate_app_name(app)
        if not isinstance(entry, dict) or not isinstance(entry.get("hostnames"), list) \
                or not isinstance(entry.get("slots"), list) or not entry["slots"]:
            raise ValueError(f"bad entry for {app!r}")
        slots = []
        for slot in entry["slots"]:
            if slot is None:
                slots.append(None)
                continue
            host, _, port = str(slot).rpartition(":")
            if not port.isdigit():
                raise ValueError(f"bad server {slot!r}")
            slots.append(Server(host, int(port)))
        https = entry.get("https") or {}  # absent in a layout saved before HTTPS
        if not isinstance(https, dict):
            raise ValueError(f"bad https policy for {app!r}")
        layout[app] = Backend(app=app, hostnames=tuple(validate_hostname(h)
                                                       for h in entry["hostnames"]),
                              slots=tuple(slots),
                              https=HttpsPolicy(redirect=https.get("redirect") is True,
                                                hsts=https.get("hsts") is True))
    return layout


def save(path: Path, layout: Layout) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dump(layout)))
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Backend]:
    try:
        return parse(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, InvalidRoute, InvalidName) as exc:
        log.warning("ignoring the saved layout %s: %s", path, exc)
        return {}
