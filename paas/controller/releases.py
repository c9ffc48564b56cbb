"""Releases: building an app's image from an uploaded build context (or adopting an image
already on the hosts) into release vN, a new release for new config vars, listing them,
publishing their images to the nodes, and promoting one to stable.

Numbers are allocated under a per-app lock, so they count 1, 2, 3... with no gap and no reuse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from paas.builder import builder, stackimages, stacks
from paas.builder import context as buildcontext
from paas.builder.appconfig import AppConfig, BadAppConfig, parse_app_config
from paas.consul import ConsulClient, ConsulUnavailable
from paas.controller.engine import Engine
from paas.controller.metrics import Metrics
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.controller.views import release_view, require_app
from paas.errors import (ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable,
                         Unprocessable)

log = logging.getLogger("paas.controller.releases")


def _log_stack_lines(line: str) -> None:
    """A build's own log goes back to the client; a stack image's making (minutes, once) is
    logged here, so an operator can follow it."""
    if line.startswith(builder.STACK_LOG_PREFIX):
        log.info("%s", line)


def _both(first: Callable[[str], None],
          second: Callable[[str], None] | None) -> Callable[[str], None]:
    if second is None:
        return first

    def both(line: str) -> None:
        first(line)
        second(line)
    return both


@dataclass
class StackBuild:
    """A stack's images being made in the background."""

    state: str  # queued, building, made, failed
    since: float  # wall time it entered that state
    seconds: float | None = None  # how long it took, once ended
    error: str = ""

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "seconds": self.seconds,
                "error": self.error or None}


