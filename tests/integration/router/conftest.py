"""Fixtures for the router's integration tests: a real Consul dev agent, real HAProxy (run by the
router), and tiny HTTP backends, all on 127.0.5.x so they never meet a demo cluster (127.0.0.x)
or other tests.

Every process is started here and stopped here by its own PID; every temp folder is removed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from paas.sealing import create_key_file
from tests.engines import consul_binary
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.5.1"
RUN_ID = uuid.uuid4().hex[:6]


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: What a probe of a process that is starting or reloading may raise: "not yet", not a failure.
NOT_YET = (OSError, http.client.HTTPException, ValueError)


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str,
             interval: float = 0.05) -> object:
    """`tests.waiting.wait_until`, with the probe's connection errors counted as "not yet"."""
    return wait_until(predicate, timeout, interval, what=what, ignore=NOT_YET)


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Stop one process we started, by its PID: `sig`, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


# --- Consul ------------------------------------------------------------------------------

@dataclass
class Consul:
    """A Consul dev agent we started, with the few API calls the tests need."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def _call(self, method: str, path: str, body: object = None) -> bytes:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.read()

    def put_route(self, app: str, hostnames: list[str], service: str | None = None,
                  https: dict[str, bool] | None = None) -> None:
        value = {"app": app, "service": service or app, "hostnames": hostnames,
                 "https": https or {}}
        self._call("PUT", f"/v1/kv/paas/routes/{app}", json.dumps(value).encode())

    def delete_route(self, app: str) -> None:
        self._call("DELETE", f"/v1/kv/paas/routes/{app}")

    def put_cert(self, app: str, cert_pem: str, sealed_key: str, kind: str = "own") -> None:
        """An app's certificate as the controller writes it (router/certs.py)."""
        self._call("PUT", f"/v1/kv/paas/certs/{app}/{kind}",
                   json.dumps({"cert": cert_pem, "key": sealed_key}).encode())

    def delete_cert(self, app: str) -> None:
        self._call("DELETE", f"/v1/kv/paas/certs/{app}?recurse")

    def register(self, *, app: str, instance_id: str, address: str, port: int, role: str = "live",
                 process: str = "web", release: int = 1) -> None:
        """Register an instance the way the agent does (architecture.md, "Consul")."""
        self._call("PUT", "/v1/agent/service/register", {
            "ID": instance_id, "Name": app, "Address": address, "Port": port,
            "Tags": [role, f"v{release}", process],
            "Meta": {"paas_cluster": f"router-test-{RUN_ID}", "paas_app": app,
                     "paas_release": str(release), "paas_process": process,
                     "paas_instance": instance_id, "paas_role": role},
            "Check": {"HTTP": f"http://{address}:{port}/health", "Interval": "1s",
                      "Timeout": "1s", "DeregisterCriticalServiceAfter": "10m"},
        })

    def deregister(self, instance_id: str) -> None:
        self._call("PUT", f"/v1/agent/service/deregister/{instance_id}")

    def passing(self, app: str) -> set[str]:
        """Instance ids Consul reports passing for `app`."""
        entries = json.loads(self._call("GET", f"/v1/health/service/{app}?passing=1"))
        return {e["Service"]["ID"] for e in entries}


@contextlib.contextmanager
def run_consul() -> Iterator[Consul]:
    binary = consul_binary()
    tmp = Path(tempfile.mkdtemp(prefix="paas-router-consul-"))
    http_port = free_port()
    argv = [binary, "agent", "-dev", "-bind", HOST, "-client", HOST,
            "-http-port", str(http_port), "-dns-port", "-1", "-grpc-port", "-1",
            "-serf-lan-port", str(free_port()), "-serf-wan-port", str(free_port()),
            "-server-port", str(free_port()), "-node", f"router-test-{RUN_ID}",
            "-log-level", "warn"]
    log_path = tmp / "consul.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    consul = Consul(url=f"http://{HOST}:{http_port}", proc=proc, log_path=log_path)
    try:
        def leader() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"consul exited: {log_path.read_text()[-2000:]}")
            return json.loads(consul._call("GET", "/v1/status/leader")) != ""
        wait_for(leader, timeout=20, what="a Consul leader")
        yield consul
    finally:
        stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# --- backends ----------------------------------------------------------------------------

