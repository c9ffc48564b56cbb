"""Vendored dependencies build with no network (issue 9), against the real Docker engine.

For each stack an app vendors what it uses the stack's way, and the builder runs its build
with `network_mode="none"`:

| stack | vendored | how the test knows the build had no network |
| --- | --- | --- |
| python | an sdist in `vendor/`, installed with `--no-index` | the sdist's own build backend records the network interfaces it saw into the package: only `lo`; the same sdist built from a plain Dockerfile (network on) sees more |
| node | an offline npm cache in `npm-cache/` (filled beforehand with the build image's own npm) | the app's `postinstall` script, run by `npm ci` in the build, records the interfaces: only `lo` |
| node | a committed `node_modules` | the build only copies the source; the app runs with it |
| go | `vendor/` with `modules.txt`, built with `-mod=vendor` | the app runs with the vendored package; without `vendor/` the build fails (GOPROXY=off) |
| jvm | a Maven repository in `repository/`, `mvn -o`, shaded into the one jar | the jar runs with the vendored class; without `repository/` the build fails |

Every image gets the label `paas.test-run` and a unique tag; they, their containers and the build
stages are removed when the module ends.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from paas.builder import stackimages, stacks
from paas.builder.builder import BuildFailed, BuildResult, build_image
from paas.builder.context import make_build_context
from tests.build_stages import engine_for_run
from test_builder import get  # the same folder (pytest puts it on sys.path)

pytestmark = pytest.mark.docker

RUN = secrets.token_hex(4)
LABELS = {"paas.test-run": RUN}
STACKS = ("python", "node", "go", "jvm")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Reads the network interfaces of the process's network namespace; "lo" alone = no network.
PY_INTERFACES = ("[line.split(':')[0].strip() for line in "
                 "open('/proc/net/dev').read().splitlines()[2:]]")
JS_INTERFACES = ("require('fs').readFileSync('/proc/net/dev','utf8').split('\\n').slice(2)"
                 ".filter(Boolean).map(l => l.split(':')[0].trim())")


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    with engine_for_run(RUN, STACKS) as client:
        for name in STACKS:
            stackimages.ensure_images(stacks.get_stack(name), docker_client=client)
        yield client


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def build(api: docker.APIClient, folder: Path, name: str) -> tuple[BuildResult, list[str]]:
    log: list[str] = []
    result = build_image(context=make_build_context(directory=folder),
                         tag=f"paas/vendored-{name}-{RUN}:v1", docker_client=api,
                         on_log=log.append, labels=LABELS)
    return result, log


def output(api: docker.APIClient, image: str, argv: list[str], *,
           network: str | None = "none", binds: dict[str, dict[str, str]] | None = None,
           working_dir: str | None = None, timeout: int = 120) -> str:
    """What `argv` prints in a one-off container of `image` (it must exit 0)."""
    container = api.create_container(image, command=argv, labels=LABELS,
                                     working_dir=working_dir,
                                     host_config=api.create_host_config(network_mode=network,
                                                                        binds=binds))
    api.start(container)
    status = api.wait(container, timeout=timeout)["StatusCode"]
    text = api.logs(container).decode()
    api.remove_container(container, force=True)
    assert status == 0, text
    return text.strip()


def serve(api: docker.APIClient, image: str) -> str:
    """Start `image` on $PORT, published on 127.0.0.1; its base URL."""
    container = api.create_container(
        image, environment={"PORT": "5000"}, ports=[5000], labels=LABELS,
        host_config=api.create_host_config(port_bindings={5000: ("127.0.0.1", None)}))["Id"]
    api.start(container)
    return f"http://127.0.0.1:{api.port(container, 5000)[0]['HostPort']}"


# --- python: a vendored sdist whose in-tree build backend records what network it saw ---------

NETPROBE_BACKEND = f'''"""A PEP 517 build backend, in the sdist itself: it writes a wheel whose module records
the network interfaces the build saw."""
import base64, hashlib, os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "netprobe-1.0-py3-none-any.whl"
    files = {{
        "netprobe.py": "INTERFACES = %r\\n" % ({PY_INTERFACES},),
        "netprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: netprobe\\nVersion: 1.0\\n",
        "netprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: netprobe\\n"
                                         "Root-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{{path}},sha256={{digest.decode()}},{{len(data)}}")
            wheel.writestr(path, data)
        record.append("netprobe-1.0.dist-info/RECORD,,")
        wheel.writestr("netprobe-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name

def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError
'''


def netprobe_sdist(into: Path) -> None:
    """vendor/netprobe-1.0.tar.gz: an sdist with an in-tree build backend (no requirements)."""
    files = {
        "netprobe-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: netprobe\nVersion: 1.0\n",
        "netprobe-1.0/pyproject.toml": ('[build-system]\nrequires = []\n'
                                        'build-backend = "backend"\nbackend-path = ["."]\n'),
        "netprobe-1.0/backend.py": NETPROBE_BACKEND,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    (into / "vendor").mkdir(parents=True)
    (into / "vendor" / "netprobe-1.0.tar.gz").write_bytes(gzip.compress(buffer.getvalue()))


def test_python_vendored_sdist_installs_with_no_network(api, tmp_path) -> None:
    app = write(tmp_path / "pyapp", {
        "requirements.txt": "netprobe==1.0\n",
        "app.py": "import netprobe\nprint(netprobe.INTERFACES)\n",
        "Procfile": "web: python3 app.py\n",
    })
    netprobe_sdist(app)
    result, log = build(api, app, "python")
    assert result.offline
    assert "network: off for this build: the dependencies are vendored (vendor)" in log
    seen = output(api, result.tag, ["python3", "-c", "import netprobe; print(netprobe.INTERFACES)"])
    assert seen == "['lo']", seen

    # The probe does see a network where there is one: the same sdist, built by a Dockerfile
    # (an app's own Dockerfile builds with the engine's default network).
    (app / "Dockerfile").write_text(
        f"FROM {stacks.get_stack('python').build_image}\nCOPY vendor /vendor\n"
        "RUN python3 -m venv /v && /v/bin/pip install -q --no-index --find-links /vendor netprobe\n")
    own, _ = build(api, app, "python-own")
    assert not own.offline
    seen = output(api, own.tag, ["/v/bin/python", "-c",
                                 "import netprobe; print(netprobe.INTERFACES)"])
    assert seen != "['lo']" and "'lo'" in seen, seen


def test_python_without_vendor_may_reach_its_registry(api, tmp_path) -> None:
    """No vendor/: pip may need PyPI, so the build keeps the network (and says nothing)."""
    app = write(tmp_path / "plain", {"requirements.txt": "\n", "app.py": "print('hi')\n",
                                     "Procfile": "web: python3 app.py\n"})
    result, log = build(api, app, "python-plain")
    assert not result.offline
    assert not any(line.startswith("network: off") for line in log)


# --- node -------------------------------------------------------------------------------------

def test_node_offline_npm_cache_installs_with_no_network(api, tmp_path) -> None:
    app = tmp_path / "node-web"
    shutil.copytree(EXAMPLES / "node-web", app,
                    ignore=shutil.ignore_patterns("node_modules", ".git"))
    manifest = json.loads((app / "package.json").read_text())
    manifest["scripts"]["postinstall"] = (
        "node -e \"require('fs').writeFileSync('netprobe.json', "
        f"JSON.stringify({JS_INTERFACES}))\"")
    (app / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # The developer's vendoring step, with the build image's own npm (and a network): fill
    # npm-cache/ from the lockfile; the app's own scripts are not run here.
    _fill_npm_cache(api, stacks.get_stack("node").build_image, app)
    assert (app / "npm-cache").is_dir() and not (app / "node_modules").exists()

    result, log = build(api, app, "node-cache")
    assert result.offline
    assert "network: off for this build: the dependencies are vendored (npm-cache)" in log
    seen = output(api, result.tag, ["cat", "/app/netprobe.json"])
    assert json.loads(seen) == ["lo"], seen
    assert get(f"{serve(api, result.tag)}/health", deadline_s=60).strip() == "ok"
    # The cache served the build and is not part of what runs.
    assert output(api, result.tag, ["sh", "-c", "test -e /app/npm-cache && echo kept || "
                                    "echo gone"]) == "gone"


def _fill_npm_cache(api: docker.APIClient, image: str, app: Path) -> None:
    output(api, image, ["sh", "-c", "npm ci --ignore-scripts --no-audit --no-fund "
                        "--cache /app/npm-cache && rm -rf /app/node_modules"],
           network=None, binds={str(app): {"bind": "/app", "mode": "rw"}}, working_dir="/app",
           timeout=300)


def test_node_committed_node_modules_is_used_as_it_is(api, tmp_path) -> None:
    app = write(tmp_path / "nodeapp", {
        "package.json": json.dumps({"name": "nodeapp", "version": "1.0.0", "private": True,
                                    "dependencies": {"greet": "1.0.0"}}),
        "node_modules/greet/package.json": json.dumps({"name": "greet", "version": "1.0.0",
                                                       "main": "index.js"}),
        "node_modules/greet/index.js": "module.exports = () => 'hello from a vendored module';\n",
        "server.js": ("require('http').createServer((q, s) => s.end(require('greet')() + '\\n'))"
                      ".listen(process.env.PORT);\n"),
    })
    result, log = build(api, app, "node-modules")
    assert result.offline
    assert "network: off for this build: the dependencies are vendored (node_modules)" in log
    assert get(f"{serve(api, result.tag)}/", deadline_s=60) == "hello from a vendored module\n"


# --- go ---------------------------------------------------------------------------------------

GO_APP = {
    "go.mod": "module example.com/vendored\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n",
    "vendor/modules.txt": "# example.com/greet v1.0.0\n## explicit; go 1.19\nexample.com/greet\n",
    "vendor/example.com/greet/greet.go": ('package greet\n\n'
                                          'func Hello() string { return "hello from vendor/" }\n'),
    "main.go": ('package main\n\nimport (\n\t"fmt"\n\t"net/http"\n\t"os"\n\n'
                '\t"example.com/greet"\n)\n\nfunc main() {\n'
                '\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) '
                '{ fmt.Fprintln(w, greet.Hello()) })\n'
                '\t_ = http.ListenAndServe(":"+os.Getenv("PORT"), nil)\n}\n'),
}


def test_go_vendor_builds_with_mod_vendor_and_no_network(api, tmp_path) -> None:
    app = write(tmp_path / "goapp", GO_APP)
    result, log = build(api, app, "go")
    assert result.offline
    assert "network: off for this build: the go stack fetches nothing" in log
    assert get(f"{serve(api, result.tag)}/", deadline_s=60) == "hello from vendor/\n"

    shutil.rmtree(app / "vendor")  # what it built with came from vendor/, nowhere else
    with pytest.raises(BuildFailed) as failed:
        build(api, app, "go-unvendored")
    assert "example.com/greet" in "\n".join(failed.value.log_tail), failed.value.log_tail


# --- jvm --------------------------------------------------------------------------------------

GREET_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>org.example</groupId>
  <artifactId>greet</artifactId>
  <version>1.0</version>
</project>
"""

