"""What each machine of a cluster runs, in one place: the server's processes (Consul server,
registry, controller, router) and a node's (its Consul client agent, the node agent), as argv
lists, and the systemd units that run them on a team's own machines.

Both ways of running a cluster read it: `paas up` (`paas.localcluster`) starts these argv lists
as background processes, and `paas host install` (`paas.cli.host`) writes them into systemd
units. So the simulated machines of the end-to-end suite (tests/e2e/test_real_hosts.py) run the
very commands a real machine's units run.

A machine keeps its state in one folder (`state_dir`; `/var/lib/paas` when installed):
`consul-server/` or `consul-<node>/` (Consul's data), `controller/` (the SQLite store and the
admin and join tokens), `tls/` (the cluster CA and the seal key: paas.tlsdir), `router/`,
`registry.yml` and `registry-data/`.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paas import templating
from paas.names import consul_node_name

CONSUL_PORT = 8500
REGISTRY_PORT = 5000
PROMETHEUS_PORT = 7074
SAFE_PATH = ("-P",)
"""Python's -P: the working directory (the machine's state folder) is not put on sys.path, so a
folder there can never stand in for a module (the router's state folder `router/` holds
`certs/`, which `python -m router.main` run from the state folder imported as router.certs)."""
USER = "paas"
"""The system user every installed unit runs as: none of them runs as root."""


@dataclass(frozen=True)
class Process:
    """One long-running process of a machine."""

    name: str  # consul-server, registry, controller, router, consul-<node>, agent-<node>
    argv: tuple[str, ...]
    description: str
    dirs: tuple[Path, ...] = ()  # folders it needs made first
    files: Mapping[Path, str] = field(default_factory=dict)  # files it needs written first
    secret_files: Mapping[Path, str] = field(default_factory=dict)
    """Files it needs written first, readable by its user only (0600): Consul's gossip key."""
    groups: tuple[str, ...] = ()
    """Groups the installed unit adds to the `paas` user it runs as (`docker`: the engine's
    socket, which the controller builds on and the agent runs containers on)."""
    capabilities: tuple[str, ...] = ()
    """The one root power the installed unit keeps, if any (the router binds ports below
    1024)."""
    leaves_children: bool = False
    """A child outlives it on purpose (the router's HAProxy serves on across the router's
    restarts): its unit stops only the main process."""


@dataclass(frozen=True, kw_only=True)
class Server:
    """The server machine: where the API, the routes and the images live."""

    address: str
    state_dir: Path
    cluster: str = "local"
    domain: str = "localhost"
    image_repo: str = "paas"
    registry: bool = False
    docker_url: str = ""  # the engine builds run on ("" = this machine's default)
    http_port: int = 8080
    https_port: int = 8443
    """Where the router serves apps over HTTPS (0: it does not; an installed server: 443)."""
    acme_directory: str = ""
    """An ACME CA's directory URL for apps' own domains ("" = none)."""
    acme_email: str = ""
    acme_ca_bundle: Path | None = None
    """Trust for the ACME CA's own HTTPS, when it is a test CA."""
    gossip_key: str = ""
    """Consul's gossip encryption key (paas.tlsdir); "" = gossip in clear text."""
    public_host: str = ""
    """Where the router serves apps ("" = `address`; an installed server: 0.0.0.0). Every
    other port of the server listens on `address`, the cluster's private network."""
    controller_port: int = 7070
    router_admin_port: int = 7072
    haproxy_exporter_port: int = 7073
    node_down_after: float = 6.0
    consul: str = "consul"
    python: str = sys.executable
    docker_registry: str = "/usr/bin/docker-registry"
    monitoring: bool = False
    """Run Prometheus (`paas up` and an installed server do)."""
    prometheus: str = "/usr/bin/prometheus"
    prometheus_retention: str = "7d"
    prometheus_retention_size: str = "1GB"
    scrape_interval_s: int = 5

    @property
    def consul_url(self) -> str:
        return f"http://{self.address}:{CONSUL_PORT}"

    @property
    def controller_url(self) -> str:
        return f"http://{self.address}:{self.controller_port}"

    @property
    def router_admin_url(self) -> str:
        return f"http://{self.address}:{self.router_admin_port}"

    @property
    def registry_address(self) -> str:
        return f"{self.address}:{REGISTRY_PORT}" if self.registry else ""

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.address}:{PROMETHEUS_PORT}" if self.monitoring else ""

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "controller"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"


