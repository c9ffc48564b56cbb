"""`paas host install`: make this machine a server or a node of a cluster on a team's own
machines, with systemd units that run what `paas.machines` says the machine runs; `paas host
remove`: take a node out again.

Run `scripts/setup.sh` first (Docker, Consul, HAProxy, this package); then, as root, on the
server machine:

    paas host install --role server --address 10.0.0.1

It prints the one command that joins a node, with the server's address and the join token;
on each node, fill in its name and address:

    paas host install --role node --server 10.0.0.1 --join-token TOKEN \\
        --name node-1 --address 10.0.0.2

It writes, under `--root` (default `/`; another folder stages the files for review):
`etc/systemd/system/paas-<process>.service` for each process, what a process needs before it
starts (Consul's data folder, the registry's configuration), the join token (the server makes
it in `<state dir>/controller/`, a node keeps it as `<state dir>/join.token`; mode 0600), and
`etc/docker/daemon.json` with the server's registry among `insecure-registries` (it is plain
HTTP on the cluster's private network; its other keys are kept). With `--root /` it then makes
the `paas` system user the units run as and gives it the state folder, reloads systemd,
restarts Docker if its configuration changed, and enables and (re)starts the units
(`--no-start` leaves that to you). Running it again rewrites the same files and restarts the
units on them: it is safe to repeat, and it is how a new version is installed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pwd
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paas import machines, tlsdir, tokenfile
from paas.apiclient.client import Client, ClientError, Target
from paas.cli.common import EXIT_OK, CliError, emit, note, output_flags
from paas.names import InvalidName, validate_node_name

STATE_DIR = Path("/var/lib/paas")
UNITS = Path("etc/systemd/system")
DOCKER_CONFIG = Path("etc/docker/daemon.json")


def _address(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise CliError(f"{flag} must be an IP address of this machine's network, not "
                       f"{text[:60]!r}", code=2) from None


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else root / path


def _consul(given: str | None) -> str:
    if given:
        return given
    from paas.localcluster import ClusterError, find_consul

    try:
        return find_consul()
    except ClusterError:
        raise CliError("consul is not installed on this machine",
                       hint="run scripts/setup.sh first, or name it with --consul") from None


def plan(args: argparse.Namespace) -> tuple[list[machines.Process], str, Path | None]:
    """The machine's processes, the registry its engine pulls from, and a node's join-token
    file (None for the server)."""
    address = _address(args.address, "--address")
    state = Path(args.state_dir)
    if args.role == "server":
        if not 1 <= args.http_port <= 65535:
            raise CliError(f"--http-port must be a port from 1 to 65535, not {args.http_port}",
                           code=2)
        if not 0 <= args.https_port <= 65535:
            raise CliError(f"--https-port must be a port from 1 to 65535, or 0, not "
                           f"{args.https_port}", code=2)
        public = _address(args.public, "--public")
        consul = _consul(args.consul)
        # Checked above; now the CA, the seal key and Consul's gossip key, before anything
        # reads them.
        tls = _under(Path(args.root), state / "tls")
        tlsdir.ensure(tls, "installed")
        server = machines.Server(address=address, state_dir=state, domain=args.domain,
                                 gossip_key=tlsdir.gossip_key(tls),
                                 registry=True, monitoring=True, consul=consul,
                                 python=sys.executable, http_port=args.http_port,
                                 https_port=args.https_port,
                                 acme_directory=args.acme_directory or "",
                                 acme_email=args.acme_email or "",
                                 public_host=public)
        return machines.server_processes(server), server.registry_address, None
    if not args.server:
        raise CliError("a node needs --server, the server machine's address", code=2)
    if not args.join_token:
        raise CliError("a node needs --join-token, the server's "
                       f"{STATE_DIR / 'controller' / 'join.token'}", code=2)
    try:
        name = validate_node_name(args.name or "")
    except InvalidName as exc:
        raise CliError(f"--name: {exc}", code=2) from None
    labels = {}
    for item in args.label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label must be KEY=VALUE, not {item[:60]!r}", code=2)
        labels[key] = value
    server_address = _address(args.server, "--server")
    node = machines.Node(name=name, address=address, server=server_address, state_dir=state,
                         join_token_file=state / "join.token", cpu=args.cpu,
                         memory_mb=args.memory_mb, labels=labels, consul=_consul(args.consul),
                         python=sys.executable, gossip_key=args.gossip_key or "")
    registry = f"{server_address}:{machines.REGISTRY_PORT}"
    return machines.node_processes(node), registry, node.join_token_file


def docker_config(current: str, registry: str) -> str:
    """daemon.json with `registry` among its insecure registries, every other key kept."""
    try:
        config: dict[str, Any] = json.loads(current) if current.strip() else {}
    except ValueError:
        raise CliError("etc/docker/daemon.json is not valid JSON; fix or remove it first",
                       code=2) from None
    if not isinstance(config, dict):
        raise CliError("etc/docker/daemon.json must hold a JSON object", code=2)
    registries = list(config.get("insecure-registries") or [])
    if registry not in registries:
        registries.append(registry)
    return json.dumps({**config, "insecure-registries": registries}, indent=2) + "\n"


def cmd_host_install(args: argparse.Namespace) -> int:
    root = Path(args.root)
    processes, registry, token_file = plan(args)
    config = _under(root, DOCKER_CONFIG)
    before = config.read_text() if config.exists() else ""
    after = docker_config(before, registry)  # checked before anything is written
    written = []
    units = _under(root, UNITS)
    units.mkdir(parents=True, exist_ok=True)
    for i, process in enumerate(processes):
        path = units / machines.unit_name(process)
        path.write_text(machines.systemd_unit(process, after=processes[:i],
                                              working_dir=Path(args.state_dir)))
        written.append(str(path))
    state = _under(root, Path(args.state_dir))
    state.mkdir(parents=True, exist_ok=True)
    for process in processes:  # what each needs before it starts (Consul's data, registry.yml)
        for folder in process.dirs:
            _under(root, folder).mkdir(parents=True, exist_ok=True)
        for path, content in process.files.items():
            _under(root, path).write_text(content)
            written.append(str(_under(root, path)))
        for path, content in process.secret_files.items():  # 0600: Consul's gossip key
            tokenfile.write_private(_under(root, path), content)
            written.append(str(_under(root, path)))
    join = None
    if token_file is not None:
        token = _under(root, token_file)
        token.write_text(args.join_token.strip() + "\n")
        token.chmod(0o600)
        written.append(str(token))
    else:  # the server: the join token exists before the controller's first start
        data = state / "controller"
        data.mkdir(mode=0o700, exist_ok=True)
        data.chmod(0o700)
        join = join_command(args.address, tokenfile.read_or_create(data / "join.token"),
                            tlsdir.gossip_key(state / "tls"))
        written.append(str(data / "join.token"))
        written.append(str(state / "tls"))  # the CA, the seal and gossip keys (paas.tlsdir)
    if after != before:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(after)
        written.append(str(config))
    if root == Path("/"):
        _own(state)  # the units run as the paas user, which owns the machine's state
    started = False
    if root == Path("/") and not args.no_start:
        _start([machines.unit_name(p) for p in processes], docker_changed=after != before)
        started = True
    for path in written:
        note(f"  wrote {path}")
    names = [machines.unit_name(p) for p in processes]

    def text() -> str:
        done = f"{args.role} installed: {', '.join(names)}" + (
            " enabled and started" if started else
            f" written under {root} (start them with: systemctl daemon-reload && "
            f"systemctl enable --now {' '.join(names)})")
        if join is None:
            return done
        return (f"{done}\njoin each node with (as root, after scripts/setup.sh; the token "
                f"is a secret):\n  {shlex.join(join)}")

    emit(args, {"role": args.role, "units": names, "written": written, "started": started,
                **({"join_command": join} if join else {})}, text)
    return EXIT_OK


def join_command(server: str, token: str, gossip_key: str = "") -> list[str]:
    """The one command that makes a machine a node of the server at `server`."""
    return [".venv/bin/paas", "host", "install", "--role", "node", "--server", server,
            "--join-token", token, *(["--gossip-key", gossip_key] if gossip_key else []),
            "--name", "NODE-NAME", "--address", "NODE-ADDRESS"]


def _own(state: Path) -> None:
    """Make the `paas` system user (and group) if missing, and give it the state folder."""
    try:
        pwd.getpwnam(machines.USER)
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--home-dir", str(state),
              "--shell", "/usr/sbin/nologin", machines.USER])
    _run(["chown", "-R", f"{machines.USER}:{machines.USER}", str(state)])


def _start(units: list[str], *, docker_changed: bool) -> None:
    if os.geteuid() != 0:
        raise CliError("installing units needs root", hint="run it with sudo, or stage the "
                       "files with --root DIR")
    steps = [["systemctl", "daemon-reload"]]
    if docker_changed:
        steps.append(["systemctl", "restart", "docker"])
    # `restart`, not only `enable --now`: running the install again (an upgrade) must run
    # the new units and code.
    steps += [["systemctl", "enable", *units], ["systemctl", "restart", *units]]
    for argv in steps:
        _run(argv)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CliError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[:300]}")


# --- paas host remove -----------------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    """A node as `paas host install` left it on this machine."""

    node: str
    controller_url: str
    join_token_file: Path
    units: list[Path]  # its unit files (under --root)


def installed_node(root: Path) -> Installed:
    """Read the node's name, its controller and its join token file from its agent's unit."""
    units = _under(root, UNITS)
    agents = sorted(units.glob("paas-agent-*.service")) if units.is_dir() else []
    if len(agents) != 1:
        raise CliError(f"this machine is not one node of a cluster: {len(agents)} "
                       f"paas-agent-*.service units in {units}", code=2)
    try:
        argv, _ = machines.unit_command(agents[0].read_text())
    except ValueError:
        argv = []
    flags = dict(zip(argv, argv[1:]))
    try:
        node = flags["--node"]
        return Installed(node=node, controller_url=flags["--controller-url"],
                         join_token_file=Path(flags["--join-token-file"]),
                         units=[agents[0], units / f"paas-consul-{node}.service"])
    except KeyError as exc:
        raise CliError(f"{agents[0]} has no {exc.args[0]} in its ExecStart: it was not "
                       "written by `paas host install`", code=2) from None


def cmd_host_remove(args: argparse.Namespace) -> int:
    """Drain the node (its instances move under the rolling rules), stop and remove its
    units, then take it out of the cluster."""
    root = Path(args.root)
    found = installed_node(root)
    token_file = _under(root, found.join_token_file)
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the join token {token_file}: {exc.strerror}") from None
    api = Client(Target(found.controller_url, token), timeout=30)
    node = found.node
    api.post(f"/v1/nodes/{node}/drain", {"drain": True})
    note(f"node {node}: draining; its instances move to the other nodes")
    deadline = time.monotonic() + args.timeout
    while True:
        # Drained once nothing is assigned to it and its agent has stopped and removed what
        # ran (the agent leaves containers running when its unit stops).
        answer = api.get(f"/v1/nodes/{node}/assignments?index=0&wait=0")
        left = answer["instances"]
        if not left and not answer.get("stopping"):
            break
        if time.monotonic() > deadline:
            raise CliError(f"node {node} still has {len(left) or answer['stopping']} "
                           f"instance(s) after {args.timeout:g}s: the drain could not move "
                           "or stop them; nothing was stopped",
                           hint="see `paas events APP` for each app's drain deployment, then "
                                "run this again")
        time.sleep(1)
    names = [unit.name for unit in found.units]
    if root == Path("/"):
        _run(["systemctl", "disable", "--now", *names])
    for unit in found.units:
        unit.unlink(missing_ok=True)
    token_file.unlink(missing_ok=True)
    if root == Path("/"):
        _run(["systemctl", "daemon-reload"])
    note(f"node {node}: drained; " + (f"stopped and removed {', '.join(names)}"
                                       if root == Path("/") else
                                       f"removed {', '.join(names)} under {root}; stop them"))
    # The controller takes the node out once its agent has stopped reporting.
    while True:
        try:
            result = api.delete(f"/v1/nodes/{node}")
            break
        except ClientError as exc:
            if exc.status != 409 or time.monotonic() > deadline:
                raise
        time.sleep(1)
    emit(args, result, lambda: f"node {node} removed from the cluster at "
                               f"{found.controller_url}")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    host = sub.add_parser("host", help="install this machine as a server or node of a cluster, "
                                       "or remove a node",
                          description=__doc__.split("\n\n")[0])
    actions = host.add_subparsers(dest="host_action", metavar="ACTION", required=True)
    p = actions.add_parser("install", parents=[output_flags()],
                           help="write (and start) the systemd units of a server or a node",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("server", "node"), required=True)
    p.add_argument("--address", required=True,
                   help="this machine's address on the cluster's private network")
    p.add_argument("--server", help="node: the server machine's address")
    p.add_argument("--name", help="node: its name, e.g. node-1")
    p.add_argument("--join-token", help="node: the server's join token")
    p.add_argument("--gossip-key", help="node: the cluster's Consul gossip key, as the server's "
                                        "install printed it in its join command")
    p.add_argument("--cpu", type=float, default=2.0, help="node: cores for apps (default 2)")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="node: memory for apps in MB (default 4096)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="node: a label for placement constraints (repeatable)")
    p.add_argument("--domain", default="localhost",
                   help="server: apps are served at <app>.<domain> (default localhost)")
    p.add_argument("--http-port", type=int, default=80,
                   help="server: the port the router serves apps on (default 80)")
    p.add_argument("--acme-directory", metavar="URL",
                   help="server: an ACME CA's directory URL (such as Let's Encrypt's) to order "
                        "certificates for apps' own domains from (default: none)")
    p.add_argument("--acme-email", metavar="ADDRESS",
                   help="server: the contact address of the ACME account")
    p.add_argument("--https-port", type=int, default=443,
                   help="server: the port the router serves apps on over HTTPS, with "
                        "certificates from the cluster's CA or the user's (default 443; 0: "
                        "none)")
    p.add_argument("--public", default="0.0.0.0",
                   help="server: the address the router serves apps on (default 0.0.0.0, "
                        "every address; the server's other ports listen on --address only)")
    p.add_argument("--state-dir", default=str(STATE_DIR),
                   help=f"where the machine keeps its state (default {STATE_DIR})")
    p.add_argument("--root", default="/",
                   help="write under this folder instead of / (stages the files; nothing starts)")
    p.add_argument("--consul", help="the consul binary the units run (default: the one "
                   "scripts/setup.sh installed)")
    p.add_argument("--no-start", action="store_true",
                   help="write the files but do not start anything")
    p.set_defaults(func=cmd_host_install)
    p = actions.add_parser("remove", parents=[output_flags()],
                           help="drain this node, stop and remove its units, take it out",
                           description=cmd_host_remove.__doc__)
    p.add_argument("--root", default="/",
                   help="the node's files are under this folder (staged); nothing is stopped")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds to wait for the drain and the removal (default 600)")
    p.set_defaults(func=cmd_host_remove)
