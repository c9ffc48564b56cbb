"""paas.machines and `paas host install`: what a server and a node run, the systemd units
that run it, and the files the install writes (staged under --root, nothing started)."""

from __future__ import annotations

import json

from paas.tokenfile import write_private
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from paas import machines
from paas.cli import main as cli

STATE = Path("/var/lib/paas")


def server(**kw) -> machines.Server:
    return machines.Server(address="10.0.0.1", state_dir=STATE, consul="/usr/bin/consul",
                           python="/opt/paas/bin/python", **kw)


def test_with_monitoring_the_server_runs_prometheus_last_asking_the_controller() -> None:
    procs = machines.server_processes(server(monitoring=True))
    assert [p.name for p in procs][-2:] == ["router", "prometheus"]
    prometheus = procs[-1]
    folder = STATE / "prometheus"
    assert f"--config.file={folder / 'prometheus.yml'}" in prometheus.argv
    assert "--web.listen-address=10.0.0.1:7074" in prometheus.argv
    assert "--storage.tsdb.retention.time=7d" in prometheus.argv  # bounded
    config = prometheus.files[folder / "prometheus.yml"]
    for kind in ("apps", "paas", "haproxy", "latency"):  # none static: the controller reads Consul
        assert f'url: "http://10.0.0.1:7070/sd/prometheus/{kind}"' in config
    assert "static_configs" not in config
    assert "alert: AppNoHealthyInstance" in prometheus.files[folder / "rules.yml"]
    assert "prometheus" not in [p.name for p in machines.server_processes(server())]


def test_the_server_runs_consul_the_registry_the_controller_and_the_router_in_order() -> None:
    procs = machines.server_processes(server(registry=True, docker_url="unix:///x.sock"))
    assert [p.name for p in procs] == ["consul-server", "registry", "controller", "router"]
    consul, registry, controller, router = procs
    assert consul.argv[:3] == ("/usr/bin/consul", "agent", "-server")
    assert ("-bind", "10.0.0.1") == consul.argv[consul.argv.index("-bind"):][:2]
    assert consul.dirs == (STATE / "consul-server",)
    assert "addr: 10.0.0.1:5000" in registry.files[STATE / "registry.yml"]
    assert controller.argv[1:4] == ("-P", "-m", "paas.controller.server")  # cwd not on path
    args = dict(zip(controller.argv[4::2], controller.argv[5::2]))
    assert args["--registry"] == "10.0.0.1:5000" and args["--docker-url"] == "unix:///x.sock"
    assert args["--data-dir"] == str(STATE / "controller")
    assert ("--listen-host", "10.0.0.1") == router.argv[router.argv.index("--listen-host"):][:2]
    assert "registry" not in [p.name for p in machines.server_processes(server())]
    assert "--docker-url" not in machines.server_processes(server())[1].argv


def test_a_node_runs_its_consul_client_and_its_agent() -> None:
    node = machines.Node(name="node-2", address="10.0.0.3", server="10.0.0.1", state_dir=STATE,
                         join_token_file=STATE / "join.token", labels={"zone": "b"},
                         consul="consul", python="python3")
    consul, agent = machines.node_processes(node)
    assert consul.name == "consul-node-2" and "-retry-join" in consul.argv
    assert consul.argv[consul.argv.index("-retry-join") + 1] == "10.0.0.1"
    args = dict(zip(agent.argv[4::2], agent.argv[5::2]))
    assert args["--controller-url"] == "http://10.0.0.1:7070"
    assert args["--consul-url"] == "http://10.0.0.3:8500" and args["--label"] == "zone=b"


def test_a_unit_runs_the_argv_after_what_it_needs() -> None:
    procs = machines.server_processes(server())
    unit = machines.systemd_unit(procs[1], after=procs[:1], working_dir=STATE)
    lines = unit.splitlines()
    assert "After=network-online.target docker.service paas-consul-server.service" in lines
    assert "ExecStart=/opt/paas/bin/python -P -m paas.controller.server --data-dir " \
           "/var/lib/paas/controller --host 10.0.0.1" in unit
    assert "Restart=always" in lines and "WantedBy=multi-user.target" in lines
    assert f"WorkingDirectory={STATE}" in lines


