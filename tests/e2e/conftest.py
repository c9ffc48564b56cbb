"""End-to-end fixtures: a real local cluster (Consul server, controller, two agents each with
its own Consul client agent, router) on 127.0.1.x, so it never collides with a demo cluster on
127.0.0.x. Everything it starts is stopped and every container it made is removed."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from paas.builder.context import make_build_context
from paas.apiclient.client import Client, Target
from paas.localcluster import LocalCluster, clear_leftovers, remove_cluster_images
from tests.waiting import wait_until

# what the scenarios import
__all__ = ["E2E", "REPO", "Hammer", "app_dir", "new_cluster", "running", "wait_until"]

REPO = Path(__file__).resolve().parents[2]
LEDGER = REPO / ".local" / "test-clusters"
"""Where the e2e clusters record themselves, so a run clears what a stopped run left."""


@contextlib.contextmanager
def running(argv: list[str], log: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """A process the test starts (its output in `log`), stopped by its PID at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def new_cluster(root: Path, **options: Any) -> LocalCluster:
    """A cluster for a test session, after stopping what an earlier run that never reached
    its teardown left running (its processes hold the same addresses and ports)."""
    for cluster_id in clear_leftovers(LEDGER):
        print(f"cleared cluster {cluster_id}, left running by a test run that was stopped")
    return LocalCluster(root=root, ledger=LEDGER, **options)


class E2E:
    """A running cluster plus helpers the scenarios share."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.api = Client(Target(cluster.controller_url, cluster.admin_token()))

    def get_via_router(self, app: str, path: str = "/", timeout: float = 3.0) -> tuple[int, str]:
        req = urllib.request.Request(self.cluster.router_url + path,
                                     headers={"Host": f"{app}.{self.cluster.domain}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def build(self, app: str, directory: Path) -> dict[str, Any]:
        return self.api.request("POST", f"/v1/apps/{app}/releases",
                                data=make_build_context(directory=directory),
                                content_type="application/gzip", timeout=300)["release"]

    def deploy(self, app: str, release: int, replicas: Any, timeout: float = 90) -> dict:
        dep = self.api.post(f"/v1/apps/{app}/deployments",
                            {"release": release, "replicas": replicas})["deployment"]
        return self.finish(app, dep, timeout)

    def finish(self, app: str, dep: dict, timeout: float = 90) -> dict:
        """The deployment once it has ended (or as it is after `timeout`)."""
        deadline = time.monotonic() + timeout
        while dep["status"] == "running" and time.monotonic() < deadline:
            dep = self.api.get(f"/v1/apps/{app}/deployments/{dep['id']}?wait=5")["deployment"]
        return dep

    def containers(self, **labels: str) -> list[str]:
        argv = ["docker", "ps", "-q", "--filter", f"label=paas.localcluster={self.cluster.cluster_id}"]
        for k, v in labels.items():
            argv += ["--filter", f"label=paas.{k}={v}"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()

    def consul(self, path: str) -> Any:
        import json

        with urllib.request.urlopen(self.cluster.consul_url + path, timeout=5) as resp:  # noqa: S310
            raw = resp.read()
        return json.loads(raw) if raw else None

    def routes(self) -> dict[str, Any]:
        import json

        with urllib.request.urlopen(self.cluster.router_admin_url + "/routes", timeout=5) as r:  # noqa: S310
            return json.loads(r.read())

    def served(self, app: str) -> int:
        """How many instances of `app` the router routes; 0 while its admin API is not up."""
        try:
            return len(self.routes()["apps"].get(app, {}).get("servers", []))
        except OSError:
            return 0


def app_dir(tmp: Path, *, test_sh: str | None = None, toml: str | None = None,
            procfile: str | None = None) -> Path:
    """A copy of examples/hello with some of its files replaced."""
    import shutil

    target = tmp / f"app-{secrets.token_hex(3)}"
    shutil.copytree(REPO / "examples" / "hello", target)
    if test_sh is not None:
        (target / "test.sh").write_text(test_sh)
    if toml is not None:
        (target / "paas.toml").write_text(toml)
    if procfile is not None:
        (target / "Procfile").write_text(procfile)
    return target


class Hammer:
    """Sequential requests through the router in a thread, counting what came back."""

    def __init__(self, e2e: "E2E", app: str) -> None:
        import collections
        import threading

        self.e2e, self.app = e2e, app
        self.statuses: collections.Counter[int] = collections.Counter()
        self.bodies: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.e2e.get_via_router(self.app, timeout=5)
            except OSError:
                status, body = 0, ""
            self.statuses[status] += 1
            self.bodies[body.split(" instance ")[0]] += 1
            time.sleep(0.01)  # the pace of the load, not a wait for anything

    def __enter__(self) -> "Hammer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    cluster = new_cluster(tmp_path_factory.mktemp("cluster"), prefix="127.0.1", nodes=2,
                          cluster_id="e2e" + secrets.token_hex(3), monitoring=True)
    try:
        cluster.up()
        yield E2E(cluster)
    finally:
        cluster.down()
        remove_cluster_images(cluster.image_repo)
        for log in sorted((cluster.root / "logs").glob("*.log")):
            # Keep the logs visible in the test output when something failed.
            print(f"--- {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
