"""Backoff and outage tracking, shared by the daemons' loops (agent and router).

- `Backoff`: the delays of one retry loop: exponential from `first`, capped, with jitter (so a
  fleet of agents does not retry in step); `reset()` after a success. The random source is
  injectable so tests can pin the jitter.
- `RestartState` / `after_attempt`: a restart schedule as data (no clock read here: callers pass
  `now`). The agent keeps one state per instance and its pure reconciler only compares `now`
  with `not_before`; the schedule is `RESTART_DELAYS_S`.
- `Outage`: whether one dependency answers. Loops call `failed(exc)` after every failed attempt
  and `ok()` after every success; only the transitions are logged (one warning when the outage
  starts, one info line with its length when it ends), so a long outage does not flood the log.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("paas.retry")


class Backoff:
    """Exponential delays: `first`, doubled after each failure up to `cap`, each one shortened by
    up to `jitter` (a fraction) at random; `reset()` starts again from `first`."""

    def __init__(self, *, first: float = 0.5, cap: float = 10.0, jitter: float = 0.2,
                 rng: random.Random | None = None) -> None:
        if first <= 0 or cap <= 0 or not 0 <= jitter < 1:
            raise ValueError("need first > 0, cap > 0 and 0 <= jitter < 1")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count this failure)."""
        delay = min(self.cap, self.first * 2 ** min(self.attempt, 64))
        self.attempt += 1
        return delay * self._rng.uniform(1 - self.jitter, 1)

    def reset(self) -> None:
        self.attempt = 0


RESTART_DELAYS_S: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
"""Delay before the n-th consecutive (re)start attempt of one instance; the last one repeats."""
STREAK_RESET_AFTER_S = 60.0
"""An instance that stayed up this long since its last (re)start starts a fresh streak."""


@dataclass(frozen=True)
class RestartState:
    """How often something was (re)started, and when it may be next."""

    restarts: int = 0
    """Restarts of something that had stopped (the agent reports them in heartbeats)."""
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


class Outage:
    """Tracks whether `name` answers; logs once when it goes away and once when it is back.

    `doing` says what the caller does meanwhile (ends the warning line). `on_change(up)` is
    called at once with the initial state (up) and then on every transition, e.g. to set a
    metrics gauge.
    """

    def __init__(self, name: str, *, doing: str = "retrying with backoff",
                 logger: logging.Logger | None = None,
                 on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.doing = doing
        self.up = True
        self.down_since: float | None = None
        self.last_error = ""
        self._log = logger or log
        self._on_change = on_change
        self._clock = clock
        if on_change is not None:
            on_change(True)

    def failed(self, exc: BaseException | str) -> None:
        self.last_error = str(exc)
        if self.up:
            self.up = False
            self.down_since = self._clock()
            self._log.warning("%s unreachable (%s); %s", self.name, self.last_error, self.doing)
            if self._on_change is not None:
                self._on_change(False)

    def ok(self) -> None:
        if not self.up:
            lasted = self._clock() - (self.down_since or self._clock())
            self._log.info("%s answers again after %.1f s", self.name, lasted)
            self.up = True
            self.down_since = None
            if self._on_change is not None:
                self._on_change(True)

    def describe(self) -> dict[str, object]:
        return {"up": self.up, "error": None if self.up else self.last_error}
