"""Issue 10: requests in flight finish when their instance is drained. An endpoint that takes
2 s to answer, under 20 concurrent connections through the router, through 2 deploys: every
request gets 200, because each old instance is stopped only once the router has no request in
flight to it (HAProxy's own session counters, `GET /sessions` on the router's admin port). The
app's deletion then drains the same way."""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLOW_CGI = "#!/bin/sh\nsleep 2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow done\\n'\n"
START = """#!/bin/sh
set -eu
mkdir -p /www/cgi-bin
printf 'ok\\n' > /www/health
printf 'hello from v%s\\n' "${PAAS_RELEASE:-0}" > /www/index.html
cp /app/slow.cgi /www/cgi-bin/slow && chmod 0755 /www/cgi-bin/slow
httpd -f -p "${PORT:-5000}" -h /www &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; exit 0' TERM INT
wait "$pid"
"""


def test_slow_requests_in_flight_finish_through_two_deploys_and_a_delete(e2e, tmp_path) -> None:
    app = app_dir(tmp_path, toml='[health]\npath = "/health"\n')
    (app / "start.sh").write_text(START)
    (app / "slow.cgi").write_text(SLOW_CGI)
    e2e.api.post("/v1/apps", {"name": "slow"})
    try:
        release = e2e.build("slow", app)
        assert e2e.deploy("slow", release["version"], 2)["status"] == "succeeded"
        wait_until(lambda: e2e.served("slow") == 2, what="2 routed")
        url = e2e.cluster.router_url + "/cgi-bin/slow"
        statuses: collections.Counter[object] = collections.Counter()
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                req = urllib.request.Request(url, headers={"Host": f"slow.{e2e.cluster.domain}"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                        statuses[resp.status if resp.read() == b"slow done\n" else "body"] += 1
                except urllib.error.HTTPError as exc:
                    statuses[exc.code] += 1
                except OSError as exc:
                    statuses[type(exc).__name__] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(20)]
        for t in threads:
            t.start()
        time.sleep(3)  # every connection has a request in flight
        events = []
        for greeting in ("one", "two"):
            done = e2e.api.request("PATCH", "/v1/apps/slow/config",
                                   json_body={"set": {"GREETING": greeting}})
            dep = e2e.finish("slow", done["deployment"], 120)
            assert dep["status"] == "succeeded", dep
            events += [e["message"] for e in e2e.api.get(
                f"/v1/apps/slow/events?deployment={dep['id']}")["events"]]
        # Deleting the app drains it too: each client's last request is in flight when the
        # DELETE comes, and is answered.
        stop.set()
        t0 = time.monotonic()
        e2e.api.delete("/v1/apps/slow")
        deleted_in = time.monotonic() - t0
        for t in threads:
            t.join(40)
        print(f"through 2 deploys and the app's deletion (in {deleted_in:.1f}s): "
              f"{dict(statuses)}")
        assert set(statuses) == {200}, statuses
        assert sum(statuses.values()) >= 60
        waited = [m for m in events if m.startswith("requests in flight finished after")]
        assert waited, events  # the drains did wait for requests in flight
    finally:
        if any(a["name"] == "slow" for a in e2e.api.get("/v1/apps")["apps"]):
            e2e.api.delete("/v1/apps/slow")
