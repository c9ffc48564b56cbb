"""Following a deployment live, phase by phase, and printing its story.

The controller records every step of a deployment as events (`GET /v1/apps/{app}/events?
deployment=N&after=ID`): which instance started on which node, when it became healthy, the
integration test's output lines, the drains, the finish. `follow` hands them to a printer as
they come: `EventPrinter` prints them under one header per phase, with the time since the
deployment began (the git hook passes its own). `failure` turns a failed deployment into the
CLI error whose exit code names the failed phase.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from paas.apiclient.errors import CliError, exit_code_for_step
from paas.apiclient.client import Client

PHASES = {
    "pending": "waiting to start",
    "control": "one instance of the new release, no traffic, must pass its health check",
    "test": "the app's integration test against the control instance",
    "rollout": "new live instances batch by batch, then the old ones drained",
    "finish": "retire the control instance, mark the deployment done",
    "revert": "auto_revert: back to the stable release",
}
POLL_WAIT_S = 1.0
POLL_TIMEOUT_S = 30.0  # the controller answers a `wait` request within POLL_WAIT_S


def phase_header(step: str, detail: str = "") -> str:
    return f"==> {step:<9}{detail or PHASES.get(step, '')}".rstrip()


class EventPrinter:
    """Prints events under phase headers; remembers the test output lines it showed."""

    def __init__(self, *, stream: TextIO | None = None, origin: float | None = None,
                 describe: bool = True) -> None:
        self.stream = stream
        self.origin = origin
        self.describe = describe
        self.step: str | None = None
        self.shown_lines: set[str] = set()

    def __call__(self, event: dict[str, Any]) -> None:
        out = self.stream or sys.stderr
        if event["step"] != self.step:
            self.step = event["step"]
            print(phase_header(self.step) if self.describe else f"==> {self.step}", file=out)
        origin = self.origin if self.origin is not None else event["at"]
        message = event["message"]
        if message.startswith("| "):
            self.shown_lines.add(message[2:].strip())
        print(f"  {event['at'] - origin:6.1f}s  {message}", file=out, flush=True)


class StillRunning(Exception):
    """The deployment had not ended within the time given to follow it; it goes on: follow
    it again later (`paas events APP --deployment N`)."""

    def __init__(self, dep: dict[str, Any], timeout_s: float) -> None:
        super().__init__(f"deployment {dep['id']} still runs after {timeout_s:g}s")
        self.deployment = dep
        self.timeout_s = timeout_s


def follow(api: Client, app: str, dep: dict[str, Any], *,
           printer: Callable[[dict[str, Any]], None] | None = None,
           timeout_s: float | None = None) -> dict[str, Any]:
    """Hand the deployment's events to `printer` as they come (after the last one seen),
    until it ends; return its final state. The one follower of `paas deploy` (and every verb
    that waits for a deployment) and of the git hook, each with its own printer. With
    `timeout_s`, raise StillRunning when it has not ended by then."""
    seen = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        events = api.get(f"/v1/apps/{app}/events?deployment={dep['id']}&after={seen}")["events"]
        for event in events:
            seen = event["id"]
            if printer is not None:
                printer(event)
        if dep["status"] != "running":
            return dep
        if deadline is not None and time.monotonic() >= deadline:
            raise StillRunning(dep, float(timeout_s or 0))
        dep = api.get(f"/v1/apps/{app}/deployments/{dep['id']}?wait={POLL_WAIT_S:g}",
                      timeout=POLL_TIMEOUT_S)["deployment"]


def unseen_tail(log_tail: str, printer: EventPrinter | None) -> list[str]:
    """The failing log's lines, unless the events already showed every one of them."""
    lines = [line for line in (log_tail or "").rstrip().splitlines()]
    shown = printer.shown_lines if printer is not None else set()
    if lines and all(line.strip() in shown for line in lines if line.strip()):
        return []
    return lines


def failure(app: str, dep: dict[str, Any], *, printer: EventPrinter | None = None,
            stream: TextIO | None = None) -> CliError:
    """The error for a failed deployment: its phase's exit code; the failing instance's or
    test's log printed first (on stderr), unless the events already showed it."""
    out = stream or sys.stderr
    step = dep.get("step") or "pending"
    tail = unseen_tail(dep.get("log_tail") or "", printer)
    if tail:
        what = "the test's output" if step == "test" else "the failing instance's log"
        print(f"--- {what} (last lines)", file=out)
        for line in tail[-40:]:
            print(f"  {line}", file=out)
    kind = dep.get("kind") or "deploy"
    return CliError(f"{kind} of {app} v{dep['release']} failed at {step}: "
                    f"{(dep.get('reason') or 'no reason recorded').rstrip('.')}",
                    hint=f"the previous release keeps serving; the whole story: "
                         f"paas events {app} --deployment {dep['id']}",
                    code=exit_code_for_step(step), data={"deployment": dep})
