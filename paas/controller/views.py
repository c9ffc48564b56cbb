"""The JSON shapes of the API's objects, and the lookups that answer 404.

Pure functions over store rows, shared by the controller's collaborators (apps, releases,
deployments, nodes), so an object looks the same whichever route returns it.
"""

from __future__ import annotations

from typing import Any

from paas.controller.store import Store
from paas.errors import NotFound


def require_app(store: Store, name: str) -> dict[str, Any]:
    """The app's row; NotFound with what to do when there is none."""
    app = store.get_app(name)
    if app is None:
        raise NotFound(f"app {name!r} does not exist; create it with 'paas apps create {name}'")
    return app


def require_node(store: Store, name: str) -> dict[str, Any]:
    node = store.get_node(name)
    if node is None:
        raise NotFound(f"node {name!r} is not registered; register it first")
    return node


def release_view(r: dict[str, Any]) -> dict[str, Any]:
    return {"app": r["app"], "version": r["version"], "name": f"v{r['version']}",
            "image": r["image"], "image_id": r["image_id"], "source": r["source"],
            "pushed_image": r["pushed_image"],
            "config": r["config"], "processes": r["processes"],
            "test_command": r["test_command"], "health": r["health"], "policy": r["policy"],
            "created_at": r["created_at"], "created_by": r["created_by"],
            "stack": r.get("stack"), "metrics_path": r.get("metrics_path")}


def deployment_view(d: dict[str, Any]) -> dict[str, Any]:
    return {"id": d["id"], "app": d["app"], "release": d["release"], "kind": d["kind"],
            "replicas": d["replicas"], "status": d["status"], "step": d["step"],
            "reason": d["reason"], "log_tail": d["log_tail"],
            "test_output": d["test_output"], "options": d["options"],
            "created_at": d["created_at"], "updated_at": d["updated_at"]}


def live_releases(store: Store, app: str) -> set[int]:
    """Releases with live instances that are meant to run."""
    return {i["release"] for i in store.list_instances(app)
            if i["role"] == "live" and i["desired"] == "running"}
