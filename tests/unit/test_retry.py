"""Backoff, the restart schedule and outage tracking (paas/retry.py)."""

from __future__ import annotations

import logging
import random

import pytest

from paas.retry import (
    RESTART_DELAYS_S,
    Backoff,
    Outage,
    RestartState,
    after_attempt,
)


class FixedRandom(random.Random):
    """`uniform(a, b)` always answers `a + share * (b - a)`."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def uniform(self, a: float, b: float) -> float:
        return a + self.share * (b - a)


@pytest.mark.parametrize(("kwargs", "share", "expected"), [
    ({}, 1.0, [0.5, 1, 2, 4, 8, 10, 10]),
    ({}, 0.0, [0.4, 0.8, 1.6, 3.2, 6.4, 8, 8]),
    ({"first": 0.1, "cap": 3.0}, 1.0, [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]),
    ({"first": 0.1, "cap": 3.0, "jitter": 0.0}, 0.0, [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0]),
    ({"first": 0.5, "cap": 0.2}, 1.0, [0.2, 0.2]),  # a cap below the first delay wins
])
def test_backoff_doubles_up_to_the_cap_with_jitter(kwargs, share, expected) -> None:
    backoff = Backoff(**kwargs, rng=FixedRandom(share))
    assert [backoff.next() for _ in expected] == pytest.approx(expected)


def test_backoff_resets_and_jitter_stays_in_range() -> None:
    backoff = Backoff(first=1.0, cap=100.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(5)]
    assert all(0.8 * 2 ** n <= d <= 2 ** n for n, d in enumerate(delays))
    assert len(set(delays)) == 5
    backoff.reset()
    assert 0.8 <= backoff.next() <= 1.0
    many = Backoff(first=1.0, cap=1.0, rng=random.Random(1))
    assert len({many.next() for _ in range(20)}) > 1  # jittered, so agents do not retry in step


def test_seeded_backoffs_repeat() -> None:
    one, two = (Backoff(rng=random.Random(42)) for _ in range(2))
    assert [one.next() for _ in range(6)] == [two.next() for _ in range(6)]


@pytest.mark.parametrize("kwargs", [{"first": 0}, {"cap": 0}, {"jitter": 1.0}, {"jitter": -0.1}])
def test_backoff_refuses_nonsense(kwargs) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_the_restart_schedule_grows_caps_and_resets_after_a_long_run() -> None:
    state = RestartState()
    delays = []
    now = 0.0
    for _ in range(8):
        state = after_attempt(state, now=now, restart=True)
        delays.append(state.not_before - now)
        now = state.not_before
    assert delays == [1, 2, 5, 10, 20, 30, 30, 30]
    assert delays[-1] == RESTART_DELAYS_S[-1]
    assert state.restarts == 8 and state.streak == 8
    fresh = after_attempt(state, now=state.last_at + 60, restart=True)
    assert fresh.streak == 1 and fresh.restarts == 9 and fresh.not_before == fresh.last_at + 1
    still = after_attempt(state, now=state.last_at + 59, restart=True)
    assert still.streak == 9 and still.not_before == still.last_at + 30


def test_a_first_start_is_not_counted_as_a_restart() -> None:
    state = after_attempt(RestartState(), now=5.0, restart=False)
    assert (state.restarts, state.streak, state.not_before) == (0, 1, 6.0)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(caplog) -> None:
    caplog.set_level(logging.INFO, logger="test.outage")
    now = [100.0]
    changes: list[bool] = []
    dep = Outage("consul", logger=logging.getLogger("test.outage"), on_change=changes.append,
                 clock=lambda: now[0])
    dep.ok()
    for _ in range(5):
        dep.failed(RuntimeError("connection refused"))
        now[0] += 1.5
    assert dep.describe() == {"up": False, "error": "connection refused"}
    dep.ok()
    dep.ok()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "consul unreachable (connection refused); retrying with backoff"),
        ("INFO", "consul answers again after 7.5 s"),
    ]
    assert changes == [True, False, True]
    assert dep.describe() == {"up": True, "error": None} and dep.down_since is None


def test_a_second_outage_is_logged_again(caplog) -> None:
    caplog.set_level(logging.INFO, logger="paas.retry")
    dep = Outage("Consul", doing="keeping the last good routes, retrying")
    for _ in range(2):
        dep.failed("refused")
        dep.failed("refused")
        dep.ok()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"] * 2
    assert caplog.records[0].getMessage().endswith("keeping the last good routes, retrying")
