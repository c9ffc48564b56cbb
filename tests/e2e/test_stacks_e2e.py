"""Issue 9, end to end: every stack's example (python-api, go-service, node-web, jvm-service,
ruby-hello), from source, on one 2-node cluster. For each: `git push` builds it on its stack and
deploys it (the bundled integration test runs against the control instance, its own lines in
the push's output), the router serves it, `paas logs` shows its start line, `paas config set`
reaches `/`, it scales to 2 and rolls back; a commit whose test fails exits 5 and one that does
not build exits 3 (the build tool's own line: pip's, the compiler's, npm's, javac's,
bundler's), and the old version keeps serving. For python and go a one-line change also
rebuilds warm through a push (bench/build times every stack's warm rebuild).

The stack images are made before the first push (once per machine), so the pushes' times are
the figures of the issue: a first push on built stacks, then a warm push."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from paas.builder import stackimages, stacks
from tests.build_stages import remove_build_stages
from tests.e2e.conftest import REPO, wait_until
from tests.e2e.test_git_push import GIT_ENV, created_app, git, git_url, push

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PAAS = str(Path(sys.executable).with_name("paas"))
CLI_TIMEOUT_S = 600


@dataclass(frozen=True)
class Example:
    name: str  # examples/<name>
    app: str
    stack: str
    test_passed: str  # a line the bundled test prints when it passes
    started: str  # the start line `paas logs` shows
    source: str  # the file a one-line change goes into
    break_test: tuple[str, str, str]  # (file, old, new): the integration test fails
    break_build: tuple[str, str, str]  # (file, old, new; old "" = append new): it fails to build
    build_error: str  # the build tool's own line in the failing log
    comment: str = "#"  # how a line of `source` is commented out
    warm_push: bool = False  # also push a one-line change and see it built warm


EXAMPLES = [
    Example(name="python-api", app="pyapi", stack="python",
            test_passed=r"\| \d+ passed in ", started="python-api v{v} instance ",
            source="app.py",
            break_test=("tests/test_integration.py", '("/health", 200, "text/plain", "ok")',
                        '("/health", 200, "text/plain", "not-ok-e2e")'),
            break_build=("requirements.txt", "", "paas-e2e-no-such-package==1.0.0"),
            build_error="No matching distribution found for paas-e2e-no-such-package",
            warm_push=True),
    Example(name="go-service", app="gosvc", stack="go",
            test_passed=r"\| --- PASS: TestEndpoints ", started="go-service v{v} instance ",
            source="main.go",
            break_test=("integration/integration_test.go",
                        '{"health", "/health", http.StatusOK, []string{"ok"}}',
                        '{"health", "/health", http.StatusOK, []string{"not-ok-e2e"}}'),
            break_build=("main.go", "", 'var broken int = "e2e"'),
            build_error="cannot use \"e2e\"", comment="//", warm_push=True),
    Example(name="node-web", app="nodeweb", stack="node",
            test_passed=r"\| \d+ passed, 0 failed", started="node-web v{v} instance ",
            source="server.js",
            break_test=("test/integration.js",
                        "{ name: 'health', path: '/health', status: 200, body: 'ok' }",
                        "{ name: 'health', path: '/health', status: 200, body: 'not-ok-e2e' }"),
            break_build=("package.json", '"express": "5.3.0"',
                         '"express": "5.3.0",\n    "paas-e2e-no-such-package": "1.0.0"'),
            build_error="paas-e2e-no-such-package@1.0.0", comment="//"),  # npm 404s or names the lock
    Example(name="jvm-service", app="jvmsvc", stack="jvm",
            test_passed=r"\| \d+ passed, 0 failed", started="jvm-service v{v} instance ",
            source="src/main/java/example/Server.java",
            break_test=("src/main/java/example/IntegrationTest.java",
                        'new Case("health", "/health", 200, "ok")',
                        'new Case("health", "/health", 200, "not-ok-e2e")'),
            break_build=("src/main/java/example/Server.java", "",
                         'class Broken { int x = "e2e"; }'),
            build_error="incompatible types: java.lang.String cannot be converted to int",
            comment="//"),
    Example(name="ruby-hello", app="rubyhello", stack="ruby",
            test_passed=r"\| \d+ passed, 0 failed", started="ruby-hello v{v} instance ",
            source="config.ru",
            break_test=("test/integration.rb",
                        '{ name: "health", path: "/health", status: 200, body: "ok" }',
                        '{ name: "health", path: "/health", status: 200, body: "not-ok-e2e" }'),
            break_build=("Gemfile", "", 'gem "paas-e2e-no-such-gem"'),
            build_error="Could not find gem 'paas-e2e-no-such-gem'"),
]
STACKS = sorted({ex.stack for ex in EXAMPLES})


@pytest.fixture(scope="module", autouse=True)
def stack_images() -> Iterator[None]:
    """The examples' stacks' images, made once per machine (minutes, cold); the build stages
    this module's pushes leave are removed when it ends."""
    client = docker.from_env()
    for name in STACKS:
        stackimages.ensure_images(stacks.get_stack(name), docker_client=client)
    yield
    remove_build_stages(client.api, STACKS)
    client.close()


