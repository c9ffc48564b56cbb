"""A whole local cluster on one machine: a Consul server, the controller, node agents each
with its own Consul client agent on its own loopback address, and the router.

`paas up` / `paas down` and the end-to-end test fixtures both use `LocalCluster`. Every
process runs in the background in its own session, logs into the cluster's folder, and is
recorded by PID in `pids.json` so that `down` ends exactly what `up` started. Addresses come
from a /24 prefix: `<prefix>.1` for the server side, `<prefix>.2`, `.3`, ... for the nodes.

A cluster given a `ledger` folder also records itself there (`<cluster id>.json`: its root,
image repo, the PID of the process that owns it, and its processes' PIDs) until `down`. A test
run that was stopped midway never reaches `down`; `clear_leftovers(ledger)` at the start of
the next run stops what such a cluster left (only clusters whose owner is gone, and only
processes whose working directory is still that cluster's root, so a reused PID is left
alone) and removes its containers and images, so the new run does not collide with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paas import machines, tlsdir
from paas.tokenfile import write_private

REPO = Path(__file__).resolve().parent.parent


class ClusterError(Exception):
    """The local cluster could not be started or stopped; the message says what to do."""


def find_consul() -> str:
    found = shutil.which("consul")
    if found:
        return found
    local = REPO / ".local" / "bin" / "consul"
    if local.exists():
        return str(local)
    raise ClusterError("consul is not installed; run 'make setup' first")


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Host:
    """A machine of the cluster other than this one's default: the argv prefix that runs a
    process there (e.g. `nsenter --net=/var/run/netns/NAME`) and its Docker engine's URL."""

    enter: tuple[str, ...] = ()
    docker_url: str = ""


