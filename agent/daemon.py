"""The agent daemon: registers the node, re-adopts its containers, then runs three loops.

- poll: long-polls the controller for this node's assignments; wakes the reconciler on a change.
- reconcile: on a wake-up or the safety tick, asks Docker and Consul what is, calls the pure
  `reconcile()` and carries out its plan (deregister, stop+remove in the background, start,
  restart with backoff, register), repeating until the plan is quiet.
- heartbeat: reports every assigned instance's state on its interval; a container seen stopped
  here wakes the reconciler at once.

Nothing is touched before the first assignment list arrives, and a running container is never
restarted: after an agent restart the containers found by label are simply adopted. Outages of the
controller, Consul or Docker are retried with backoff and logged once each. Stopping the daemon
stops the loops and leaves the containers running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from agent.admin import AgentMetrics, admin_app, serve_admin
from agent.assignments import Assignment, Assignments
from agent.controller_client import (
    ControllerClient,
    ControllerError,
    NodeUnknown,
    Unauthorized,
)
from agent.driver import ContainerInfo, DockerDriver, DriverError
from agent.reconcile import Plan, Registration, Removal, reconcile
from agent.registry import ConsulRegistry
from agent.settings import AgentSettings
from agent.status import instance_reports
from paas.consul import ConsulClient, ConsulUnavailable, Service
from paas.selfregister import OwnService, keep_registered
from paas.listeners import InstanceLook
from paas.retry import Backoff, Outage, RestartState, after_attempt

log = logging.getLogger("agent")
MAX_PASSES = 3
CONSUL_TIMEOUT_S = 5.0


class AgentCrashed(Exception):
    """The agent cannot go on (admin port taken, or a loop died of a bug): exit non-zero."""


class Agent:
    def __init__(self, settings: AgentSettings, *, token: str,
                 controller: ControllerClient | None = None, driver: DockerDriver | None = None,
                 registry: ConsulRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """The collaborators default to the real ones built from `settings`; tests pass fakes."""
        self.settings = settings
        self.token = token
        self.clock = clock
        self.controller = controller or ControllerClient(
            base_url=settings.controller_url, node=settings.node, token=token)
        self.driver = driver or DockerDriver(
            base_url=settings.effective_docker_url, cluster=settings.cluster,
            node=settings.node, address=settings.address, init=settings.docker_init)
        # A fake driver of a test may not read usage: then none is exported.
        self.metrics = AgentMetrics(usage=getattr(self.driver, "usage", None))
        self.registry = registry or ConsulRegistry(
            consul=ConsulClient(settings.effective_consul_url, timeout_s=CONSUL_TIMEOUT_S),
            cluster=settings.cluster, node=settings.node, address=settings.address)
        self.deps = {name: Outage(name, logger=log, on_change=self._gauge(name)) for name in
                     ("controller", "consul", "docker")}
        self.assignments: Assignments | None = None
        self.containers: list[ContainerInfo] = []
        self.restarts: dict[str, RestartState] = {}
        self.errors: dict[str, str] = {}
        self.starting: set[str] = set()
        self.stopping: dict[str, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        # Set when instance states changed, so the controller hears it before the next tick.
        self.report_now = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._registered = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; containers are left running.

        Raises AgentCrashed if one of the loops died of a bug, so that the process exits non-zero
        and its supervisor restarts it (the containers are re-adopted).
        """
        app = admin_app(metrics=self.metrics, health=self.health, token=self.token,
                        logs=lambda iid, tail: self.driver.logs(iid, tail=tail),
                        look=self.look)
        try:
            runner = await serve_admin(app, host=self.settings.address,
                                       port=self.settings.admin_port)
        except OSError as exc:
            raise AgentCrashed(f"cannot serve the admin port {self.settings.address}:"
                               f"{self.settings.admin_port}: {exc.strerror or exc}") from None
        log.info("agent %s (cluster %s) on %s, admin on :%d", self.settings.node,
                 self.settings.cluster, self.settings.address, self.settings.admin_port)
        stopper = asyncio.create_task(stop.wait())
        startup = asyncio.create_task(self._startup())
        crashed: list[str] = []
        try:
            await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if startup.done():
                startup.result()
                self._tasks = [asyncio.create_task(coro, name=name) for name, coro in (
                    ("poll", self._poll_loop()), ("reconcile", self._reconcile_loop()),
                    ("heartbeat", self._heartbeat_loop()),
                    ("register", keep_registered(self.registry.consul, [OwnService(
                        component="agent", machine=self.settings.node,
                        address=self.settings.address, port=self.settings.admin_port)])))]
                await asyncio.wait({stopper, *self._tasks}, return_when=asyncio.FIRST_COMPLETED)
                for task in self._tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.error("loop %s died", task.get_name(), exc_info=task.exception())
                        crashed.append(task.get_name())
        finally:
            pending = [stopper, startup, *self._tasks, *self.stopping.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.controller.close()
            await self.registry.close()
            self.driver.close()
            await runner.cleanup()
            log.info("agent stopped; containers left running")
        if crashed:
            raise AgentCrashed(f"agent loop(s) {', '.join(crashed)} died; see the log")

    async def look(self, instance_id: str) -> InstanceLook:
        """What this node sees of an instance's health: what its container listens on and what
        its check said (`GET /v1/instances/{id}/health`); ContainerMissing if it has none."""
        listening = await self.driver.listening(instance_id)
        try:
            output = await self.registry.check_output(instance_id)
        except ConsulUnavailable:
            output = None
        return InstanceLook(listening=listening, check_output=output)

    def health(self) -> tuple[bool, dict[str, Any]]:
        dead = [t.get_name() for t in self._tasks if t.done()]
        return not dead, {
            "node": self.settings.node,
            "cluster": self.settings.cluster,
            "registered": self._registered,
            "assignment_index": self.assignments.index if self.assignments else None,
            "instances": len(self.assignments.instances) if self.assignments else None,
            "dependencies": {name: dep.describe() for name, dep in self.deps.items()},
            "dead_loops": dead,
        }

    def _gauge(self, name: str) -> Callable[[bool], None]:
        gauge = self.metrics.dependency_up.labels(dependency=name)
        return lambda up: gauge.set(1 if up else 0)

    async def _startup(self) -> None:
        await self._ensure_registered()
        backoff = Backoff()
        while True:
            try:
                self.containers = await self.driver.recover()
                self.deps["docker"].ok()
                break
            except DriverError as exc:
                self.deps["docker"].failed(exc)
                await asyncio.sleep(backoff.next())
        running = sum(1 for c in self.containers if c.running)
        log.info("adopted %d containers (%d running)", len(self.containers), running)

    async def _ensure_registered(self) -> None:
        """Register the node with the controller unless it is already, retrying until it works.

        A caller that learns the controller forgot the node sets `_registered = False` first; two
        loops learning it at once then register only once.
        """
        async with self._register_lock:
            if self._registered:
                return
            backoff = Backoff()
            s = self.settings
            while True:
                try:
                    await self.controller.register(
                        address=s.address, cpu=s.cpu, memory_mb=s.memory_mb, labels=s.labels,
                        consul_url=s.effective_consul_url,
                        agent_url=f"http://{s.address}:{s.admin_port}")
                    self.deps["controller"].ok()
                    self._registered = True
                    log.info("registered node %s with %s", s.node, s.controller_url)
                    return
                except ControllerError as exc:
                    self._controller_failed(exc)
                    await asyncio.sleep(backoff.next())

    def _controller_failed(self, exc: ControllerError) -> None:
        if isinstance(exc, Unauthorized):
            exc = ControllerError(f"{exc}; check --join-token / --join-token-file")
        self.deps["controller"].failed(exc)

    # -- poll -----------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        index = 0
        backoff = Backoff()
        while True:
            try:
                result = await self.controller.assignments(index=index,
                                                           wait_s=self.settings.wait_s)
            except NodeUnknown as exc:
                log.warning("%s; registering again", exc)
                self._registered = False
                await self._ensure_registered()
                index = 0
                continue
            except ControllerError as exc:
                self._controller_failed(exc)
                await asyncio.sleep(backoff.next())
                continue
            self.deps["controller"].ok()
            backoff.reset()
            if result is None:
                continue
            changed = self.assignments is None or result != self.assignments
            index = result.index
            if changed:
                log.info("assignments index %d: %d instances", result.index,
                         len(result.instances))
                self.assignments = result
                self.metrics.assignment_index.set(result.index)
                self.wake.set()

    # -- reconcile ------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.reconcile_interval_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.reconcile_once()
            except Exception:  # a bug must not kill the loop that keeps instances alive
                log.exception("reconcile pass failed")
                await asyncio.sleep(1)

    async def reconcile_once(self) -> Plan | None:
        """Reconcile until the plan is quiet (or MAX_PASSES); returns the last plan.

        Does nothing (returns None) before the first assignment list: without it, every
        container would look unassigned.
        """
        plan = None
        if self.assignments is None:
            return None
        with self.metrics.reconcile_seconds.time():
            for _ in range(MAX_PASSES):
                plan = await self._plan()
                if plan is None or not plan.has_actions:
                    break
                log.info("plan: %s", {k: v for k, v in plan.summary().items()
                                      if v and k != "ignore"})
                await self._act(plan)
        self.metrics.reconciles.inc()
        return plan

    async def _plan(self) -> Plan | None:
        assert self.assignments is not None
        try:
            containers = await self.driver.recover()
            self.deps["docker"].ok()
        except DriverError as exc:
            self.deps["docker"].failed(exc)
            return None
        self.containers = containers
        registered: dict[str, Service] | None
        try:
            registered = await self.registry.registered()
            self.deps["consul"].ok()
        except ConsulUnavailable as exc:
            self.deps["consul"].failed(exc)
            registered = None
        desired = self.assignments.instances
        wanted = {a.id for a in desired}
        for iid in list(self.restarts):
            if iid not in wanted:
                del self.restarts[iid]
                self.errors.pop(iid, None)
                self.driver.pulls.pop(iid, None)
        in_flight = set(self.stopping)
        return reconcile(
            desired=desired,
            containers=[c for c in containers if c.instance_id not in in_flight],
            registered=registered, address=self.settings.address, now=self.clock(),
            restarts=self.restarts)

    async def _act(self, plan: Plan) -> None:
        await asyncio.gather(*(self._deregister(iid) for iid in plan.deregister))
        for removal in plan.stop_and_remove:
            if removal.instance_id not in self.stopping:
                task = asyncio.create_task(self._stop_and_remove(removal))
                self.stopping[removal.instance_id] = task
        await asyncio.gather(*(self._start(a, restart=False) for a in plan.start),
                             *(self._start(a, restart=True) for a in plan.restart))
        await asyncio.gather(*(self._register(r) for r in plan.register))
        self.report_now.set()

    async def _deregister(self, instance_id: str) -> None:
        try:
            await self.registry.deregister(instance_id)
            self.metrics.actions.labels("deregister", "ok").inc()
            log.info("deregistered %s from Consul", instance_id)
        except ConsulUnavailable as exc:
            self.metrics.actions.labels("deregister", "error").inc()
            self.deps["consul"].failed(exc)

    async def _register(self, registration: Registration) -> None:
        a = registration.assignment
        try:
            await self.registry.register(a, host_port=registration.host_port)
            self.metrics.actions.labels("register", "ok").inc()
            log.info("registered %s in Consul at %s:%d", a.id, self.settings.address,
                     registration.host_port)
        except ConsulUnavailable as exc:
            self.metrics.actions.labels("register", "error").inc()
            self.deps["consul"].failed(exc)

    async def _start(self, a: Assignment, *, restart: bool) -> None:
        action = "restart" if restart else "start"
        self.starting.add(a.id)
        self.restarts[a.id] = after_attempt(self.restarts.get(a.id, RestartState()),
                                            now=self.clock(), restart=restart)
        try:
            info = await self.driver.start(a)
        except DriverError as exc:
            self.metrics.actions.labels(action, "error").inc()
            if self.errors.get(a.id) != str(exc):
                log.warning("could not %s %s: %s", action, a.id, exc)
            self.errors[a.id] = str(exc)
            return
        finally:
            self.starting.discard(a.id)
        self.errors.pop(a.id, None)
        self.metrics.actions.labels(action, "ok").inc()
        if restart:
            self.metrics.restarts.inc()
        log.info("%sed %s: container %s, port %s:%s", action, a.id, info.container_id[:12],
                 self.settings.address, info.host_port)

    async def _stop_and_remove(self, removal: Removal) -> None:
        iid = removal.instance_id
        try:
            # Deregister first even if reconcile saw no service: Consul may have been unknown.
            try:
                await self.registry.deregister(iid)
            except ConsulUnavailable as exc:
                self.deps["consul"].failed(exc)
            await self.driver.stop(iid, timeout_s=removal.stop_timeout_s)
            await self.driver.remove(iid)
            self.metrics.actions.labels("stop_and_remove", "ok").inc()
            log.info("stopped and removed %s", iid)
        except DriverError as exc:
            self.metrics.actions.labels("stop_and_remove", "error").inc()
            log.warning("could not stop and remove %s: %s", iid, exc)
        finally:
            self.stopping.pop(iid, None)
            self.wake.set()
            self.report_now.set()

    # -- heartbeat ------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            self.report_now.clear()
            try:
                await self.heartbeat_once()
            except Exception:  # a bug must not stop the heartbeats that keep the node up
                log.exception("heartbeat failed")
            try:
                await asyncio.wait_for(self.report_now.wait(), self.settings.heartbeat_interval_s)
            except asyncio.TimeoutError:
                pass

    async def heartbeat_once(self) -> None:
        try:
            containers = await self.driver.recover()
            self.deps["docker"].ok()
        except DriverError as exc:
            self.deps["docker"].failed(exc)
            containers = self.containers
        desired = self.assignments.instances if self.assignments else None
        if desired is not None and any(_stopped_unexpectedly(a, containers) for a in desired):
            self.wake.set()
        reports = instance_reports(desired=desired, containers=containers,
                                   restarts=self.restarts, starting=self.starting,
                                   errors=self.errors, pulls=self.driver.pulls)
        counts: dict[str, int] = {s: 0 for s in ("running", "starting", "exited", "missing",
                                                 "stopping")}
        for r in reports:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        for state, n in counts.items():
            self.metrics.instances.labels(state).set(n)
        try:
            await self.controller.heartbeat(
                reports, index=self.assignments.index if self.assignments else None)
            self.deps["controller"].ok()
            self.metrics.heartbeats.labels("ok").inc()
        except NodeUnknown as exc:
            self.metrics.heartbeats.labels("error").inc()
            log.warning("%s; registering again", exc)
            self._registered = False
            await self._ensure_registered()
        except ControllerError as exc:
            self.metrics.heartbeats.labels("error").inc()
            self._controller_failed(exc)


def _stopped_unexpectedly(a: Assignment, containers: list[ContainerInfo]) -> bool:
    if not a.wants_running:
        return False
    for c in containers:
        if c.instance_id == a.id:
            return c.state in ("exited", "dead")
    return False
