"""The controller's operations, between the HTTP edge (`paas.api`) and the store, Consul,
Docker and the deployer. Every method checks what it is given, changes state in one
transaction, and raises `paas.errors` types that the API maps to statuses."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import docker
import docker.errors
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from paas import buildcontext, reconciler, scheduler
from paas.appconfig import BadAppConfig, parse_app_config
from paas.consul import ConsulClient, ConsulUnavailable
from paas.appconfig import resources_of
from paas.deployer import Deployer, new_instance_id, placement_request
from paas.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, Unprocessable
from paas.longpoll import AssignmentWaiters
from paas.settings import ControllerSettings
from paas.store import DeploymentRunning, Store
from paas.tokens import Tokens

log = logging.getLogger("paas.service")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                       r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
INSTANCE_STATES = {"pending", "starting", "running", "exited", "missing", "stopping"}
CONTAINER_PORT = 5000


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
class Controller:
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

    # --- releases ---------------------------------------------------------------------------
    def _lock(self, app: str) -> asyncio.Lock:
        return self._release_locks.setdefault(app, asyncio.Lock())

    async def release_from_context(self, app: str, data: bytes, *, source: str,
                                   token: str) -> dict[str, Any]:
        if len(data) > self.settings.max_context_bytes:
            raise PayloadTooLarge("the build context is larger than the limit")
        try:
            summary = buildcontext.validate_build_context(context=data)
        except buildcontext.BadBuildContext as exc:
            raise BadRequest(str(exc)) from None
        try:
            config = parse_app_config(procfile=summary.procfile, toml_text=summary.paas_toml)
        except BadAppConfig as exc:
            raise BadRequest(str(exc)) from None
        if not summary.has_dockerfile and not summary.procfile:
            raise BadRequest("the build context has neither a Dockerfile nor a Procfile")
        source = source or "upload:sha256:" + hashlib.sha256(data).hexdigest()[:16]
        from paas import builder  # docker-py's build path is only needed here

        async with self._lock(app):
            self.require_app(app)
            version = self.store.get_app(app)["next_release"]  # type: ignore[index]
            tag = f"{self.settings.image_repo}/{app}:v{version}"
            try:
                result = await asyncio.to_thread(builder.build_image, context=data, tag=tag,
                                                 docker_client=self.docker)
            except builder.BuildFailed as exc:
                self.metrics.builds_failed.inc()
                raise Unprocessable(exc.message, log_tail="\n".join(exc.log_tail)) from None
            except buildcontext.BadBuildContext as exc:
                raise BadRequest(str(exc)) from None
            except builder.BuilderUnavailable as exc:
                raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
            except docker.errors.DockerException as exc:
                raise Unavailable(f"the Docker engine failed during the build: {exc}") from None
            return self._add_release(app, version, tag, result.image_id, source, config, token)

    async def release_from_image(self, app: str, image: str, *, token: str) -> dict[str, Any]:
        async with self._lock(app):
            self.require_app(app)
            version = self.store.get_app(app)["next_release"]  # type: ignore[index]
            tag = f"{self.settings.image_repo}/{app}:v{version}"
            try:
                img = await asyncio.to_thread(self.docker.images.get, image)
                await asyncio.to_thread(img.tag, f"{self.settings.image_repo}/{app}", f"v{version}")
            except docker.errors.ImageNotFound:
                raise Unprocessable(f"no image {image!r} on the hosts; build or load it first") \
                    from None
            except docker.errors.APIError as exc:
                raise Unprocessable(f"the image {image!r} cannot be used: {exc.explanation}") \
                    from None
            config = parse_app_config(procfile=None, toml_text=None)
            return self._add_release(app, version, tag, img.id, f"image:{image}", config, token)

    def _add_release(self, app: str, version: int, tag: str, image_id: str, source: str,
                     config: Any, token: str) -> dict[str, Any]:
        app_row = self.require_app(app)
        release = self.store.add_release(
            app=app, version=version, image=tag, image_id=image_id, source=source,
            config=app_row["config"], processes=config.processes,
            test_command=config.test_command, health=config.health_dict(),
            policy=config.policy_dict(), created_by=token)
        self.metrics.releases.inc()
        return self._release_view(release)

    @staticmethod
    def _release_view(r: dict[str, Any]) -> dict[str, Any]:
        return {"app": r["app"], "version": r["version"], "name": f"v{r['version']}",
                "image": r["image"], "image_id": r["image_id"], "source": r["source"],
                "pushed_image": r["pushed_image"],
                "config": r["config"], "processes": r["processes"],
                "test_command": r["test_command"], "health": r["health"], "policy": r["policy"],
                "created_at": r["created_at"], "created_by": r["created_by"]}

    def list_releases(self, app: str) -> list[dict[str, Any]]:
        app_row = self.require_app(app)
        deps = self.store.list_deployments(app)
        live = {i["release"] for i in self.store.list_instances(app)
                if i["role"] == "live" and i["desired"] == "running"}
        out = []
        for r in self.store.list_releases(app):
            view = self._release_view(r)
            mine = [d for d in deps if d["release"] == r["version"]]
            view["status"] = ("live" if r["version"] in live
                              else mine[-1]["status"] if mine else "built")
            view["stable"] = r["version"] == app_row["stable_release"]
            out.append(view)
        return out

    async def publish_release(self, app: str, version: int) -> dict[str, Any]:
        """Make the release's image available to every node: push it to the private registry
        when one is configured (agents pull what they lack); otherwise the nodes share this
        Docker engine and the image only has to be on it."""
        release = self.show_release(app, version)
        try:
            img = await asyncio.to_thread(self.docker.images.get, release["image"])
        except docker.errors.ImageNotFound:
            raise Unprocessable(f"the image {release['image']} of v{version} is gone from the "
                                "engine; build the app again") from None
        if img.id != release["image_id"]:
            raise Conflict(f"the tag {release['image']} now names another image; "
                           "build the app again")
        ref = None
        if self.settings.registry:
            repo = f"{self.settings.registry}/{self.settings.image_repo}/{app}"
            ref = f"{repo}:v{version}"
            await asyncio.to_thread(img.tag, repo, f"v{version}")
            error = await asyncio.to_thread(self._push, repo, f"v{version}")
            if error:
                raise Unavailable(f"pushing {ref} to the registry failed: {error}")
            self.store.set_pushed_image(app, version, ref)
        nodes = [n["name"] for n in self.store.list_nodes()]
        return {"release": self.show_release(app, version),
                "published": {"image": ref or release["image"], "nodes": nodes,
                              "registry": self.settings.registry or None}}

    def _push(self, repo: str, tag: str) -> str:
        """Push an image; returns the registry's error message, or '' when it worked."""
        for chunk in self.docker.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                return str(chunk["error"])
        return ""

    def show_release(self, app: str, version: int) -> dict[str, Any]:
        self.require_app(app)
        release = self.store.get_release(app, version)
        if release is None:
            raise NotFound(f"release v{version} of {app!r} does not exist")
        return self._release_view(release)

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

    # --- reconcile between deployments ------------------------------------------------------
    def reconcile_once(self) -> reconciler.Plan:
        """Stop instances on lost nodes and place replacements so every app runs its scale;
        what cannot be placed is recorded as pending with the scheduler's reason."""
        ready = {n["name"] for n in self.store.list_nodes() if self.node_is_ready(n)}
        deploying = {d["app"] for d in self.store.running_deployments()}
        apps = self.store.list_apps()
        plan = reconciler.reconcile(
            apps=[reconciler.AppView(name=a["name"], live_release=a["live_release"],
                                     scale=a["scale"], deploying=a["name"] in deploying)
                  for a in apps],
            instances=[reconciler.InstanceView(
                id=i["id"], app=i["app"], release=i["release"], process=i["process"],
                role=i["role"], node=i["node"], desired=i["desired"])
                for i in self.store.list_instances()],
            ready_nodes=ready)
        if plan.lost:
            self.store.set_desired(list(plan.lost), "stopped")
            for inst in plan.lost:
                log.warning("instance %s is lost with its node", inst)
        pending: dict[str, dict[str, Any]] = {}
        for p in plan.place:
            release = self.store.get_release(p.app, p.release)
            if release is None:
                continue
            splan = scheduler.place(nodes=self.deployer.cluster_view(),
                                    request=placement_request(p.app, p.process, p.count,
                                                              release["policy"]))
            rows = [{"id": new_instance_id(p.app, p.release, p.process), "app": p.app,
                     "release": p.release, "process": p.process, "role": "live", "node": node}
                    for node in splan.placements]
            if rows:
                self.store.add_instances(rows)
                self.store.add_event(app=p.app, deployment_id=None, step="reschedule",
                                     message=f"placed {', '.join(r['id'] + ' on ' + r['node'] for r in rows)}")
            if splan.unplaced:
                pending.setdefault(p.app, {})[p.process] = {"count": splan.unplaced,
                                                            "reason": splan.reason}
        for a in apps:
            if a["name"] not in deploying and a["pending"] != pending.get(a["name"], {}):
                self.store.set_app_fields(a["name"], pending=pending.get(a["name"], {}))
        return plan

    # --- instances and nodes ----------------------------------------------------------------
    def list_instances(self, app: str) -> list[dict[str, Any]]:
        self.require_app(app)
        nodes = {n["name"]: n for n in self.store.list_nodes()}
        out = []
        for i in self.store.list_instances(app):
            node = nodes.get(i["node"])
            address = (f"{node['address']}:{i['host_port']}"
                       if node is not None and i["host_port"] else None)
            out.append({"id": i["id"], "release": i["release"], "process": i["process"],
                        "role": i["role"], "node": i["node"], "desired": i["desired"],
                        "state": i["state"], "address": address,
                        "container_id": i["container_id"], "restarts": i["restarts"],
                        "reason": None})
        app_row = self.require_app(app)
        for process, info in sorted(app_row["pending"].items()):
            for _ in range(int(info["count"])):
                out.append({"id": None, "release": app_row["live_release"], "process": process,
                            "role": "live", "node": None, "desired": "running",
                            "state": "pending", "address": None, "container_id": None,
                            "restarts": 0, "reason": info["reason"]})
        return out

    def list_nodes(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        for i in self.store.list_instances():
            counts[i["node"]] = counts.get(i["node"], 0) + 1
        nodes = []
        for n in self.store.list_nodes():
            nodes.append({"name": n["name"], "address": n["address"], "cpu": n["cpu"],
                          "memory_mb": n["memory_mb"], "labels": n["labels"],
                          "status": ("down" if not self.node_is_ready(n)
                                     else "draining" if n["draining"] else "ready"),
                          "instances": counts.get(n["name"], 0),
                          "last_heartbeat": n["last_heartbeat"]})
        self.metrics.nodes_ready.set(sum(1 for n in nodes if n["status"] == "ready"))
        return nodes

    async def drain_node(self, name: str, drain: bool) -> dict[str, Any]:
        """Mark a node (in)eligible; draining moves its live instances elsewhere through a
        deployment per app, under the rolling rules (replacements healthy first)."""
        self._require_node(name)
        self.store.set_node_draining(name, drain)
        started: list[dict[str, Any]] = []
        if drain:
            apps = sorted({i["app"] for i in self.store.list_instances()
                           if i["node"] == name and i["role"] == "live"})
            for app in apps:
                row = self.store.get_app(app)
                if row is None or row["live_release"] is None:
                    continue
                try:
                    dep = self.store.create_deployment(
                        app=app, release=row["live_release"], replicas=row["scale"],
                        kind="drain", options={"skip_checks": True, "avoid_node": name})
                except DeploymentRunning as exc:
                    raise Conflict(f"deployment {exc.dep_id} of {app!r} is running; drain "
                                   "the node again when it is done",
                                   deployment_id=exc.dep_id) from None
                self._start(dep["id"])
                started.append(self._deployment_view(dep))
        node = next(n for n in self.list_nodes() if n["name"] == name)
        return {"node": node, "deployments": started}

    def register_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        address = body.get("address")
        try:
            ipaddress.IPv4Address(address)  # type: ignore[arg-type]
        except (ipaddress.AddressValueError, TypeError, ValueError):
            raise BadRequest("address must be the node's IPv4 address") from None
        try:
            cpu = float(body.get("cpu", 1))
            memory_mb = int(body.get("memory_mb", 1024))
        except (TypeError, ValueError):
            raise BadRequest("cpu and memory_mb must be numbers") from None
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise BadRequest("labels must be an object of strings")
        consul_url = str(body.get("consul_url") or f"http://{address}:8500")
        agent_url = body.get("agent_url") or ""
        if not isinstance(agent_url, str) or agent_url and not agent_url.startswith("http://"):
            raise BadRequest("agent_url must be an http:// URL")
        node = self.store.upsert_node(name=name, address=address, cpu=cpu,
                                      memory_mb=memory_mb, labels=labels, consul_url=consul_url,
                                      agent_url=agent_url)
        self._seen[name] = time.monotonic()
        return node

    def _require_node(self, name: str) -> dict[str, Any]:
        node = self.store.get_node(name)
        if node is None:
            raise NotFound(f"node {name!r} is not registered; register it first")
        return node

    def heartbeat(self, name: str, body: dict[str, Any]) -> None:
        self._require_node(name)
        reports = body.get("instances", [])
        if not isinstance(reports, list) or not all(
                isinstance(r, dict) and isinstance(r.get("id"), str)
                and r.get("state") in INSTANCE_STATES for r in reports):
            raise BadRequest("instances must be a list of {id, state} objects")
        self._seen[name] = time.monotonic()
        self.store.report_instances(name, reports)

    async def assignments(self, name: str, index: int, wait: float) -> dict[str, Any]:
        self._require_node(name)

        def current() -> int:
            node = self.store.get_node(name)
            return node["assign_index"] if node else 0

        new_index = await self.waiters.wait_for(current, index, wait)
        out = []
        for a in self.store.node_assignments(name):
            command = a["processes"].get(a["process"])
            res = resources_of(a["policy"], a["process"])
            out.append({
                "id": a["id"], "app": a["app"], "release": a["release"], "process": a["process"],
                "role": a["role"], "desired": a["desired"],
                "image": a["pushed_image"] or a["image"],
                "tags": ["stable"] if a["release"] == a["stable_release"] else [],
                "command": ["/bin/sh", "-c", command] if command else None,
                "env": a["config"], "port": CONTAINER_PORT,
                "memory_mb": res.memory_mb, "cpu": res.cpu, "health": a["health"],
                "stop_timeout_s": a["policy"].get("stop_timeout", 10)})
        return {"index": new_index, "instances": out}


CONTROLLER = web.AppKey("controller", Controller)