def cli(e2e, tmp: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**GIT_ENV, "PAAS_URL": e2e.cluster.controller_url,
           "PAAS_TOKEN": e2e.cluster.admin_token(), "PAAS_HOME": str(tmp / "paas-home")}
    return subprocess.run([PAAS, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=CLI_TIMEOUT_S, check=False)


def body(e2e, app: str) -> str:
    return e2e.get_via_router(app)[1]


def serving(e2e, app: str, version: int) -> bool:
    return body(e2e, app).startswith(f"hello from v{version} ")


def live(e2e, app: str) -> list[dict]:
    return [i for i in e2e.api.get(f"/v1/apps/{app}/instances")["instances"]
            if i["role"] == "live" and i["desired"] == "running"]


def edit(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` in the file; an empty `old` appends `new` as a line."""
    text = path.read_text()
    if not old:
        path.write_text(text + new + "\n")
        return
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_from_push_to_rollback_and_broken_commits_are_rejected(e2e, tmp_path, ex):
    with created_app(e2e, ex.app) as app:
        repo = tmp_path / "src"
        shutil.copytree(REPO / "examples" / ex.name, repo)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=GIT_ENV)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", ex.name)
        url = git_url(e2e, app)

        # (a) git push: built on its stack, tested, deployed, served through the router.
        first = push(repo, url, "main")
        out = first.output
        assert first.code == 0, out
        assert f"remote:        stack: {ex.stack}" in out
        assert "remote:        Step 1/" in out  # the build's steps, live
        assert "remote: -----> stack" not in out  # the stack's images were made already
        # (b) the bundled integration test ran against the control instance: its own lines.
        assert "remote: -----> test" in out
        assert re.search(ex.test_passed, out), out
        wait_until(lambda: serving(e2e, app, 1), timeout=30, what=f"{app} v1 via the router")
        figure(ex, "first push", first.lines[-1][0], out)

        # (c) its start line in `paas logs`; a config var reaches `/`.
        wait_until(lambda: ex.started.format(v=1) in cli(e2e, tmp_path, "logs", app,
                                                         "--tail", "50").stdout,
                   timeout=30, interval=1.0, what=f"{app}'s start line in paas logs")
        done = cli(e2e, tmp_path, "config", app, "set", "GREETING=hello-from-e2e")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: serving(e2e, app, 2) and "hello-from-e2e" in body(e2e, app),
                   timeout=30, what="v2 with GREETING via the router")

        # (d) scale to 2, then roll back to v1 (no GREETING).
        done = cli(e2e, tmp_path, "scale", app, "web=2")
        assert done.returncode == 0, done.stderr
        assert len([i for i in live(e2e, app) if i["release"] == 2]) == 2
        done = cli(e2e, tmp_path, "rollback", app, "--version", "v1")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: serving(e2e, app, 1) and "hello-from-e2e" not in body(e2e, app),
                   timeout=30, what="v1 again after the rollback")
        assert len([i for i in live(e2e, app) if i["release"] == 1]) == 2

        latest = 1  # the rollback made v1 live; the broken commits below must leave it serving
        if ex.warm_push:  # a one-line change: a warm build (the dependency layer is reused)
            with (repo / ex.source).open("a") as handle:
                handle.write(f"{ex.comment} warm\n")
            git(repo, "commit", "-q", "-am", "a one-line change")
            warm = push(repo, url, "main")
            assert warm.code == 0, warm.output
            assert "remote: -----> summary: " + app + " v3 is live" in warm.output, warm.output
            latest = 3
            wait_until(lambda: serving(e2e, app, 3), timeout=30, what="v3 via the router")
            figure(ex, "warm push", warm.lines[-1][0], warm.output)

        # A commit whose integration test fails: exit 5, the test's own lines, the live
        # version serves on.
        file, old, new = ex.break_test
        edit(repo / file, old, new)
        git(repo, "commit", "-q", "-am", "a test that fails")
        bad = cli(e2e, tmp_path, "deploy", str(repo), "--app", app, "--from-head")
        assert bad.returncode == 5, bad.stderr
        assert "not-ok-e2e" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
        assert serving(e2e, app, latest)
        git(repo, "revert", "--no-edit", "HEAD")

        # A commit that does not build: exit 3, the build tool's own line, the
        # live version serves on.
        edit(repo / ex.break_build[0], *ex.break_build[1:])
        git(repo, "commit", "-q", "-am", "a build that fails")
        bad = cli(e2e, tmp_path, "deploy", str(repo), "--app", app, "--from-head")
        assert bad.returncode == 3, bad.stderr
        assert "--- the build log (last lines)" in bad.stderr
        assert ex.build_error in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
        assert serving(e2e, app, latest)
        assert [d["status"] for d in e2e.api.get(f"/v1/apps/{app}/deployments")
                ["deployments"]][-1] == "failed"


def figure(ex: Example, what: str, seconds: float, output: str) -> None:
    """Print a figure for the report (pytest -s shows it): the push's wall time and the
    build's own, as the hook reported it."""
    built = re.search(r"built \S+ as v\d+ in ([\d.]+)s", output)
    print(f"\nFIGURE {ex.name} {what}: push {seconds:.1f}s, build "
          f"{built.group(1) if built else '?'}s", flush=True)
