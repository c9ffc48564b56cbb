"""A release build followed live: `POST /v1/apps/<app>/releases?stream=1` answers the build's
log as `application/x-ndjson`, one `{"phase": "stack"|"package", "line": ...}` per line and a
last `{"release": ...}` or `{"error", "status", "log_tail"}`. `build_release` hands each line to
the caller and returns the release, or raises the `ClientError` the plain JSON answer would have
raised (so a failed build is still a 422 with its `log_tail`). `PhaseLines` picks what a person
sees: every line of the `stack` phase (a stack's images are made once, on first use, and take
minutes), and the `Step N/M` lines of the `package` phase; `paas package`/`deploy` and the git
hook print them with their own headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from paas.apiclient.client import Client, ClientError

STACK_HEADER = "making the stack's images: first use only, cached after"
_STEP_RE = re.compile(r"^Step \d+/\d+ : ")


def build_release(api: Client, app: str, data: bytes, *, source: str = "",
                  on_line: Callable[[str, str], None], timeout: float) -> dict[str, Any]:
    """Build a release of `app` from the context `data`; `on_line(phase, line)` per log line."""
    path = f"/v1/apps/{app}/releases?stream=1"
    if source:
        path += f"&source={source}"
    for obj in api.stream_objects("POST", path, data=data, content_type="application/gzip",
                                  timeout=timeout):
        if "release" in obj:
            return obj["release"]
        if "error" in obj:
            status = obj.get("status")
            raise ClientError(str(obj["error"]), status=status if isinstance(status, int) else 0,
                              body=obj, hint="see the controller's log"
                              if not isinstance(status, int) or status >= 500 else "")
        if isinstance(obj.get("line"), str):
            on_line(str(obj.get("phase") or "package"), obj["line"])
    raise ClientError("the build log ended without the build's outcome",
                      hint="see the app's releases, then run the command again")


class PhaseLines:
    """Turns a build's lines into what a person sees: `header(phase)` when the phase changes
    (the package phase's only when it follows the stack phase or `announce_package`), then
    `detail(line)` for each stack line and each Step line of the package phase."""

    def __init__(self, *, header: Callable[[str], None], detail: Callable[[str], None],
                 announce_package: bool = True) -> None:
        self.header, self.detail = header, detail
        self.announce_package = announce_package
        self.phase = ""
        self.stack_lines = 0

    def __call__(self, phase: str, line: str) -> None:
        if phase == "stack":
            self.stack_lines += 1
        elif not _STEP_RE.match(line):
            return
        if phase != self.phase:
            self.phase = phase
            if phase == "stack" or self.announce_package or self.stack_lines:
                self.header(phase)
        self.detail(line)
