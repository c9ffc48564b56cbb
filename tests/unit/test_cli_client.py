"""Where the CLI finds its controller, and what a user sees when talking to it fails (issue 4):
precedence of flags, environment, `paas login` and the local cluster; the login file's mode;
one sentence and a hint (never a traceback) for an unreachable controller, a refused token, an
unknown app, an answer that is not JSON; `--json` output; `paas logs` streaming. The
controller here is a fake HTTP server on 127.0.0.1 with canned answers."""

from __future__ import annotations

import json
import os
import socket
import stat
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from paas.cli import main as cli
from paas.apiclient.client import ClientError, Target, load_login, resolve_target, save_login
from tests.fakehttp import serving

TOKEN = "good-token"


# --- where the controller is ----------------------------------------------------------------
def local_cluster(home: Path, url: str = "http://127.0.0.1:7070", token: str = "local") -> None:
    (home / "cluster" / "controller").mkdir(parents=True)
    (home / "cluster" / "cluster.json").write_text(json.dumps({"controller_url": url}))
    (home / "cluster" / "controller" / "admin.token").write_text(token + "\n")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"PAAS_HOME": str(home), **extra}


def test_flags_beat_environment_beat_login_beat_local_cluster(home):
    local_cluster(home)
    assert resolve_target(url=None, token=None, environ=env(home)) == \
        Target("http://127.0.0.1:7070", "local")
    save_login("http://ctl.example:7070", "saved", env(home))
    assert resolve_target(url=None, token=None, environ=env(home)) == \
        Target("http://ctl.example:7070", "saved")
    environ = env(home, PAAS_URL="http://other:1", PAAS_TOKEN="from-env")
    assert resolve_target(url=None, token=None, environ=environ) == \
        Target("http://other:1", "from-env")
    assert resolve_target(url="http://flag:2/", token="from-flag", environ=environ) == \
        Target("http://flag:2", "from-flag")


def test_a_saved_token_only_goes_to_the_url_it_was_saved_for(home):
    local_cluster(home)
    save_login("http://ctl.example:7070", "saved", env(home))
    assert resolve_target(url="ctl.example:7070", token=None, environ=env(home)).token == "saved"
    assert resolve_target(url="http://127.0.0.1:7070", token=None,
                          environ=env(home)).token == "local"
    with pytest.raises(ClientError) as exc:
        resolve_target(url="http://elsewhere:7070", token=None, environ=env(home))
    assert "no API token for http://elsewhere:7070" in exc.value.message
    assert "paas login" in exc.value.hint


def test_nothing_configured_says_how_to_configure(home):
    with pytest.raises(ClientError) as exc:
        resolve_target(url=None, token=None, environ=env(home))
    assert exc.value.message == "no controller to talk to"
    assert "paas up" in exc.value.hint and "PAAS_URL" in exc.value.hint


def test_login_file_is_private_even_when_it_existed(home):
    home.mkdir()
    path = home / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    save_login("http://ctl:1", "secret", env(home))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_login(env(home)) == {"url": "http://ctl:1", "token": "secret"}


def test_a_corrupt_login_file_is_ignored(home):
    home.mkdir()
    (home / "config.json").write_text("not json")
    assert load_login(env(home)) == {}


