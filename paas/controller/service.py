"""The controller's operations, between the HTTP edge (`paas.controller.api`) and the store, Consul,
Docker and the deployer: apps, deployments, promote, rollback, scale and config here;
releases in `paas.controller.releases`, nodes and instances in `paas.controller.nodes`. Every method checks what it
is given, changes state in one transaction, and raises `paas.errors` types that the API maps
to statuses."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import docker
import docker.errors
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.deployer import Deployer
from paas.errors import BadRequest, Conflict, NotFound, Unavailable
from paas.controller.longpoll import AssignmentWaiters
from paas.controller.nodes import NodeOps
from paas.controller.releases import ReleaseOps
from paas.controller.settings import ControllerSettings
from paas.controller.store import DeploymentRunning, Store
from paas.controller.tokens import Tokens

log = logging.getLogger("paas.controller.service")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                       r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deployments = Counter("paas_deployments_total", "Deployments by outcome",
                                   ["status"], registry=self.registry)
        self.releases = Counter("paas_releases_total", "Releases made", registry=self.registry)
        self.builds_failed = Counter("paas_builds_failed_total", "Builds that failed",
                                     registry=self.registry)
        self.nodes_ready = Gauge("paas_nodes_ready", "Nodes with a recent heartbeat",
                                 registry=self.registry)


@dataclass
class Controller(ReleaseOps, NodeOps):
    settings: ControllerSettings
    store: Store
    tokens: Tokens
    waiters: AssignmentWaiters
    session: aiohttp.ClientSession
    metrics: Metrics = field(default_factory=Metrics)
    _docker: Any = None
    _release_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _seen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.consul = ConsulClient(self.settings.consul_url, self.session)
        self.deployer = Deployer(store=self.store, consul=self.consul, settings=self.settings,
                                 session=self.session, node_is_ready=self.node_is_ready,
                                 docker=lambda: self.docker, promote=self.promote,
                                 publish=self.publish_release,
                                 join_token=self.tokens.join)
        # After a controller restart every node gets a fresh grace period.
        now = time.monotonic()
        for node in self.store.list_nodes():
            self._seen[node["name"]] = now

    # --- helpers ----------------------------------------------------------------------------
    @property
    def docker(self) -> Any:
        if self._docker is None:
            try:
                self._docker = (docker.DockerClient(base_url=self.settings.docker_url)
                                if self.settings.docker_url else docker.from_env())
            except docker.errors.DockerException as exc:
                raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
        return self._docker

    def require_app(self, name: str) -> dict[str, Any]:
        app = self.store.get_app(name)
        if app is None:
            raise NotFound(f"app {name!r} does not exist; create it with 'paas apps create {name}'")
        return app

    def node_is_ready(self, node: dict[str, Any]) -> bool:
        seen = self._seen.get(node["name"])
        return seen is not None and time.monotonic() - seen <= self.settings.node_down_after

    def hostnames(self, app: str) -> list[str]:
        return [f"{app}.{self.settings.domain}"]

    # --- apps -------------------------------------------------------------------------------
    async def create_app(self, name: str) -> dict[str, Any]:
        if self.store.get_app(name) is not None:
            raise Conflict(f"app {name!r} already exists")
        app = self.store.create_app(name, self.hostnames(name))
        await self.sync_route(name)
        return self._app_view(app)

    def _app_view(self, app: dict[str, Any]) -> dict[str, Any]:
        latest = self.store.latest_release(app["name"])
        return {"name": app["name"], "hostnames": app["hostnames"], "scale": app["scale"],
                "created_at": app["created_at"], "stable_release": app["stable_release"],
                "latest_release": latest["version"] if latest else None,
                "urls": [f"http://{h}/" for h in app["hostnames"]]}

    def list_apps(self) -> list[dict[str, Any]]:
        return [self._app_view(a) for a in self.store.list_apps()]

    def show_app(self, name: str) -> dict[str, Any]:
        view = self._app_view(self.require_app(name))
        view["instances"] = len(self.store.list_instances(name))
        return view

    async def delete_app(self, name: str) -> None:
        self.require_app(name)
        for dep in self.store.running_deployments():
            task = self._tasks.get(dep["id"])
            if dep["app"] == name and task is not None:
                task.cancel()
        self.store.delete_app(name)
        await self.sync_route(name)

    async def sync_route(self, name: str) -> None:
        """Make Consul's route key for `name` match the store (best effort; the periodic
        reconcile retries when Consul is away)."""
        app = self.store.get_app(name)
        try:
            if app is None:
                await self.consul.delete_route(name)
                await self.consul.delete_kv(f"paas/apps/{name}", recurse=True)
            else:
                await self.consul.put_route(name, app["hostnames"])
        except ConsulUnavailable as exc:
            log.warning("route of %s not synced yet: %s", name, exc)

    async def reconcile_routes(self) -> None:
        """Route keys in Consul KV = apps in the store."""
        routes = await self.consul.list_routes()
        apps = {a["name"]: a for a in self.store.list_apps()}
        for name, app in apps.items():
            if routes.get(name, {}).get("hostnames") != app["hostnames"]:
                await self.consul.put_route(name, app["hostnames"])
        for name in routes.keys() - apps.keys():
            await self.consul.delete_route(name)
        for name, app in apps.items():
            if app["stable_release"]:
                await self.consul.put_kv(f"paas/apps/{name}/stable", str(app["stable_release"]))

    def set_domains(self, name: str, extra: Any) -> dict[str, Any]:
        """Set the app's hostnames: `<app>.<domain>` plus `extra` (publish-deploy)."""
        self.require_app(name)
        if not isinstance(extra, list) or not all(isinstance(h, str) for h in extra):
            raise BadRequest("hostnames must be a list of host names")
        hostnames = self.hostnames(name)
        for host in extra:
            host = host.strip().lower().rstrip(".")
            if not _HOSTNAME.fullmatch(host):
                raise BadRequest(f"invalid host name {host[:60]!r}")
            if host not in hostnames:
                hostnames.append(host)
        for other in self.store.list_apps():
            taken = set(other["hostnames"]) & set(hostnames)
            if other["name"] != name and taken:
                raise Conflict(f"host name {sorted(taken)[0]!r} already belongs to app "
                               f"{other['name']!r}")
        self.store.set_app_fields(name, hostnames=hostnames)
        return self._app_view(self.require_app(name))

    # --- deployments ------------------------------------------------------------------------
    def _replicas(self, raw: Any, release: dict[str, Any], app: dict[str, Any]) -> dict[str, int]:
        """The counts per process type: the app's current scale (or one web instance),
        overridden by `raw` (a number means web)."""
        if raw is None:
            raw = {}
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"web": raw}
        if not isinstance(raw, dict):
            raise BadRequest("replicas must be a number or an object like {\"web\": 2}")
        current = {p: n for p, n in (app["scale"] or {}).items() if p in release["processes"]}
        if not current and "web" in release["processes"]:
            current = {"web": 1}
        out: dict[str, int] = dict(current)
        for process, count in raw.items():
            if process not in release["processes"]:
                raise BadRequest(f"release v{release['version']} has no process type "
                                 f"{process!r}")
            if isinstance(count, bool) or not isinstance(count, int) \
                    or not 0 <= count <= self.settings.max_replicas:
                raise BadRequest(f"replicas must be a whole number from 0 to "
                                 f"{self.settings.max_replicas}")
            out[process] = count
        return out

    async def deploy(self, app: str, *, release: int | None, replicas: Any,
                     kind: str = "deploy", skip_checks: bool = False) -> dict[str, Any]:
        app_row = self.require_app(app)
        rel = (self.store.latest_release(app) if release is None
               else self.store.get_release(app, release))
        if rel is None:
            raise NotFound(f"release v{release} of {app!r} does not exist" if release
                           else f"app {app!r} has no release yet; deploy a build first")
        counts = self._replicas(replicas, rel, app_row)
        try:
            dep = self.store.create_deployment(app=app, release=rel["version"], replicas=counts,
                                               kind=kind, options={"skip_checks": skip_checks})
        except DeploymentRunning as exc:
            raise Conflict(f"deployment {exc.dep_id} of {app!r} is still running",
                           deployment_id=exc.dep_id) from None
        self._start(dep["id"])
        return self._deployment_view(dep)

    def _start(self, dep_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._run(dep_id))
        self._tasks[dep_id] = task

    async def _run(self, dep_id: int) -> None:
        try:
            await self.deployer.run(dep_id)
        finally:
            self._tasks.pop(dep_id, None)
            dep = self.store.get_deployment(dep_id)
            if dep is not None:
                self.metrics.deployments.labels(status=dep["status"]).inc()

    def resume_deployments(self) -> None:
        """After a restart, carry on every deployment that was running: its steps are safe to
        run again (a control instance of the interrupted attempt is replaced, instances it
        already started count once healthy, an interrupted drain is finished)."""
        for dep in self.store.running_deployments():
            controls = [i["id"] for i in self.store.list_instances(dep["app"])
                        if i["deployment_id"] == dep["id"] and i["role"] == "control"]
            self.store.set_desired(controls, "stopped")
            self.store.add_event(app=dep["app"], deployment_id=dep["id"], step=dep["step"],
                                 message="controller restarted: resuming this deployment")
            self._start(dep["id"])

    @staticmethod
    def _deployment_view(d: dict[str, Any]) -> dict[str, Any]:
        return {"id": d["id"], "app": d["app"], "release": d["release"], "kind": d["kind"],
                "replicas": d["replicas"], "status": d["status"], "step": d["step"],
                "reason": d["reason"], "log_tail": d["log_tail"],
                "test_output": d["test_output"], "options": d["options"],
                "created_at": d["created_at"], "updated_at": d["updated_at"]}

    # --- promote, rollback, scale, config ---------------------------------------------------
    async def promote(self, app: str, version: int) -> None:
        """Mark `version` stable: KV pointer, then the `stable` tag via the agents."""
        self.store.promote(app, version)
        try:
            await self.consul.put_kv(f"paas/apps/{app}/stable", str(version))
        except ConsulUnavailable as exc:
            log.warning("stable pointer of %s not written yet: %s", app, exc)

    async def promote_release(self, app: str, version: int | None) -> dict[str, Any]:
        self.require_app(app)
        deps = self.store.list_deployments(app)
        if version is None:
            done = [d for d in deps if d["status"] == "succeeded"]
            if not done:
                raise Conflict(f"{app!r} has no successful deployment to promote")
            version = done[-1]["release"]
        if self.store.get_release(app, version) is None:
            raise NotFound(f"release v{version} of {app!r} does not exist")
        if not any(d["release"] == version and d["status"] == "succeeded" for d in deps):
            raise Conflict(f"release v{version} of {app!r} has not been deployed successfully; "
                           "only a succeeded release can be promoted")
        await self.promote(app, version)
        return self.show_release(app, version)

    def rollback_target(self, app: str) -> int:
        """The previous stable release: the stable release when something else is live,
        else the one promoted before the current stable."""
        app_row = self.require_app(app)
        stable = app_row["stable_release"]
        live = {i["release"] for i in self.store.list_instances(app)
                if i["role"] == "live" and i["desired"] == "running"}
        if stable and live != {stable}:
            return stable
        earlier = [r for r in self.store.promotions(app) if r != stable]
        if not earlier:
            raise Conflict(f"{app!r} has no earlier stable release to roll back to; "
                           "name one with --version")
        return earlier[-1]

    async def rollback(self, app: str, *, release: int | None,
                       skip_checks: bool) -> dict[str, Any]:
        target = release if release is not None else self.rollback_target(app)
        return await self.deploy(app, release=target, replicas=None, kind="rollback",
                                 skip_checks=skip_checks)

    async def scale(self, app: str, counts: Any) -> dict[str, Any]:
        if not isinstance(counts, dict) or not counts:
            raise BadRequest("scale needs counts per process type, like {\"web\": 3}")
        live = [i["release"] for i in self.store.list_instances(app)
                if i["role"] == "live" and i["desired"] == "running"]
        release = max(live) if live else None
        return await self.deploy(app, release=release, replicas=counts, kind="scale")

    def get_config(self, app: str) -> dict[str, str]:
        return self.require_app(app)["config"]

    async def set_config(self, app: str, *, set_: Any, unset: Any) -> dict[str, Any]:
        """Change config vars: a new release with the same image (as Heroku does), deployed
        at the app's scale when the app has a release."""
        app_row = self.require_app(app)
        set_ = set_ or {}
        unset = unset or []
        if not isinstance(set_, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in set_.items()):
            raise BadRequest("set must be an object of string values")
        if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
            raise BadRequest("unset must be a list of names")
        for key in [*set_, *unset]:
            if not _CONFIG_KEY.fullmatch(key) or key.startswith("PAAS_") or key == "PORT":
                raise BadRequest(f"invalid config name {key[:40]!r}: use letters, digits and "
                                 "'_', not starting with a digit; PORT and PAAS_* are reserved")
        config = {k: v for k, v in {**app_row["config"], **set_}.items() if k not in unset}
        async with self._lock(app):
            self.store.set_app_fields(app, config=config)
            latest = self.store.latest_release(app)
            if latest is None:
                return {"config": config, "release": None, "deployment": None}
            version = self.store.get_app(app)["next_release"]  # type: ignore[index]
            release = self.store.add_release(
                app=app, version=version, image=latest["image"], image_id=latest["image_id"],
                source=latest["source"], config=config, processes=latest["processes"],
                test_command=latest["test_command"], health=latest["health"],
                policy=latest["policy"], created_by="config")
        deployment = None
        if self.store.list_instances(app):
            deployment = await self.deploy(app, release=version, replicas=None, kind="config")
        return {"config": config, "release": self._release_view(release),
                "deployment": deployment}

    def list_events(self, app: str, *, after: int = 0,
                    deployment_id: int | None = None) -> list[dict[str, Any]]:
        self.require_app(app)
        return self.store.list_events(app, after=after, deployment_id=deployment_id)

    def list_deployments(self, app: str) -> list[dict[str, Any]]:
        self.require_app(app)
        return [self._deployment_view(d) for d in self.store.list_deployments(app)]

    async def show_deployment(self, app: str, dep_id: int, *, wait: float = 0) -> dict[str, Any]:
        """The deployment; with `wait`, block up to that many seconds while it runs."""
        self.require_app(app)
        dep = self.store.get_deployment(dep_id)
        if dep is None or dep["app"] != app:
            raise NotFound(f"deployment {dep_id} of {app!r} does not exist")
        task = self._tasks.get(dep_id)
        if wait and task is not None:
            await asyncio.wait([task], timeout=wait)
            dep = self.store.get_deployment(dep_id)
        return self._deployment_view(dep)  # type: ignore[arg-type]

CONTROLLER = web.AppKey("controller", Controller)
