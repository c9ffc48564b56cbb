"""Following a deployment live, phase by phase, and printing its story.

The controller records every step of a deployment as events (`GET /v1/apps/{app}/events?
deployment=N&after=ID`): which instance started on which node, when it became healthy, the
integration test's output lines, the drains, the finish. `follow` prints them as they come,
under one header per phase, with the time since the deployment began; `failure` turns a
failed deployment into the CLI error whose exit code names the failed phase.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from paas.cli.common import CliError, exit_code_for_step
from paas.cli.client import Client

PHASES = {
    "pending": "waiting to start",
    "control": "one instance of the new release, no traffic, must pass its health check",
    "test": "the app's integration test against the control instance",
    "rollout": "new live instances batch by batch, then the old ones drained",
    "finish": "retire the control instance, mark the deployment done",
    "revert": "auto_revert: back to the stable release",
}
POLL_WAIT_S = 1.0


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


def follow(api: Client, app: str, dep: dict[str, Any], *,
           printer: EventPrinter | None = None) -> dict[str, Any]:
    """Print the deployment's events until it ends; returns its final state."""
    seen = 0
    while True:
        events = api.get(f"/v1/apps/{app}/events?deployment={dep['id']}&after={seen}")["events"]
        for event in events:
            seen = event["id"]
            if printer is not None:
                printer(event)
        if dep["status"] != "running":
            return dep
        dep = api.get(f"/v1/apps/{app}/deployments/{dep['id']}?wait={POLL_WAIT_S}",
                      timeout=30)["deployment"]


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
