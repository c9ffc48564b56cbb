"""The controller's side of stacks (issue 9), without Docker: an unknown stack is a 404, and a
source no stack fits is refused before any build with the detection's sentence."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from paas.controller.server import make_app
from paas.controller.settings import ControllerSettings


def tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


async def test_stack_routes_and_detection_errors(tmp_path: Path) -> None:
    settings = ControllerSettings(data_dir=tmp_path / "data", consul_url="http://127.0.0.1:1")
    client = TestClient(TestServer(make_app(settings)))
    await client.start_server()
    try:
        token = (settings.data_dir / "admin.token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        resp = await client.post("/v1/stacks/cobol/build", headers=admin)
        assert resp.status == 404
        assert (await resp.json())["error"].startswith("there is no stack 'cobol'; use one of:")
        resp = await client.post("/v1/stacks/python/build?force=maybe", headers=admin)
        assert resp.status == 400

        assert (await client.post("/v1/apps", json={"name": "web"}, headers=admin)).status == 201
        for files, said in (
                ({"index.html": b"hi"}, "no Dockerfile, no paas.toml [build] stack, no manifest"
                                        " (requirements.txt, pyproject.toml"),
                ({"Procfile": b"web: x", "paas.toml": b'[build]\nstack = "cobol"\n'},
                 "paas.toml [build] stack names 'cobol', which is not a stack")):
            resp = await client.post("/v1/apps/web/releases", data=tar_gz(files),
                                     headers={**admin, "Content-Type": "application/gzip"})
            assert resp.status == 400
            assert said in (await resp.json())["error"]
        releases = await (await client.get("/v1/apps/web/releases", headers=admin)).json()
        assert releases["releases"] == []
    finally:
        await client.close()


def test_paas_stacks_table_says_not_built_or_sizes_and_age() -> None:
    import time

    from paas.cli.stacks import table_stacks

    def image(present: bool, current: bool = True) -> dict:
        return {"present": present, "current": current, "size_bytes": 238e6 if present else None,
                "created_at": time.time() - 7200 if present else None}
    rows = table_stacks([
        {"name": "python", "version": "1", "detect": ["requirements.txt", "pyproject.toml"],
         "images": [image(True), image(True, current=False)]},
        {"name": "go", "version": "1", "detect": ["go.mod"], "images": [image(True),
                                                                        image(False)]},
    ]).splitlines()
    assert rows[0].split() == ["NAME", "VERSION", "DETECT", "IMAGES", "(BUILD", "/", "RUN)",
                               "AGE"]
    assert rows[1].split() == ["python", "1", "requirements.txt", "pyproject.toml", "238",
                               "MB", "/", "238", "MB", "(stale:", "the", "folder", "changed)",
                               "2h"]
    assert rows[2].split() == ["go", "1", "go.mod", "not", "built", "-"]
