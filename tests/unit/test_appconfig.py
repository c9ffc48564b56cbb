"""paas.builder.appconfig: what an app without paas.toml gets, and the health path's rules."""

from __future__ import annotations

import pytest

from paas.builder.appconfig import BadAppConfig, parse_app_config


@pytest.mark.parametrize("toml,path", [
    (None, "/"),  # a newcomer's app: its home page is what it answers
    ("", "/"),
    ("[deploy]\nmax_parallel = 2\n", "/"),
    ('[health]\npath = "/health"\n', "/health"),
    ('[health]\npath = "/up?full=1"\n', None),
])
def test_the_health_path_defaults_to_the_home_page(toml: str | None, path: str | None) -> None:
    if path is None:
        with pytest.raises(BadAppConfig, match="health.path must be an absolute URL path"):
            parse_app_config(procfile=None, toml_text=toml)
        return
    config = parse_app_config(procfile=None, toml_text=toml)
    assert config.health.path == path
    assert config.processes == {"web": None}  # no Procfile: the stack's default web command