@dataclass(frozen=True, kw_only=True)
class Node:
    """A machine that runs app instances."""

    name: str
    address: str
    server: str  # the server machine's address
    state_dir: Path
    join_token_file: Path
    cluster: str = "local"
    docker_url: str = ""
    cpu: float = 2.0
    memory_mb: int = 4096
    admin_port: int = 7071
    controller_port: int = 7070
    labels: Mapping[str, str] = field(default_factory=dict)
    consul: str = "consul"
    python: str = sys.executable
    gossip_key: str = ""
    """The cluster's Consul gossip key, as the server's install printed it ("" = none)."""


def _gossip(data_dir: Path, key: str) -> tuple[tuple[str, ...], dict[Path, str]]:
    """Consul's arguments and secret file for gossip encryption: the key goes in a 0600
    config file, never on a command line (where `ps` shows it)."""
    if not key:
        return (), {}
    path = data_dir.parent / f"{data_dir.name}.encrypt.json"
    return ("-config-file", str(path)), {path: json.dumps({"encrypt": key}) + "\n"}


def _engine(docker_url: str) -> tuple[str, ...]:
    return ("--docker-url", docker_url) if docker_url else ()


def server_processes(s: Server) -> list[Process]:
    """The server's processes, in the order they start."""
    consul_data = s.state_dir / "consul-server"
    gossip_args, gossip_files = _gossip(consul_data, s.gossip_key)
    # A real (one-node) server with a data dir, not -dev: a restarted server keeps its catalog
    # and KV.
    found = [Process("consul-server", (
        s.consul, "agent", "-server", "-bootstrap-expect", "1", "-ui=false",
        "-hcl", "performance { raft_multiplier = 1 }", "-data-dir", str(consul_data),
        "-node", f"{s.cluster}-server", "-bind", s.address, "-client", s.address,
        "-log-level", "warn", *gossip_args), "Consul server of the PaaS", dirs=(consul_data,),
        secret_files=gossip_files)]
    if s.registry:
        config = s.state_dir / "registry.yml"
        found.append(Process("registry", (s.docker_registry, "serve", str(config)),
                             "image registry of the PaaS", files={config: (
                                 "version: 0.1\nstorage:\n  filesystem:\n"
                                 f"    rootdirectory: {s.state_dir / 'registry-data'}\n"
                                 "  delete:\n    enabled: true\n"
                                 f"http:\n  addr: {s.registry_address}\n")}))
    found.append(Process("controller", (
        s.python, *SAFE_PATH, "-m", "paas.controller.server", "--data-dir", str(s.data_dir),
        "--host", s.address, "--port", str(s.controller_port), "--consul-url", s.consul_url,
        "--router-url", s.router_admin_url, "--domain", s.domain, "--cluster", s.cluster,
        "--image-repo", s.image_repo, "--registry", s.registry_address,
        "--node-down-after", str(s.node_down_after), "--public-port", str(s.http_port),
        "--prometheus-url", s.prometheus_url, *_engine(s.docker_url),
        *(("--tls-dir", str(s.tls_dir), "--public-https-port", str(s.https_port))
          if s.https_port else ()),
        *(("--acme-directory", s.acme_directory, "--acme-email", s.acme_email)
          if s.https_port and s.acme_directory else ()),
        *(("--acme-ca-bundle", str(s.acme_ca_bundle))
          if s.https_port and s.acme_directory and s.acme_ca_bundle else ())),
        "PaaS controller", groups=("docker",)))
    found.append(Process("router", (
        s.python, *SAFE_PATH, "-m", "router.main", "--consul-url", s.consul_url,
        "--listen-host", s.public_host or s.address, "--listen-port", str(s.http_port),
        "--admin-host", s.address, "--admin-port", str(s.router_admin_port),
        "--exporter-port", str(s.haproxy_exporter_port), "--require-placement",
        *(("--https-port", str(s.https_port), "--seal-key-file", str(s.tls_dir / "seal.key"))
          if s.https_port else ()),
        "--state-dir", str(s.state_dir / "router")), "PaaS router (HAProxy)",
        capabilities=("CAP_NET_BIND_SERVICE",), leaves_children=True))
    if s.monitoring:
        found.append(prometheus_process(s))
    return found


