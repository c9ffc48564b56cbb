"""`paas init` (issue 4): a Makefile whose targets are the deploy flow's steps, each calling
the CLI; a Procfile and a commented paas.toml where missing; never an overwrite."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from paas.cli import main as cli
from paas.builder.appconfig import parse_app_config

TARGETS = ("assemble", "package", "publish", "publish-deploy", "deploy", "promote")


def init(directory: Path, *extra: str) -> None:
    assert cli.main(["init", str(directory), "--json", *extra]) == 0


def test_writes_the_three_files(tmp_path, capsys):
    app = tmp_path / "my_app"
    app.mkdir()
    (app / "start.sh").write_text("#!/bin/sh\nexec httpd -f -p $PORT\n")
    assert cli.main(["init", str(app), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["app"] == "my-app" and result["stack"] is None
    assert result["written"] == ["Makefile", "Procfile", "paas.toml"]
    assert "APP ?= my-app" in (app / "Makefile").read_text()
    assert parse_app_config(procfile=(app / "Procfile").read_text(),
                            toml_text=None).processes == {"web": "./start.sh"}


def test_an_empty_folder_gets_a_procfile_to_fill_in(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path), "--app", "empty"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stack: none found yet")
    procfile = (tmp_path / "Procfile").read_text()
    assert "# web: ./start.sh" in procfile and "\nweb:" not in procfile


@pytest.mark.parametrize("files,stack,reason", [
    ({"requirements.txt": "flask\n", "app.py": "app = 1\n"}, "python", "requirements.txt"),
    ({"pyproject.toml": "[project]\nname = 'x'\n"}, "python", "pyproject.toml"),
    ({"package.json": "{}"}, "node", "package.json"),
    ({"go.mod": "module x\n"}, "go", "go.mod"),
    ({"pom.xml": "<project/>"}, "jvm", "pom.xml"),
    ({"Gemfile": "source 'https://rubygems.org'\n"}, "ruby", "Gemfile"),
    ({"Gemfile": "", "paas.toml": '[build]\nstack = "python"\n'}, "python",
     "paas.toml [build] stack"),
])
def test_init_detects_the_stack_as_the_builder_does(tmp_path, capsys, files, stack, reason):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert cli.main(["init", str(tmp_path), "--app", "app", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["stack"], result["detected_from"]) == (stack, reason)
    # Each of these stacks starts the web process itself: no Procfile to get wrong.
    assert not (tmp_path / "Procfile").exists()
    assert result["skipped"]["Procfile"] == (f"the {stack} stack starts the app when the "
                                             "Procfile names no web command")
    if "paas.toml" not in files:
        text = (tmp_path / "paas.toml").read_text()
        assert f"# The {stack} stack builds it (detected from {reason};" in text
        assert "# Without a path, an instance is healthy once it accepts connections" in text


def test_with_a_dockerfile_the_comments_say_its_cmd_starts_the_app(tmp_path, capsys):
    (tmp_path / "Dockerfile").write_text("FROM paas/busybox:latest\n")
    (tmp_path / "requirements.txt").write_text("flask\n")
    assert cli.main(["init", str(tmp_path), "--app", "web"]) == 0
    assert capsys.readouterr().out.startswith("stack: dockerfile (from the Dockerfile)")
    assert "built from the Dockerfile; its CMD starts the app" in \
        (tmp_path / "paas.toml").read_text()


def test_never_overwrites_and_says_what_it_skipped(tmp_path, capsys):
    (tmp_path / "Makefile").write_text("mine\n")
    (tmp_path / "Dockerfile").write_text("FROM paas/busybox:latest\n")
    assert cli.main(["init", str(tmp_path), "--app", "web"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "Makefile").read_text() == "mine\n"
    assert not (tmp_path / "Procfile").exists(), "the Dockerfile's CMD starts the app"
    assert "skipped Makefile (exists)" in out and "skipped Procfile" in out
    assert "wrote paas.toml" in out


def test_an_invalid_app_name_is_refused(tmp_path, capsys):
    assert cli.main(["init", str(tmp_path), "--app", "Not_Valid"]) == 2
    assert "invalid app name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_paas_toml_lists_every_key_at_its_default(tmp_path):
    init(tmp_path, "--app", "web")
    text = (tmp_path / "paas.toml").read_text()
    assert parse_app_config(procfile=None, toml_text=text) == \
        parse_app_config(procfile=None, toml_text=None), "everything is commented out"
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    assert parse_app_config(procfile=None, toml_text=uncommented).test_command == "./test.sh"
    keys = set(re.findall(r"^# (\w+) = ", text, flags=re.MULTILINE))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = re.search(r"Optional `paas.toml`:\n\n```toml\n(.*?)```", readme, re.S)
    assert documented, "README's paas.toml example"
    assert keys == set(re.findall(r"^(\w+) = ", documented.group(1), flags=re.MULTILINE))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_targets_call_the_cli(tmp_path):
    init(tmp_path, "--app", "web")
    for target in TARGETS:
        argv = ["make", "-n", "-C", str(tmp_path), target, "REPLICAS=2",
                "HOSTNAMES=a.test b.test", "PAAS_FLAGS=--url http://c:1"]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        command = [line for line in out.splitlines() if line.startswith("paas ")]
        assert command, (target, out)
        words = command[0].split()
        assert words[1] == target
        if target != "assemble":
            assert "web" in words and "--url" in words
        if target == "deploy":
            assert words[words.index("--replicas") + 1] == "2"
            assert words.count("--hostname") == 2
