"""Issue 12, the router's half: HTTPS with each app's certificate picked by SNI, from Consul KV
(keys sealed), added, replaced and removed through HAProxy's runtime API without a reload,
and no failed request while a certificate is replaced under load. Real Consul, real HAProxy
(run by the router), certificates from a CA made here."""

from __future__ import annotations

import json
import http.client
import ssl
from pathlib import Path

import pytest

from paas import tlscerts
from paas.sealing import Sealer, create_key_file
from tests.https_client import HttpsLoad
from tests.https_client import https_get as client_get
from tests.integration.router.conftest import HOST

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    cert, key = tlscerts.make_ca("router test CA")
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(cert)
    return cert, key, path


def https_get(router, name: str, cafile: Path | None, *,
              headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One HTTPS request for `name` through the router (tests/https_client.py)."""
    return client_get(HOST, router.https_port, name, cafile, headers=headers)


def put_cert(consul, router, app: str, ca: tuple[str, str, Path], names: list[str]) -> str:
    """Issue a certificate for `names`, write it for `app`; return its fingerprint."""
    cert, key = tlscerts.issue(ca[0], ca[1], names)
    consul.put_cert(app, cert, Sealer.from_file(router.seal_key).seal(key.encode()))
    return tlscerts.info(cert).fingerprint


def test_sni_picks_each_apps_certificate_which_changes_without_a_reload(
        consul, router, backends, cleanup, wait_for, ca, tmp_path: Path) -> None:
    a, b = backends("tls-a", "127.0.5.2"), backends("tls-b", "127.0.5.3")
    for app, backend in (("tlsa", a), ("tlsb", b)):
        consul.put_route(app, [f"{app}.localhost"])
        cleanup(app=app)
        consul.register(app=app, instance_id=f"{app}-1", address=backend.host,
                        port=backend.port)
        cleanup(instance=f"{app}-1")
    wait_for(lambda: router.servers("tlsa") and router.servers("tlsb"), timeout=20,
             what="both apps routed")
    first = put_cert(consul, router, "tlsa", ca, ["tlsa.localhost"])
    b_cert = put_cert(consul, router, "tlsb", ca, ["tlsb.localhost"])
    try:
        wait_for(lambda: https_get(router, "tlsa.localhost", ca[2]) == (200, "tls-a", first),
                 timeout=20, what="tlsa served over HTTPS with its own certificate")
        wait_for(lambda: https_get(router, "tlsb.localhost", ca[2]) == (200, "tls-b", b_cert),
                 timeout=20, what="tlsb served over HTTPS with its own certificate")
        assert router.metric("paas_router_certificates") == 2
        # On disk for the next reload: readable by the router's user only.
        pem = router.state_dir / "certs" / "tlsa.own.pem"
        assert pem.stat().st_mode & 0o777 == 0o600 and "PRIVATE KEY" in pem.read_text()
        assert (router.state_dir / "certs").stat().st_mode & 0o777 == 0o700

        # Renewed under load (a new connection, so a handshake, per request): not one fails,
        # and HAProxy is not reloaded.
        reloads = router.haproxy_reloads()
        with HttpsLoad(lambda: https_get(router, "tlsa.localhost", ca[2]),
                       ok=lambda status, body: (status, body) == (200, "tls-a")) as load:
            renewed = put_cert(consul, router, "tlsa", ca, ["tlsa.localhost"])
            wait_for(lambda: renewed in load.served, timeout=20,
                     what="the renewed certificate")
            for _ in range(20):  # and it keeps being served
                assert https_get(router, "tlsa.localhost", ca[2])[2] == renewed
        print(f"HTTPS requests (each a handshake) while the certificate was replaced: "
              f"{load.count}, {len(load.failures)} failed")
        assert load.failures == [] and load.served == {first, renewed}
        assert router.haproxy_reloads() == reloads

        # Removed: that name gets the router's fallback (which the CA does not sign).
        consul.delete_cert("tlsb")
        wait_for(lambda: https_get(router, "tlsb.localhost", None)[2] != b_cert, timeout=20,
                 what="tlsb's certificate to go")
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(router, "tlsb.localhost", ca[2])
        assert not (router.state_dir / "certs" / "tlsb.own.pem").exists()
        assert router.haproxy_reloads() == reloads

        # A key sealed with another cluster's seal key is refused, and named in the log; the
        # other app keeps its certificate.
        create_key_file(tmp_path / "other.key")
        cert, key = tlscerts.issue(ca[0], ca[1], ["tlsb.localhost"])
        consul.put_cert("tlsb", cert, Sealer.from_file(tmp_path / "other.key")
                        .seal(key.encode()))
        wait_for(lambda: "certificate 'paas/certs/tlsb/own' skipped" in router.log(), timeout=20,
                 what="the refusal in the router's log")
        assert https_get(router, "tlsa.localhost", ca[2])[2] == renewed
        assert router.metric("paas_router_certificates") == 1
    finally:
        consul.delete_cert("tlsa")
        consul.delete_cert("tlsb")
        wait_for(lambda: router.metric("paas_router_certificates") == 0, timeout=20,
                 what="the test's certificates to go")


def test_a_new_router_adopts_haproxy_with_its_certificates_and_changes_them_in_place(
        consul, start_router, backends, wait_for, ca) -> None:
    backend = backends("tls-c", "127.0.5.4")
    consul.put_route("tlsc", ["tlsc.localhost"])
    consul.register(app="tlsc", instance_id="tlsc-1", address=backend.host, port=backend.port)
    try:
        with start_router(consul.url) as first:
            first.handover = True
            one = put_cert(consul, first, "tlsc", ca, ["tlsc.localhost"])
            wait_for(lambda: https_get(first, "tlsc.localhost", ca[2]) == (200, "tls-c", one),
                     timeout=20, what="tlsc over HTTPS")
        with start_router(consul.url, after=first) as second:
            reloads = second.haproxy_reloads()
            assert https_get(second, "tlsc.localhost", ca[2]) == (200, "tls-c", one)
            two = put_cert(consul, second, "tlsc", ca, ["tlsc.localhost"])
            wait_for(lambda: https_get(second, "tlsc.localhost", ca[2])[2] == two, timeout=20,
                     what="the replaced certificate through the adopted HAProxy")
            assert second.haproxy_reloads() == reloads
            assert "1 replaced, 0 removed, without a reload" in second.log()
    finally:
        consul.delete_cert("tlsc")
        consul.deregister("tlsc-1")
        consul.delete_route("tlsc")


def test_redirect_to_https_and_hsts_per_app(consul, router, backends, cleanup, wait_for,
                                            ca) -> None:
    backend = backends("tls-r", "127.0.5.5")
    consul.put_route("tlsr", ["tlsr.localhost"])
    cleanup(app="tlsr")
    consul.register(app="tlsr", instance_id="tlsr-1", address=backend.host, port=backend.port)
    cleanup(instance="tlsr-1")
    wait_for(lambda: router.servers("tlsr"), timeout=20, what="tlsr routed")
    put_cert(consul, router, "tlsr", ca, ["tlsr.localhost"])
    try:
        wait_for(lambda: https_get(router, "tlsr.localhost", ca[2])[0] == 200, timeout=20,
                 what="tlsr over HTTPS")
        # Off by default: plain HTTP is served, no HSTS.
        assert router.get("tlsr.localhost", "/x?y=1")[:3:2] == (200, "tls-r")
        seen: dict[str, str] = {}
        https_get(router, "tlsr.localhost", ca[2], headers=seen)
        assert "strict-transport-security" not in seen

        consul.put_route("tlsr", ["tlsr.localhost"], https={"redirect": True, "hsts": True})

        def redirected() -> tuple[int, str | None]:
            conn = http.client.HTTPConnection(HOST, router.listen_port, timeout=5)
            try:
                conn.request("GET", "/x?y=1", headers={"Host": "tlsr.localhost:8080"})
                resp = conn.getresponse()
                resp.read()
                return resp.status, resp.getheader("Location")
            finally:
                conn.close()
        wait_for(lambda: redirected()[0] == 308, timeout=20, what="the redirect to HTTPS")
        assert redirected() == (308, f"https://tlsr.localhost:{router.https_port}/x?y=1")
        # ACME's HTTP-01 challenges stay on plain HTTP.
        assert router.get("tlsr.localhost", "/.well-known/acme-challenge/abc")[0] == 200
        seen.clear()
        assert https_get(router, "tlsr.localhost", ca[2], headers=seen)[:2] == (200, "tls-r")
        assert seen["strict-transport-security"] == "max-age=31536000"
    finally:
        consul.delete_cert("tlsr")


def test_acme_challenges_are_answered_on_plain_http_without_a_reload(
        consul, router, wait_for) -> None:
    token = "tok" + "A" * 40
    key_authz = f"{token}.{'b' * 43}"
    reloads = router.haproxy_reloads()
    consul._call("PUT", f"/v1/kv/paas/acme/{token}", key_authz.encode())
    consul._call("PUT", "/v1/kv/paas/acme/short", b"x")  # skipped, and logged
    try:
        wait_for(lambda: token in json.loads(router.admin("/acme")[1])["tokens"], timeout=20,
                 what="the router to serve the challenge")
        # Whatever app's host name the CA asks for: the path is the router's.
        status, _, body = router.get("any-app.example", f"/.well-known/acme-challenge/{token}")
        assert (status, body) == (200, key_authz)
        assert router.get("any-app.example", "/.well-known/acme-challenge/other")[0] == 404
        assert "ACME challenge 'paas/acme/short' skipped" in router.log()
    finally:
        consul._call("DELETE", "/v1/kv/paas/acme/?recurse")
    wait_for(lambda: json.loads(router.admin("/acme")[1])["tokens"] == [], timeout=20,
             what="the challenge to go")
    assert router.get("any-app.example", f"/.well-known/acme-challenge/{token}")[0] == 404
    assert router.haproxy_reloads() == reloads
