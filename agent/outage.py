"""Whether each dependency (controller, Consul, Docker) is reachable; one log line per outage.

Loops call `failed(exc)` on every failed attempt and `ok()` on every success; only the transitions
are logged (one warning when an outage starts, one info line with its length when it ends), so a
long outage does not flood the log. The state also feeds `/healthz` and a metrics gauge.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prometheus_client import Gauge

log = logging.getLogger("agent")


class Dependency:
    def __init__(self, name: str, *, gauge: Gauge | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.up = True
        self.down_since: float | None = None
        self.last_error = ""
        self._gauge = gauge.labels(dependency=name) if gauge is not None else None
        self._clock = clock
        if self._gauge is not None:
            self._gauge.set(1)

    def failed(self, exc: BaseException | str) -> None:
        self.last_error = str(exc)
        if self.up:
            self.up = False
            self.down_since = self._clock()
            log.warning("%s unavailable, retrying with backoff: %s", self.name, self.last_error)
            if self._gauge is not None:
                self._gauge.set(0)

    def ok(self) -> None:
        if not self.up:
            lasted = self._clock() - (self.down_since or self._clock())
            log.info("%s back after %.1fs", self.name, lasted)
            self.up = True
            self.down_since = None
            if self._gauge is not None:
                self._gauge.set(1)

    def describe(self) -> dict[str, object]:
        return {"up": self.up, "error": None if self.up else self.last_error}
