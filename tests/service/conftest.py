"""Fixtures for service tests: the controller in-process on a real SQLite file, with Consul
pointing at a closed port (route sync is best effort) and no Docker builds."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from paas.controller.server import make_app
from paas.controller.settings import ControllerSettings


@pytest.fixture
def settings(tmp_path: Path) -> ControllerSettings:
    return ControllerSettings(data_dir=tmp_path / "data", consul_url="http://127.0.0.1:1",
                              max_replicas=10)


@pytest.fixture
async def start_api(settings: ControllerSettings) -> AsyncIterator[Callable]:
    clients: list[TestClient] = []

    async def start(s: ControllerSettings = settings) -> TestClient:
        client = TestClient(TestServer(make_app(s)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


@pytest.fixture
async def api(start_api: Callable) -> TestClient:
    return await start_api()


@pytest.fixture
def admin(settings: ControllerSettings, api: TestClient) -> dict[str, str]:
    token = (settings.data_dir / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def join(settings: ControllerSettings, api: TestClient) -> dict[str, str]:
    token = (settings.data_dir / "join.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}
