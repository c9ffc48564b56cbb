"""paas.controller.unhealthy: why an instance fails its health check, as a table."""

from __future__ import annotations

import pytest

from paas.controller.unhealthy import diagnose
from paas.listeners import Listener, listeners

REFUSED = 'Get "http://127.0.0.2:32770/": EOF'
NOT_FOUND = "HTTP GET http://127.0.0.2:32770/health: 404 NOT FOUND Output: <!doctype html>"
UNAVAILABLE = "HTTP GET http://127.0.0.2:32770/: 503 Service Unavailable Output: starting"
ANY4 = Listener("0.0.0.0", 5000)
ANY6 = Listener("::", 5000)
LOOP = Listener("127.0.0.1", 5000)

# (listening, check output, what the sentence holds, certain)
CASES = [
    (None, REFUSED, ['its health check said: Get "http://127.0.0.2:32770/": EOF'], False),
    (None, "", [""], False),
    ([], REFUSED, ["nothing in its container listens on a TCP port yet",
                   "0.0.0.0:$PORT (PORT=5000"], False),
    ([Listener("127.0.0.1", 8000)], REFUSED,
     ["it listens on 127.0.0.1:8000, not on $PORT", "0.0.0.0:$PORT"], True),
    ([LOOP], REFUSED, ["it listens on 127.0.0.1:5000, which only its own container"], True),
    ([Listener("::1", 5000)], REFUSED, ["it listens on [::1]:5000"], True),
    ([ANY4], NOT_FOUND, ["it answers GET /health with 404 NOT FOUND",
                         "set [health] path in paas.toml"], True),
    ([ANY6, LOOP], NOT_FOUND, ["404 NOT FOUND"], True),
    ([ANY4], UNAVAILABLE, ["it answers GET /health with 503 Service Unavailable"], False),
    ([ANY4], "HTTP GET http://x/health: 429 Too Many Requests Output: slow down",
     ["429 Too Many Requests"], False),
    ([ANY4], REFUSED, ["it listens on port 5000, but GET /health did not answer: Get"], False),
    ([ANY4], "", ["it listens on port 5000, but GET /health did not answer"], False),
    ([ANY4], "x" * 500, ["x" * 199 + "…"], False),
]


@pytest.mark.parametrize("listening,output,holds,certain", CASES)
def test_diagnose(listening, output, holds, certain) -> None:
    found = diagnose(listening=listening, port=5000, path="/health", check_output=output)
    for part in holds:
        assert part in found.sentence, found.sentence
    assert found.certain is certain
    assert "\n" not in found.sentence


def test_a_tcp_check_never_speaks_of_a_path() -> None:
    tcp = "dial tcp 127.0.0.2:32770: connect: connection refused"
    found = diagnose(listening=[ANY4], port=5000, path=None, check_output=tcp)
    assert found.sentence == ("it listens on port 5000, but the check could not connect: " + tcp)
    assert not found.certain
    assert diagnose(listening=[LOOP], port=5000, path=None, check_output=tcp).certain


def test_listeners_from_the_agent_keep_only_well_formed_records() -> None:
    raw = [{"address": "0.0.0.0", "port": 5000}, {"address": "::", "port": 0},
           {"address": 1, "port": 5000}, {"port": 80}, {"address": "0.0.0.0", "port": 5000}]
    assert listeners(raw) == [ANY4]
