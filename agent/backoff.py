"""Backoff, as data: the restart schedule the reconciler honours, and retry delays for outages.

No function here reads the clock: callers pass `now`. The agent keeps one `RestartState` per
instance and hands the map to `reconcile`, which only compares `now` with `not_before`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RESTART_DELAYS_S: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
"""Delay before the n-th consecutive (re)start attempt of one instance; the last one repeats."""
STREAK_RESET_AFTER_S = 60.0
"""An instance that stayed up this long since its last (re)start starts a fresh streak."""


@dataclass(frozen=True)
class RestartState:
    """How often the agent has (re)started one instance, and when it may next."""

    restarts: int = 0
    """Restarts of a container that had exited (reported in heartbeats)."""
    streak: int = 0
    """Consecutive (re)start attempts without a long enough run in between."""
    last_at: float = 0.0
    not_before: float = 0.0
    """Earliest time (the caller's clock) of the next (re)start attempt."""


def restart_delay(streak: int, schedule: tuple[float, ...] = RESTART_DELAYS_S) -> float:
    """The delay after the `streak`-th consecutive attempt."""
    return schedule[min(max(streak, 0), len(schedule) - 1)]


def after_attempt(state: RestartState, *, now: float, restart: bool,
                  schedule: tuple[float, ...] = RESTART_DELAYS_S,
                  reset_after: float = STREAK_RESET_AFTER_S) -> RestartState:
    """The state after a start (`restart=False`) or restart attempt at time `now`."""
    streak = state.streak
    if state.last_at and now - state.last_at >= reset_after:
        streak = 0
    streak += 1
    return RestartState(
        restarts=state.restarts + (1 if restart else 0),
        streak=streak,
        last_at=now,
        not_before=now + restart_delay(streak, schedule),
    )


class RetryDelay:
    """Exponential retry delays with jitter for outages: 0.5 s doubling up to `maximum`."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 10.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2 ** self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0
