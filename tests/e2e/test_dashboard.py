"""Issue 11: the dashboard at /ui/, in a real browser (Debian's chromium, headless, driven by
playwright through `executable_path`), against the e2e cluster (which runs Prometheus).

A wrong token gets an error and no page; then: log in, see the app and its instance count,
its log tail with a `<script>` line shown as text and run as nothing, a deploy's phases
appearing while it runs, the new instance's lines joining the live log tail, a promote from the page (behind a confirmation), the request chart
after traffic, and the nodes with what their instances reserve. Screenshots go to the test's
temporary folder."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP = "dash"
HOSTILE = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                  args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


def log_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def test_the_dashboard_in_a_real_browser(e2e, tmp_path: Path, browser: Browser) -> None:
    app = app_dir(tmp_path)
    start = (app / "start.sh").read_text()
    (app / "start.sh").write_text(start.replace(
        "printf 'hello %s instance", f"printf '%s\\n' '{HOSTILE}'\nprintf 'hello %s instance", 1))
    e2e.api.post("/v1/apps", {"name": APP})
    try:
        release = e2e.build(APP, app)
        assert e2e.deploy(APP, release["version"], 1)["status"] == "succeeded"
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
        page.goto(e2e.cluster.controller_url + "/ui/")

        # A wrong token: one sentence, and no page.
        log_in(page, "not-the-token")
        page.wait_for_selector("#error:not([hidden])")
        assert "not valid" in page.text_content("#error")
        assert page.inner_html("#page") == "" and page.is_visible("#login-form")
        page.screenshot(path=str(tmp_path / "wrong-token.png"))

        # Logged in: the app and its instance count.
        log_in(page, e2e.cluster.admin_token())
        row = page.wait_for_selector(f"tr:has(a[href='#/apps/{APP}'])")
        assert row is not None and "1/1" in row.text_content()
        page.screenshot(path=str(tmp_path / "apps.png"))

        # The app's page: the log line with markup is text, and nothing of it ran.
        log_asks: list[str] = []
        page.on("request", lambda r: log_asks.append(r.url) if "/logs?" in r.url else None)
        page.click(f"a[href='#/apps/{APP}']")
        # (Polled from here: the page's policy forbids the eval a wait_for_function needs.)
        wait_until(lambda: "<script>" in (page.text_content("#logs", timeout=5000) or ""),
                   interval=0.3, what="the log tail on the page")
        assert page.evaluate("window.pwned") is None
        assert page.query_selector("#logs script, #logs img") is None

        # A deploy's phases appear while it runs.
        done = e2e.api.request("PATCH", f"/v1/apps/{APP}/config",
                               json_body={"set": {"GREETING": "from the dashboard test"}})
        dep = done["deployment"]
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = page.text_content("#phases") or ""
            seen += [s for s in ("control", "rollout", "finish") if f"{s}:" in text
                     and s not in seen]
            if "finish:" in text and page.text_content("h2:has-text('Deployment')") \
                    .endswith(str(dep["id"])):
                break
            time.sleep(0.2)
        print(f"phases seen on the page as they came: {seen}")
        assert "finish" in seen and len(seen) >= 2, seen
        assert e2e.finish(APP, dep)["status"] == "succeeded"
        # The log tail is live: the new release's instance's lines join the one stream the
        # page opened (it refreshes every 2 s, but asks for the logs once).
        [new] = [i["id"] for i in e2e.api.get(f"/v1/apps/{APP}/instances")["instances"]
                 if i["release"] == dep["release"] and i["role"] == "live"]
        wait_until(lambda: f"{new} | " in (page.text_content("#logs", timeout=5000) or ""),
                   timeout=30, interval=0.3, what="the new instance's lines in the log tail")
        assert len(log_asks) == 1 and "follow=1" in log_asks[0], log_asks

        # Promote from the page (the confirmation is accepted).
        version = dep["release"]
        page.click(f"button[data-promote='{version}']")
        wait_until(lambda: e2e.api.get(f"/v1/apps/{APP}")["app"]["stable_release"] == version,
                   what="the promote from the page")

        # The request chart after traffic.
        wait_until(lambda: e2e.served(APP) == 1, what=f"{APP} routed")
        req = urllib.request.Request(e2e.cluster.router_url + "/",
                                     headers={"Host": f"{APP}.{e2e.cluster.domain}"})
        for _ in range(50):
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
                assert resp.status == 200
        def charted() -> float:
            label = page.text_content("svg[data-title='requests/s'] text", timeout=5000) or ""
            value = label.rpartition(": ")[2]
            return 0.0 if value in ("", "-") else float(value)
        wait_until(lambda: charted() > 0, timeout=60, interval=0.5,
                   what="the request chart to show the traffic")
        assert page.query_selector("svg[data-title='requests/s'] circle") is not None
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

        # Nodes: capacity and what the instances reserve of it (the app's one: 128 MB).
        nodes = e2e.api.get("/v1/nodes")["nodes"]
        assert sum(n["allocated"]["memory_mb"] for n in nodes) >= 128, nodes
        page.click("a[href='#/nodes']")
        wait_until(lambda: "node-1" in (page.text_content("#page", timeout=5000) or ""),
                   interval=0.3, what="the nodes page")
        assert f"of {nodes[0]['memory_mb']} MB" in page.text_content("#page")
    finally:
        e2e.api.delete(f"/v1/apps/{APP}")
