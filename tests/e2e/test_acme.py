"""Issue 12, ACME end to end against Debian's pebble (an ACME test server) and its DNS
(pebble-challtestsrv), both started here on 127.0.14.100-101, with a 1-node cluster of its own
on 127.0.14.x whose controller orders from pebble: a certificate for an app's own domain is
issued by itself (HTTP-01 answered by the router), renewed early under HTTPS load with no
failed request, and a host name that does not resolve to the router is refused, the refusal
shown in `paas certs` and the events and retried with backoff."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from paas import tlscerts
from tests.e2e.conftest import REPO, E2E, app_dir, new_cluster, running, wait_until
from tests.https_client import HttpsLoad
from tests.https_client import https_get as client_get

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = "127.0.14"
PEBBLE = f"{PREFIX}.100"
DNS = f"{PREFIX}.101"
APP = "shop"
OWN = "www.shop.test"
NOWHERE = "nowhere.shop.test"


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def acme_world() -> Iterator[tuple[E2E, Path, Path]]:
    """(the cluster, pebble's root CA file, the folder of the logs)."""
    tmp = Path(tempfile.mkdtemp(prefix="paas-acme-"))
    ca_cert, ca_key = tlscerts.make_ca("pebble's HTTPS CA")
    (tmp / "trust.pem").write_text(ca_cert)
    cert, key = tlscerts.issue(ca_cert, ca_key, [PEBBLE])
    (tmp / "pebble.pem").write_text(cert)
    (tmp / "pebble.key").write_text(key)
    (tmp / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{PEBBLE}:14000", "managementListenAddress": f"{PEBBLE}:15000",
        "certificate": str(tmp / "pebble.pem"), "privateKey": str(tmp / "pebble.key"),
        "httpPort": 8080, "tlsPort": 5001, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with running(["pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "",
                  "-dns01", f"{DNS}:8053", "-management", f"{DNS}:8055", "-http01", "",
                  "-https01", "", "-tlsalpn01", ""], tmp / "dns.log"), \
            running(["pebble", "-config", str(tmp / "pebble.json"), "-dnsserver",
                     f"{DNS}:8053"], tmp / "pebble.log", env):
        wait_until(lambda: listening(PEBBLE, 14000) and listening(DNS, 8055), timeout=20,
                   what="pebble and its DNS")
        # Only the app's own domain resolves to the router; NOWHERE resolves to nothing.
        request = urllib.request.Request(
            f"http://{DNS}:8055/add-a", method="POST",
            data=json.dumps({"host": OWN + ".", "addresses": [f"{PREFIX}.1"]}).encode())
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback
        ctx = ssl.create_default_context(cafile=str(tmp / "trust.pem"))
        with urllib.request.urlopen(f"https://{PEBBLE}:15000/roots/0", context=ctx,  # noqa: S310
                                    timeout=5) as resp:
            (tmp / "pebble-root.pem").write_bytes(resp.read())
        cluster = new_cluster(tmp / "cluster", prefix=PREFIX, nodes=1,
                              cluster_id="acme" + str(int(time.time()) % 100000),
                              acme_directory=f"https://{PEBBLE}:14000/dir",
                              acme_ca_bundle=tmp / "trust.pem")
        try:
            cluster.up()
            yield E2E(cluster), tmp / "pebble-root.pem", tmp
        finally:
            cluster.down()
            for log in ("pebble.log", "dns.log"):
                print(f"--- {log}\n" + "\n".join(
                    (tmp / log).read_text(errors="replace").splitlines()[-15:]))


def https_get(e2e: E2E, host: str, cafile: Path) -> tuple[int, str, str]:
    """One HTTPS request for `host` through the cluster's router (tests/https_client.py)."""
    return client_get(e2e.cluster.server_ip, e2e.cluster.https_port, host, cafile)


def own_cert(e2e: E2E) -> dict | None:
    certs = e2e.api.get(f"/v1/apps/{APP}/certs")["certs"]
    return next((c for c in certs if c["kind"] == "own"), None)


def test_acme_issues_renews_under_load_and_refuses_a_name_that_does_not_resolve(
        acme_world: tuple[E2E, Path, Path]) -> None:
    e2e, pebble_root, tmp = acme_world
    e2e.api.post("/v1/apps", {"name": APP})
    release = e2e.build(APP, app_dir(tmp))
    assert e2e.deploy(APP, release["version"], 1)["status"] == "succeeded"
    wait_until(lambda: e2e.served(APP) == 1, what=f"{APP} routed")

    # 1. Issued by itself once the app has its own domain.
    started_at = time.monotonic()
    e2e.api.request("PUT", f"/v1/apps/{APP}/domains", json_body={"hostnames": [OWN]})
    first = wait_until(lambda: (c := own_cert(e2e)) and c["source"] == "acme" and c,
                       timeout=60, interval=0.5, what="a certificate from pebble")
    print(f"ordered and issued {time.monotonic() - started_at:.1f} s after the domain was set")
    assert first["hostnames"] == [OWN]
    status, _, served = wait_until(lambda: https_get(e2e, OWN, pebble_root), timeout=20,
                                   what="the router to serve it", ignore=(OSError,))
    assert (status, served) == (200, first["fingerprint"])
    events = e2e.api.get(f"/v1/apps/{APP}/events")["events"]
    assert any(e["step"] == "certificate" and "issued a certificate for www.shop.test"
               in e["message"] for e in events), events

    # 2. Renewed early, under HTTPS load (a new connection and handshake per request).
    with HttpsLoad(lambda: https_get(e2e, OWN, pebble_root),
                   ok=lambda status, _: status == 200) as load:
        renewed = e2e.api.post(f"/v1/apps/{APP}/certs/renew", {})
        second = next(c for c in renewed["certs"] if c["kind"] == "own")
        assert second["fingerprint"] != first["fingerprint"]
        wait_until(lambda: second["fingerprint"] in load.served, timeout=20,
                   what="the renewed certificate served")
        time.sleep(1)
    print(f"HTTPS requests while the certificate was renewed: {load.count}, "
          f"{len(load.failures)} failed")
    assert load.failures == [] and load.count > 0

    # 3. A name that does not resolve to the router: refused, shown, retried with backoff;
    #    the certificate already served stays.
    e2e.api.request("PUT", f"/v1/apps/{APP}/domains", json_body={"hostnames": [OWN, NOWHERE]})

    def refused() -> dict | None:
        acme = e2e.api.get(f"/v1/apps/{APP}/certs")["acme"]
        return acme if acme and acme["error"] else None
    state = wait_until(refused, timeout=60, interval=0.5, what="the refusal")
    assert NOWHERE in state["error"] and 0 < state["next_try_in_s"] <= 30, state
    shown = subprocess.run([sys.executable, "-m", "paas.cli", "certs", APP, "--url",
                            e2e.cluster.controller_url, "--token", e2e.cluster.admin_token()],
                           capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert shown.returncode == 0 and f"ACME: the ACME CA could not validate {NOWHERE}" in \
        shown.stdout, shown
    print(shown.stdout)
    events = e2e.api.get(f"/v1/apps/{APP}/events")["events"]
    assert any("failed" in e["message"] and NOWHERE in e["message"] for e in events), events
    assert https_get(e2e, OWN, pebble_root)[::2] == (200, second["fingerprint"])
