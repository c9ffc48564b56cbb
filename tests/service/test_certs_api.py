"""Issue 12, the controller's half, in-process: an app gets the cluster CA's certificate for
<app>.<domain> when it is created; the user's pair for the app's own domains is checked (each
refusal one sentence) and kept with its key sealed; no key ever leaves through the API.
Consul is a closed port here (publishing is best effort and retried by the reconcile);
tests/e2e/test_https.py serves it all through the router."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from paas import tlsdir
from paas.controller.settings import ControllerSettings
from paas.tlscerts import issue, make_ca


async def error_of(resp, status: int) -> str:
    assert resp.status == status, await resp.text()
    return (await resp.json())["error"]


async def test_platform_certificate_own_certificate_checks_and_no_key_leaves(
        start_api, settings: ControllerSettings, tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tlsdir.ensure(tls, "test")
    api = await start_api(dataclasses.replace(settings, tls_dir=tls, public_https_port=8443))
    admin = {"Authorization": "Bearer " + (settings.data_dir / "admin.token").read_text()
             .strip()}
    created = await (await api.post("/v1/apps", json={"name": "shop"}, headers=admin)).json()
    assert created["app"]["urls"] == ["https://shop.localhost:8443/"]

    resp = await api.get("/v1/apps/shop/certs", headers=admin)
    [platform] = (await resp.json())["certs"]
    assert (platform["kind"], platform["source"], platform["hostnames"]) == \
        ("platform", "cluster-ca", ["shop.localhost"])
    assert 89 < platform["expires_in_days"] <= 90

    # The user's own certificate needs an own domain first.
    other_ca = make_ca("a public CA")
    cert, key = issue(*other_ca, ["www.shop.example"])
    assert "paas publish-deploy --app shop --hostname HOST" in await error_of(await api.post(
        "/v1/apps/shop/certs", json={"cert": cert, "key": key}, headers=admin), 400)
    await api.put("/v1/apps/shop/domains", json={"hostnames": ["www.shop.example"]},
                  headers=admin)
    _, wrong_key = issue(*other_ca, ["www.shop.example"])
    assert await error_of(await api.post("/v1/apps/shop/certs", json={
        "cert": cert, "key": wrong_key}, headers=admin), 400) == \
        "the key does not match the certificate"
    narrow, narrow_key = issue(*other_ca, ["api.shop.example"])
    assert "does not cover www.shop.example" in await error_of(await api.post(
        "/v1/apps/shop/certs", json={"cert": narrow, "key": narrow_key}, headers=admin), 400)
    assert "cert and key must be the PEM texts" in await error_of(await api.post(
        "/v1/apps/shop/certs", json={"cert": 1}, headers=admin), 400)

    resp = await api.post("/v1/apps/shop/certs", json={"cert": cert, "key": key},
                          headers=admin)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["cert"]["hostnames"] == ["www.shop.example"]
    listing = await (await api.get("/v1/apps/shop/certs", headers=admin)).text()
    assert "PRIVATE" not in listing and "sealed" not in listing
    app = await (await api.get("/v1/apps/shop", headers=admin)).json()
    assert app["app"]["urls"] == ["https://shop.localhost:8443/",
                                  "https://www.shop.example:8443/"]

    # At rest: no key in the clear in the database.
    db = sqlite3.connect(settings.data_dir / "state.db")
    stored = " ".join(str(v) for row in db.execute("SELECT * FROM certs") for v in row)
    assert "PRIVATE KEY" not in stored and key.splitlines()[1] not in stored

    assert "only the app's own certificate" in await error_of(
        await api.delete("/v1/apps/shop/certs/platform", headers=admin), 400)
    assert (await api.delete("/v1/apps/shop/certs/own", headers=admin)).status == 200
    assert "has no own certificate" in await error_of(
        await api.delete("/v1/apps/shop/certs/own", headers=admin), 404)
    assert [c["kind"] for c in (await (await api.get(
        "/v1/apps/shop/certs", headers=admin)).json())["certs"]] == ["platform"]

    # Redirect and HSTS: off until asked, one at a time.
    assert app["app"]["https"] == {"redirect": False, "hsts": False}
    resp = await api.put("/v1/apps/shop/https", json={"redirect": True}, headers=admin)
    assert (await resp.json())["app"]["https"] == {"redirect": True, "hsts": False}
    resp = await api.put("/v1/apps/shop/https", json={"hsts": True}, headers=admin)
    assert (await resp.json())["app"]["https"] == {"redirect": True, "hsts": True}
    for bad in ({"redirect": "yes"}, {"other": True}):
        assert await error_of(await api.put("/v1/apps/shop/https", json=bad, headers=admin),
                              400) == "give redirect and/or hsts, each true or false"


async def test_without_a_tls_folder_there_is_no_https(api, admin) -> None:
    await api.post("/v1/apps", json={"name": "plain"}, headers=admin)
    app = await (await api.get("/v1/apps/plain", headers=admin)).json()
    assert app["app"]["urls"] == ["http://plain.localhost/"]
    assert (await (await api.get("/v1/apps/plain/certs", headers=admin)).json())["certs"] == []
    assert "serves no HTTPS" in await error_of(await api.post(
        "/v1/apps/plain/certs", json={"cert": "x", "key": "y"}, headers=admin), 503)
    assert "serves no HTTPS" in await error_of(await api.put(
        "/v1/apps/plain/https", json={"redirect": True}, headers=admin), 503)
