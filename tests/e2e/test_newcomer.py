"""A newcomer's own app works the first time, and a broken one says why at once.

The apps are what a newcomer writes from a framework's first page, with no `paas.toml` and no
`Procfile`: Flask's quickstart (`app = Flask(__name__)` in app.py, `flask` in requirements.txt)
deploys with `paas deploy DIR --app NAME` and answers through the router (the python stack's
default start serves it with gunicorn; with no `[health] path` the check is a TCP connection
to `$PORT`, Heroku's rule, and the deploy says so). One that cannot import (its exit code and
how long it ran), one with nothing to serve, one that listens where the platform cannot reach
it (Flask's `app.run()`: 127.0.0.1:5000) and one whose configured health path answers 404 each
fail well before the 60 s health deadline, exit 4, with the sentence that says why, and the
app serves on."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import docker
import pytest

from paas.builder import stackimages, stacks
from paas.cli.common import EXIT_CONTROL
from tests.build_stages import remove_build_stages
from tests.e2e.test_stacks_e2e import cli
from tests.waiting import wait_until

pytestmark = pytest.mark.docker

QUICKSTART = '''from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello_world():
    return "<p>Hello, World!</p>"
'''


@pytest.fixture(scope="module", autouse=True)
def python_stack():
    client = docker.from_env()
    stackimages.ensure_images(stacks.get_stack("python"), docker_client=client)
    yield
    remove_build_stages(client.api, ["python"])
    client.close()


def app(tmp: Path, name: str, files: dict[str, str]) -> Path:
    folder = tmp / name
    folder.mkdir()
    for path, text in files.items():
        (folder / path).write_text(text)
    return folder


def test_flask_quickstart_deploys_without_paas_toml_and_broken_versions_say_why(
        e2e, tmp_path) -> None:
    name = "newcomer"
    first = cli(e2e, tmp_path, "deploy",
                str(app(tmp_path, "v1", {"app.py": QUICKSTART, "requirements.txt": "flask\n"})),
                "--app", name)
    assert first.returncode == 0, first.stderr
    assert "health check: it must accept connections on $PORT from outside its container" \
        in first.stderr, first.stderr
    assert e2e.get_via_router(name) == (200, "<p>Hello, World!</p>")
    logs = cli(e2e, tmp_path, "logs", name)
    assert "gunicorn serves app:app on port 5000" in logs.stdout, logs.stdout

    # It cannot import: the instance exits, and the deploy fails in seconds with the error.
    broken = QUICKSTART.replace("from flask import Flask\n",
                                "from flask import Flask\nimport flask_no_such_extension\n")
    started = time.monotonic()
    bad = cli(e2e, tmp_path, "deploy", str(app(tmp_path, "v2", {
        "app.py": broken, "requirements.txt": "flask\n"})), "--app", name)
    assert bad.returncode == EXIT_CONTROL, bad.stderr
    assert time.monotonic() - started < 40, bad.stderr
    assert re.search(r"the web process of instance newcomer-v2-web-\w+ exited with code 1 "
                     r"after \d+\.\d s", bad.stderr), bad.stderr
    assert "Traceback" not in bad.stderr.split("---")[0], bad.stderr
    assert "No module named 'flask_no_such_extension'" in bad.stderr, bad.stderr

    # Nothing to serve (no app object, no Procfile): the stack's own sentence.
    bad = cli(e2e, tmp_path, "deploy", str(app(tmp_path, "v3", {
        "hello.py": "print('hi')\n", "requirements.txt": "flask\n"})), "--app", name)
    assert bad.returncode == EXIT_CONTROL, bad.stderr
    assert "paas: nothing to start: the Procfile has no 'web:' line" in bad.stderr, bad.stderr

    # `python app.py` with Flask's app.run(): it listens on 127.0.0.1:5000, inside the container
    # only. The deploy sees that and fails early, saying where it listens.
    started = time.monotonic()
    bad = cli(e2e, tmp_path, "deploy", str(app(tmp_path, "v4", {
        "app.py": QUICKSTART + '\n\nif __name__ == "__main__":\n    app.run()\n',
        "requirements.txt": "flask\n", "Procfile": "web: python app.py\n"})), "--app", name)
    assert bad.returncode == EXIT_CONTROL, bad.stderr
    assert time.monotonic() - started < 45, bad.stderr
    assert "cannot pass its health check: it listens on 127.0.0.1:5000, which only its own " \
           "container can reach; the app must listen on 0.0.0.0:$PORT" in bad.stderr, bad.stderr
    assert "Running on http://127.0.0.1:5000" in bad.stderr  # Flask's own line, in the log

    # A health path the app does not serve: the check gets a 404, and the sentence says so.
    bad = cli(e2e, tmp_path, "deploy", str(app(tmp_path, "v5", {
        "app.py": QUICKSTART, "requirements.txt": "flask\n",
        "paas.toml": '[health]\npath = "/health"\n'})), "--app", name)
    assert bad.returncode == EXIT_CONTROL, bad.stderr
    assert "health check: GET /health must answer 2xx" in bad.stderr, bad.stderr
    assert "it answers GET /health with 404 NOT FOUND" in bad.stderr, bad.stderr
    assert "set [health] path in paas.toml" in bad.stderr

    assert e2e.get_via_router(name) == (200, "<p>Hello, World!</p>")
    e2e.api.request("DELETE", f"/v1/apps/{name}")


def test_stacks_made_in_the_background_show_their_progress(e2e, tmp_path) -> None:
    """What `paas up --demo` does once the demo serves: queue the stacks' images, answered at
    once; `paas stacks` then shows each one's state (here the images are current already)."""
    queued = cli(e2e, tmp_path, "stacks", "build", "python", "--background", "--json")
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["queued"] == ["python"]

    def made() -> dict:
        rows = {s["name"]: s for s in e2e.api.get("/v1/stacks")["stacks"]}
        return rows["python"]["background"] or {}

    wait_until(lambda: made().get("state") == "made", 120, 0.2, what="python made")
    assert made()["seconds"] is not None and made()["error"] is None
    listing = cli(e2e, tmp_path, "stacks")
    assert "python" in listing.stdout and "not built" not in listing.stdout.split("python")[1] \
        .splitlines()[0]
    bad = cli(e2e, tmp_path, "stacks", "build", "cobol", "--background")
    assert bad.returncode == 1 and "cobol" in bad.stderr and "Traceback" not in bad.stderr
