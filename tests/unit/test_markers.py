"""The `docker` marker keeps `make test-quick` free of Docker, Consul and HAProxy (issue 8).

Two halves: every test module under tests/integration and tests/e2e declares the marker for
all its tests, and the guard in tests/conftest.py stops an unmarked test that starts one of
those programs or connects to the Docker socket.
"""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GuardedPopen, UNREACHABLE_DOCKER

TESTS = Path(__file__).resolve().parents[1]
# Modules there that need no engine, and why; they run in the quick suite.
NEEDS_NO_ENGINE = {"integration/test_vagrantfile.py": "runs `vagrant validate` only"}


def module_marks(path: Path) -> set[str]:
    """The `pytest.mark.<name>` names in the module-level `pytestmark` of `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) \
                        and sub.value.attr == "mark":
                    marks.add(sub.attr)
    return marks


def engine_modules() -> list[str]:
    return sorted(str(p.relative_to(TESTS)) for folder in ("integration", "e2e")
                  for p in (TESTS / folder).rglob("test_*.py"))


@pytest.mark.parametrize("module", engine_modules())
def test_every_integration_and_e2e_module_is_marked_docker(module: str) -> None:
    marks = module_marks(TESTS / module)
    if module in NEEDS_NO_ENGINE:
        assert "docker" not in marks, f"{module} is marked now: drop it from NEEDS_NO_ENGINE"
    else:
        assert "docker" in marks, (f"{module} needs Docker, Consul or HAProxy: start it with "
                                   "`pytestmark = pytest.mark.docker`")


def test_the_exemptions_name_existing_modules() -> None:
    assert set(NEEDS_NO_ENGINE) <= set(engine_modules())


def test_the_mark_reader_sees_lists_and_single_marks(tmp_path: Path) -> None:
    single, listed, none = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    single.write_text("import pytest\npytestmark = pytest.mark.docker\n")
    listed.write_text("import pytest\npytestmark = [pytest.mark.slow, pytest.mark.timeout(9)]\n")
    none.write_text("import pytest\n\n@pytest.mark.docker\ndef test_x():\n    pass\n")
    assert (module_marks(single), module_marks(listed), module_marks(none)) == (
        {"docker"}, {"slow", "timeout"}, set())


# --- the guard, seen from a test without the marker -------------------------------------------
@pytest.mark.parametrize("argv", [["consul", "version"], ["/usr/sbin/haproxy", "-v"],
                                  ["docker", "ps"], "consul members"])
def test_starting_an_engine_program_fails_the_test(argv: list[str] | str) -> None:
    with pytest.raises(pytest.fail.Exception, match="mark the test `@pytest.mark.docker`"):
        subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, check=False)


async def test_asyncio_subprocesses_are_guarded_too() -> None:
    with pytest.raises(pytest.fail.Exception, match="started consul"):
        await asyncio.create_subprocess_exec("consul", "version")


def test_other_programs_run() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


@pytest.mark.parametrize("path", ["/var/run/docker.sock", "/run/docker.sock"])
def test_connecting_to_the_docker_socket_fails_the_test(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s, \
            pytest.raises(pytest.fail.Exception, match="connected to the Docker engine"):
        s.connect(path)


def test_the_docker_client_cannot_reach_the_engine() -> None:
    import docker
    import docker.errors

    assert os.environ["DOCKER_HOST"] == UNREACHABLE_DOCKER
    with pytest.raises(docker.errors.DockerException):
        docker.from_env().ping()
    with pytest.raises(pytest.fail.Exception):
        docker.DockerClient(base_url="unix:///var/run/docker.sock", version="1.41").ping()


@pytest.mark.docker
def test_the_marker_lifts_the_guard() -> None:
    assert subprocess.Popen is not GuardedPopen
    assert os.environ.get("DOCKER_HOST") != UNREACHABLE_DOCKER


def test_a_test_that_needs_an_engine_fails_without_it_and_never_skips() -> None:
    """Under `make test` a missing Docker engine or Consul is a broken setup: a skip would turn
    it green. The modules that need them, and their helpers, call pytest.fail instead."""
    helpers = [TESTS / "build_stages.py", TESTS / "engines.py"]
    paths = [*helpers, *(p for p in TESTS.glob("integration/**/*.py")),
             *(p for p in TESTS.glob("e2e/**/*.py"))]
    skipping = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("skip", "skipif") \
                    and isinstance(node.value, (ast.Name, ast.Attribute)) \
                    and ast.unparse(node.value) in ("pytest", "pytest.mark"):
                skipping.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    allowed = {f"integration/test_vagrantfile.py:{line}" for line in vagrant_skip_lines()}
    assert set(skipping) <= allowed, sorted(set(skipping) - allowed)


def vagrant_skip_lines() -> list[int]:
    """test_vagrantfile needs no engine (NEEDS_NO_ENGINE) and runs in the quick suite too,
    where vagrant may be missing: its skip stays."""
    path = TESTS / "integration/test_vagrantfile.py"
    return [n.lineno for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Attribute) and n.attr == "skipif"]
