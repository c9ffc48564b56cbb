"""A non-editable install works away from the repository (issue 8): `pip install .` into a
fresh virtualenv, run from another directory, finds its templates as package data, builds an
app from a Procfile on the Docker engine, renders the router's HAProxy configuration and the
`paas init` files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SKIPPED = {".git", ".venv", ".local", ".pytest_cache", "__pycache__"}


def ignored(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone would not have: caches, environments, setuptools' own output."""
    top = Path(folder) == REPO
    return {n for n in names if n in SKIPPED or n.endswith(".egg-info")
            or (top and n in ("build", "var"))}

# Runs in the fresh virtualenv, from a directory outside the repository.
PROBE = r"""
import json, sys
from pathlib import Path

import docker

import paas
from paas.builder.builder import build_image
from paas.builder.context import make_build_context
from paas.cli.local import render_init
from router.plan import plan_changes
from router.render import RenderOptions, render_config
from router.routes import AppRoute, Server

app_dir, tag = Path(sys.argv[1]), sys.argv[2]
table = {"hello": AppRoute(app="hello", hostnames=("hello.localhost",),
                           servers=(Server("127.0.0.2", 32768),))}
config = render_config(plan_changes({}, table, initial_slots=2).layout,
                       RenderOptions(listen_host="127.0.9.1", listen_port=18080,
                                     admin_socket=Path("/tmp/paas-pkg/admin.sock"), maxconn=100))
result = build_image(context=make_build_context(directory=app_dir), tag=tag,
                     docker_client=docker.from_env())
print(json.dumps({"package": paas.__file__, "haproxy": config,
                  "makefile": render_init("Makefile.j2", app="hello"),
                  "image_id": result.image_id}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv with this project installed, not editable."""
    root = tmp_path_factory.mktemp("pkg")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=ignored)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-c", str(REPO / "constraints.txt"), str(source)],
                   check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)  # nothing may still read from the copy it was installed from
    return venv / "bin" / "python"


def test_an_installed_package_builds_an_app_and_renders_the_router_config(
        installed: Path, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: busybox httpd -f -p $PORT\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tag = f"paas-pkgtest-{uuid.uuid4().hex[:8]}/hello:v1"
    try:
        done = subprocess.run([str(installed), "-c", PROBE, str(app), tag], cwd=elsewhere,
                              capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert Path(out["package"]).is_relative_to(installed.parent.parent)
        assert "bind 127.0.9.1:18080" in out["haproxy"]
        assert "backend app_hello" in out["haproxy"]
        assert "paas deploy" in out["makefile"]
        image = docker.from_env().images.get(tag)
        assert image.id == out["image_id"]
        assert image.attrs["Config"]["Cmd"][-1] == "busybox httpd -f -p $PORT"
    finally:
        try:
            docker.from_env().images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
