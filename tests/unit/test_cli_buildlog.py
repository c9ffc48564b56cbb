"""`paas package` follows the build's log (`POST .../releases?stream=1`, application/x-ndjson,
`paas.apiclient.buildlog`): a `stack` phase only when the stack's images are made, the package
phase's Step lines, and the outcome; an error in the stream is the same sentence and exit 3
as a plain 422. The controller is a fake HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from paas.cli import main as cli
from paas.apiclient.buildlog import PhaseLines
from tests.fakehttp import serving
from tests.unit.test_cli_client import send_json

RELEASE = {"version": 1, "name": "v1", "image": "paas/hello:v1", "stack": "go",
           "source": "upload:abc"}
STACK = [{"phase": "stack", "line": "making paas-stack/go-build:1 from Debian"},
         {"phase": "stack", "line": "made paas-stack/go-build:1 in 80.0s"}]
BUILD = [{"phase": "package", "line": "Step 1/2 : FROM paas-stack/go-build:1"},
         {"phase": "package", "line": " ---> 1234"},
         {"phase": "package", "line": "Step 2/2 : RUN go build"}]


class Controller:
    """GET the app and its releases; POST a build answered with `self.stream` as ndjson."""

    def __init__(self) -> None:
        self.stream: list[dict[str, Any]] = []
        self.posted: list[str] = []
        ctl = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.endswith("/releases"):
                    return send_json(self, 200, {"releases": []})
                send_json(self, 200, {"app": {"name": "hello", "urls": []}})

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                ctl.posted.append(self.path)
                raw = b"".join(json.dumps(o).encode() + b"\n" for o in ctl.stream)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Controller]:
    monkeypatch.setenv("PAAS_HOME", str(tmp_path / "home"))
    server = Controller()
    with serving(server.server):
        yield server


def package(ctl: Controller, tmp_path: Path) -> int:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "go.mod").write_text("module example.com/hello\n")
    return cli.main(["package", str(app), "--app", "hello", "--url", ctl.url, "--token", "t"])


def test_a_first_build_prints_the_stack_phase_then_the_package_steps(ctl, tmp_path, capsys):
    ctl.stream = [*STACK, *BUILD, {"release": RELEASE}]
    assert package(ctl, tmp_path) == 0
    assert ctl.posted == ["/v1/apps/hello/releases?stream=1"]
    err = capsys.readouterr().err.splitlines()
    start = next(i for i, line in enumerate(err) if line.startswith("==> stack"))
    assert err[start:start + 6] == [
        "==> stack    making the stack's images: first use only, cached after",
        "  making paas-stack/go-build:1 from Debian",
        "  made paas-stack/go-build:1 in 80.0s",
        "==> package  building hello",
        "  Step 1/2 : FROM paas-stack/go-build:1",
        "  Step 2/2 : RUN go build"]
    assert err[start + 6].startswith("  built paas/hello:v1 (release v1, stack go) in ")


def test_a_cached_stack_prints_no_stack_phase(ctl, tmp_path, capsys):
    ctl.stream = [*BUILD, {"release": RELEASE}]
    assert package(ctl, tmp_path) == 0
    err = capsys.readouterr().err
    assert "==> stack" not in err
    assert "==> package  building hello\n  Step 1/2 : FROM paas-stack/go-build:1\n" in err


def test_an_error_in_the_stream_exits_3_with_the_sentence_and_the_tail(ctl, tmp_path, capsys):
    ctl.stream = [*BUILD, {"error": "the Dockerfile generated for the go stack failed to build "
                                    "at step 2/2 (RUN go build): exit 1.", "status": 422,
                           "log_tail": "./main.go:3:18: cannot use \"e2e\" as int value"}]
    assert package(ctl, tmp_path) == 3
    err = capsys.readouterr().err
    assert "--- the build log (last lines)\n  ./main.go:3:18: cannot use \"e2e\" as int value" \
        in err
    assert "paas: the build of hello failed: the Dockerfile generated for the go stack failed " \
           "to build at step 2/2 (RUN go build): exit 1" in err
    assert "Traceback" not in err


def test_a_stream_without_an_outcome_is_one_sentence(ctl, tmp_path, capsys):
    ctl.stream = BUILD
    assert package(ctl, tmp_path) == 1
    assert "the build log ended without the build's outcome" in capsys.readouterr().err


@pytest.mark.parametrize(("lines", "shown"), [
    ([("package", "Step 1/1 : FROM x"), ("package", "noise")], ["detail Step 1/1 : FROM x"]),
    ([("stack", "a"), ("package", "noise"), ("package", "Step 1/1 : FROM x")],
     ["header stack", "detail a", "header package", "detail Step 1/1 : FROM x"]),
])
def test_phase_lines_without_announcing_the_package_phase(lines, shown):
    seen: list[str] = []
    printer = PhaseLines(header=lambda p: seen.append(f"header {p}"),
                         detail=lambda line: seen.append(f"detail {line}"),
                         announce_package=False)
    for phase, line in lines:
        printer(phase, line)
    assert seen == shown
