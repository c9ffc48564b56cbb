"""Issue 10: the router restarts without dropping a request. Its HAProxy serves on while the
router is away (killed with -9, or stopped with SIGTERM for an upgrade), and the next router
adopts it; routes keep changing afterwards through the adopted HAProxy."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from tests.e2e.conftest import REPO, Hammer, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def haproxy_pid(e2e) -> int:
    with urllib.request.urlopen(e2e.cluster.router_admin_url + "/healthz", timeout=5) as r:  # noqa: S310
        return json.loads(r.read())["haproxy_pid"]


def test_router_killed_and_restarted_ten_times_under_load_drops_nothing(e2e) -> None:
    e2e.api.post("/v1/apps", {"name": "steady"})
    try:
        release = e2e.build("steady", REPO / "examples" / "hello")
        assert e2e.deploy("steady", release["version"], 2)["status"] == "succeeded"
        wait_until(lambda: e2e.served("steady") == 2, what="2 routed")
        first = haproxy_pid(e2e)
        with Hammer(e2e, "steady") as hammer:
            for sig in [signal.SIGKILL] * 5 + [signal.SIGTERM] * 5:
                e2e.cluster.stop_process("router", sig=sig)
                time.sleep(0.5)  # traffic flows with no router at all
                e2e.cluster.start_process("router")
                wait_until(lambda: e2e.served("steady") == 2, 20, 0.1,
                           what="the new router up with the routes")
                assert haproxy_pid(e2e) == first, "the new router adopted the same HAProxy"
            # Routes still change through the adopted HAProxy: a scale to 3 is served.
            dep = e2e.finish("steady", e2e.api.post("/v1/apps/steady/scale",
                                                    {"replicas": {"web": 3}})["deployment"])
            assert dep["status"] == "succeeded", dep
            wait_until(lambda: e2e.served("steady") == 3, 20, 0.1, what="3 routed")
        total = sum(hammer.statuses.values())
        print(f"{total} requests through 10 router restarts: {dict(hammer.statuses)}")
        assert set(hammer.statuses) == {200}, hammer.statuses
        assert total > 100
    finally:
        e2e.api.delete("/v1/apps/steady")
