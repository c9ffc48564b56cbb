"""Issue 15, a crash costs no request: the router sends a request that could not connect, or
got no answer, to another instance of the app; a GET is retried, a POST that was sent is
never replayed. Real Consul and HAProxy; the instances are Python servers that crash on cue,
registered as passing (Consul has not noticed yet: the second after a crash)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from tests.integration.router.conftest import HOST, QuietHTTPServer, free_port

pytestmark = pytest.mark.docker


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gets = 0
        self.posts = 0


def start(name: str, host: str, *, crash: bool) -> tuple[QuietHTTPServer, Counts]:
    """An instance answering its name; with `crash`, it answers /health only and drops every
    other request without a byte of answer, as a process killed mid-request does."""
    counts = Counts()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, kind: str) -> None:
            if self.path == "/health":
                return self._answer()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with counts.lock:
                setattr(counts, kind, getattr(counts, kind) + 1)
            if crash:
                self.close_connection = True
                return
            self._answer()

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._serve("gets")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("posts")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counts


def request(router, method: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, router.listen_port, timeout=5)
    try:
        conn.request(method, "/order", body=b"one order" if method == "POST" else None,
                     headers={"Host": "flaky.localhost"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_gets_are_retried_elsewhere_and_a_sent_post_is_never_replayed(
        consul, router, cleanup, wait_for) -> None:
    steady, steady_counts = start("steady", "127.0.5.9", crash=False)
    crasher, crasher_counts = start("crasher", "127.0.5.10", crash=True)
    dead_port = free_port("127.0.5.11")  # a crashed process: nothing listens any more
    consul.put_route("flaky", ["flaky.localhost"])
    cleanup(app="flaky")
    try:
        for iid, (host, port) in {"flaky-steady": steady.server_address,
                                  "flaky-crasher": crasher.server_address}.items():
            consul.register(app="flaky", instance_id=iid, address=host, port=port)
            cleanup(instance=iid)
        consul._call("PUT", "/v1/agent/service/register", {
            "ID": "flaky-dead", "Name": "flaky", "Address": "127.0.5.11", "Port": dead_port,
            "Tags": ["live", "v1", "web"], "Check": {"TTL": "10m"}})
        cleanup(instance="flaky-dead")
        consul._call("PUT", "/v1/agent/check/pass/service:flaky-dead")
        wait_for(lambda: len(router.servers("flaky") or ()) == 3, timeout=20,
                 what="the three instances routed")

        gets = [request(router, "GET") for _ in range(200)]
        assert gets == [(200, "steady")] * 200
        print(f"200 GETs: all answered by steady; the crasher dropped {crasher_counts.gets} "
              "of them first, each sent again elsewhere")
        assert crasher_counts.gets > 0  # the retries were needed, and happened

        posts = [request(router, "POST") for _ in range(30)]
        ok = sum(1 for p in posts if p == (200, "steady"))
        # Every POST reached at most one instance that read it: none was sent twice.
        assert steady_counts.posts + crasher_counts.posts == 30
        # One that reached the crasher failed (502), as it was sent; one that could not
        # connect to the dead instance went elsewhere (nothing had been sent).
        assert ok == steady_counts.posts and crasher_counts.posts > 0
        assert [p[0] for p in posts if p != (200, "steady")] == [502] * crasher_counts.posts
        print(f"30 POSTs: {ok} answered, {crasher_counts.posts} reached the crasher and "
              "failed without being replayed")
    finally:
        for server in (steady, crasher):
            server.shutdown()
            server.server_close()
