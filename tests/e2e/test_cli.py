"""Issue 4, the `paas` command end to end: run as a subprocess against the e2e cluster, as a
user or a CI pipeline would. Deploys print their phases and a summary; a failing integration
test exits with the test phase's code and prints its output; `--json` is JSON; `--help` works
for every verb; `logs -f` shows a fresh line (how soon: bench/reactions); errors are one
sentence."""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from paas.cli import main as cli
from paas.cli.common import EXIT_BUILD, EXIT_TEST
from paas.apiclient.client import ClientError
from tests.e2e.conftest import REPO, app_dir, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAILING_TEST = ("#!/bin/sh\necho \"checking $PAAS_TARGET_URL\"\n"
                "echo 'FAIL: greeting missing' >&2\nexit 3\n")


def verbs() -> list[str]:
    for action in cli.build_parser()._actions:  # argparse has no public list of subcommands
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("paas has no verbs")


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PAAS_URL", "PAAS_TOKEN")}
    env["PAAS_HOME"] = str(home)  # no saved login, no local cluster: only the flags count
    return env


class Paas:
    """`python -m paas.cli ...` against the e2e cluster."""

    def __init__(self, e2e, home: Path) -> None:
        self.url, self.token = e2e.cluster.controller_url, e2e.cluster.admin_token()
        self.env = environment(home)

    def argv(self, *args: str, url: str | None = None, token: str | None = None) -> list[str]:
        return [sys.executable, "-m", "paas.cli", *args, "--url", url or self.url,
                "--token", token or self.token]

    def __call__(self, *args: str, url: str | None = None, token: str | None = None,
                 timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, url=url, token=token), capture_output=True,
                              text=True, timeout=timeout, cwd=cwd, env=self.env, check=False)

    def json(self, *args: str) -> object:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def paas(e2e, tmp_path) -> Paas:
    wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) == 2, what="2 ready nodes")
    return Paas(e2e, tmp_path / "home")


def delete_app(e2e, app: str) -> None:
    try:
        e2e.api.delete(f"/v1/apps/{app}")
    except ClientError as exc:
        assert exc.status == 404, exc.message


@pytest.fixture
def new_app(e2e) -> Iterator[str]:
    name = f"cli{secrets.token_hex(3)}"
    yield name
    delete_app(e2e, name)


@pytest.fixture(scope="module")
def deployed(e2e, tmp_path_factory) -> Iterator[tuple[str, subprocess.CompletedProcess[str]]]:
    """examples/hello deployed once through the CLI with 2 replicas, shared by the tests
    that only read."""
    name = f"cli{secrets.token_hex(3)}"
    paas = Paas(e2e, tmp_path_factory.mktemp("home"))
    wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) == 2, what="2 ready nodes")
    try:
        yield name, paas("deploy", "examples/hello", "--app", name, "--replicas", "2")
    finally:
        delete_app(e2e, name)


# --- deploy -------------------------------------------------------------------------------
def test_deploy_prints_each_phase_and_a_summary(e2e, deployed):
    app, done = deployed
    assert done.returncode == 0, done.stderr
    err = done.stderr
    order = ["==> app", "==> assemble", "==> package", "==> publish", "==> deploy",
             "==> control", "==> test", "==> rollout", "==> finish"]
    positions = [err.index(header) for header in order]
    assert positions == sorted(positions), err
    assert "started control instance" in err and "healthy after" in err
    assert "| PASS:" in err, "the test's output lines"
    assert err.count("started live instance") == 2
    assert " on node-" in err
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1, done.stdout
    assert summary[0].startswith(f"deployed {app} v1 in ") and "2 web on node-" in summary[0]
    wait_until(lambda: e2e.get_via_router(app)[0] == 200, what="the app answers")


def test_failing_integration_test_exits_with_the_test_code(e2e, paas, new_app, tmp_path):
    done = paas("deploy", str(app_dir(tmp_path, test_sh=FAILING_TEST)), "--app", new_app)
    assert done.returncode == EXIT_TEST, done.stderr
    assert "FAIL: greeting missing" in done.stderr, "the test's output is printed"
    assert f"paas: deploy of {new_app} v1 failed at test: the integration test exited with " \
           "code 3" in done.stderr
    assert done.stdout == ""
    wait_until(lambda: e2e.containers(app=new_app) == [], what="no container left")
    again = paas("deploy", "--app", new_app, "--version", "v1", "--json")
    assert again.returncode == EXIT_TEST
    failed = json.loads(again.stdout)
    assert failed["exit_code"] == EXIT_TEST and failed["deployment"]["step"] == "test"


