"""Runs a release's integration test: a one-off container from the release's own image, with
`PAAS_TARGET_URL` pointing at the control instance, which gets no user traffic.

The container uses the host's network namespace so that it reaches the control instance on
its published loopback address; its output is kept whatever the outcome.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests.exceptions

TAIL_LINES = 40


@dataclass(frozen=True)
class TestOutcome:
    passed: bool
    exit_code: int | None
    output: str
    reason: str


def run_integration_test(*, docker_client: Any, image: str, command: str, target_url: str,
                         env: dict[str, str], labels: dict[str, str],
                         timeout_s: float) -> TestOutcome:
    """Run `command` through `/bin/sh -c` in a container of `image`; synchronous."""
    name = f"paas-test-{labels.get('paas.app', 'app')}-{secrets.token_hex(3)}"
    container = docker_client.containers.run(
        image, ["/bin/sh", "-c", command], name=name, detach=True, network_mode="host",
        environment={**env, "PAAS_TARGET_URL": target_url}, labels={**labels, "paas.role": "test"})
    try:
        try:
            result = container.wait(timeout=timeout_s)
            code = int(result.get("StatusCode", -1))
            timed_out = False
        except (requests.exceptions.ConnectionError, requests.exceptions.ReadTimeout):
            container.kill()
            code, timed_out = None, True
        output = container.logs(stdout=True, stderr=True, tail=TAIL_LINES).decode(
            "utf-8", errors="replace")
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    if timed_out:
        return TestOutcome(False, None, output, f"the integration test ran longer than {timeout_s:g}s")
    if code != 0:
        return TestOutcome(False, code, output, f"the integration test exited with code {code}")
    return TestOutcome(True, 0, output, "the integration test passed")
