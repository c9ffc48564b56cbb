"""Deployments: starting one (deploy, rollback, scale, config, drain) as a task that runs the
deploy state machine (`paas.controller.deployer`), resuming those a restart interrupted,
cancelling an app's, and reading them back with their events.

One deployment per app runs at a time: the store refuses a second, and the caller gets 409
with the running one's id.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from paas.controller.deployer import Deployer
from paas.controller.metrics import Metrics
from paas.controller.settings import ControllerSettings
from paas.controller.store import DeploymentRunning, Store
from paas.controller.views import deployment_view, live_releases, require_app
from paas.errors import BadRequest, Conflict, NotFound


@dataclass(kw_only=True)
class Deployments:
    settings: ControllerSettings
    store: Store
    deployer: Deployer
    metrics: Metrics
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False)

    # --- starting ---------------------------------------------------------------------------
    def replicas(self, raw: Any, release: dict[str, Any], app: dict[str, Any]) -> dict[str, int]:
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
        app_row = require_app(self.store, app)
        rel = (self.store.latest_release(app) if release is None
               else self.store.get_release(app, release))
        if rel is None:
            raise NotFound(f"release v{release} of {app!r} does not exist" if release
                           else f"app {app!r} has no release yet; deploy a build first")
        counts = self.replicas(replicas, rel, app_row)
        try:
            dep = self.store.create_deployment(app=app, release=rel["version"], replicas=counts,
                                               kind=kind, options={"skip_checks": skip_checks})
        except DeploymentRunning as exc:
            raise Conflict(f"deployment {exc.dep_id} of {app!r} is still running",
                           deployment_id=exc.dep_id) from None
        self.start(dep["id"])
        return deployment_view(dep)

    def start(self, dep_id: int) -> None:
        """Run a deployment the store holds as running, in a task of its own."""
        self.tasks[dep_id] = asyncio.get_running_loop().create_task(self._run(dep_id))

    async def _run(self, dep_id: int) -> None:
        try:
            await self.deployer.run(dep_id)
        finally:
            self.tasks.pop(dep_id, None)
            dep = self.store.get_deployment(dep_id)
            if dep is not None:
                self.metrics.deployments.labels(status=dep["status"]).inc()

    def resume(self) -> None:
        """After a restart, carry on every deployment that was running: its steps are safe to
        run again (a control instance of the interrupted attempt is replaced, instances it
        already started count once healthy, an interrupted drain is finished)."""
        for dep in self.store.running_deployments():
            controls = [i["id"] for i in self.store.list_instances(dep["app"])
                        if i["deployment_id"] == dep["id"] and i["role"] == "control"]
            self.store.set_desired(controls, "stopped")
            self.store.add_event(app=dep["app"], deployment_id=dep["id"], step=dep["step"],
                                 message="controller restarted: resuming this deployment")
            self.start(dep["id"])

    def cancel_app(self, app: str) -> None:
        """Cancel the app's running deployment (the app is being deleted), recorded as such
        at once: it never stays `running`, even when the deletion fails after this."""
        for dep in self.store.running_deployments():
            task = self.tasks.get(dep["id"])
            if dep["app"] == app:
                self.store.update_deployment(dep["id"], status="failed", step="cancelled",
                                             reason="the app was deleted")
                if task is not None:
                    task.cancel()

    async def stop(self) -> None:
        """Cancel every running deployment task (the controller is stopping; they resume
        when it starts again)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- rollback and scale -----------------------------------------------------------------
    def rollback_target(self, app: str) -> int:
        """The previous stable release: the stable release when something else is live,
        else the one promoted before the current stable."""
        app_row = require_app(self.store, app)
        stable = app_row["stable_release"]
        if stable and live_releases(self.store, app) != {stable}:
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
        live = live_releases(self.store, app)
        return await self.deploy(app, release=max(live) if live else None, replicas=counts,
                                 kind="scale")

    # --- reading ----------------------------------------------------------------------------
    def listing(self, app: str) -> list[dict[str, Any]]:
        require_app(self.store, app)
        return [deployment_view(d) for d in self.store.list_deployments(app)]

    async def show(self, app: str, dep_id: int, *, wait: float = 0) -> dict[str, Any]:
        """The deployment; with `wait`, block up to that many seconds while it runs."""
        require_app(self.store, app)
        dep = self.store.get_deployment(dep_id)
        if dep is None or dep["app"] != app:
            raise NotFound(f"deployment {dep_id} of {app!r} does not exist")
        task = self.tasks.get(dep_id)
        if wait and task is not None:
            await asyncio.wait([task], timeout=wait)
            dep = self.store.get_deployment(dep_id)
        return deployment_view(dep)  # type: ignore[arg-type]

    def events(self, app: str, *, after: int = 0,
               deployment_id: int | None = None) -> list[dict[str, Any]]:
        require_app(self.store, app)
        return self.store.list_events(app, after=after, deployment_id=deployment_id)