@dataclass
class LocalCluster:
    """Where and how a local cluster runs. `prefix` is the first three octets."""

    root: Path
    prefix: str = "127.0.0"
    nodes: int = 2
    cluster_id: str = "local"
    domain: str = "localhost"
    http_port: int = 8080
    https_port: int = 8443
    """Where the router serves apps over HTTPS, with certificates from the cluster's own CA
    (`ca_path`); 0: plain HTTP only."""
    acme_directory: str = ""
    """An ACME CA the controller orders apps' own domains' certificates from ("" = none)."""
    acme_ca_bundle: Path | None = None
    controller_port: int = 7070
    router_admin_port: int = 7072
    agent_admin_port: int = 7071
    node_memory_mb: int = 4096
    node_cpu: float = 2.0
    node_down_after: float = 6.0
    node_labels: dict[int, dict[str, str]] = field(default_factory=dict)
    registry: bool = False
    monitoring: bool = False
    """Run Prometheus (`paas up` does), at `prometheus_url`."""
    """Run a private registry (Debian's docker-registry) that `publish` pushes to."""
    ledger: Path | None = None
    """A folder where the running cluster records itself for `clear_leftovers`."""
    hosts: dict[int, Host] = field(default_factory=dict)
    """Where each machine's processes run: 0 is the server (Consul server, controller,
    registry, router), n is node n (its Consul client and agent). A machine not listed is
    this one, on this machine's Docker engine."""

    # --- addresses --------------------------------------------------------------------------
    @property
    def server_ip(self) -> str:
        return f"{self.prefix}.1"

    def node_ip(self, n: int) -> str:
        return f"{self.prefix}.{n + 1}"

    def node_name(self, n: int) -> str:
        return f"node-{n}"

    @property
    def controller_url(self) -> str:
        return f"http://{self.server_ip}:{self.controller_port}"

    @property
    def consul_url(self) -> str:
        return f"http://{self.server_ip}:8500"

    @property
    def router_url(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"

    @property
    def router_admin_url(self) -> str:
        return f"http://{self.server_ip}:{self.router_admin_port}"

    @property
    def router_https_url(self) -> str:
        return f"https://{self.server_ip}:{self.https_port}" if self.https_port else ""

    @property
    def ca_path(self) -> Path:
        """The cluster CA's certificate, which clients trust (`curl --cacert`)."""
        return self.root / "tls" / "ca.pem"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.server_ip}:{machines.PROMETHEUS_PORT}" if self.monitoring else ""

    @property
    def image_repo(self) -> str:
        """`paas` for the default cluster; other clusters sharing the engine get their own."""
        return "paas" if self.cluster_id == "local" else f"paas-{self.cluster_id}"

    @property
    def data_dir(self) -> Path:
        return self.root / "controller"

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def join_token(self) -> str:
        return (self.data_dir / "join.token").read_text().strip()

    # --- process table ----------------------------------------------------------------------
    @property
    def _pidfile(self) -> Path:
        return self.root / "pids.json"

    def _pids(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self._pidfile.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def _save_pids(self, pids: dict[str, int]) -> None:
        _write_json(self._pidfile, pids)
        if self.ledger is not None:
            _write_json(self._ledger_entry, {
                "cluster_id": self.cluster_id, "root": str(self.root.resolve()),
                "image_repo": self.image_repo, "owner": os.getpid(),
                "owner_started": process_started(os.getpid()), "pids": pids})

    @property
    def _ledger_entry(self) -> Path:
        assert self.ledger is not None
        return self.ledger / f"{self.cluster_id}.json"

    @staticmethod
    def _machine(name: str) -> int:
        """Which machine a process of the cluster runs on: n for node n's, 0 for the server's."""
        return int(name.rsplit("-", 1)[1]) if name.startswith(("agent-node-", "consul-node-")) \
            else 0

    def _spawn(self, name: str) -> int:
        pids = self._pids()
        if name in pids and pid_alive(pids[name]):
            return pids[name]
        process = self._process(name)
        for folder in process.dirs:
            folder.mkdir(parents=True, exist_ok=True)
        for path, text in process.files.items():
            path.write_text(text)
        for path, text in process.secret_files.items():
            write_private(path, text)
        # What the installed unit runs: its ExecStart and Environment, read back.
        command, unit_env = machines.unit_command(machines.systemd_unit(process))
        argv = [*self.hosts.get(self._machine(name), Host()).enter, *command]
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **unit_env}
        with open(log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=str(self.root), env=env)
        pids[name] = proc.pid
        self._save_pids(pids)
        return proc.pid

    @property
    def registry_address(self) -> str:
        return self.server().registry_address

    def process_names(self) -> list[str]:
        names = ["consul-server", *(["registry"] if self.registry else []), "controller"]
        for n in range(1, self.nodes + 1):
            names += [f"consul-{self.node_name(n)}", f"agent-{self.node_name(n)}"]
        return names + ["router", *(["prometheus"] if self.monitoring else [])]

    def running(self) -> dict[str, bool]:
        pids = self._pids()
        return {name: name in pids and pid_alive(pids[name]) for name in self.process_names()}

    # --- what each machine runs (paas.machines, shared with `paas host install`) -----------
    def server(self) -> machines.Server:
        return machines.Server(
            address=self.server_ip, state_dir=self.root, cluster=self.cluster_id,
            domain=self.domain, image_repo=self.image_repo, registry=self.registry,
            docker_url=self.hosts.get(0, Host()).docker_url, http_port=self.http_port,
            https_port=self.https_port, acme_directory=self.acme_directory,
            gossip_key=tlsdir.gossip_key(self.root / "tls"),
            acme_ca_bundle=self.acme_ca_bundle, controller_port=self.controller_port, router_admin_port=self.router_admin_port,
            node_down_after=self.node_down_after, consul=find_consul(),
            docker_registry=shutil.which("docker-registry") or "/usr/bin/docker-registry",
            monitoring=self.monitoring,
            prometheus=shutil.which("prometheus") or "/usr/bin/prometheus",
            prometheus_retention="2d", prometheus_retention_size="256MB")

    def node(self, n: int) -> machines.Node:
        return machines.Node(
            name=self.node_name(n), address=self.node_ip(n), server=self.server_ip,
            state_dir=self.root, join_token_file=self.data_dir / "join.token",
            cluster=self.cluster_id, docker_url=self.hosts.get(n, Host()).docker_url,
            cpu=self.node_cpu, memory_mb=self.node_memory_mb, admin_port=self.agent_admin_port,
            controller_port=self.controller_port, labels=self.node_labels.get(n, {}),
            consul=find_consul(), gossip_key=tlsdir.gossip_key(self.root / "tls"))

    def _process(self, name: str) -> machines.Process:
        """The named process of the cluster, as its machine runs it."""
        machine = self._machine(name)
        found = (machines.node_processes(self.node(machine)) if machine
                 else machines.server_processes(self.server()))
        for process in found:
            if process.name == name:
                return process
        raise ClusterError(f"no process named {name!r} in the cluster")

    # --- up and down ------------------------------------------------------------------------
    def _wait(self, what: str, check: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise ClusterError(f"{what} did not come up within {timeout:.0f}s; "
                           f"see the logs in {self.root / 'logs'}")

    def _consul_leader(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url + "/v1/status/leader", timeout=1) as resp:  # noqa: S310
                return len(resp.read().strip()) > 2
        except (urllib.error.URLError, OSError):
            return False

    def up(self) -> None:
        """Start whatever is not running yet and wait until each part answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        # The CA, the seal key and Consul's gossip key, before any part reads them.
        tlsdir.ensure(self.server().tls_dir, self.cluster_id)
        self._spawn("consul-server")
        self._wait("consul server", lambda: self._consul_leader(self.consul_url))
        if self.registry:
            self._spawn("registry")
            self._wait("registry", lambda: _http_ok(f"http://{self.registry_address}/v2/"))
        self._spawn("controller")
        self._wait("controller", lambda: _http_ok(self.controller_url + "/healthz"))
        for n in range(1, self.nodes + 1):
            self._spawn(f"consul-{self.node_name(n)}")
        for n in range(1, self.nodes + 1):
            url = f"http://{self.node_ip(n)}:8500"
            self._wait(f"consul agent of {self.node_name(n)}", lambda u=url: self._consul_leader(u))
            self._spawn(f"agent-{self.node_name(n)}")
        self._spawn("router")
        self._wait("router", lambda: _http_ok(self.router_admin_url + "/healthz"))
        if self.monitoring:
            self._spawn("prometheus")
            self._wait("prometheus", lambda: _http_ok(self.prometheus_url + "/-/ready"))
        for n in range(1, self.nodes + 1):
            self._wait(f"agent of {self.node_name(n)}", lambda n=n: _http_ok(
                f"http://{self.node_ip(n)}:{self.agent_admin_port}/healthz"))

    def stop_process(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop one process of the cluster by its recorded PID (and its process group)."""
        pids = self._pids()
        pid = pids.get(name)
        if pid is None:
            return
        if pid_alive(pid):
            _stop_group(pid, first=sig, timeout=timeout)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        pids.pop(name, None)
        self._save_pids(pids)

    def start_process(self, name: str) -> None:
        """(Re)start one named process of the cluster."""
        if name not in self.process_names():
            raise ClusterError(f"no process named {name!r} in the cluster")
        self._spawn(name)

    def down(self, *, remove_containers: bool = True) -> None:
        """Stop every process `up` started (in reverse order) and remove the cluster's
        containers."""
        for name in reversed(self.process_names()):
            self.stop_process(name)
        _stop_haproxy(self.root)  # the router leaves it serving for its next start
        if remove_containers:
            remove_cluster_containers(self.cluster_id)
        if self.ledger is not None:
            self._ledger_entry.unlink(missing_ok=True)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def process_started(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), None
    when it is gone: with its PID, it names one process even after the PID is reused."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the process that recorded a ledger entry (`owner`, `owner_started`) runs."""
    owner = int(record["owner"])
    return pid_alive(owner) and process_started(owner) == record.get("owner_started")


def _runs_in(pid: int, root: str) -> bool:
    """Whether process `pid` has `root` as its working directory, as every process `up`
    starts does (also once the folder was deleted: the kernel then adds " (deleted)")."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd.removesuffix(" (deleted)") == root


def _stop_haproxy(root: Path) -> None:
    """Stop the HAProxy the cluster's router left serving (it outlives the router on purpose),
    by its pid file, if that process is an HAProxy running in the cluster's folder."""
    try:
        pid = int((root / "router" / "haproxy.pid").read_text().split()[0])
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError, IndexError):
        return
    if b"haproxy" in Path(argv0.decode(errors="replace")).name.encode() and \
            _runs_in(pid, str(root)):
        _stop_group(pid, timeout=5.0)


