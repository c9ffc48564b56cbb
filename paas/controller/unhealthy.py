"""Why an instance does not pass its health check, in one sentence a newcomer can act on.

A deploy that waits for an instance's health check knows two things when it fails: the check's
own output (Consul's, e.g. `HTTP GET http://…/: 404 NOT FOUND Output: …` or `… connection
reset by peer`), and what the instance's container listens on (its agent reads it from the
kernel: `agent/sockets.py`). `diagnose` turns them into the reason, and says whether waiting
longer can help: an app that listens on 127.0.0.1, on another port than `$PORT`, or answers
the health path with 404 will not heal by itself, so the deployer fails it early instead of
at `healthy_deadline`.

| what the container listens on | the check's output | the sentence says | certain |
| --- | --- | --- | --- |
| unknown (no agent answer) | any | the check's output | no |
| nothing | any | nothing listens yet; listen on 0.0.0.0:$PORT | no |
| `$PORT` on 0.0.0.0 or `::` | an HTTP 4xx (not 429) | the path answers 4xx; serve it or set `[health] path` | yes |
| `$PORT` on 0.0.0.0 or `::` | anything else | it listens, and what the check said | no |
| `$PORT`, on a loopback address only | any | only the container reaches that; listen on 0.0.0.0 | yes |
| other ports only | any | it listens on those, not on $PORT | yes |

Pure: no I/O, no clock (tests/unit/test_unhealthy.py is its table).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from paas.listeners import Listener

_HTTP_STATUS = re.compile(r"^HTTP \w+ \S+: (\d{3})\b ?([^\n]*?)(?: Output:|$)")
_MAX_OUTPUT = 200


@dataclass(frozen=True)
class Diagnosis:
    sentence: str  # why, and what to do; "" when there is nothing to add
    certain: bool  # waiting longer will not help


def _output(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_OUTPUT else text[:_MAX_OUTPUT - 1] + "…"


def _listed(found: Sequence[Listener]) -> str:
    return ", ".join(str(x) for x in found)


def diagnose(*, listening: Sequence[Listener] | None, port: int, path: str | None,
             check_output: str) -> Diagnosis:
    """Why the instance fails its health check on container port `port`: `GET path`, or a
    TCP connection when `path` is None."""
    said = _output(check_output)
    if listening is None:
        return Diagnosis(f"its health check said: {said}" if said else "", certain=False)
    listen_hint = f"the app must listen on 0.0.0.0:$PORT (PORT={port} in its container)"
    on_port = [x for x in listening if x.port == port]
    if not listening:
        return Diagnosis(f"nothing in its container listens on a TCP port yet; {listen_hint}",
                         certain=False)
    if not on_port:
        return Diagnosis(f"it listens on {_listed(listening)}, not on $PORT; {listen_hint}",
                         certain=True)
    if not any(x.everywhere for x in on_port):
        return Diagnosis(f"it listens on {_listed(on_port)}, which only its own container can "
                         f"reach; {listen_hint}", certain=True)
    if path is None:
        return Diagnosis(f"it listens on port {port}, but the check could not connect"
                         + (f": {said}" if said else ""), certain=False)
    status = _HTTP_STATUS.match(check_output.strip())
    if status:
        code, text = int(status.group(1)), status.group(2).strip()
        answer = f"{code} {text}".strip()
        if 400 <= code < 500 and code != 429:
            return Diagnosis(f"it answers GET {path} with {answer}, and the check wants a 2xx: "
                             f"serve {path}, or set [health] path in paas.toml to a path it "
                             "answers", certain=True)
        return Diagnosis(f"it answers GET {path} with {answer}", certain=False)
    return Diagnosis(f"it listens on port {port}, but GET {path} did not answer"
                     + (f": {said}" if said else ""), certain=False)
