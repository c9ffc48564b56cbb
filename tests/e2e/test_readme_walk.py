"""README's "Deploy your own app", run as it is written: its shell blocks, in order, in one
shell, from an empty folder, against the end-to-end cluster. Only what differs from the demo
cluster is given from outside: the `paas` on PATH, the controller (PAAS_URL, PAAS_TOKEN), the
router's address in place of the demo's 127.0.0.1:8080, and git's password prompt answered with
the token (GIT_ASKPASS), as a newcomer would type it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from paas.apiclient.client import ClientError
from tests.e2e.conftest import REPO
from tests.e2e.test_git_push import GIT_ENV

pytestmark = [pytest.mark.docker, pytest.mark.slow]
APP = "hello-flask"


def walk_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploy your own app", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_walk_has_the_steps_a_newcomer_takes() -> None:
    blocks = walk_blocks()
    assert len(blocks) == 3
    first = blocks[0]
    for step in ("git init", "paas apps create", "paas git-remote", "git push paas main"):
        assert step in first, step
    assert "paas logs" in blocks[1] and "paas.toml" in blocks[2]


def test_readme_walk_runs_as_written(e2e, tmp_path: Path) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho {e2e.cluster.admin_token()}\n")
    askpass.chmod(0o700)
    env = {**GIT_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PAAS_URL": e2e.cluster.controller_url, "PAAS_TOKEN": e2e.cluster.admin_token(),
           "PAAS_HOME": str(tmp_path / "home"), "GIT_ASKPASS": str(askpass),
           "GIT_AUTHOR_NAME": "newcomer", "GIT_AUTHOR_EMAIL": "newcomer@paas.invalid",
           "GIT_COMMITTER_NAME": "newcomer", "GIT_COMMITTER_EMAIL": "newcomer@paas.invalid"}
    outputs = []
    cwd = tmp_path
    try:
        for n, block in enumerate(walk_blocks(), 1):
            script = block.replace("http://127.0.0.1:8080", e2e.cluster.router_url)
            code, output, cwd = run_block(script, cwd, env, tmp_path / "where")
            assert code == 0, f"block {n}:\n{output}"
            outputs.append(output)
        push, served, second = outputs
        assert "health check: it must accept connections on $PORT" in push, push
        assert f"{APP} v1 is live" in push, push
        assert "Hello from my first app!" in served, served
        assert "gunicorn serves app:app" in served, served
        assert "PASS: / and /health answer" in second, second
        assert "health check: GET /health must answer 2xx" in second, second
        assert f"{APP} v2 is live" in second, second
    finally:
        try:
            e2e.api.delete(f"/v1/apps/{APP}")
        except ClientError:
            pass


def run_block(script: str, cwd: Path, env: dict[str, str],
              where: Path) -> tuple[int, str, Path]:
    """Run one block with bash -e where the one before left the shell; its exit status, its
    output, and the folder it left the shell in (block 1 cds into the app)."""
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{script}\npwd > {where}"],
                          cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600, check=False)
    return proc.returncode, proc.stdout, Path(where.read_text().strip()) if where.exists() \
        else cwd
