"""The agent's settings: its flags, PAAS_AGENT_* variables, defaults and checks.

The loader itself (precedence, types, one-line errors, `--help`) is tested in test_settings.py;
here, what is the agent's own: its names, its defaults and the values it refuses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.settings import AgentSettings
from paas.settings import InvalidSetting


def test_defaults() -> None:
    s = AgentSettings.from_args(["--node", "n1"], {})
    assert (s.address, s.controller_url, s.cluster, s.admin_port, s.wait_s,
            s.heartbeat_interval_s, s.reconcile_interval_s, s.docker_init, s.labels) == (
        "127.0.0.1", "http://127.0.0.1:7070", "local", 7071, 30.0, 2.0, 5.0, True, {})
    assert s.effective_consul_url == "http://127.0.0.1:8500"
    assert s.docker_url == "unix:///var/run/docker.sock"


def test_flags_beat_environment_beats_defaults() -> None:
    env = {"PAAS_AGENT_NODE": "from-env", "PAAS_AGENT_ADDRESS": "127.0.0.3",
           "PAAS_AGENT_CPU": "2.5", "PAAS_AGENT_MEMORY_MB": "2048",
           "PAAS_AGENT_LABELS": "zone=a, disk=ssd", "PAAS_AGENT_WAIT": "5",
           "PAAS_AGENT_DOCKER_INIT": "false", "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    s = AgentSettings.from_args(["--node", "from-flag", "--label", "zone=b"], env)
    assert (s.node, s.address, s.cpu, s.memory_mb, s.labels, s.wait_s, s.docker_init) == (
        "from-flag", "127.0.0.3", 2.5, 2048, {"zone": "b"}, 5.0, False)
    assert s.effective_consul_url == "http://127.0.0.3:8500"
    assert s.docker_url == "tcp://127.0.0.1:2375"


def test_own_docker_variable_beats_docker_host() -> None:
    s = AgentSettings.from_args(["--node", "n1"], {"DOCKER_HOST": "tcp://a:2375",
                                                   "PAAS_AGENT_DOCKER_URL": "tcp://b:2375"})
    assert s.docker_url == "tcp://b:2375"


def test_interval_flags_are_named_without_their_unit() -> None:
    s = AgentSettings.from_args(["--node", "n1", "--heartbeat-interval", "0.5"],
                                {"PAAS_AGENT_RECONCILE_INTERVAL": "9"})
    assert (s.heartbeat_interval_s, s.reconcile_interval_s) == (0.5, 9.0)


def test_join_token_file_is_read_when_asked(tmp_path: Path) -> None:
    token = tmp_path / "join"
    token.write_text("s3cret\n")
    s = AgentSettings.from_args(["--node", "n1", "--join-token-file", str(token)], {})
    assert s.join_token == ""
    assert s.read_join_token() == "s3cret"
    with pytest.raises(InvalidSetting, match="cannot read") as raised:
        AgentSettings(node="n1", join_token_file=str(tmp_path / "nope")).read_join_token()
    assert raised.value.field == "join_token_file"


@pytest.mark.parametrize("argv, flag, problem", [
    (["--node", "Bad_Name"], "--node", "use lowercase letters"),
    (["--node", "n1", "--cluster", "A B"], "--cluster", "use lowercase letters"),
    (["--node", "n1", "--cpu", "x"], "--cpu", "not a number"),
    (["--node", "n1", "--label", "novalue"], "--label", "not k=v"),
    (["--node", "n1", "--label", "bad key=1"], "--label", "not a label key"),
    (["--node", "n1", "--admin-port", "0"], "--admin-port", "port number"),
    (["--node", "n1", "--heartbeat-interval", "0"], "--heartbeat-interval", "must be positive"),
    (["--node", "n1", "--address", ""], "--address", "must not be empty"),
    (["--node", "n1", "--log-level", "chatty"], "--log-level", "not one of"),
])
def test_bad_values_are_one_line_naming_the_flag(argv: list[str], flag: str, problem: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        AgentSettings.from_args(argv, {})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paas-agent: {flag} (env PAAS_AGENT_") and problem in err, err
    assert err.count("\n") == 1


def test_every_flag_is_documented_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        AgentSettings.from_args(["--help"], {})
    options = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    for flag, env in [
        ("--node", "PAAS_AGENT_NODE"), ("--address", "PAAS_AGENT_ADDRESS"),
        ("--controller-url", "PAAS_AGENT_CONTROLLER_URL"),
        ("--join-token", "PAAS_AGENT_JOIN_TOKEN"),
        ("--join-token-file", "PAAS_AGENT_JOIN_TOKEN_FILE"),
        ("--consul-url", "PAAS_AGENT_CONSUL_URL"), ("--cluster", "PAAS_AGENT_CLUSTER"),
        ("--cpu", "PAAS_AGENT_CPU"), ("--memory-mb", "PAAS_AGENT_MEMORY_MB"),
        ("--label", "PAAS_AGENT_LABELS"), ("--admin-port", "PAAS_AGENT_ADMIN_PORT"),
        ("--wait", "PAAS_AGENT_WAIT"), ("--heartbeat-interval", "PAAS_AGENT_HEARTBEAT_INTERVAL"),
        ("--reconcile-interval", "PAAS_AGENT_RECONCILE_INTERVAL"),
        ("--docker-url", "PAAS_AGENT_DOCKER_URL"), ("--docker-init", "PAAS_AGENT_DOCKER_INIT"),
        ("--log-level", "PAAS_AGENT_LOG_LEVEL"),
    ]:
        # The flag's own entry (the flag, then its METAVAR or --no- form) up to its first
        # "(default: ...; env ...)".
        entry = (rf" {re.escape(flag)}(?: [A-Z][A-Z_=]*|, --no-\S+) "
                 rf"(?:(?!\(default: ).)*\(default: [^;]*; env {env}[,)]")
        assert re.search(entry, options), flag
