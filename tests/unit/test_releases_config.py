"""A config change is one transaction: the app's vars and the release that carries them are
written together or not at all (issue 8: the docstring promised it, the code used two)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paas.consul import ConsulClient
from paas.controller.engine import Engine
from paas.controller.metrics import Metrics
from paas.controller.releases import Releases
from paas.controller.settings import ControllerSettings
from paas.controller.store import Store


@pytest.fixture
def releases(tmp_path: Path) -> Releases:
    store = Store(tmp_path / "state.db")
    store.create_app("shop", ["shop.localhost"])
    return Releases(settings=ControllerSettings(data_dir=tmp_path), store=store,
                    engine=Engine(url="unix:///nonexistent"),
                    consul=ConsulClient("http://127.0.0.1:1"), metrics=Metrics())


def add_v1(store: Store) -> None:
    store.add_release(app="shop", version=1, image="paas/shop:v1", image_id="sha256:1",
                      source="src", config={}, processes={"web": None}, test_command=None,
                      health={}, policy={}, created_by="test")


async def test_without_a_release_only_the_vars_change(releases: Releases) -> None:
    assert await releases.with_config("shop", {"A": "1"}) is None
    assert releases.store.get_app("shop")["config"] == {"A": "1"}  # type: ignore[index]
    assert releases.store.list_releases("shop") == []


async def test_vars_and_their_release_are_written_together(releases: Releases) -> None:
    add_v1(releases.store)
    release = await releases.with_config("shop", {"A": "1"})
    assert release is not None and (release["version"], release["config"]) == (2, {"A": "1"})
    assert releases.store.get_app("shop")["config"] == {"A": "1"}  # type: ignore[index]


async def test_a_release_that_cannot_be_written_leaves_the_vars_unchanged(
        releases: Releases, monkeypatch: pytest.MonkeyPatch) -> None:
    add_v1(releases.store)
    real_get_app = releases.store.get_app

    def stale_number(name: str):  # another writer took the number: the insert is refused
        row = real_get_app(name)
        return row and {**row, "next_release": 1}

    monkeypatch.setattr(releases.store, "get_app", stale_number)
    with pytest.raises(RuntimeError):
        await releases.with_config("shop", {"A": "1"})
    assert real_get_app("shop")["config"] == {}  # type: ignore[index]