def test_failed_build_exits_3_with_the_build_log(paas, new_app, tmp_path):
    directory = app_dir(tmp_path)
    (directory / "Dockerfile").write_text("FROM paas/busybox:latest\n"
                                          "RUN echo 'compiling the app' && exit 7\n")
    assert paas("apps", "create", new_app).returncode == 0
    done = paas("package", str(directory), "--app", new_app)
    assert done.returncode == EXIT_BUILD, done.stderr
    assert "compiling the app" in done.stderr, "the build log's tail"
    assert f"paas: the build of {new_app} failed" in done.stderr


def test_git_remote_add_sets_the_remote_without_the_token(paas, deployed, tmp_path):
    app, _ = deployed
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for _ in range(2):  # the second time, set-url
        done = paas("git-remote", app, "--add", cwd=repo)
        assert done.returncode == 0, done.stderr
    url = subprocess.run(["git", "-C", str(repo), "remote", "get-url", "paas"], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert url == f"{paas.url}/git/{app}.git" == done.stdout.splitlines()[0]
    assert paas.token not in done.stdout + done.stderr + url


# --- machine output -----------------------------------------------------------------------
def test_json_output_parses(paas, deployed):
    app, done = deployed
    assert done.returncode == 0, done.stderr
    assert app in [a["name"] for a in paas.json("apps")]
    assert {n["status"] for n in paas.json("nodes")} == {"ready"}
    instances = paas.json("ps", app)
    assert len([i for i in instances if i["role"] == "live"]) == 2
    assert [r["name"] for r in paas.json("releases", app)] == ["v1"]
    # Deployment ids count across the cluster's apps: take this app's first one.
    first = paas.json("events", app)[0]["deployment_id"]
    events = paas.json("events", app, "--deployment", str(first))
    assert {e["step"] for e in events} >= {"control", "test", "rollout", "finish"}
    assert paas.json("git-remote", app)["url"].endswith(f"/git/{app}.git")


def test_every_verb_answers_help(paas):
    for verb in verbs():
        done = subprocess.run([sys.executable, "-m", "paas.cli", verb, "--help"],
                              capture_output=True, text=True, cwd=REPO, env=paas.env,
                              timeout=30, check=False)
        assert done.returncode == 0, (verb, done.stderr)
        assert done.stdout.startswith(f"usage: paas {verb}"), verb


# --- logs ---------------------------------------------------------------------------------
def lines_of(proc: subprocess.Popen[str]) -> "queue.Queue[str]":
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: "queue.Queue[str]", needle: str, deadline: float) -> str:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line with {needle!r} in time")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if needle in line:
            return line


def test_logs_follow_shows_a_new_line(e2e, paas, deployed):
    app, done = deployed
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(paas.argv("logs", app, "-f"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=paas.env)
    try:
        lines = lines_of(proc)
        wait_for_line(lines, "listening on port", time.monotonic() + 20)  # the tail: connected
        container = e2e.containers(app=app, role="live")[0]
        marker = f"marker-{secrets.token_hex(4)}"
        subprocess.run(["docker", "exec", container, "sh", "-c", f"echo {marker} > /proc/1/fd/1"],
                       check=True, timeout=20)
        line = wait_for_line(lines, marker, time.monotonic() + 30)
        assert line.split(" | ")[0].startswith(f"{app}-v1-web-"), line
        assert line.endswith(f" | {marker}"), line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- errors -------------------------------------------------------------------------------
def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("paas: "), done.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), done.stderr
    return lines[0]


def test_errors_are_one_sentence(paas, e2e):
    closed = e2e.cluster.controller_url.rsplit(":", 1)[0] + ":9"
    assert "cannot reach the controller" in one_sentence(paas("apps", url=closed))
    assert "refused the token" in one_sentence(paas("nodes", token="not-the-token"))
    assert "does not exist" in one_sentence(paas("ps", "no-such-app"))
    assert "does not exist" in one_sentence(paas("publish", "--app", "no-such-app"))
    assert "invalid app name" in one_sentence(paas("releases", "Not_An_App"))