@dataclass(kw_only=True)
class Releases:
    settings: ControllerSettings
    store: Store
    engine: Engine
    consul: ConsulClient
    metrics: Metrics
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False)
    _background: dict[str, StackBuild] = field(default_factory=dict, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def lock(self, app: str) -> asyncio.Lock:
        """Held while a release number of `app` is allocated and used."""
        return self._locks.setdefault(app, asyncio.Lock())

    async def release_from_context(self, app: str, data: bytes, *, source: str, token: str,
                                   on_log: Callable[[str], None] | None = None
                                   ) -> dict[str, Any]:
        """Build release vN from a build context. `on_log` gets every log line as it comes,
        from the build's thread: the stack image's lines (prefixed `stack: `) then the app's
        build; the stack's lines also go to the controller's log either way."""
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
        try:
            builder.detect_stack(summary.entries, paas_toml=summary.paas_toml)
        except buildcontext.BadBuildContext as exc:
            raise BadRequest(str(exc)) from None
        source = source or buildcontext.upload_source(data)

        async with self.lock(app):
            require_app(self.store, app)
            version = self.store.get_app(app)["next_release"]  # type: ignore[index]
            tag = f"{self.settings.image_repo}/{app}:v{version}"
            try:
                result = await asyncio.to_thread(builder.build_image, context=data, tag=tag,
                                                 docker_client=self.engine.client,
                                                 on_log=_both(_log_stack_lines, on_log),
                                                 build_timeout_s=config.build_timeout)
            except builder.BuildFailed as exc:
                self.metrics.builds_failed.inc()
                raise Unprocessable(exc.message, log_tail="\n".join(exc.log_tail)) from None
            except buildcontext.BadBuildContext as exc:
                raise BadRequest(str(exc)) from None
            except builder.BuilderUnavailable as exc:
                raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
            except docker.errors.DockerException as exc:
                raise Unavailable(f"the Docker engine failed during the build: {exc}") from None
            return self._add_release(app, version, tag, result.image_id, source, config, token,
                                     stack=result.stack)

    async def release_from_image(self, app: str, image: str, *, token: str) -> dict[str, Any]:
        async with self.lock(app):
            require_app(self.store, app)
            version = self.store.get_app(app)["next_release"]  # type: ignore[index]
            tag = f"{self.settings.image_repo}/{app}:v{version}"
            try:
                img = await asyncio.to_thread(self.engine.client.images.get, image)
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
                     config: AppConfig, token: str, stack: str | None = None) -> dict[str, Any]:
        app_row = require_app(self.store, app)
        release = self.store.add_release(
            app=app, version=version, image=tag, image_id=image_id, source=source,
            config=app_row["config"], processes=config.processes,
            test_command=config.test_command, health=config.health_dict(),
            policy=config.policy_dict(), created_by=token, stack=stack,
            metrics_path=config.metrics_path)
        self.metrics.releases.inc()
        return release_view(release)

    def listing(self, app: str) -> list[dict[str, Any]]:
        app_row = require_app(self.store, app)
        deps = self.store.list_deployments(app)
        live = {i["release"] for i in self.store.list_instances(app)
                if i["role"] == "live" and i["desired"] == "running"}
        out = []
        for r in self.store.list_releases(app):
            view = release_view(r)
            mine = [d for d in deps if d["release"] == r["version"]]
            view["status"] = ("live" if r["version"] in live
                              else mine[-1]["status"] if mine else "built")
            view["stable"] = r["version"] == app_row["stable_release"]
            out.append(view)
        return out

    async def publish(self, app: str, version: int) -> dict[str, Any]:
        """Make the release's image available to every node: push it to the private registry
        when one is configured (agents pull what they lack); otherwise the nodes share this
        Docker engine and the image only has to be on it."""
        release = self.show(app, version)
        try:
            img = await asyncio.to_thread(self.engine.client.images.get, release["image"])
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
        return {"release": self.show(app, version),
                "published": {"image": ref or release["image"], "nodes": nodes,
                              "registry": self.settings.registry or None}}

    def _push(self, repo: str, tag: str) -> str:
        """Push an image; returns the registry's error message, or '' when it worked."""
        for chunk in self.engine.client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                return str(chunk["error"])
        return ""

    def show(self, app: str, version: int) -> dict[str, Any]:
        require_app(self.store, app)
        release = self.store.get_release(app, version)
        if release is None:
            raise NotFound(f"release v{version} of {app!r} does not exist")
        return release_view(release)

    # --- stacks -----------------------------------------------------------------------------
    async def stack_listing(self) -> list[dict[str, Any]]:
        """The stacks and the state of their images on this engine, with the background
        build of each (`background`: null, or its state, seconds and error)."""
        try:
            views = await asyncio.to_thread(stackimages.stack_views,
                                            docker_client=self.engine.client)
        except docker.errors.DockerException as exc:
            raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
        for view in views:
            job = self._background.get(view["name"])
            view["background"] = job.view() if job else None
        return views

    async def build_stacks_in_background(self, names: list[str]) -> dict[str, Any]:
        """Make these stacks' images one after the other, in the background (the answer does
        not wait); a stack already being made, or whose images are current, costs nothing. A
        build that needs one of them meanwhile waits for it, and says so."""
        for name in names:
            try:
                stacks.get_stack(name)
            except stacks.NoStack as exc:
                raise NotFound(str(exc)) from None
        queued = [n for n in names if not (n in self._background
                                           and self._background[n].state in ("queued",
                                                                             "building"))]
        for name in queued:
            self._background[name] = StackBuild(state="queued", since=time.time())
        if queued:
            task = asyncio.create_task(self._run_background(queued))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {"queued": queued, "stacks": await self.stack_listing()}

    async def _run_background(self, names: list[str]) -> None:
        for name in names:
            job = self._background[name]
            job.state, job.since = "building", time.time()
            try:
                await self.build_stack(name)
                job.state = "made"
            except (ApiError, OSError) as exc:
                job.state, job.error = "failed", str(getattr(exc, "message", exc))
                log.warning("background build of the %s stack failed: %s", name, job.error)
            job.seconds = time.time() - job.since

    async def build_stack(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Make a stack's images now unless they are current (or always, with `force`)."""
        try:
            stack = stacks.get_stack(name)
        except stacks.NoStack as exc:
            raise NotFound(str(exc)) from None
        lines: list[str] = []

        def on_log(line: str) -> None:
            lines.append(line)
            log.info("stack %s: %s", name, line)
        try:
            built = await asyncio.to_thread(stackimages.ensure_images, stack,
                                            docker_client=self.engine.client, on_log=on_log,
                                            force=force)
        except stackimages.StackBuildFailed as exc:
            raise Unprocessable(exc.message, log_tail="\n".join(exc.log_tail)) from None
        except docker.errors.DockerException as exc:
            raise Unavailable(f"the Docker engine is not reachable: {exc}") from None
        view = next(v for v in await self.stack_listing() if v["name"] == name)
        return {"stack": view, "built": built, "log_tail": "\n".join(lines[-20:])}

    # --- config and stable ------------------------------------------------------------------
    async def with_config(self, app: str, config: dict[str, str]) -> dict[str, Any] | None:
        """Set the app's config vars and, when it has a release, make the next release: the
        latest one's image with these vars (as Heroku does); one transaction for both."""
        async with self.lock(app):
            app_row = require_app(self.store, app)
            latest = self.store.latest_release(app)
            if latest is None:
                self.store.set_app_fields(app, config=config)
                return None
            release = self.store.add_release(
                app=app, version=app_row["next_release"], image=latest["image"],
                image_id=latest["image_id"], source=latest["source"], config=config,
                processes=latest["processes"], test_command=latest["test_command"],
                health=latest["health"], policy=latest["policy"], created_by="config",
                app_config=config, stack=latest.get("stack"),
                metrics_path=latest.get("metrics_path"))
            self.metrics.releases.inc()
            return release_view(release)

    async def mark_stable(self, app: str, version: int) -> None:
        """Mark `version` stable: the store, then the Consul KV pointer (the agents re-tag
        its instances `stable` from their assignments)."""
        self.store.promote(app, version)
        try:
            await self.consul.put_kv(f"paas/apps/{app}/stable", str(version))
        except ConsulUnavailable as exc:
            log.warning("stable pointer of %s not written yet: %s", app, exc)

    async def promote(self, app: str, version: int | None) -> dict[str, Any]:
        """`paas promote`: a succeeded release (default: the last one deployed) becomes stable."""
        require_app(self.store, app)
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
        await self.mark_stable(app, version)
        return self.show(app, version)
