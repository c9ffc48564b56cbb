"""Issue 12 end to end: the cluster serves every app over HTTPS out of the box, with a
certificate its own CA issued for <app>.<domain> (curl --cacert <the CA> answers), and the
user's certificate for the app's own domain once `paas certs add` accepted it; `paas certs`
shows both with their expiry; no private key is in Consul in the clear, nor in a log."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from paas import tlscerts
from tests.e2e.conftest import REPO, app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = "secure"
OWN = "www.secure.example"


def curl(e2e, host: str, cafile: Path) -> subprocess.CompletedProcess[str]:
    """curl as a user would, verifying the router's certificate for `host` against `cafile`."""
    port = e2e.cluster.https_port
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--cacert", str(cafile), "--resolve",
         f"{host}:{port}:{e2e.cluster.server_ip}", f"https://{host}:{port}/"],
        capture_output=True, text=True, timeout=20, check=False)


def paas(e2e, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paas.cli", *args, "--url",
                           e2e.cluster.controller_url, "--token", e2e.cluster.admin_token()],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


def test_every_app_over_https_with_the_cluster_ca_and_the_users_own_certificate(
        e2e, tmp_path: Path) -> None:
    created = e2e.api.post("/v1/apps", {"name": APP})["app"]
    host = f"{APP}.{e2e.cluster.domain}"
    assert created["urls"] == [f"https://{host}:{e2e.cluster.https_port}/"]
    try:
        release = e2e.build(APP, app_dir(tmp_path))
        assert e2e.deploy(APP, release["version"], 1)["status"] == "succeeded"
        wait_until(lambda: e2e.served(APP) == 1, what=f"{APP} routed")

        # Out of the box: the cluster CA's certificate for <app>.<domain>.
        done = wait_until(lambda: (r := curl(e2e, host, e2e.cluster.ca_path)).returncode == 0
                          and r, timeout=30, what="curl --cacert <the cluster CA> over HTTPS")
        assert done.stdout.startswith("hello from v1 instance"), done.stdout
        assert e2e.cluster.ca_path.stat().st_mode & 0o777 == 0o644
        assert (e2e.cluster.root / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (e2e.cluster.root / "tls" / "seal.key").stat().st_mode & 0o777 == 0o600

        # The user's own certificate, from a CA of theirs, for the app's own domain.
        public_ca, public_key = tlscerts.make_ca("a public CA")
        (tmp_path / "public-ca.pem").write_text(public_ca)
        cert, key = tlscerts.issue(public_ca, public_key, [OWN])
        (tmp_path / "own.pem").write_text(cert)
        (tmp_path / "own.key").write_text(key)
        e2e.api.request("PUT", f"/v1/apps/{APP}/domains", json_body={"hostnames": [OWN]})
        (tmp_path / "wrong.key").write_text(tlscerts.issue(public_ca, public_key, [OWN])[1])
        refused = paas(e2e, "certs", "add", APP, "--cert", str(tmp_path / "own.pem"), "--key",
                       str(tmp_path / "wrong.key"))
        assert refused.returncode == 1 and "the key does not match the certificate" in \
            refused.stderr and "Traceback" not in refused.stderr, refused
        added = paas(e2e, "certs", "add", APP, "--cert", str(tmp_path / "own.pem"), "--key",
                     str(tmp_path / "own.key"))
        assert added.returncode == 0, added.stderr
        done = wait_until(lambda: (r := curl(e2e, OWN, tmp_path / "public-ca.pem"))
                          .returncode == 0 and r, timeout=30,
                          what="the own domain served with the user's certificate")
        assert done.stdout.startswith("hello from v1 instance"), done.stdout
        # And the platform name still has the cluster CA's.
        assert curl(e2e, host, e2e.cluster.ca_path).returncode == 0

        shown = paas(e2e, "certs", APP)
        assert shown.returncode == 0, shown.stderr
        rows = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
        assert "platform (cluster-ca)" in rows[host] and "own (user)" in rows[OWN], shown.stdout
        print(shown.stdout)

        # In Consul the keys are sealed; no log of the cluster holds a key.
        for kind in ("platform", "own"):
            [entry] = e2e.consul(f"/v1/kv/paas/certs/{APP}/{kind}")
            assert b"PRIVATE KEY" not in base64.b64decode(entry["Value"])
        logs = " ".join(p.read_text(errors="replace")
                        for p in (e2e.cluster.root / "logs").glob("*.log"))
        assert "PRIVATE KEY" not in logs and key.splitlines()[1] not in logs
    finally:
        e2e.api.delete(f"/v1/apps/{APP}")

    def gone() -> bool:
        try:
            return not e2e.consul(f"/v1/kv/paas/certs/{APP}?recurse")
        except urllib.error.HTTPError as exc:
            return exc.code == 404  # Consul's answer for no key under the prefix
    wait_until(gone, timeout=15, what="the app's certificates to leave Consul")
