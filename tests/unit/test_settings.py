"""The shared settings loader (`paas/settings.py`) and the three daemons' use of it (issue 8).

The loader is tested on a sample dataclass that holds one field of every supported type; the
daemons are tested as processes (`--help`, and a bad value: exit 2, one line, no traceback).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.settings import AgentSettings
from paas.controller.settings import ControllerSettings
from paas.settings import LOG_LEVELS, InvalidSetting, build_parser, load, setting
from router.settings import RouterSettings

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str = setting("anon", "A name.")
    count: int = setting(3, "How many.")
    ratio: float = setting(0.5, "A ratio.")
    enabled: bool = setting(True, "Whether it is on.")
    home: Path = setting(Path("/srv"), "A folder.")
    extra: Path | None = setting(None, "An optional folder.", shown_default="no folder")
    labels: Mapping[str, str] = setting(default_factory=dict, flag="label", env="LABELS",
                                        help="Labels.")
    level: str = setting("INFO", "A logging level.", choices=LOG_LEVELS)
    wait_s: float = setting(1.0, "Seconds to wait.", flag="wait")
    engine: str = setting("local", "An engine.", also_env=("ENGINE_HOST",))

    def __post_init__(self) -> None:
        if self.count < 0:
            raise InvalidSetting("count", "must not be negative")


def load_sample(argv: list[str], environ: dict[str, str] | None = None) -> Sample:
    return load(Sample, prog="sample", description="A sample.", env_prefix="PFX_",
                argv=argv, environ={} if environ is None else environ)


# --- precedence and types -----------------------------------------------------------------

@pytest.mark.parametrize("argv, environ, field, expected", [
    # flag beats environment beats default, for every type
    ([], {}, "name", "anon"),
    ([], {"PFX_NAME": "env"}, "name", "env"),
    (["--name", "flag"], {"PFX_NAME": "env"}, "name", "flag"),
    ([], {}, "count", 3),
    ([], {"PFX_COUNT": "7"}, "count", 7),
    (["--count", "9"], {"PFX_COUNT": "7"}, "count", 9),
    (["--ratio", "2.5"], {}, "ratio", 2.5),
    ([], {"PFX_RATIO": "1e-3"}, "ratio", 0.001),
    ([], {}, "enabled", True),
    (["--no-enabled"], {"PFX_ENABLED": "yes"}, "enabled", False),
    (["--enabled"], {"PFX_ENABLED": "off"}, "enabled", True),
    ([], {"PFX_ENABLED": "0"}, "enabled", False),
    ([], {"PFX_ENABLED": "TRUE"}, "enabled", True),
    ([], {}, "home", Path("/srv")),
    (["--home", "/tmp/h"], {}, "home", Path("/tmp/h")),
    ([], {}, "extra", None),
    (["--extra", "/x"], {}, "extra", Path("/x")),
    ([], {"PFX_EXTRA": "/y"}, "extra", Path("/y")),
    (["--extra", ""], {"PFX_EXTRA": "/y"}, "extra", None),
    ([], {}, "labels", {}),
    (["--label", "zone=a", "--label", "disk=ssd,x=y"], {}, "labels",
     {"zone": "a", "disk": "ssd,x=y"}),
    ([], {"PFX_LABELS": "zone=a, disk=ssd"}, "labels", {"zone": "a", "disk": "ssd"}),
    (["--label", "zone=b"], {"PFX_LABELS": "zone=a,disk=ssd"}, "labels", {"zone": "b"}),
    (["--label", "empty="], {}, "labels", {"empty": ""}),
    # choices match without regard to case and keep the choice's spelling
    (["--level", "debug"], {}, "level", "DEBUG"),
    ([], {"PFX_LEVEL": "Warning"}, "level", "WARNING"),
    # a flag named apart from its field, and its variable named after the flag
    (["--wait", "4"], {}, "wait_s", 4.0),
    ([], {"PFX_WAIT": "5"}, "wait_s", 5.0),
    ([], {"PFX_WAIT_S": "5"}, "wait_s", 1.0),
    # an unprefixed fallback variable comes after the prefixed one
    ([], {"ENGINE_HOST": "tcp://e"}, "engine", "tcp://e"),
    ([], {"ENGINE_HOST": "tcp://e", "PFX_ENGINE": "tcp://p"}, "engine", "tcp://p"),
    # an empty variable counts as unset
    ([], {"PFX_COUNT": ""}, "count", 3),
    ([], {"PFX_NAME": "", "PFX_ENGINE": ""}, "name", "anon"),
])
def test_flag_then_environment_then_default(argv: list[str], environ: dict[str, str],
                                            field: str, expected: Any) -> None:
    assert getattr(load_sample(argv, environ), field) == expected


def test_no_flags_and_no_environment_gives_the_defaults() -> None:
    assert load_sample([]) == Sample()


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFX_COUNT", "11")
    settings = load(Sample, prog="sample", description="", env_prefix="PFX_", argv=[])
    assert settings.count == 11


# --- bad values -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, environ, names", [
    (["--count", "x"], {}, ["--count", "PFX_COUNT", "'x' is not a whole number"]),
    ([], {"PFX_COUNT": "1.5"}, ["--count", "PFX_COUNT", "'1.5' is not a whole number"]),
    (["--ratio", "half"], {}, ["--ratio", "PFX_RATIO", "'half' is not a number"]),
    (["--ratio", "nan"], {}, ["--ratio", "'nan' is not a finite number"]),
    ([], {"PFX_RATIO": "inf"}, ["--ratio", "'inf' is not a finite number"]),
    ([], {"PFX_ENABLED": "maybe"}, ["--enabled", "PFX_ENABLED", "'maybe'"]),
    (["--label", "novalue"], {}, ["--label", "PFX_LABELS", "'novalue' is not k=v"]),
    ([], {"PFX_LABELS": "a=1,=2"}, ["--label", "PFX_LABELS", "'=2' is not k=v"]),
    (["--level", "loud"], {}, ["--level", "PFX_LEVEL", "not one of DEBUG, INFO"]),
    (["--wait", "soon"], {}, ["--wait", "PFX_WAIT", "'soon'"]),
    ([], {"ENGINE_HOST": ""}, None),  # empty: unset, so no error (checked below)
    (["--count", "-1"], {}, ["--count", "PFX_COUNT", "must not be negative"]),  # __post_init__
    (["--colour", "red"], {}, ["unrecognized arguments: --colour", "sample --help"]),
    (["--count"], {}, ["--count", "expected one argument"]),
])
def test_a_bad_value_is_one_line_and_exit_2(argv: list[str], environ: dict[str, str],
                                            names: list[str] | None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if names is None:
        assert load_sample(argv, environ) == Sample()
        return
    with pytest.raises(SystemExit) as exited:
        load_sample(argv, environ)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sample: "), err
    for name in names:
        assert name in err


def test_invalid_setting_names_its_field() -> None:
    with pytest.raises(InvalidSetting, match="^count: must not be negative$") as raised:
        Sample(count=-1)
    assert raised.value.field == "count"


# --- help -----------------------------------------------------------------------------------

def test_help_lists_every_field_with_its_help_default_and_variable(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # one line per flag: argparse wraps at hyphens
    with pytest.raises(SystemExit) as exited:
        load_sample(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, help_text, default, env in [
        ("--name", "A name.", "anon", "PFX_NAME"), ("--count", "How many.", "3", "PFX_COUNT"),
        ("--ratio", "A ratio.", "0.5", "PFX_RATIO"),
        ("--enabled, --no-enabled", "Whether it is on.", "true", "PFX_ENABLED"),
        ("--home", "A folder.", "/srv", "PFX_HOME"),
        ("--extra", "An optional folder.", "no folder", "PFX_EXTRA"),
        ("--label K=V", "Labels.", "none", "PFX_LABELS"),
        ("--level", "A logging level. One of DEBUG, INFO, WARNING", "INFO", "PFX_LEVEL"),
        ("--wait", "Seconds to wait.", "1.0", "PFX_WAIT"),
        ("--engine", "An engine.", "local", "PFX_ENGINE, ENGINE_HOST"),
    ]:
        assert f"{flag} " in text
        assert f"{help_text}" in text
        assert f"(default: {default}; env {env})" in text, flag
    assert text.count("(default: ") == len(dataclasses.fields(Sample))


def test_a_setting_needs_help_and_one_default() -> None:
    with pytest.raises(TypeError, match="help"):
        setting(1, "")
    with pytest.raises(TypeError, match="default"):
        setting(help="No default.")


def test_an_unsupported_type_is_refused_when_the_parser_is_built() -> None:
    @dataclass(frozen=True)
    class Odd:
        sizes: list[int] = setting(default_factory=list, help="Sizes.")

    with pytest.raises(TypeError, match="unsupported"):
        build_parser(Odd, prog="odd", description="", env_prefix="ODD_")


# --- the three daemons ----------------------------------------------------------------------

DAEMONS = [  # (settings class, module, a bad flag, its variable)
    (ControllerSettings, "paas.controller.server", ["--port", "x"], "PAAS_CONTROLLER_PORT"),
    (AgentSettings, "agent.main", ["--node", "n1", "--admin-port", "0"], "PAAS_AGENT_ADMIN_PORT"),
    (RouterSettings, "router.main", ["--listen-host", "localhost"], "PAAS_ROUTER_LISTEN_HOST"),
]


@pytest.mark.parametrize("cls", [d[0] for d in DAEMONS], ids=lambda c: c.__name__)
def test_every_daemon_setting_has_help(cls: type) -> None:
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def run_daemon(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAAS_")}
    env["COLUMNS"] = "10000"  # help on one line per flag: argparse wraps at hyphens
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("cls, module, bad, variable", DAEMONS, ids=[d[1] for d in DAEMONS])
def test_daemon_help_lists_every_setting(cls: type, module: str, bad: list[str],
                                         variable: str) -> None:
    done = run_daemon(module, ["--help"])
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    prefix = next(p for p in ("PAAS_CONTROLLER_", "PAAS_AGENT_", "PAAS_ROUTER_")
                  if variable.startswith(p))
    for f in dataclasses.fields(cls):
        assert " ".join(f.metadata["help"].split()) in text, f.name
    assert text.count("(default: ") == len(dataclasses.fields(cls))
    assert text.count(f"env {prefix}") == len(dataclasses.fields(cls))


@pytest.mark.parametrize("cls, module, bad, variable", DAEMONS, ids=[d[1] for d in DAEMONS])
def test_daemon_bad_value_is_one_line_and_exit_2(cls: type, module: str, bad: list[str],
                                                 variable: str) -> None:
    done = run_daemon(module, bad)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert bad[-2] in done.stderr and variable in done.stderr
