"""Integration test of python-api, bundled in the image: the platform runs it against the
control instance of a new release, whose base URL is `PAAS_TARGET_URL`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest


@pytest.fixture(scope="module")
def base() -> str:
    url = os.environ.get("PAAS_TARGET_URL", "").rstrip("/")
    if not url:
        pytest.fail("PAAS_TARGET_URL must name the instance under test, e.g. http://127.0.0.1:5000")
    return url


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.mark.parametrize(
    ("path", "status", "content_type", "fragment"),
    [
        ("/health", 200, "text/plain", "ok"),
        ("/", 200, "text/plain", "hello from v"),
        ("/api/info", 200, "application/json", '"instance"'),
        ("/metrics", 200, "text/plain", "# TYPE http_requests_total counter"),
        ("/no-such-page", 404, "", ""),
    ],
)
def test_endpoint(base: str, path: str, status: int, content_type: str, fragment: str) -> None:
    got_status, got_type, body = _get(base + path)
    assert got_status == status, body
    assert got_type.startswith(content_type)
    assert fragment in body


def test_info_names_this_release(base: str) -> None:
    status, _, body = _get(base + "/api/info")
    assert status == 200
    info = json.loads(body)
    release = os.environ.get("PAAS_RELEASE")
    if release:
        assert info["release"] == f"v{release}"
    assert info["requests"] >= 1


def test_metrics_count_served_requests(base: str) -> None:
    _get(base + "/")
    _, _, body = _get(base + "/metrics")
    assert 'http_requests_total{route="/"}' in body