def test_host_install_stages_units_a_token_and_the_registry_for_docker(tmp_path, capsys) -> None:
    docker_config = tmp_path / "etc/docker/daemon.json"
    docker_config.parent.mkdir(parents=True)
    docker_config.write_text('{"log-driver": "json-file"}')
    code = cli.main(["host", "install", "--role", "node", "--name", "node-1",
                     "--address", "10.0.0.2", "--server", "10.0.0.1", "--join-token", "s3cret",
                     "--label", "zone=a", "--consul", "/usr/bin/consul", "--root",
                     str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    units = sorted(p.name for p in (tmp_path / "etc/systemd/system").iterdir())
    assert units == ["paas-agent-node-1.service", "paas-consul-node-1.service"]
    token = tmp_path / "var/lib/paas/join.token"
    assert token.read_text() == "s3cret\n" and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert json.loads(docker_config.read_text()) == {
        "log-driver": "json-file", "insecure-registries": ["10.0.0.1:5000"]}
    assert "written under" in capsys.readouterr().out
    # Again: the same files, the registry listed once.
    assert cli.main(["host", "install", "--role", "node", "--name", "node-1", "--address",
                     "10.0.0.2", "--server", "10.0.0.1", "--join-token", "s3cret",
                     "--consul", "/usr/bin/consul", "--root", str(tmp_path)]) == 0
    assert json.loads(docker_config.read_text())["insecure-registries"] == ["10.0.0.1:5000"]


def test_the_server_install_prints_the_one_command_that_joins_a_node(tmp_path, capsys) -> None:
    server_root, node_root = tmp_path / "server", tmp_path / "node"
    argv = ["host", "install", "--role", "server", "--address", "10.0.0.1", "--consul",
            "/usr/bin/consul", "--root", str(server_root)]
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    token_file = server_root / "var/lib/paas/controller/join.token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    join = out["join_command"]
    assert join[1:5] == ["host", "install", "--role", "node"]
    assert join[join.index("--join-token") + 1] == token
    assert join[join.index("--server") + 1] == "10.0.0.1"
    assert "addr: 10.0.0.1:5000" in (server_root / "var/lib/paas/registry.yml").read_text()
    router = (server_root / "etc/systemd/system/paas-router.service").read_text()
    assert "--listen-host 0.0.0.0 --listen-port 80 --admin-host 10.0.0.1" in router
    assert (server_root / "var/lib/paas/consul-server").is_dir()
    # Again: the same token (the controller and the joined nodes keep theirs).
    assert cli.main(argv) == 0
    assert token_file.read_text().strip() == token
    assert f"--join-token {token}" in capsys.readouterr().out

    # The printed command, with the node's name and address filled in, joins a node.
    node = [{"NODE-NAME": "node-1", "NODE-ADDRESS": "10.0.0.2"}.get(a, a) for a in join[1:]]
    assert cli.main([*node, "--consul", "/usr/bin/consul", "--root", str(node_root)]) == 0
    assert (node_root / "var/lib/paas/join.token").read_text().strip() == token


def test_every_unit_runs_as_the_paas_user_with_only_what_it_needs() -> None:
    procs = {p.name: p for p in machines.server_processes(server(registry=True))}
    node = machines.Node(name="node-1", address="10.0.0.2", server="10.0.0.1",
                         state_dir=STATE, join_token_file=STATE / "join.token")
    procs.update((p.name, p) for p in machines.node_processes(node))
    units = {name: machines.systemd_unit(p).splitlines() for name, p in procs.items()}
    for name, lines in units.items():
        assert "User=paas" in lines and "NoNewPrivileges=yes" in lines, name
    docker = {n for n, lines in units.items() if "SupplementaryGroups=docker" in lines}
    assert docker == {"controller", "agent-node-1"}  # builds, and runs containers
    assert [n for n, lines in units.items() if "CapabilityBoundingSet=" not in lines] == \
        ["router"]
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in units["router"]
    # Its HAProxy serves on while the router restarts: only the router's own process stops.
    assert [n for n, lines in units.items() if "KillMode=process" in lines] == ["router"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not here")
def test_the_units_pass_systemd_analyze_verify(tmp_path) -> None:
    assert cli.main(["host", "install", "--role", "server", "--address", "10.0.0.1",
                     "--consul", "/bin/true", "--root", str(tmp_path)]) == 0
    units = sorted((tmp_path / "etc/systemd/system").glob("*.service"))
    done = subprocess.run(["systemd-analyze", "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv,says", [
    (["--role", "node", "--address", "10.0.0.2"], "a node needs --server"),
    (["--role", "node", "--address", "10.0.0.2", "--server", "10.0.0.1"], "--join-token"),
    (["--role", "node", "--address", "10.0.0.2", "--server", "10.0.0.1", "--join-token", "t",
      "--name", "Node One"], "--name:"),
    (["--role", "server", "--address", "my-box"], "--address must be an IP address"),
    (["--role", "server", "--address", "10.0.0.1", "--http-port", "70000"],
     "--http-port must be a port from 1 to 65535"),
    (["--role", "server", "--address", "10.0.0.1", "--public", "any"],
     "--public must be an IP address"),
    (["--role", "node", "--address", "10.0.0.2", "--server", "10.0.0.1", "--join-token", "t",
      "--name", "n1", "--label", "zone"], "--label must be KEY=VALUE"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, capsys, argv, says) -> None:
    assert cli.main(["host", "install", *argv, "--consul", "/usr/bin/consul",
                     "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_broken_docker_config_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text("{not json")
    assert cli.main(["host", "install", "--role", "server", "--address", "10.0.0.1",
                     "--consul", "/usr/bin/consul", "--root", str(tmp_path)]) == 2
    assert "daemon.json is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "etc/systemd").exists(), "nothing is written on bad input"


def test_host_remove_on_a_machine_that_is_no_node_says_so(tmp_path, capsys) -> None:
    assert cli.main(["host", "remove", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "this machine is not one node of a cluster: 0 paas-agent-*.service units" in err
    assert "Traceback" not in err


def test_host_remove_reads_the_node_that_install_wrote(tmp_path) -> None:
    from paas.cli.host import installed_node

    assert cli.main(["host", "install", "--role", "node", "--name", "node-3", "--address",
                     "10.0.0.4", "--server", "10.0.0.1", "--join-token", "t", "--consul",
                     "/usr/bin/consul", "--root", str(tmp_path)]) == 0
    found = installed_node(tmp_path)
    assert (found.node, found.controller_url) == ("node-3", "http://10.0.0.1:7070")
    assert found.join_token_file == STATE / "join.token"
    assert [u.name for u in found.units] == ["paas-agent-node-3.service",
                                             "paas-consul-node-3.service"]
    assert all(u.exists() for u in found.units)


def test_the_local_cluster_runs_what_the_unit_says() -> None:
    for process in machines.server_processes(server(registry=True)):
        argv, env = machines.unit_command(machines.systemd_unit(process))
        assert tuple(argv) == process.argv and env == {"PYTHONUNBUFFERED": "1"}
    tricky = machines.Process("x", ("/bin/echo", "a b", "it's", "$HOME", "100%"), "quoting")
    assert "'$$HOME' 100%%" in machines.systemd_unit(tricky)  # literal for systemd too
    assert machines.unit_command(machines.systemd_unit(tricky))[0] == list(tricky.argv)
    with pytest.raises(ValueError):
        machines.unit_command("[Service]\nUser=paas\n")


def test_consul_gossip_key_goes_in_a_secret_file_never_on_the_command_line(tmp_path) -> None:
    key = "k" * 43 + "="
    server = machines.Server(address="10.0.0.1", state_dir=tmp_path, gossip_key=key)
    node = machines.Node(name="node-1", address="10.0.0.2", server="10.0.0.1",
                         state_dir=tmp_path, join_token_file=tmp_path / "join.token",
                         gossip_key=key)
    for process in (machines.server_processes(server)[0], machines.node_processes(node)[0]):
        assert key not in " ".join(process.argv)
        [(path, text)] = process.secret_files.items()
        assert process.argv[process.argv.index("-config-file") + 1] == str(path)
        assert json.loads(text) == {"encrypt": key}
        write_private(path, text)
        assert path.stat().st_mode & 0o777 == 0o600
    plain = machines.Server(address="10.0.0.1", state_dir=tmp_path)
    assert "-config-file" not in machines.server_processes(plain)[0].argv
