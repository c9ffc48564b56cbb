"""Simulated hosts on one machine: each its own network namespace, its own Docker engine, and
its own address on a private network, as a team's machines would be.

```
 root ns: 198.18.0.254 (the test's own way in)
     │ veth
 switch ns: bridge ──veth── host ns "s" 198.18.0.1 (dockerd)    server: controller, registry, router
                    ──veth── host ns "1" 198.18.0.2 (dockerd)    node-1
                    ──veth── host ns "2" 198.18.0.3 (dockerd)    node-2
```

The bridge lives in a namespace of its own, so bridged traffic meets that namespace's empty
firewall, never the host's (whose FORWARD policy Docker sets to DROP). 198.18.0.0/24 is a
benchmarking range no real network uses here; traffic stays between the namespaces the test
made. Each engine is `dockerd` started with `nsenter --net=...` (not `ip netns exec`, which
remounts /sys and loses the cgroup mounts), with its own data root, exec root and socket, and
`--insecure-registry` for the private network's registry. A host reaches only what the test
gives it: images come through the registry, or `docker save | docker load`.

`SimNetwork` records itself (the owner's PID, its namespaces, its engines' PID files) in
`.local/test-simhosts/`; `clear_leftovers` stops what a run that died midway left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from paas.localcluster import owner_alive, pid_alive, process_started

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / ".local" / "test-simhosts"
SUBNET = "198.18.0"
GATEWAY = f"{SUBNET}.254"  # the root namespace's address on the private network
ENGINE_START_S = 60.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass(frozen=True)
class SimHost:
    """One simulated machine: a network namespace with an address and a Docker engine."""

    netns: str
    address: str
    root: Path  # the engine's folders and socket
    ifname: str = "eth0"  # its end of the veth pair to the switch

    def cable(self, *, plugged: bool) -> None:
        """Pull out (or put back) the host's network cable: its veth end goes down (up)."""
        _ip("-n", self.netns, "link", "set", self.ifname, "up" if plugged else "down")

    @property
    def docker_url(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run on this host (in its network namespace)."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]

    def engine(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.docker_url, version="auto", timeout=120)


@dataclass
class SimNetwork:
    """`count` hosts (the first is the server) on 198.18.0.0/24, each with its own engine."""

    root: Path
    count: int = 3
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[SimHost] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"ps{self.run}"  # netns and interface names stay under 15 characters

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def host_names(self) -> list[str]:
        return [f"{self.prefix}h{i}" for i in range(self.count)]

    def up(self) -> SimNetwork:
        self._record()
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        self._plug(None, f"{self.prefix}gw", GATEWAY)
        for i, name in enumerate(self.host_names()):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
            address = f"{SUBNET}.{i + 1}"
            self._plug(name, f"{self.prefix}v{i}", address)
            host = SimHost(netns=name, address=address, root=self.root / name,
                           ifname=f"{self.prefix}v{i}")
            self.hosts.append(host)
            self._start_engine(host)
        for host in self.hosts:
            self._wait_engine(host)
        return self

    def _plug(self, netns: str | None, ifname: str, address: str) -> None:
        """A veth pair: one end on the switch's bridge, the other in `netns` (None: the root
        namespace) with `address`."""
        peer = f"{ifname}p"
        _ip("link", "add", ifname, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", peer, "master", "br0")
        _ip("-n", self.switch, "link", "set", peer, "up")
        if netns is not None:
            _ip("link", "set", ifname, "netns", netns)
        where = ["-n", netns] if netns else []
        _ip(*where, "addr", "add", f"{address}/24", "dev", ifname)
        _ip(*where, "link", "set", ifname, "up")

    def _start_engine(self, host: SimHost) -> None:
        host.root.mkdir(parents=True, exist_ok=True)
        argv = host.argv(["dockerd", "--data-root", str(host.root / "data"),
                          "--exec-root", str(host.root / "exec"),
                          "--pidfile", str(host.pidfile), "-H", host.docker_url,
                          "--insecure-registry", f"{SUBNET}.0/24"])
        with open(host.root / "dockerd.log", "ab") as log:
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_engine(self, host: SimHost) -> None:
        deadline = time.monotonic() + ENGINE_START_S
        while True:
            try:
                client = host.engine()
                client.ping()
                client.close()
                return
            except Exception:  # noqa: BLE001 - not answering yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the engine of {host.netns} did not start; see "
                                       f"{host.root / 'dockerd.log'}") from None
                time.sleep(0.2)

    def _record(self) -> None:
        LEDGER.mkdir(parents=True, exist_ok=True)
        (LEDGER / f"{self.run}.json").write_text(json.dumps({
            "owner": os.getpid(), "owner_started": process_started(os.getpid()),
            "switch": self.switch, "hosts": self.host_names(), "root": str(self.root)}))

    def down(self) -> None:
        _teardown(self.switch, self.host_names(), self.root)
        (LEDGER / f"{self.run}.json").unlink(missing_ok=True)

    def __enter__(self) -> SimNetwork:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()


def _teardown(switch: str, hosts: list[str], root: Path) -> None:
    """Stop each host's engine (its containers with it) by its PID file, then delete the
    namespaces (their veths go with them) and the engines' folders."""
    for name in hosts:
        pidfile = root / name / "docker.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid) or str(root / name) not in _cmdline(pid):
            continue  # gone, or the PID is another process's now
        try:
            client = docker.APIClient(base_url=f"unix://{root / name}/docker.sock",
                                      version="auto", timeout=30)
            for container in client.containers(all=True, quiet=True):
                client.remove_container(container["Id"], force=True)
            client.close()
        except Exception:  # noqa: BLE001 - the engine is going anyway
            pass
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    for name in [*hosts, switch]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    # The gateway's root-namespace end goes with its peer in the switch namespace.
    _unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Lazily unmount what an engine left mounted under `root` (its network namespace's bind
    mount in the exec root, say), deepest first, so the folder can go."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def clear_leftovers() -> list[str]:
    """Tear down the simulated networks whose owner died (a run stopped midway)."""
    cleared = []
    for entry in sorted(LEDGER.glob("*.json")) if LEDGER.is_dir() else []:
        try:
            record = json.loads(entry.read_text())
            switch, hosts, root = str(record["switch"]), list(record["hosts"]), record["root"]
            running = owner_alive(record)
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        if running:
            continue  # its run (this one, or another going on) still owns it
        _teardown(switch, [str(h) for h in hosts], Path(root))
        entry.unlink(missing_ok=True)
        cleared.append(entry.stem)
    return cleared