JVM_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId>
  <artifactId>vendored</artifactId>
  <version>1.0.0</version>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
    <maven.compiler.release>17</maven.compiler.release>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.example</groupId>
      <artifactId>greet</artifactId>
      <version>1.0</version>
    </dependency>
  </dependencies>
  <build>
    <finalName>app</finalName>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-resources-plugin</artifactId><version>3.3.0</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-compiler-plugin</artifactId><version>3.10.1</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-surefire-plugin</artifactId><version>2.22.3</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-jar-plugin</artifactId><version>3.3.0</version>
        <configuration><archive><manifest><mainClass>example.Main</mainClass></manifest>
        </archive></configuration></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-shade-plugin</artifactId><version>3.4.1</version>
        <executions><execution><phase>package</phase><goals><goal>shade</goal></goals>
        </execution></executions></plugin>
    </plugins>
  </build>
</project>
"""


def greet_jar(api: docker.APIClient, work: Path) -> bytes:
    """org.example:greet:1.0's jar, compiled with the jvm build image (no network)."""
    write(work, {"src/org/example/Greet.java": (
        "package org.example;\npublic final class Greet {\n"
        "  public static String hello() { return \"hello from repository/\"; }\n}\n")})
    output(api, stacks.get_stack("jvm").build_image,
           ["sh", "-c", "javac --release 17 -d out src/org/example/Greet.java"
            " && jar cf greet-1.0.jar -C out ."],
           binds={str(work): {"bind": "/w", "mode": "rw"}}, working_dir="/w")
    return (work / "greet-1.0.jar").read_bytes()


