"""Stack folders and detection (issue 9): which stack an app's source gets, the sentence when
none fits, the checks on a stack folder, and the python stack's Dockerfile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paas.builder import builder, stacks
from paas.builder.appconfig import BadAppConfig, build_stack, parse_app_config
from paas.builder.context import BadBuildContext

GOOD_TOML = """name = "{name}"
version = "1"
detect = {manifest}
[build]
packages = ["python3"]
[run]
packages = ["python3"]
[start]
default = ""
"""


def make_stack(root: Path, name: str, manifest: str = '["x.txt"]', toml: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "stack.toml").write_text(toml if toml is not None
                                       else GOOD_TOML.format(name=name, manifest=manifest))
    (folder / "Dockerfile.j2").write_text("FROM {{ run_image }}\nCMD {{ cmd_json }}\n")
    (folder / "README.md").write_text(f"# {name}\n")
    return folder


@pytest.fixture
def fake_stacks(tmp_path: Path) -> dict[str, stacks.Stack]:
    """python, go and an extra stack in the order-less folder, plus busybox."""
    for name, manifest in (("python", ["requirements.txt", "pyproject.toml"]),
                           ("go", ["go.mod"]), ("zig", ["build.zig"])):
        make_stack(tmp_path, name, json.dumps(manifest))
    make_stack(tmp_path, "busybox", "", toml='name = "busybox"\nversion = "1"\ndetect = []\n'
               '[run]\nimage = "paas/busybox:latest"\n')
    return stacks.load_stacks(tmp_path)


@pytest.mark.parametrize("paths,configured,expected", [
    (["Dockerfile", "requirements.txt", "Procfile"], None, ("dockerfile", "")),
    (["Dockerfile"], "python", ("dockerfile", "")),
    (["Procfile", "main.go", "requirements.txt"], "go", ("go", "")),
    (["go.mod", "Procfile", "paas.toml"], "go", ("go", "go.mod")),
    (["requirements.txt", "app.py", "Procfile"], None, ("python", "requirements.txt")),
    (["pyproject.toml", "src/pkg/__init__.py"], None, ("python", "pyproject.toml")),
    (["go.mod", "main.go"], None, ("go", "go.mod")),
    # python comes before go in the documented order, whatever the archive's order
    (["go.mod", "requirements.txt"], None, ("python", "requirements.txt")),
    (["./requirements.txt", "./Procfile"], None, ("python", "requirements.txt")),
    # a manifest below the root does not count
    (["sub/requirements.txt", "Procfile"], None, ("busybox", "")),
    (["Procfile", "start.sh"], None, ("busybox", "")),
    # a stack outside DETECT_ORDER is only used when paas.toml names it
    (["build.zig", "Procfile"], None, ("busybox", "")),
    (["build.zig", "Procfile"], "zig", ("zig", "build.zig")),
])
def test_detection_order(fake_stacks, paths, configured, expected) -> None:
    found = stacks.detect(paths, configured=configured, stacks=fake_stacks)
    assert (found.stack, found.manifest) == expected


def test_nothing_to_detect_is_one_sentence_naming_what_was_looked_for(fake_stacks) -> None:
    with pytest.raises(stacks.NoStack) as exc:
        stacks.detect(["index.html", "sub/Procfile"], stacks=fake_stacks)
    message = str(exc.value)
    assert message.count(". ") == 0 and message.endswith(".")
    for looked_for in ("Dockerfile", "paas.toml [build] stack", "requirements.txt", "go.mod",
                       "Procfile"):
        assert looked_for in message
    assert "build.zig" not in message  # not detected by a manifest, so not looked for


def test_an_unknown_stack_in_paas_toml_names_the_known_ones(fake_stacks) -> None:
    with pytest.raises(stacks.NoStack, match=r"'cobol', which is not a stack; use one of: "
                                             r"busybox, go, python, zig\."):
        stacks.detect(["Procfile"], configured="cobol", stacks=fake_stacks)


def test_paas_toml_build_stack_is_parsed_and_checked() -> None:
    assert build_stack('[build]\nstack = "python"\n') == "python"
    assert build_stack(None) is None and build_stack("[health]\npath = '/x'\n") is None
    assert parse_app_config(procfile="web: x", toml_text='[build]\nstack = "go"\n').stack == "go"
    for bad in ('[build]\nstack = 3\n', '[build]\nstack = "Py thon"\n', 'build = 1\n'):
        with pytest.raises(BadAppConfig, match="build"):
            build_stack(bad)


def test_the_packaged_stacks_load_and_python_is_detected_first() -> None:
    loaded = stacks.load_stacks()
    assert {"python", "busybox"} <= set(loaded)
    python = loaded["python"]
    assert python.detect == ("requirements.txt", "pyproject.toml")
    assert (python.build_image, python.run_image) == ("paas-stack/python-build:1",
                                                      "paas-stack/python-run:1")
    assert "python3" in python.run_packages and "python3-pip" not in python.run_packages
    assert loaded["busybox"].run_image == "paas/busybox:latest"
    assert stacks.detect(["requirements.txt", "Procfile"]).stack == "python"


@pytest.mark.parametrize("toml,mistake", [
    ("name = \n", "not valid TOML"),
    ('version = "1"\ndetect = []\n[build]\npackages=["a"]\n[run]\npackages=["a"]\n', "name"),
    ('name = "bad"\ndetect = []\n[build]\npackages=["a"]\n[run]\npackages=["a"]\n', "version"),
    ('name = "bad"\nversion = "1"\n[build]\npackages=["a"]\n[run]\npackages=["a"]\n', "detect"),
    ('name = "bad"\nversion = "1"\ndetect = "x.txt"\n', "detect must be a list"),
    ('name = "bad"\nversion = "1"\ndetect = ["../x"]\n[build]\npackages=["a"]\n', "file name"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[run]\npackages=["ab"]\n', "[build] packages"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["ab"]\n', "[run] packages"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["a b"]\n[run]\n'
     'packages=["ab"]\n', "not a Debian package"),
    ('name = "bad"\nversion = "1 2"\ndetect = []\n', "version"),
    ('name = "other"\nversion = "1"\ndetect = []\n', "folder's name"),
    ('name = "bad"\nversion = "1"\ndetect = []\nbuild = 1\n', "[build] must be a table"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["ab"]\n[run]\n'
     'packages=["ab"]\n[start]\ndefault = 1\n', "default must be a string"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["ab"]\noffline = "yes"\n'
     '[run]\npackages=["ab"]\n', "offline must be true or false"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["ab"]\n'
     'offline_with = ["../vendor"]\n[run]\npackages=["ab"]\n', "top-level name"),
    ('name = "bad"\nversion = "1"\ndetect = []\n[build]\npackages=["ab"]\noffline = true\n'
     'offline_with = ["vendor"]\n[run]\npackages=["ab"]\n', "keep one"),
])
def test_a_bad_stack_folder_is_one_sentence(tmp_path, toml, mistake) -> None:
    make_stack(tmp_path, "bad", "", toml=toml)
    with pytest.raises(stacks.BadStack) as exc:
        stacks.load_stacks(tmp_path)
    assert mistake in str(exc.value)
    assert "'bad'" in str(exc.value) and str(exc.value).endswith(".")


def test_a_stack_folder_needs_its_three_files(tmp_path) -> None:
    folder = make_stack(tmp_path, "python")
    (folder / "README.md").unlink()
    with pytest.raises(stacks.BadStack, match="has no README.md"):
        stacks.load_stacks(tmp_path)


def test_the_digest_follows_what_the_images_are_made_from(tmp_path) -> None:
    folder = make_stack(tmp_path, "python")
    before = stacks.load_stacks(tmp_path)["python"].digest
    assert stacks.load_stacks(tmp_path)["python"].digest == before
    # The app's template, the README and the start command do not go into the images.
    (folder / "Dockerfile.j2").write_text("FROM {{ run_image }}\n")
    (folder / "README.md").write_text("changed\n")
    assert stacks.load_stacks(tmp_path)["python"].digest == before
    toml = (folder / "stack.toml").read_text()
    for old, new in (('version = "1"', 'version = "2"'), ('"python3"', '"python3", "curl"')):
        assert old in toml
        (folder / "stack.toml").write_text(toml.replace(old, new, 1))
        assert stacks.load_stacks(tmp_path)["python"].digest != before


# (stack, the source's entries, why its build needs no network, or None: it may fetch)
OFFLINE_CASES = [
    ("python", ["requirements.txt", "app.py"], None),
    ("python", ["requirements.txt", "vendor/six-1.16.0-py2.py3-none-any.whl"],
     "the dependencies are vendored (vendor)"),
    ("python", ["pyproject.toml", "src/vendor/x.whl"], None),  # only a top-level vendor/ counts
    ("node", ["package.json", "server.js"], None),
    ("node", ["package.json", "node_modules/express/index.js"],
     "the dependencies are vendored (node_modules)"),
    ("node", ["package.json", "package-lock.json", "npm-cache/_cacache/index-v5/00"],
     "the dependencies are vendored (npm-cache)"),
    ("go", ["go.mod", "main.go"], "the go stack fetches nothing"),
    ("go", ["go.mod", "vendor/modules.txt"], "the go stack fetches nothing"),
    ("jvm", ["pom.xml", "src/main/java/A.java"], "the jvm stack fetches nothing"),
    ("ruby", ["Gemfile", "config.ru"], "the ruby stack fetches nothing"),
    ("busybox", ["Procfile", "start.sh"], "the busybox stack fetches nothing"),
]


@pytest.mark.parametrize("name,paths,why", OFFLINE_CASES,
                         ids=[f"{c[0]}-{c[1][-1]}" for c in OFFLINE_CASES])
def test_a_build_has_no_network_when_the_stack_fetches_nothing_or_all_is_vendored(
        name, paths, why) -> None:
    assert stacks.get_stack(name).vendored(paths) == why


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def index_of(rendered: list[str], prefix: str, start: int = 0) -> int:
    return next(i for i, line in enumerate(rendered) if i >= start and line.startswith(prefix))


def test_python_requirements_are_installed_before_the_source_is_copied() -> None:
    text = lines(builder.render_dockerfile(procfile="web: python3 app.py", stack="python",
                                           manifest="requirements.txt",
                                           paths=["requirements.txt", "app.py", "Procfile"]))
    assert text[0] == "FROM paas-stack/python-build:1 AS build"
    manifest = index_of(text, "COPY requirements.txt")
    install = index_of(text, "RUN /venv/bin/pip install -r /app/requirements.txt")
    source = index_of(text, "COPY . /app")
    run_stage = index_of(text, "FROM paas-stack/python-run:1")
    assert manifest < install < source < run_stage
    assert "--no-index" not in text[install]
    assert text[run_stage + 1:run_stage + 3] == ["COPY --from=build /venv /venv",
                                                 "COPY --from=build --chown=0:0 /app /app"]
    assert "USER app" in text[run_stage:]
    assert text[-1] == 'CMD ["/bin/sh", "-c", "python3 app.py"]'
    assert json.loads(text[-1][4:]) == ["/bin/sh", "-c", "python3 app.py"]


def test_python_vendored_wheels_install_without_an_index() -> None:
    text = lines(builder.render_dockerfile(procfile="web: python3 app.py", stack="python",
                                           manifest="requirements.txt",
                                           paths=["requirements.txt", "vendor/six.whl"]))
    install = index_of(text, "RUN /venv/bin/pip install")
    assert index_of(text, "COPY vendor /app/vendor") < install < index_of(text, "COPY . /app")
    assert "--no-index --find-links /app/vendor -r /app/requirements.txt" in text[install]


def test_python_pyproject_apps_install_the_app() -> None:
    text = lines(builder.render_dockerfile(procfile="web: app", stack="python",
                                           manifest="pyproject.toml",
                                           paths=["pyproject.toml", "src/x.py"]))
    assert index_of(text, "COPY . /app") < index_of(text, "RUN /venv/bin/pip install /app")


def test_a_stack_without_a_default_needs_the_procfile_web_command() -> None:
    with pytest.raises(BadBuildContext, match="no web process"):
        builder.render_dockerfile(procfile="worker: x", stack="busybox", paths=["Procfile"])


def test_python_without_a_procfile_starts_gunicorn_on_the_detected_module() -> None:
    text = builder.render_dockerfile(procfile=None, stack="python",
                                     manifest="requirements.txt",
                                     paths=["requirements.txt", "app.py"])
    cmd = json.loads(text.splitlines()[-1].removeprefix("CMD "))
    assert cmd[:2] == ["/bin/sh", "-c"]
    assert "for module in wsgi app main application" in cmd[2]
    assert 'gunicorn --preload --bind "0.0.0.0:$PORT"' in cmd[2]


def test_the_busybox_stack_keeps_its_dockerfile() -> None:
    text = builder.render_dockerfile(procfile="web: ./start.sh")
    assert text.splitlines()[1:] == ["FROM paas/busybox:latest", "COPY . /app", "WORKDIR /app",
                                     'CMD ["/bin/sh", "-c", "./start.sh"]']
