"""The controller's data directory is private from the first start (issue 8): the directory
0700, `state.db` and its `-wal` and `-shm` files 0600, whatever the umask; a directory and
database left readable by an older controller are tightened (paas/controller/store.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from paas.controller.migrations import StoreRefused
from paas.controller.server import make_app
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store, private_data_dir
from paas.controller.tokens import load_tokens


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, so only the code's own modes can make files private."""
    old = os.umask(0)
    yield
    os.umask(old)


async def test_first_start_of_the_controller_makes_everything_private(
        tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "var" / "controller"
    client = TestClient(TestServer(make_app(ControllerSettings(
        data_dir=data, consul_url="http://127.0.0.1:1"))))
    await client.start_server()
    try:
        token = (data / "admin.token").read_text().strip()
        resp = await client.post("/v1/apps", json={"name": "hello"},
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 201
        files = {p.name: mode(p) for p in data.iterdir()}
    finally:
        await client.close()
    assert mode(data) == 0o700
    assert files == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600,
                     "admin.token": 0o600, "join.token": 0o600}


def test_the_store_alone_makes_its_directory_and_files_private(
        tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data"
    store = Store(data / "state.db")
    try:
        store.create_app("hello", ["hello.localhost"])
        assert mode(data) == 0o700
        assert {p.name: mode(p) for p in data.iterdir()} == {
            "state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
    finally:
        store.close()


def test_the_tokens_alone_make_the_directory_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data"
    load_tokens(data)
    assert mode(data) == 0o700


def test_an_older_controllers_readable_directory_and_database_are_tightened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    Store(data / "state.db").close()
    data.chmod(0o755)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (data / name).touch()
        (data / name).chmod(0o644)

    store = Store(data / "state.db")
    try:
        assert mode(data) == 0o700
        assert all(mode(data / name) == 0o600
                   for name in ("state.db", "state.db-wal", "state.db-shm"))
    finally:
        store.close()
    assert f"data directory {data} was mode 0755; now 0700" in caplog.text


def test_a_new_directory_is_0700_even_under_a_umask_that_takes_the_owners_bits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = os.umask(0o277)
    try:
        path = private_data_dir(tmp_path / "data")
    finally:
        os.umask(old)
    assert mode(path) == 0o700
    assert "was mode" not in caplog.text  # nothing to warn about on a first start


def test_a_data_directory_that_cannot_be_made_is_refused_in_one_sentence(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreRefused, match=r"^cannot make the data directory .*/file/data "
                                           r"private \(0700\): "):
        Store(tmp_path / "file" / "data" / "state.db")


def test_a_file_that_is_not_a_database_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not sqlite at all, " * 100)
    with pytest.raises(StoreRefused, match="^cannot open the controller's database .*: file is"
                                           " not a database$"):
        Store(path)