def test_jvm_vendored_repository_builds_offline_into_one_shaded_jar(api, tmp_path) -> None:
    jar = greet_jar(api, tmp_path / "greet")
    app = write(tmp_path / "jvmapp", {
        "pom.xml": JVM_POM,
        "repository/org/example/greet/1.0/greet-1.0.pom": GREET_POM,
        "src/main/java/example/Main.java": (
            "package example;\npublic final class Main {\n"
            "  public static void main(String[] args) {\n"
            "    System.out.println(org.example.Greet.hello());\n  }\n}\n"),
        "Procfile": "web: exec java -jar /app/app.jar\n",
    })
    (app / "repository/org/example/greet/1.0/greet-1.0.jar").write_bytes(jar)
    result, log = build(api, app, "jvm")
    assert result.offline
    assert "network: off for this build: the jvm stack fetches nothing" in log
    # The one jar carries the vendored class: the run image has nothing else.
    assert output(api, result.tag, ["java", "-jar", "/app/app.jar"]) == "hello from repository/"

    shutil.rmtree(app / "repository")  # it came from repository/, nowhere else
    with pytest.raises(BuildFailed) as failed:
        build(api, app, "jvm-unvendored")
    assert "org.example:greet" in "\n".join(failed.value.log_tail), failed.value.log_tail
