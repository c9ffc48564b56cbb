"""The agent's settings: flags, PAAS_AGENT_* variables, defaults, and their documentation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from agent.settings import AgentSettings, SettingsError, build_parser, env_name


def test_defaults() -> None:
    s = AgentSettings.from_args(["--node", "n1"], {})
    assert (s.address, s.controller_url, s.cluster, s.admin_port, s.wait_s,
            s.heartbeat_interval_s, s.reconcile_interval_s, s.docker_init) == (
        "127.0.0.1", "http://127.0.0.1:7070", "local", 7071, 30.0, 2.0, 5.0, True)
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


def test_join_token_file_is_read_when_asked(tmp_path: Path) -> None:
    token = tmp_path / "join"
    token.write_text("s3cret\n")
    s = AgentSettings.from_args(["--node", "n1", "--join-token-file", str(token)], {})
    assert s.join_token == ""
    assert s.read_join_token() == "s3cret"
    with pytest.raises(SettingsError, match="cannot read"):
        AgentSettings(node="n1", join_token_file=str(tmp_path / "nope")).read_join_token()


@pytest.mark.parametrize("argv", [
    ["--node", "Bad_Name"], ["--node", "n1", "--cluster", "A B"], ["--node", "n1", "--cpu", "x"],
    ["--node", "n1", "--label", "novalue"], ["--node", "n1", "--admin-port", "0"],
    ["--node", "n1", "--heartbeat-interval", "0"],
])
def test_bad_values_raise_one_sentence(argv: list[str]) -> None:
    with pytest.raises(SettingsError, match="^--"):
        AgentSettings.from_args(argv, {})


def test_every_setting_has_a_documented_flag_and_variable() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for f in fields(AgentSettings):
        assert env_name(f.name) in help_text, f.name
    for flag in ("--node", "--address", "--controller-url", "--join-token", "--join-token-file",
                 "--consul-url", "--cluster", "--cpu", "--memory-mb", "--label", "--admin-port",
                 "--wait", "--heartbeat-interval", "--reconcile-interval", "--docker-url",
                 "--docker-init", "--log-level"):
        assert flag in help_text
    assert help_text.count("(default:") == len(fields(AgentSettings))
