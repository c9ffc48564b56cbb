"""paas.builder.appconfig: what an app without paas.toml gets (a TCP health check on $PORT,
Heroku's rule), and the health path's rules."""

from __future__ import annotations

import pytest

from paas.builder.appconfig import BadAppConfig, parse_app_config


@pytest.mark.parametrize("toml,path", [
    (None, None),  # a newcomer's app: healthy once it accepts connections on $PORT
    ("", None),
    ("[deploy]\nmax_parallel = 2\n", None),
    ('[health]\npath = "/health"\n', "/health"),
    ('[health]\npath = "/up?full=1"\n', "refused"),
    ('[health]\npath = 5\n', "refused"),
])
def test_without_a_health_path_the_check_is_a_tcp_connection(toml: str | None,
                                                             path: str | None) -> None:
    if path == "refused":
        with pytest.raises(BadAppConfig, match="health.path must be an absolute URL path"):
            parse_app_config(procfile=None, toml_text=toml)
        return
    config = parse_app_config(procfile=None, toml_text=toml)
    assert config.health.path == path
    assert config.processes == {"web": None}  # no Procfile: the stack's default web command


@pytest.mark.parametrize("toml, path", [
    (None, None),  # not scraped
    ('[metrics]\npath = "/metrics"\n', "/metrics"),
    ('[metrics]\npath = "/internal/prom"\n', "/internal/prom"),
    ('[metrics]\npath = "metrics"\n', "refused"),
    ('[metrics]\npath = ["/metrics"]\n', "refused"),
    ('metrics = "/metrics"\n', "table"),
])
def test_a_metrics_path_makes_the_instances_scraped(toml: str | None, path: str | None) -> None:
    if path in ("refused", "table"):
        match = "metrics.path must be an absolute" if path == "refused" else "must be a table"
        with pytest.raises(BadAppConfig, match=match):
            parse_app_config(procfile=None, toml_text=toml)
        return
    assert parse_app_config(procfile=None, toml_text=toml).metrics_path == path
