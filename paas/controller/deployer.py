"""Runs deployments: the deploy state machine of DESIGN.md.

1. **control** — one control instance of the release, tagged `control` (never routed); wait
   until its health check passes, up to `healthy_deadline`. An instance that is not healthy
   yet is looked into (`paas.controller.unhealthy`: what it listens on, what its check said):
   the failure says why, and a fault that waiting cannot mend (it listens on 127.0.0.1 or on
   another port, or answers the health path with a 4xx) fails it early.
2. **test** — the release's integration test in a one-off container from the same image, with
   `PAAS_TARGET_URL` at the control instance. No test configured: the step is skipped, visibly.
3. **rollout** — per process type, batches of `max_parallel` new live instances (default: all at
   once); each must pass in Consul and keep passing for `min_healthy_time` before the next batch
   starts. Once every new instance is healthy, the old ones are drained (deregistered, no
   longer routed by the router, stopped, removed). So the healthy live count never drops
   below the old count during a rollout, and a failure at any point leaves the old release
   untouched.
4. **finish** — remove the control instance, record the new scale, mark the deployment
   succeeded, and promote when `auto_promote` is set (a rollback re-promotes its release).

The deployer persists every step and event before acting; it only changes desired state
(rows in `instances`), which agents converge on. Any failure stops every instance this
deployment made, leaves the old release serving, and records the step, the reason and the
failing log's tail. Control and test run only when the release is not already live (a pure
scale keeps the running instances).

Everything outside the store comes in as a collaborator (`paas.controller.probes`: health,
router, logs, looks, tests, clock; and the node readiness, promote and publish callables), so the
state machine runs against fakes in virtual time (tests/unit/test_deployer.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from paas.consul import ConsulUnavailable
from paas.controller import scheduler
from paas.controller.placement import (CONTAINER_PORT, NodeReady, cluster_view, new_instance_id,
                                       placement_request)
from paas.controller.probes import (Clock, HealthSource, InstanceLogs, InstanceLooks,
                                    RouterProbe, TestRunner)
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store
from paas.controller.unhealthy import Diagnosis, diagnose
from paas.errors import ApiError

log = logging.getLogger("paas.controller.deployer")

ROUTED_PROCESS = "web"
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # [deploy] drain_timeout: requests in flight may take this long
LOOK_AFTER_S = 5.0  # an instance not yet healthy is first looked into after this long,
LOOK_EVERY_S = 2.5  # then this often (what it listens on, what its check said);
CERTAIN_FOR_S = 5.0  # a fault that waiting cannot mend, seen this long, fails the deploy
UNKNOWN_FOR_S = 2.0  # a router that cannot say what it has in flight is asked this long


def check_sentence(health: dict[str, Any] | None) -> str:
    """Which health check a release's instances must pass, for the deploy's output."""
    path = (health or {}).get("path")
    if path:
        return f"GET {path} must answer 2xx ([health] path in paas.toml)"
    return ("it must accept connections on $PORT from outside its container (no [health] "
            "path in paas.toml; set one to check a page)")


def exit_sentence(inst: dict[str, Any]) -> str:
    """Why an instance that stopped fails the deploy: its process type, its exit code and how
    long it ran, when its node told."""
    restarts = inst["restarts"]
    how = f" with code {inst['exit_code']}" if inst.get("exit_code") is not None else ""
    when = f" after {inst['ran_s']:.1f} s" if inst.get("ran_s") is not None else ""
    again = ("" if not restarts else
             " (restarted once)" if restarts == 1 else f" (restarted {restarts} times)")
    return (f"the {inst['process']} process of instance {inst['id']} exited{how}{when}"
            f"{again}; its log below says why")


class DeployFailed(Exception):
    """A step failed; `step` names it and the message says why."""

    def __init__(self, step: str, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.log_tail = log_tail


@dataclass(kw_only=True)
class Deployer:
    store: Store
    settings: ControllerSettings
    health: HealthSource
    router: RouterProbe
    logs: InstanceLogs
    looks: InstanceLooks
    tests: TestRunner
    clock: Clock
    node_is_ready: NodeReady
    promote: Callable[[str, int], Awaitable[None]]
    """Mark a release stable (after a rollback, or with `auto_promote`)."""
    publish: Callable[[str, int], Awaitable[dict[str, Any]]]
    """Push a release's image to the registry (only called when one is configured)."""

    def event(self, dep: dict[str, Any], step: str, message: str) -> None:
        log.info("deployment %s of %s: %s: %s", dep["id"], dep["app"], step, message)
        self.store.add_event(app=dep["app"], deployment_id=dep["id"], step=step, message=message)

    def _step(self, dep: dict[str, Any], step: str) -> None:
        self.store.update_deployment(dep["id"], step=step)

    # --- the run ----------------------------------------------------------------------------
    async def run(self, dep_id: int) -> None:
        dep = self.store.get_deployment(dep_id)
        assert dep is not None
        app, version = dep["app"], dep["release"]
        release = self.store.get_release(app, version)
        started = self.clock.now()
        rollout_began = False
        try:
            if release is None:
                raise DeployFailed("pending", f"release v{version} of {app} does not exist")
            release = await self._publish(dep, release)
            await self._prove(dep, release)
            self._step(dep, "rollout")
            rollout_began = True
            await self._rollout(dep, release)
            await self._finish(dep, release, started)
        except DeployFailed as exc:
            self._fail(dep, exc)
            if rollout_began and release is not None and release["policy"].get("auto_revert"):
                await self._revert(dep)
        except asyncio.CancelledError:
            if self.store.get_app(app) is None:
                self.store.update_deployment(dep_id, status="failed", step="cancelled",
                                             reason="the app was deleted")
            raise
        except Exception as exc:  # noqa: BLE001 - a bug, or Docker or SQLite failing
            # No deployment may stay `running` after an error nobody expected: it is recorded
            # as failed at the step it reached, and what it started is stopped.
            log.exception("deployment %s of %s failed unexpectedly", dep_id, app)
            self._fail_unexpectedly(dep, exc)

    def _fail_unexpectedly(self, dep: dict[str, Any], exc: Exception) -> None:
        try:
            step = (self.store.get_deployment(dep["id"]) or dep)["step"]
            self._fail(dep, DeployFailed(step, f"an unexpected error in the {step} step: "
                                         f"{type(exc).__name__}: {exc}"))
        except Exception:  # noqa: BLE001 - the store itself is failing
            log.exception("deployment %s of %s could not be marked failed; it resumes when "
                          "the controller restarts", dep["id"], dep["app"])

    async def _publish(self, dep: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
        """With a registry, push the release's image first (once); returns the release."""
        if not self.settings.registry or release["pushed_image"]:
            return release
        self._step(dep, "publish")
        try:
            done = await self.publish(dep["app"], dep["release"])
        except ApiError as exc:
            raise DeployFailed("publish", exc.message) from None
        self.event(dep, "publish", f"pushed {done['published']['image']}")
        return self.store.get_release(dep["app"], dep["release"])  # type: ignore[return-value]

    async def _prove(self, dep: dict[str, Any], release: dict[str, Any]) -> None:
        """The control and test steps, unless the release is already live (a scale, a
        resumed rollout) or the deployment turned them off."""
        live_releases = {i["release"] for i in self.store.list_instances(dep["app"])
                         if i["role"] == "live" and i["desired"] == "running"}
        checks = not dep["options"].get("skip_checks") and dep["release"] not in live_releases
        if checks and dep["replicas"].get(ROUTED_PROCESS, 0) > 0:
            control = await self._control(dep, release)
            await self._test(dep, release, control)
            # Its job is done: it stops while the rollout runs; finish checks it is gone.
            self.store.set_desired([control], "stopped")
        elif checks:
            self.event(dep, "control", "no web process to prove: control and test skipped")
        else:
            self.event(dep, "control", "release already live or checks turned off: "
                                       "control and test skipped")

    async def _rollout(self, dep: dict[str, Any], release: dict[str, Any]) -> None:
        """Start every process type's new instances, then drain what they replace."""
        app = dep["app"]
        replaced: list[str] = []
        for process in sorted(set(dep["replicas"]) | self._live_processes(app)):
            replaced += await self._start_process(dep, release, process,
                                                  int(dep["replicas"].get(process, 0)))
        # A drain cut short by a controller restart is finished too.
        replaced += [i["id"] for i in self.store.list_instances(app)
                     if i["desired"] == "draining" and i["id"] not in replaced]
        await self.drain(dep, replaced)

    async def _finish(self, dep: dict[str, Any], release: dict[str, Any],
                      started: float) -> None:
        app, version = dep["app"], dep["release"]
        self._step(dep, "finish")
        await self._stop_control(dep, release)
        self.store.set_app_fields(app, scale=dep["replicas"], live_release=version)
        took = f"took {self.clock.now() - started:.1f}s"
        self.store.update_deployment(dep["id"], status="succeeded", step="done", reason=took)
        self.event(dep, "finish", f"v{version} is live; {took}")
        if dep["kind"] == "rollback" or release["policy"].get("auto_promote"):
            await self.promote(app, version)
            self.event(dep, "finish", f"v{version} promoted to stable")

    def _fail(self, dep: dict[str, Any], exc: DeployFailed) -> None:
        """Record the failure and stop what this deployment started, but for its live
        instances once they are all that serves (the old ones were drained: a failure in the
        finish step), which stay, with their release recorded as live."""
        instances = self.store.list_instances(dep["app"])
        mine = [i for i in instances if i["deployment_id"] == dep["id"]]
        others_serve = any(i["role"] == "live" and i["desired"] == "running"
                           and i["deployment_id"] != dep["id"] for i in instances)
        keep = [i["id"] for i in mine if i["role"] == "live" and i["desired"] == "running"
                and not others_serve and exc.step == "finish"]
        if keep:
            self.store.set_app_fields(dep["app"], scale=dep["replicas"],
                                      live_release=dep["release"])
        self.store.set_desired([i["id"] for i in mine if i["id"] not in keep], "stopped")
        self.store.update_deployment(dep["id"], status="failed", step=exc.step,
                                     reason=exc.reason, log_tail=exc.log_tail)
        self.event(dep, exc.step, f"failed: {exc.reason}")

    async def _revert(self, dep: dict[str, Any]) -> None:
        app = self.store.get_app(dep["app"])
        stable = app and app["stable_release"]
        if not stable or stable == dep["release"]:
            self.event(dep, "revert", "auto_revert: no other stable release to go back to")
            return
        self.event(dep, "revert", f"auto_revert: going back to stable v{stable}")
        back = self.store.create_deployment(app=dep["app"], release=stable,
                                            replicas=app["scale"] or dep["replicas"],
                                            kind="revert", options={"skip_checks": True})
        await self.run(back["id"])

    def _live_processes(self, app: str) -> set[str]:
        return {i["process"] for i in self.store.list_instances(app)
                if i["role"] == "live" and i["desired"] == "running"}

    # --- control and test -------------------------------------------------------------------
    def _place(self, app: str, process: str, count: int, retiring: set[str],
               policy: dict[str, Any]) -> tuple[str, ...]:
        plan = scheduler.place(nodes=cluster_view(self.store, is_ready=self.node_is_ready,
                                                  retiring=retiring),
                               request=placement_request(app, process, count, policy))
        if plan.unplaced:
            raise DeployFailed("rollout", f"cannot place {plan.unplaced} {process} "
                               f"instance(s): {plan.reason}")
        return plan.placements

    def _add(self, dep: dict[str, Any], process: str, role: str,
             nodes: tuple[str, ...]) -> list[str]:
        rows = [{"id": new_instance_id(dep["app"], dep["release"], process), "app": dep["app"],
                 "release": dep["release"], "process": process, "role": role, "node": node,
                 "deployment_id": dep["id"]} for node in nodes]
        self.store.add_instances(rows)
        for r in rows:
            self.event(dep, self.store.get_deployment(dep["id"])["step"],  # type: ignore[index]
                       f"started {role} instance {r['id']} on {r['node']}")
        return [r["id"] for r in rows]

    async def _control(self, dep: dict[str, Any], release: dict[str, Any]) -> str:
        self._step(dep, "control")
        try:
            nodes = self._place(dep["app"], ROUTED_PROCESS, 1, set(), release["policy"])
        except DeployFailed as exc:
            raise DeployFailed("control", exc.reason) from None
        [control] = self._add(dep, ROUTED_PROCESS, "control", nodes)
        policy = release["policy"]
        self.event(dep, "control", f"health check: {check_sentence(release['health'])}")
        t0 = self.clock.now()
        try:
            await self.wait_healthy(dep, [control], process=ROUTED_PROCESS,
                                    policy={**policy, "min_healthy_time": 0})
        except DeployFailed as exc:
            raise DeployFailed("control", exc.reason, await self.logs.tail(control)) from None
        self.event(dep, "control", f"control instance {control} healthy after "
                                   f"{self.clock.now() - t0:.1f}s")
        return control

    async def _test(self, dep: dict[str, Any], release: dict[str, Any], control: str) -> None:
        self._step(dep, "test")
        command = release["test_command"]
        if not command:
            self.event(dep, "test", "no integration test configured ([test] command in "
                                    "paas.toml): test step skipped")
            return
        address = await self._service_addresses(dep["app"], [control])
        if not address:
            raise DeployFailed("test", f"control instance {control} has no address yet")
        target = f"http://{next(iter(address))}"
        self.event(dep, "test", f"running '{command}' against {target}")
        timeout = float(release["policy"].get("test_timeout", 120))
        outcome = await self.tests.run(
            image=release["image"], command=command, target_url=target,
            env={**release["config"], "PAAS_APP": dep["app"],
                 "PAAS_RELEASE": str(dep["release"])},
            labels={"paas.localcluster": self.settings.cluster, "paas.app": dep["app"],
                    "paas.release": str(dep["release"])},
            timeout_s=timeout)
        self.store.update_deployment(dep["id"], test_output=outcome.output)
        for line in outcome.output.strip().splitlines()[-20:]:
            self.event(dep, "test", f"| {line}")
        if not outcome.passed:
            raise DeployFailed("test", outcome.reason, outcome.output)
        self.event(dep, "test", outcome.reason)

    async def _stop_control(self, dep: dict[str, Any], release: dict[str, Any]) -> None:
        """Stop the control instance and wait until its agent reports it removed."""
        ids = [i["id"] for i in self.store.list_instances(dep["app"], include_stopped=True)
               if i["deployment_id"] == dep["id"] and i["role"] == "control"]
        if not ids:
            return
        self.store.set_desired(ids, "stopped")
        deadline = self.clock.now() + float(release["policy"].get("stop_timeout", 10)) + 10
        while any(self.store.get_instance(i) for i in ids) and self.clock.now() < deadline:
            await self.clock.sleep(0.1)
        self.event(dep, "finish", f"removed control instance {', '.join(ids)}")

    # --- rollout ----------------------------------------------------------------------------
    async def _start_process(self, dep: dict[str, Any], release: dict[str, Any],
                             process: str, count: int) -> list[str]:
        """Start the process type's new live instances batch by batch, each batch healthy
        before the next; returns the old instances they replace (drained by the caller once
        every process type is healthy, so a failure leaves the old release untouched)."""
        app, version = dep["app"], dep["release"]
        old = [i["id"] for i in self.store.list_instances(app)
               if i["process"] == process and i["role"] == "live" and i["desired"] == "running"
               and i["deployment_id"] != dep["id"]]
        avoid = dep["options"].get("avoid_node")
        same = [i for i in old if (row := self.store.get_instance(i)) is not None
                and row["release"] == version and row["node"] != avoid]
        keep = self._keep(app, process, same, count)
        replace = [i for i in old if i not in keep]
        policy = release["policy"]
        batch = policy.get("max_parallel")  # None: all at once
        # Instances this deployment started before a controller restart count, once healthy.
        mine = [i["id"] for i in self.store.list_instances(app)
                if i["process"] == process and i["role"] == "live" and i["desired"] == "running"
                and i["deployment_id"] == dep["id"]][:max(0, count - len(keep))]
        if mine:
            await self.wait_healthy(dep, mine, process=process, policy=policy)
        needed = count - len(keep) - len(mine)
        while needed > 0:
            size = min(int(batch), needed) if batch else needed
            ids = self._add(dep, process, "live",
                            self._place(app, process, size, set(replace), policy))
            await self.wait_healthy(dep, ids, process=process, policy=policy)
            self.event(dep, "rollout", f"{', '.join(ids)} healthy")
            needed -= size
        return replace

    def _keep(self, app: str, process: str, candidates: list[str], count: int) -> list[str]:
        """Which of the running instances of the release to keep when it runs more than
        `count`: the scheduler's scale-down rule picks the ones to stop."""
        surplus = len(candidates) - count
        if surplus <= 0:
            return candidates
        others = {i["id"] for i in self.store.list_instances(app)} - set(candidates)
        view = cluster_view(self.store, is_ready=self.node_is_ready, retiring=others)
        stop = {c.instance.instance_id for c in scheduler.choose_to_stop(
            nodes=view, app=app, process=process, count=surplus)}
        return [i for i in candidates if i not in stop]

    # --- health -----------------------------------------------------------------------------
    async def wait_healthy(self, dep: dict[str, Any], ids: list[str], *, process: str,
                           policy: dict[str, Any]) -> None:
        """Return once every instance in `ids` has been healthy for `min_healthy_time`;
        raise DeployFailed at `healthy_deadline`, as soon as one exits, once its node has
        said for `CERTAIN_FOR_S` that it cannot start it (an image it cannot pull, say), or
        once one shows a fault that waiting cannot mend (`paas.controller.unhealthy`) for
        `CERTAIN_FOR_S`. An image pull a node reports is an event with its seconds."""
        app = dep["app"]
        limit = float(policy.get("healthy_deadline", self.settings.healthy_deadline))
        start = self.clock.now()
        deadline, next_look = start + limit, start + LOOK_AFTER_S
        min_time = float(policy.get("min_healthy_time", 1.0))
        healthy_since: dict[str, float] = {}
        faulty_since: dict[str, float] = {}
        unstartable_since: dict[str, float] = {}
        pulled: set[str] = set()
        release = self.store.get_release(app, dep["release"])
        tcp = process == ROUTED_PROCESS and not ((release or {}).get("health") or {}).get("path")
        accepting: set[str] = set()
        while True:
            now = self.clock.now()
            rows = {i: self.store.get_instance(i) for i in ids}  # one read per tick
            for instance_id in ids:
                self._starting(dep, rows[instance_id], now, pulled, unstartable_since)
            passing, outputs = await self._passing(app, ids, process)
            if tcp:
                passing = await self._accepting(passing, accepting)
            for instance_id in ids:
                if instance_id in passing:
                    healthy_since.setdefault(instance_id, now)
                else:
                    healthy_since.pop(instance_id, None)
            if len(healthy_since) == len(ids) and all(
                    now - t >= min_time for t in healthy_since.values()):
                return
            for instance_id in ids:
                await self._check_alive(rows[instance_id])
            if now >= deadline:
                late = [i for i in ids if i not in healthy_since] or ids
                why = await self._why(app, late[0], outputs.get(late[0], ""), process)
                raise DeployFailed("rollout", f"instance {late[0]} did not pass its health "
                                   f"check within {limit:g}s"
                                   + (f": {why.sentence}" if why.sentence else ""),
                                   await self.logs.tail(late[0]))
            if process == ROUTED_PROCESS and now >= next_look:
                next_look = now + LOOK_EVERY_S
                for instance_id in (i for i in ids if i not in healthy_since):
                    why = await self._why(app, instance_id, outputs.get(instance_id, ""),
                                          process)
                    if not why.certain:
                        faulty_since.pop(instance_id, None)
                    elif now - faulty_since.setdefault(instance_id, now) >= CERTAIN_FOR_S:
                        raise DeployFailed("rollout", f"instance {instance_id} cannot pass its "
                                           f"health check: {why.sentence}",
                                           await self.logs.tail(instance_id))
            await self.clock.sleep(0.1)

    def _starting(self, dep: dict[str, Any], inst: dict[str, Any] | None, now: float,
                  pulled: set[str], unstartable_since: dict[str, float]) -> None:
        """Report the instance's image pull once its node has said how long it took; raise
        DeployFailed once the node has said for `CERTAIN_FOR_S` why it cannot start it."""
        if inst is None:
            return
        instance_id = inst["id"]
        if inst["pull_s"] is not None and instance_id not in pulled:
            pulled.add(instance_id)
            self.event(dep, "pull", f"{inst['node']} pulled the image of {instance_id} in "
                                    f"{inst['pull_s']:.1f}s")
        if inst["state"] != "missing" or not inst["error"]:
            unstartable_since.pop(instance_id, None)
        elif now - unstartable_since.setdefault(instance_id, now) >= CERTAIN_FOR_S:
            raise DeployFailed("rollout", f"{inst['node']} cannot start instance "
                                          f"{instance_id}: {inst['error']}")

    async def _accepting(self, passing: set[str], accepting: set[str]) -> set[str]:
        """Of the instances whose TCP check passes, those that really accept connections on
        $PORT. Docker's proxy accepts on the host port whatever the container does, so a
        passing TCP check alone would pass an app that listens on 127.0.0.1 only; the node's
        view of the container's listening sockets decides (once per instance; when the node
        cannot tell, the check's word stands)."""
        for instance_id in passing - accepting:
            seen = await self.looks.look(instance_id)
            if seen.listening is None:
                # The node cannot tell: the check's word stands, for an instance its node
                # reports running (a process that exited at once may pass one check first).
                inst = self.store.get_instance(instance_id)
                if inst is not None and inst["state"] == "running" and not inst["restarts"]:
                    accepting.add(instance_id)
            elif any(x.port == CONTAINER_PORT and x.everywhere for x in seen.listening):
                accepting.add(instance_id)
        return passing & accepting

    async def _check_alive(self, inst: dict[str, Any] | None) -> None:
        """Raise DeployFailed if the instance exited, crashed or lost its node."""
        if inst is None:
            return
        if inst["state"] == "exited" or inst["restarts"]:
            raise DeployFailed("rollout", exit_sentence(inst), await self.logs.tail(inst["id"]))
        node = self.store.get_node(inst["node"])
        if node is None or not self.node_is_ready(node):
            raise DeployFailed("rollout", f"node {inst['node']} of instance "
                               f"{inst['id']} was lost")

    async def _why(self, app: str, instance_id: str, output: str, process: str) -> Diagnosis:
        """Why the instance is not healthy yet (a web instance: what it listens on, what its
        check said); an empty sentence for other process types."""
        if process != ROUTED_PROCESS:
            return Diagnosis("", certain=False)
        inst = self.store.get_instance(instance_id)
        release = self.store.get_release(app, inst["release"]) if inst else None
        path = ((release or {}).get("health") or {}).get("path") or None
        seen = await self.looks.look(instance_id)
        # The node's own Consul agent is current; the catalog's output may lag by minutes.
        return diagnose(listening=seen.listening, port=CONTAINER_PORT, path=path,
                        check_output=seen.check_output or output)

    async def _passing(self, app: str, ids: list[str],
                       process: str) -> tuple[set[str], dict[str, str]]:
        """The instances of `ids` that pass, and what the failing checks said."""
        if process != ROUTED_PROCESS:
            return {i for i in ids
                    if (inst := self.store.get_instance(i)) and inst["state"] == "running"}, {}
        try:
            services = await self.health.service_health(app)
        except ConsulUnavailable as exc:
            log.warning("waiting for health: %s", exc)
            return set(), {}
        mine = [s for s in services if s["id"] in ids]
        return ({s["id"] for s in mine if s["status"] == "passing"},
                {s["id"]: s.get("output", "") for s in mine if s["status"] != "passing"})

    # --- draining ---------------------------------------------------------------------------
    async def drain(self, dep: dict[str, Any], ids: list[str]) -> None:
        """Take instances out of routing, wait until the router no longer sends them traffic,
        then stop them."""
        if not ids:
            return
        addresses = self._addresses(ids) | await self._service_addresses(dep["app"], ids)
        self.store.set_desired(ids, "draining")
        self.event(dep, "rollout", f"draining {', '.join(ids)}")
        await self.router.wait_unrouted(dep["app"], addresses)
        await self._wait_in_flight(dep, addresses)
        self.store.set_desired(ids, "stopped")
        self.event(dep, "rollout", f"stopped {', '.join(ids)}")

    async def _wait_in_flight(self, dep: dict[str, Any], addresses: set[str]) -> None:
        """Once the router sends them nothing new, wait until the requests it has in flight to
        `addresses` have finished, up to `[deploy] drain_timeout`; then they are stopped, and
        the event says how many connections that closes."""
        limit = self._drain_timeout(dep["app"], dep["release"])
        left, waited = await self._in_flight_end(dep["app"], addresses, limit)
        if left:
            self.event(dep, "rollout", f"drain_timeout ({limit:g}s) passed with {left} "
                                       f"connection(s) still open; they are closed")
        elif waited is not None:
            self.event(dep, "rollout", f"requests in flight finished after {waited:.1f}s")

    def _drain_timeout(self, app: str, version: int | None) -> float:
        release = (self.store.get_release(app, version) if version else None) or {}
        return float((release.get("policy") or {}).get("drain_timeout",
                                                       DEFAULT_DRAIN_TIMEOUT_S))

    async def _in_flight_end(self, app: str, addresses: set[str],
                             limit: float) -> tuple[int, float | None]:
        """Wait up to `limit` until the router has no request in flight to `addresses`: the
        connections still open then, and the seconds waited (None: there was none to wait
        for, or the router cannot tell)."""
        start = self.clock.now()
        left = await self.router.in_flight(app, addresses)
        unknown_since = start if left is None else None
        counted = left is not None
        # A router that cannot tell for a moment (busy, restarting) is asked again; one that
        # never can (no /sessions) is not waited on longer than UNKNOWN_FOR_S.
        while left != 0 and self.clock.now() - start < limit:
            if left is None and unknown_since is not None \
                    and self.clock.now() - unknown_since >= UNKNOWN_FOR_S:
                break
            await self.clock.sleep(0.1)
            left = await self.router.in_flight(app, addresses)
            if left is None:
                unknown_since = self.clock.now() if unknown_since is None else unknown_since
            else:
                unknown_since, counted = None, True
        waited = self.clock.now() - start
        return left or 0, waited if counted and waited > 0 else None

    async def retire_app(self, app: str) -> None:
        """Before an app is deleted: take every instance of it out of routing, and wait until
        the router has no request in flight to them, up to the live release's
        `drain_timeout` (the same drain as a deploy's). Deleting the app then stops them."""
        ids = [i["id"] for i in self.store.list_instances(app) if i["desired"] != "stopped"]
        if not ids:
            return
        live = (self.store.get_app(app) or {}).get("live_release")
        addresses = self._addresses(ids) | await self._service_addresses(app, ids)
        # Scale 0 first: the reconciler would replace the draining instances otherwise.
        self.store.set_app_fields(app, scale={})
        self.store.set_desired(ids, "draining")
        await self.router.wait_unrouted(app, addresses)
        limit = self._drain_timeout(app, live)
        left, waited = await self._in_flight_end(app, addresses, limit)
        if left:
            log.warning("deleting %s: drain_timeout (%gs) passed with %s connection(s) still "
                        "open; they are closed", app, limit, left)
        elif waited is not None:
            log.info("deleting %s: requests in flight finished after %.1fs", app, waited)

    def _addresses(self, ids: list[str]) -> set[str]:
        nodes = {n["name"]: n["address"] for n in self.store.list_nodes()}
        out = set()
        for instance_id in ids:
            inst = self.store.get_instance(instance_id)
            if inst and inst["host_port"] and inst["node"] in nodes:
                out.add(f"{nodes[inst['node']]}:{inst['host_port']}")
        return out

    async def _service_addresses(self, app: str, ids: list[str]) -> set[str]:
        """`address:port` of instances as registered in Consul (what the router routes)."""
        try:
            services = await self.health.service_health(app)
        except ConsulUnavailable:
            return set()
        return {f"{s['address']}:{s['port']}" for s in services if s["id"] in ids}