# --- a fake controller --------------------------------------------------------------------
Route = Callable[[BaseHTTPRequestHandler], None]


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class Fake:
    """Routes `GET path?query` (exact path, query ignored) to handlers; records requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return send_json(self, 401, {"error": "the token is not valid"})
                route = fake.routes.get(self.path.split("?")[0])
                if route is None:
                    return send_json(self, 404, {"error": f"no such route: GET {self.path}"})
                route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake(home, monkeypatch) -> Iterator[Fake]:
    monkeypatch.setenv("PAAS_HOME", str(home))
    monkeypatch.delenv("PAAS_URL", raising=False)
    monkeypatch.delenv("PAAS_TOKEN", raising=False)
    server = Fake()
    with serving(server.server):
        yield server


def run(fake: Fake, *argv: str, token: str = TOKEN) -> int:
    return cli.main([*argv, "--url", fake.url, "--token", token])


def one_sentence(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("paas: ") and len(lines) <= 2, stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), stderr
    assert "Traceback" not in stderr


def test_json_output_is_only_json(fake, capsys):
    apps = [{"name": "hello", "latest_release": 2, "stable_release": 1,
             "urls": ["http://hello.localhost/"]}]
    fake.routes["/v1/apps"] = lambda h: send_json(h, 200, {"apps": apps})
    assert run(fake, "apps", "--json") == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == apps
    assert run(fake, "apps") == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].split() == ["NAME", "RELEASE", "STABLE", "URLS"]
    assert out.splitlines()[1].split() == ["hello", "v2", "v1", "http://hello.localhost/"]


def test_refused_token(fake, capsys):
    assert run(fake, "nodes", token="wrong") == 1
    err = capsys.readouterr().err
    one_sentence(err)
    assert "refused the token" in err and "--token" in err


def test_unknown_app(fake, capsys):
    fake.routes["/v1/apps/nope/instances"] = lambda h: send_json(h, 404, {
        "error": "app 'nope' does not exist; create it with 'paas apps create nope'"})
    assert run(fake, "ps", "nope") == 1
    err = capsys.readouterr().err
    one_sentence(err)
    assert "paas: app 'nope' does not exist" in err and "paas apps create nope" in err


def test_unreachable_controller(fake, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["nodes", "--url", f"http://127.0.0.1:{port}", "--token", "t"]) == 1
    err = capsys.readouterr().err
    one_sentence(err)
    assert f"cannot reach the controller at http://127.0.0.1:{port}" in err


def test_an_answer_that_is_not_json(fake, capsys):
    def html(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "6")
        h.end_headers()
        h.wfile.write(b"<html>")

    fake.routes["/v1/nodes"] = html
    assert run(fake, "nodes") == 1
    one_sentence(capsys.readouterr().err)


def test_login_saves_a_checked_token(fake, home, capsys):
    fake.routes["/v1/apps"] = lambda h: send_json(h, 200, {"apps": []})
    assert cli.main(["login", fake.url, "--token", "wrong"]) == 1
    assert not (home / "config.json").exists()
    capsys.readouterr()
    assert cli.main(["login", fake.url, "--token", TOKEN, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["url"] == fake.url
    assert cli.main(["apps", "--json"]) == 0, "the saved controller is used"
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["logout"]) == 0
    assert not (home / "config.json").exists()


def stream(lines: list[str]) -> Route:
    def handler(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for line in lines:
            data = (line + "\n").encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
    return handler


def test_logs_stream_lines_and_send_since_in_seconds(fake, capsys):
    lines = ["hello-v1-web-aaaaaa | listening on port 5000", "hello-v1-web-bbbbbb | GET /"]
    fake.routes["/v1/apps/hello/logs"] = stream(lines)
    assert run(fake, "logs", "hello", "-f", "--since", "2m") == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert fake.requests[-1] == "/v1/apps/hello/logs?follow=1&since=120"
    assert run(fake, "logs", "hello", "--json") == 0
    assert json.loads(capsys.readouterr().out)[1] == {"instance": "hello-v1-web-bbbbbb",
                                                     "line": "GET /"}


def test_logs_from_a_controller_without_the_endpoint(fake, capsys):
    assert run(fake, "logs", "hello") == 1
    err = capsys.readouterr().err
    one_sentence(err)
    assert "does not stream logs" in err


def test_git_remote_is_derived_when_the_controller_has_no_git_route(fake, capsys):
    fake.routes["/v1/apps/hello"] = lambda h: send_json(h, 200, {"app": {"name": "hello"}})
    assert run(fake, "git-remote", "hello", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["url"] == f"{fake.url}/git/hello.git"
    assert TOKEN not in json.dumps(result)
