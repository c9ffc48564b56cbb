"""router.layoutfile: the layout HAProxy runs, kept on disk for the next router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router import layoutfile
from router.plan import Backend
from router.routes import Server

LAYOUT = {
    "hello": Backend(app="hello", hostnames=("hello.localhost", "www.example.com"),
                     slots=(Server("127.0.0.2", 32768), None, Server("127.0.0.3", 32769), None)),
    "api": Backend(app="api", hostnames=("api.localhost",), slots=(None, None)),
}


def test_a_saved_layout_loads_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "layout.json"
    layoutfile.save(path, LAYOUT)
    assert layoutfile.load(path) == LAYOUT
    assert json.loads(path.read_text())["apps"]["hello"]["slots"] == [
        "127.0.0.2:32768", None, "127.0.0.3:32769", None]
    assert [p.name for p in tmp_path.iterdir()] == ["layout.json"]  # no temporary file left


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"apps": []}', '{"apps": {"Bad_Name": {"hostnames": [], "slots": [null]}}}',
    '{"apps": {"a": {"hostnames": ["x y"], "slots": [null]}}}',
    '{"apps": {"a": {"hostnames": ["a.localhost"], "slots": ["1.2.3.4"]}}}',
    '{"apps": {"a": {"hostnames": ["a.localhost"], "slots": ["nohost:80"]}}}',
    '{"apps": {"a": {"hostnames": ["a.localhost"], "slots": []}}}',
])
def test_a_file_that_does_not_parse_is_an_empty_layout(tmp_path: Path, text: str) -> None:
    path = tmp_path / "layout.json"
    path.write_text(text)
    assert layoutfile.load(path) == {}


def test_no_file_is_an_empty_layout(tmp_path: Path) -> None:
    assert layoutfile.load(tmp_path / "missing.json") == {}
