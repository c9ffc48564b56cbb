"""Issue 4, end to end: `git push` to the controller's smart HTTP endpoint builds and deploys
the pushed commit through the whole flow, with every phase reaching the pusher live as
`remote:` lines; a push whose integration test fails is rejected while the old release keeps
serving; other branches are accepted without deploying; a wrong token is refused."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from paas.apiclient.client import ClientError
from tests.e2e.conftest import REPO, Hammer, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAILING_TEST = "#!/bin/sh\necho \"checking $PAAS_TARGET_URL\"\necho 'FAIL: greeting missing' >&2\nexit 3\n"
# Isolated from whatever git configuration the machine has (credential helpers, ...).
GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
IDENTITY = ["-c", "user.email=e2e@paas.invalid", "-c", "user.name=e2e"]


@dataclass
class Push:
    code: int
    lines: list[tuple[float, str]]  # (seconds since the push began, line)

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def at(self, text: str) -> float:
        """When the first line containing `text` arrived."""
        return next(t for t, line in self.lines if text in line)


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *IDENTITY, *args], capture_output=True,
                          text=True, env=GIT_ENV, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def push(repo: Path, url: str, refspec: str, *options: str) -> Push:
    """`git push <options> <url> <refspec>`, its output read as it comes, each line timed."""
    started = time.monotonic()
    proc = subprocess.Popen(["git", "-C", str(repo), "push", *options, url, refspec],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=GIT_ENV)
    assert proc.stdout is not None
    lines: list[tuple[float, str]] = []
    pending = b""
    while chunk := os.read(proc.stdout.fileno(), 4096):
        now = time.monotonic() - started
        *complete, pending = re.split(rb"[\r\n]", pending + chunk)
        lines += [(now, raw.decode(errors="replace").rstrip()) for raw in complete if raw.strip()]
    if pending.strip():
        lines.append((time.monotonic() - started, pending.decode(errors="replace").rstrip()))
    return Push(code=proc.wait(timeout=60), lines=lines)


def make_repo(tmp: Path, name: str = "src") -> tuple[Path, str]:
    """A git repository of examples/hello on `main`, and its commit."""
    repo = tmp / name
    shutil.copytree(REPO / "examples" / "hello", repo)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=GIT_ENV)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hello")
    return repo, git(repo, "rev-parse", "HEAD")


def git_url(e2e, app: str, token: str | None = None) -> str:
    netloc = urlsplit(e2e.cluster.controller_url).netloc
    return f"http://x:{token or e2e.cluster.admin_token()}@{netloc}/git/{app}.git"


@contextlib.contextmanager
def created_app(e2e, name: str) -> Iterator[str]:
    wait_until(lambda: len([n for n in e2e.api.get("/v1/nodes")["nodes"]
                            if n["status"] == "ready"]) >= 2, what="2 ready nodes")
    e2e.api.post("/v1/apps", {"name": name})
    try:
        yield name
    finally:
        with contextlib.suppress(ClientError):
            e2e.api.delete(f"/v1/apps/{name}")


def releases(e2e, app: str) -> list[dict[str, Any]]:
    return e2e.api.get(f"/v1/apps/{app}/releases")["releases"]


def deployments(e2e, app: str) -> list[dict[str, Any]]:
    return e2e.api.get(f"/v1/apps/{app}/deployments")["deployments"]


def raw(e2e, method: str, path: str, *, data: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(e2e.cluster.controller_url + path, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"x:{token}".encode()).decode()}


def test_push_deploys_then_the_same_commit_reuses_its_release_and_force_rebuilds(e2e, tmp_path):
    with created_app(e2e, "gpush") as app:
        repo, sha = make_repo(tmp_path)
        url = git_url(e2e, app)

        first = push(repo, url, "main")
        assert first.code == 0, first.output
        for phase in ("assemble", "build", "deploy", "control", "test", "rollout", "finish",
                      "summary"):
            assert f"remote: -----> {phase}" in first.output, (phase, first.output)
        assert "remote:        | PASS: / and /health answer" in first.output
        # The app's first URL: HTTPS, with the certificate the cluster's CA issued it.
        assert f"remote: -----> summary: {app} v1 is live at https://{app}.localhost:8443/" \
            in first.output
        # Live, not buffered: the first phase reached the pusher long before the summary.
        assert first.at("-----> summary") - first.at("-----> assemble") > 2.0, first.lines
        assert [(r["version"], r["source"]) for r in releases(e2e, app)] == [(1, f"git:{sha}")]
        wait_until(lambda: e2e.get_via_router(app)[1].startswith("hello from v1 "),
                   what="v1 answering through the router")

        # The same commit again (after deleting the branch, so that git sends it): no build.
        deleted = push(repo, url, ":main")
        assert deleted.code == 0 and "refs/heads/main deleted: nothing deployed" \
            in deleted.output, deleted.output
        count = len(deployments(e2e, app))
        again = push(repo, url, "main")
        assert again.code == 0, again.output
        assert "v1 was already built from" in again.output and "no new release" in again.output
        assert f"summary: {app} v1 is already live: nothing to deploy" in again.output
        assert [r["version"] for r in releases(e2e, app)] == [1]
        assert len(deployments(e2e, app)) == count

        # `git push -o force`: a new release of the same commit, deployed.
        assert push(repo, url, ":main").code == 0
        forced = push(repo, url, "main", "-o", "force")
        assert forced.code == 0, forced.output
        assert "remote: -----> build: a new release" in forced.output
        assert f"summary: {app} v2 is live" in forced.output
        assert [(r["version"], r["source"]) for r in releases(e2e, app)] == \
            [(1, f"git:{sha}"), (2, f"git:{sha}")]
        wait_until(lambda: e2e.get_via_router(app)[1].startswith("hello from v2 "),
                   what="v2 answering through the router")


def test_push_whose_test_fails_is_rejected_and_the_old_release_keeps_serving(e2e, tmp_path):
    with created_app(e2e, "gfail") as app:
        repo, good = make_repo(tmp_path)
        url = git_url(e2e, app)
        assert push(repo, url, "main").code == 0
        wait_until(lambda: e2e.get_via_router(app)[1].startswith("hello from v1 "),
                   what="v1 answering")

        (repo / "test.sh").write_text(FAILING_TEST)
        git(repo, "commit", "-q", "-am", "a test that fails")
        with Hammer(e2e, app) as hammer:
            bad = push(repo, url, "main")
        assert bad.code != 0, bad.output
        out = bad.output
        assert "remote: -----> test" in out
        assert "failed at test: the integration test exited with code 3" in out
        assert "remote:        | FAIL: greeting missing" in out  # the failing test's output
        assert "push rejected" in out and "pre-receive hook declined" in out
        assert "Traceback" not in out
        # The ref did not move, and every request during the attempt got the old release.
        assert git(repo, "ls-remote", url, "refs/heads/main").split()[0] == good
        assert sum(hammer.statuses.values()) > 20
        assert set(hammer.statuses) == {200}, hammer.statuses
        assert set(hammer.bodies) == {"hello from v1"}, hammer.bodies
        failed = deployments(e2e, app)[-1]
        assert failed["release"] == 2 and failed["status"] == "failed" \
            and failed["step"] == "test"


def test_push_whose_build_fails_is_rejected_with_the_build_log(e2e, tmp_path):
    with created_app(e2e, "gbuild") as app:
        repo, _ = make_repo(tmp_path)
        # Fails at the first step after FROM, so the build leaves no layer behind.
        (repo / "Dockerfile").write_text("FROM paas/busybox:latest\n"
                                         "RUN echo 'error: missing semicolon' && exit 7\n")
        git(repo, "commit", "-q", "-am", "a broken build")
        failed = push(repo, git_url(e2e, app), "main")
        assert failed.code != 0, failed.output
        assert "remote: -----> summary: the build failed: the Dockerfile failed to build" \
            in failed.output
        assert "remote:        tail of the build log:" in failed.output
        assert "remote:        | error: missing semicolon" in failed.output
        assert "pre-receive hook declined" in failed.output
        assert releases(e2e, app) == [] and deployments(e2e, app) == []


def test_other_branches_and_a_configured_branch_are_accepted_without_deploying(e2e, tmp_path):
    with created_app(e2e, "gbranch") as app:
        repo, sha = make_repo(tmp_path)
        url = git_url(e2e, app)
        feature = push(repo, url, "main:feature")
        assert feature.code == 0, feature.output
        assert "refs/heads/feature: not the deploy branch (main or master): accepted without " \
               "deploying" in feature.output

        api_git = e2e.api.get(f"/v1/apps/{app}/git")
        assert api_git == {"url": f"{e2e.cluster.controller_url}/git/{app}.git", "branch": None}
        set_to = e2e.api.request("PUT", f"/v1/apps/{app}/git", json_body={"branch": "production"})
        assert set_to["branch"] == "production"
        assert e2e.api.get(f"/v1/apps/{app}/git")["branch"] == "production"
        with pytest.raises(ClientError) as exc:
            e2e.api.request("PUT", f"/v1/apps/{app}/git", json_body={"branch": "a..b"})
        assert exc.value.status == 400

        main = push(repo, url, "main")
        assert main.code == 0, main.output
        assert "refs/heads/main: not the deploy branch (production)" in main.output
        assert releases(e2e, app) == [] and deployments(e2e, app) == []

        # The repository serves fetches too, gzip-compressed request bodies included.
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "-b", "feature", url, str(clone)], check=True,
                       env=GIT_ENV, timeout=60)
        assert (clone / "test.sh").read_text() == (repo / "test.sh").read_text()
        want = f"0032want {sha}\n".encode() + b"0000" + b"0009done\n"
        status, headers, body = raw(e2e, "POST", f"/git/{app}.git/git-upload-pack",
                                    data=gzip.compress(want), headers={
                                        **basic(e2e.cluster.admin_token()),
                                        "Content-Type": "application/x-git-upload-pack-request",
                                        "Content-Encoding": "gzip"})
        assert status == 200 and body.startswith(b"0008NAK\nPACK"), (status, body[:60])

    # A new app of the same name starts with a new, empty repository and the default branch.
    with created_app(e2e, "gbranch") as app:
        assert git(repo, "ls-remote", url) == ""
        assert e2e.api.get(f"/v1/apps/{app}/git")["branch"] is None


def test_git_refuses_wrong_tokens_and_unknown_apps(e2e, tmp_path):
    with created_app(e2e, "gauth") as app:
        repo, _ = make_repo(tmp_path)
        wrong = push(repo, git_url(e2e, app, token="not-the-token"), "main")
        assert wrong.code != 0 and "Authentication failed" in wrong.output, wrong.output
        join = push(repo, git_url(e2e, app, token=e2e.cluster.join_token()), "main")
        assert join.code != 0 and "403" in join.output, join.output
        assert releases(e2e, app) == []

        # git sends its credentials only after this challenge.
        status, headers, _ = raw(e2e, "GET", f"/git/{app}.git/info/refs?service=git-receive-pack")
        assert status == 401 and headers.get("WWW-Authenticate") == 'Basic realm="paas"'

        token = e2e.cluster.admin_token()
        status, _, body = raw(e2e, "GET", "/git/nosuchapp.git/info/refs?service=git-upload-pack",
                              headers=basic(token))
        assert status == 404 and "does not exist" in json.loads(body)["error"]
        status, _, body = raw(e2e, "GET", "/git/Bad_Name.git/info/refs?service=git-upload-pack",
                              headers=basic(token))
        assert status == 400 and "invalid app name" in json.loads(body)["error"]
        status, _, body = raw(e2e, "GET", f"/git/{app}.git/info/refs", headers=basic(token))
        assert status == 400 and "smart HTTP" in json.loads(body)["error"]