@dataclass
class Backend:
    """A tiny HTTP server that answers its name and counts the requests it serves."""

    name: str
    host: str
    port: int
    server: QuietHTTPServer
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class QuietHTTPServer(ThreadingHTTPServer):
    """Peers (HAProxy, Consul's checks) may reset idle keep-alive connections: not an error."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start_backend(name: str, host: str) -> Backend:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/health":
                with backend.lock:
                    backend.hits += 1
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietHTTPServer((host, 0), Handler)
    backend = Backend(name=name, host=host, port=server.server_address[1], server=server)
    threading.Thread(target=server.serve_forever, name=f"backend-{name}", daemon=True).start()
    return backend


@pytest.fixture
def backends() -> Iterator[Callable[[str, str], Backend]]:
    """Factory of backends; all of them are shut down after the test."""
    made: list[Backend] = []

    def make(name: str, host: str) -> Backend:
        backend = start_backend(name, host)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.server.shutdown()
        backend.server.server_close()


# --- router ------------------------------------------------------------------------------

@dataclass
class Router:
    """A `python -m router.main` process we started, and ways to look at it from outside."""

    proc: subprocess.Popen
    listen_port: int
    admin_port: int
    exporter_port: int
    https_port: int
    state_dir: Path
    log_path: Path
    handover: bool = False
    """Set by a test whose next router takes this one's state folder and HAProxy."""

    def get(self, host: str, path: str = "/") -> tuple[int, str, str]:
        """One request through HAProxy with this Host header: (status, content type, body)."""
        conn = http.client.HTTPConnection(HOST, self.listen_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
        finally:
            conn.close()

    def admin(self, path: str, *, port: int | None = None) -> tuple[int, str]:
        """GET `path` on the router's admin port (or `port` on its host: HAProxy's exporter)."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port or self.admin_port}{path}",
                                        timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def routes(self) -> dict:
        return json.loads(self.admin("/routes")[1])

    def servers(self, app: str) -> set[str] | None:
        entry = self.routes()["apps"].get(app)
        return None if entry is None else set(entry["servers"])

    def metric(self, name: str) -> float:
        for line in self.admin("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not found")

    def haproxy_reloads(self) -> int:
        """The HAProxy master's own reload counter, read from its master socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.state_dir / "master.sock"))
            s.sendall(b"show proc\n")
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        for line in reply.decode().splitlines():
            if " master " in f" {line} ":
                return int(line.split()[2])
        raise AssertionError(f"no master line in {reply!r}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def seal_key(self) -> Path:
        """The seal key this router opens certificates' keys with (paas.sealing)."""
        return self.state_dir.parent / f"{self.state_dir.name}.seal.key"


@contextlib.contextmanager
def run_router(consul_url: str, *, initial_slots: int = 2,
               after: Router | None = None, extra: tuple[str, ...] = ()) -> Iterator[Router]:
    """A router; `after` names one that stopped, whose state folder and ports this one takes
    (its HAProxy may still be serving: the new router adopts it). The last router of a state
    folder stops its HAProxy and removes the folder."""
    # Short path: unix socket paths must stay under ~100 bytes.
    state_dir = after.state_dir if after else Path(tempfile.mkdtemp(prefix="paas-rt-",
                                                                    dir="/tmp"))
    log_path = state_dir.parent / f"{state_dir.name}.{secrets.token_hex(2)}.log"
    listen_port, admin_port, exporter_port, https_port = (
        (after.listen_port, after.admin_port, after.exporter_port, after.https_port) if after
        else (free_port(), free_port(), free_port(), free_port()))
    seal_key = state_dir.parent / f"{state_dir.name}.seal.key"
    create_key_file(seal_key)
    argv = [sys.executable, "-m", "router.main", "--consul-url", consul_url,
            "--listen-host", HOST, "--listen-port", str(listen_port),
            "--https-port", str(https_port), "--seal-key-file", str(seal_key),
            "--admin-host", HOST, "--admin-port", str(admin_port),
            "--exporter-port", str(exporter_port), "--state-dir", str(state_dir),
            "--initial-slots", str(initial_slots), *extra,
            "--consul-wait-s", "10", "--stop-timeout-s", "2", "--log-level", "INFO"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    router = Router(proc=proc, listen_port=listen_port, admin_port=admin_port,
                    exporter_port=exporter_port, https_port=https_port, state_dir=state_dir,
                    log_path=log_path)
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"router exited: {router.log()[-3000:]}")
            return router.admin("/healthz")[0] == 200
        wait_for(healthy, timeout=20, what="router /healthz")
        yield router
    finally:
        stop_process(proc)
        print(f"--- router log ---\n{router.log()[-5000:]}")
        log_path.unlink(missing_ok=True)
        if not router.handover:
            haproxy_pid = _read_pid(state_dir / "haproxy.pid")
            if haproxy_pid is not None:
                _kill_if_haproxy(haproxy_pid)  # it serves on after the router, on purpose
            shutil.rmtree(state_dir, ignore_errors=True)
            seal_key.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill_if_haproxy(pid: int) -> None:
    try:
        if b"haproxy" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
    except OSError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def consul() -> Iterator[Consul]:
    with run_consul() as agent:
        yield agent


@pytest.fixture(scope="module")
def router(consul: Consul) -> Iterator[Router]:
    with run_router(consul.url, initial_slots=2) as running:
        yield running


@pytest.fixture
def cleanup(consul: Consul, router: Router) -> Iterator[Callable[..., None]]:
    """Record what a test registers; deregister it and wait until the router dropped it."""
    instances: list[str] = []
    apps: list[str] = []

    def track(*, instance: str | None = None, app: str | None = None) -> None:
        if instance:
            instances.append(instance)
        if app:
            apps.append(app)

    yield track
    for instance in instances:
        with contextlib.suppress(OSError):
            consul.deregister(instance)
    for app in apps:
        with contextlib.suppress(OSError):
            consul.delete_route(app)
    wait_for(lambda: not (set(apps) & set(router.routes()["apps"])), timeout=10,
             what="the router to drop the test's apps")


# Tests get the helpers through fixtures rather than importing this conftest.
@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., object]:
    return wait_for


@pytest.fixture(name="start_consul")
def start_consul_fixture() -> Callable[[], contextlib.AbstractContextManager[Consul]]:
    return run_consul


@pytest.fixture(name="start_router")
def start_router_fixture() -> Callable[..., contextlib.AbstractContextManager[Router]]:
    return run_router