def prometheus_process(s: Server) -> Process:
    """Prometheus, its targets read from Consul by the controller (`/sd/prometheus/...`), its
    data under the state folder with bounded retention, and the alert rules that ship with
    the cluster."""
    folder = s.state_dir / "prometheus"
    config, rules = folder / "prometheus.yml", folder / "rules.yml"
    templates = templating.environment("prometheus")
    text = templates.get_template("prometheus.yml.j2").render(
        scrape_interval=f"{s.scrape_interval_s}s",
        scrape_timeout=f"{max(1, s.scrape_interval_s - 1)}s", cluster=s.cluster,
        refresh_interval=f"{s.scrape_interval_s}s", controller=s.controller_url,
        rules_file=str(rules))
    rules_text = templates.loader.get_source(templates, "rules.yml")[0]
    return Process("prometheus", (
        s.prometheus, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={s.prometheus_retention}",
        f"--storage.tsdb.retention.size={s.prometheus_retention_size}",
        f"--web.listen-address={s.address}:{PROMETHEUS_PORT}", "--log.level=warn"),
        "Prometheus of the PaaS", dirs=(folder, folder / "data"),
        files={config: text, rules: rules_text})


def node_processes(n: Node) -> list[Process]:
    """A node's processes, in the order they start."""
    consul_data = n.state_dir / f"consul-{n.name}"
    gossip_args, gossip_files = _gossip(consul_data, n.gossip_key)
    return [
        Process(f"consul-{n.name}", (
            n.consul, "agent", "-node", consul_node_name(n.cluster, n.name),
            "-data-dir", str(consul_data), "-bind", n.address, "-client", n.address, "-retry-join", n.server,
            "-log-level", "warn", *gossip_args), f"Consul client agent of PaaS node {n.name}",
            dirs=(consul_data,), secret_files=gossip_files),
        Process(f"agent-{n.name}", (
            n.python, *SAFE_PATH, "-m", "agent.main", "--node", n.name, "--address", n.address,
            "--controller-url", f"http://{n.server}:{n.controller_port}",
            "--join-token-file", str(n.join_token_file),
            "--consul-url", f"http://{n.address}:{CONSUL_PORT}", "--cluster", n.cluster,
            "--cpu", str(n.cpu), "--memory-mb", str(n.memory_mb),
            "--admin-port", str(n.admin_port), *_engine(n.docker_url),
            *[arg for k, v in sorted(n.labels.items()) for arg in ("--label", f"{k}={v}")]),
            f"PaaS node agent {n.name}", groups=("docker",)),
    ]


ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}  # each line reaches the journal as it is printed


def unit_command(unit: str) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment a unit runs (its `ExecStart` and `Environment` lines):
    how the local cluster and the simulated machines start a process, so they run exactly
    what an installed unit runs."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value.replace("$$", "$").replace("%%", "%"))
        elif key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting
    if not argv:
        raise ValueError("the unit has no ExecStart line")
    return argv, env


def _systemd_escape(command: str) -> str:
    """systemd expands `$NAME` and `%x` in ExecStart; an argv means them literally."""
    return command.replace("%", "%%").replace("$", "$$")


def unit_name(process: Process) -> str:
    return f"paas-{process.name}.service"


def systemd_unit(process: Process, *, after: Sequence[Process] = (),
                 working_dir: Path | None = None) -> str:
    """The systemd unit that runs `process` on a machine, after the units of `after`: as the
    `paas` user, with only the groups and the capability the process needs, restarted on
    failure, its output in the journal."""
    deps = " ".join(["network-online.target", "docker.service",
                     *(unit_name(p) for p in after)])
    caps = " ".join(process.capabilities)
    lines = [
        "# Written by `paas host install`; run it again to change it.",
        "[Unit]", f"Description={process.description}", f"Wants={deps}", f"After={deps}", "",
        "[Service]", f"ExecStart={_systemd_escape(shlex.join(process.argv))}",
        *(f"Environment={k}={v}" for k, v in ENVIRONMENT.items()),
        *([f"WorkingDirectory={working_dir}"] if working_dir else []),
        f"User={USER}", f"Group={USER}",
        *([f"SupplementaryGroups={' '.join(process.groups)}"] if process.groups else []),
        *([f"AmbientCapabilities={caps}", f"CapabilityBoundingSet={caps}"] if caps
          else ["CapabilityBoundingSet="]),
        "NoNewPrivileges=yes", "ProtectSystem=full", "PrivateTmp=yes",
        *(["KillMode=process"] if process.leaves_children else []),
        "Restart=always", "RestartSec=2", "", "[Install]", "WantedBy=multi-user.target", "",
    ]
    return "\n".join(lines)