def _stop_group(pid: int, *, first: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal the process group `pid` leads (`first`), SIGKILL it after `timeout`."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pid_alive(pid):
            return


def clear_leftovers(ledger: Path) -> list[str]:
    """Stop what the clusters recorded in `ledger` left running when their owner died (a test
    run stopped midway): their processes, containers and images. Returns their ids."""
    cleared = []
    for entry in sorted(ledger.glob("*.json")) if ledger.is_dir() else []:
        try:
            record = json.loads(entry.read_text())
            root = str(record["root"])
            pids = [int(pid) for pid in dict(record["pids"]).values()]
            cluster_id, image_repo = str(record["cluster_id"]), str(record["image_repo"])
            running = owner_alive(record)
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)  # half-written: nothing can be done with it
            continue
        if running:
            continue  # its run (this one, or another going on) still owns it
        for pid in reversed(pids):
            if pid_alive(pid) and _runs_in(pid, root):
                _stop_group(pid)
        _stop_haproxy(Path(root))
        remove_cluster_containers(cluster_id)
        remove_cluster_images(image_repo)
        entry.unlink(missing_ok=True)
        cleared.append(cluster_id)
    return cleared


def remove_cluster_containers(cluster_id: str) -> int:
    """Remove every container labelled with this cluster id; returns how many."""
    docker = shutil.which("docker")
    if docker is None:
        return 0
    out = subprocess.run([docker, "ps", "-aq", "--filter", f"label=paas.localcluster={cluster_id}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if out:
        subprocess.run([docker, "rm", "-f", *out], capture_output=True, check=False)
    return len(out)


def remove_cluster_images(repo: str) -> int:
    """Remove every image tagged in `repo` (e.g. a test cluster's `paas-<id>`), also under a
    registry host (`127.0.0.1:5000/paas-<id>/...`)."""
    docker = shutil.which("docker")
    if docker is None:
        return 0
    listing = subprocess.run([docker, "images", "--format", "{{.Repository}}:{{.Tag}}"],
                             capture_output=True, text=True, check=False).stdout.split()
    tags = [t for t in listing if t.startswith(repo + "/") or f"/{repo}/" in t]
    if tags:
        subprocess.run([docker, "rmi", "-f", *tags], capture_output=True, check=False)
    return len(tags)
