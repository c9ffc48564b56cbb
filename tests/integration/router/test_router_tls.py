"""Issue 12, the router's half: HTTPS with each app's certificate picked by SNI, from Consul KV
(keys sealed), added, replaced and removed through HAProxy's runtime API without a reload,
and no failed request while a certificate is replaced under load. Real Consul, real HAProxy
(run by the router), certificates from a CA made here."""

from __future__ import annotations

import hashlib
import json
import http.client
import socket
import ssl
import threading
from pathlib import Path

import pytest

from paas import tlscerts
from paas.sealing import Sealer, create_key_file
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
    """One HTTPS request for `name` (SNI and Host) through the router: (status, body, the
    SHA-256 fingerprint of the certificate it served). Verified against `cafile` if given.
    `headers`, if given, is filled with the answer's headers (lower-case names)."""
    if cafile is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((HOST, router.https_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            served = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    if headers is not None:
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return int(head.split()[1]), body, served


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
        failures: list[str] = []
        served: set[str] = set()
        done = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    status, body, cert = https_get(router, "tlsa.localhost", ca[2])
                    served.add(cert)
                    done[0] += 1
                    if (status, body) != (200, "tls-a"):
                        failures.append(f"{status} {body[:80]}")
                except (OSError, ssl.SSLError) as exc:
                    failures.append(repr(exc))
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            renewed = put_cert(consul, router, "tlsa", ca, ["tlsa.localhost"])
            wait_for(lambda: renewed in served, timeout=20, what="the renewed certificate")
            for _ in range(20):  # and it keeps being served
                assert https_get(router, "tlsa.localhost", ca[2])[2] == renewed
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        print(f"HTTPS requests (each a handshake) while the certificate was replaced: "
              f"{done[0]}, {len(failures)} failed")
        assert failures == [] and served == {first, renewed}
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
