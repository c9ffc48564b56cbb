"""Heartbeat state records (agent/status.py); the restart schedule is tested in test_retry.py."""

from __future__ import annotations

import pytest

from agent.assignments import Assignment
from agent.driver import ContainerInfo
from agent.status import instance_reports
from paas.retry import RestartState

A = "hello-v1-web-aaaaaa"


def assigned(desired: str = "running") -> list[Assignment]:
    return [Assignment(id=A, app="hello", release=1, process="web", image="i",
                       desired=desired)]


def box(state: str, exit_code: int | None = None) -> ContainerInfo:
    return ContainerInfo(instance_id=A, container_id="cid", state=state,
                         host_port=32768 if state == "running" else None, exit_code=exit_code)


@pytest.mark.parametrize("containers, restarts, starting, desired, state", [
    ([box("running")], {}, (), "running", "running"),
    ([], {}, (), "running", "starting"),                       # not tried yet
    ([], {A: RestartState(streak=1)}, {A}, "running", "starting"),  # start in flight
    ([], {A: RestartState(streak=1)}, (), "running", "missing"),  # tried and failed
    ([], {}, (), "draining", "missing"),
    ([box("created")], {}, (), "running", "starting"),
    ([box("exited", 3)], {}, (), "running", "exited"),
    ([box("dead", 1)], {}, (), "running", "exited"),
])
def test_states(containers, restarts, starting, desired, state) -> None:
    [report] = instance_reports(desired=assigned(desired), containers=containers,
                                restarts=restarts, starting=starting)
    assert report["state"] == state


def test_report_fields() -> None:
    reports = instance_reports(desired=assigned(), containers=[box("exited", 137)],
                               restarts={A: RestartState(restarts=2)},
                               errors={A: "image missing"}, pulls={A: 1.23456})
    assert reports == [{"id": A, "state": "exited", "container_id": "cid", "host_port": None,
                        "restarts": 2, "exit_code": 137, "ran_s": None,
                        "error": "image missing", "pull_s": 1.235}]


def test_before_the_first_assignments_every_container_is_reported() -> None:
    reports = instance_reports(desired=None, containers=[box("running")], restarts={})
    assert [(r["id"], r["state"], r["host_port"]) for r in reports] == [(A, "running", 32768)]


def test_unassigned_container_is_reported_stopping_until_removed() -> None:
    gone = ContainerInfo(instance_id="hello-v1-web-bbbbbb", container_id="old", state="running",
                         host_port=32769)
    reports = instance_reports(desired=assigned(), containers=[box("running"), gone],
                               restarts={})
    assert [(r["id"], r["state"]) for r in reports] == [
        (A, "running"), ("hello-v1-web-bbbbbb", "stopping")]
    assert instance_reports(desired=assigned(), containers=[box("running")],
                            restarts={})[-1]["id"] == A


@pytest.mark.parametrize("started,finished,seconds", [
    ("2026-12-07T21:20:01.100000000Z", "2026-12-07T21:20:01.523456789Z", 0.423),
    ("2026-12-07T21:20:01Z", "2026-12-07T21:21:01.5Z", 60.5),
    ("2026-12-07T21:20:01.1Z", "0001-01-01T00:00:00Z", None),  # never finished
    ("", "2026-12-07T21:20:01Z", None),
    (None, None, None),
])
def test_how_long_a_stopped_container_ran(started, finished, seconds) -> None:
    from agent.driver import _seconds_between

    assert _seconds_between(started, finished) == seconds
