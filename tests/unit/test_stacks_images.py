"""Making a stack's images (issue 9) with a fake Docker API and a fake `mmdebstrap` on PATH:
what is built when, the argv, the labels, the log lines and their prefix, and the mirror rule."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from paas.builder import builder, stackimages, stacks


class FakeApi:
    def __init__(self, images: dict[str, dict[str, Any]] | None = None) -> None:
        self.images = images or {}
        self.imported: list[dict[str, Any]] = []
        self.removed: list[str] = []

    def inspect_image(self, tag: str) -> dict[str, Any]:
        if tag not in self.images:
            raise docker.errors.ImageNotFound(tag)
        return self.images[tag]

    def import_image_from_file(self, filename: str, *, repository: str, tag: str,
                               changes: list[str]) -> None:
        assert Path(filename).read_bytes() == b"rootfs"
        labels = dict(c[len("LABEL "):].split("=", 1) for c in changes if c.startswith("LABEL"))
        self.imported.append({"tag": f"{repository}:{tag}", "changes": changes})
        self.images[f"{repository}:{tag}"] = {"Id": f"sha256:new-{tag}", "Size": 1,
                                              "Created": "2026-01-01T00:00:00.123456789Z",
                                              "Config": {"Labels": labels}}

    def remove_image(self, image_id: str) -> None:
        self.removed.append(image_id)


@pytest.fixture
def fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `mmdebstrap` that records its argv (one file per run: two may run at once) and
    writes `rootfs` to its output file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    record.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\" >> %s/$$; done\n"
                      "echo 'I: fake mmdebstrap'\n"
                      "prev=''; for a in \"$@\"; do out=$prev; prev=$a; done\n"
                      "printf rootfs > \"$out\"\n" % record)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(stackimages, "mirror_uri", lambda: "http://mirror.invalid/debian")
    return record


def runs(record: Path) -> list[list[str]]:
    """The argv of each mmdebstrap run, the build image's first (it names ca-certificates)."""
    found = [f.read_text().splitlines() for f in record.iterdir()]
    return sorted(found, key=lambda argv: not any("ca-certificates" in a for a in argv))


def labelled(stack: stacks.Stack, digest: str | None = None) -> dict[str, Any]:
    return {"Id": "sha256:old", "Size": 5, "Created": "2026-01-01T00:00:00Z",
            "Config": {"Labels": {stackimages.LABEL_DIGEST: digest or
                                  stackimages.image_digest(stack)}}}


def test_missing_images_are_made_from_debian_packages(fake_mmdebstrap: Path) -> None:
    stack = stacks.get_stack("python")
    api, lines = FakeApi(), []
    assert stackimages.ensure_images(stack, docker_client=api, on_log=lines.append) is True
    assert sorted(i["tag"] for i in api.imported) == [stack.build_image, stack.run_image]
    changes = next(i for i in api.imported if i["tag"] == stack.run_image)["changes"]
    assert "LABEL paas.stack=python" in changes and "LABEL paas.stack.version=1" in changes
    argv, run_argv = runs(fake_mmdebstrap)
    assert argv[:3] == ["--variant=minbase",
                        "--include=python3,python3-venv,python3-pip,ca-certificates",
                        "--format=tar"]
    assert run_argv[:2] == ["--variant=minbase", "--include=python3,python3-gunicorn"]
    assert stackimages.ADD_APP_USER in run_argv
    assert "useradd --uid 10001" in stackimages.ADD_APP_USER
    assert run_argv[-3] == "bookworm" and run_argv[-1] == "http://mirror.invalid/debian"
    # One line when each image is begun and one when it is made; mmdebstrap's go to the log.
    assert sorted(line.split(" in ")[0] for line in lines if line.startswith("made ")) == \
        [f"made {stack.build_image}", f"made {stack.run_image}"]
    assert len(lines) == 4 and "I: fake mmdebstrap" not in lines
    # made: nothing more to do
    assert stackimages.ensure_images(stack, docker_client=api) is False


def test_a_run_image_of_no_packages_is_bare_minbase(fake_mmdebstrap: Path) -> None:
    """The go stack's `[run] packages = []`: no `--include=` at all (mmdebstrap refuses an
    empty one with its usage text)."""
    stack = stacks.get_stack("go")
    assert stack.run_packages == ()
    stackimages.ensure_images(stack, docker_client=FakeApi())
    _, run_argv = runs(fake_mmdebstrap)
    assert run_argv[:2] == ["--variant=minbase", "--format=tar"]
    assert not [a for a in run_argv if a.startswith("--include")]


def test_only_stale_images_are_made_again_and_the_old_one_goes(fake_mmdebstrap: Path) -> None:
    stack = stacks.get_stack("python")
    api = FakeApi({stack.build_image: labelled(stack),
                   stack.run_image: labelled(stack, digest="an-older-folder")})
    states = {s.tag: s for s in stackimages.image_states(stack, docker_client=api)}
    assert states[stack.build_image].current and not states[stack.run_image].current
    assert stackimages.ensure_images(stack, docker_client=api) is True
    assert [i["tag"] for i in api.imported] == [stack.run_image]
    assert api.removed == ["sha256:old"]


def test_a_failing_mmdebstrap_is_one_sentence_with_the_log_tail(
        fake_mmdebstrap: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "mmdebstrap").write_text("#!/bin/sh\necho 'E: cannot find package'\n"
                                                 "exit 2\n")
    with pytest.raises(stackimages.StackBuildFailed) as exc:
        stackimages.ensure_images(stacks.get_stack("python"), docker_client=FakeApi())
    assert exc.value.message == ("mmdebstrap for paas-stack/python-build:1 failed with exit "
                                 "status 2: E: cannot find package")
    assert exc.value.log_tail == ("E: cannot find package",)


def test_the_builder_streams_a_stack_build_with_its_prefix(fake_mmdebstrap: Path) -> None:
    lines: list[str] = []
    builder.ensure_stack(stacks.get_stack("python"), docker_client=FakeApi(),
                         on_log=lines.append)
    assert lines and all(line.startswith(builder.STACK_LOG_PREFIX) for line in lines)
    assert any(line.startswith("stack: made paas-stack/python-run:1 in ") for line in lines)


def test_a_prebuilt_image_is_never_made_here() -> None:
    busybox = stacks.get_stack("busybox")
    with pytest.raises(builder.BuildFailed, match="run scripts/setup.sh"):
        builder.ensure_stack(busybox, docker_client=FakeApi())
    api = FakeApi({"paas/busybox:latest": {"Id": "x", "Config": {}}})
    assert stackimages.ensure_images(busybox, docker_client=api) is False


def test_the_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://one.invalid/debian/ bookworm main\n")
    assert stackimages.mirror_uri(sources_d=str(d), sources_list=str(one_line)) == \
        "http://one.invalid/debian"
    (d / "debian.sources").write_text("Types: deb\n# http://not.this/\n"
                                      "URIs: http://deb822.invalid/debian\nSuites: bookworm\n")
    assert stackimages.mirror_uri(sources_d=str(d), sources_list=str(one_line)) == \
        "http://deb822.invalid/debian"
    assert stackimages.mirror_uri(sources_d=str(tmp_path / "none"),
                                  sources_list=str(tmp_path / "none.list")) == ""


def test_two_builds_of_one_stack_at_once_make_its_images_once(fake_mmdebstrap: Path) -> None:
    import threading

    stack, api = stacks.get_stack("python"), FakeApi()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        stackimages.ensure_images(stack, docker_client=api))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    # Each image once; the two are made at once, so in either order.
    assert sorted(i["tag"] for i in api.imported) == [stack.build_image, stack.run_image]


def test_a_build_that_waits_for_another_says_so(fake_mmdebstrap: Path) -> None:
    import threading

    stack = stacks.get_stack("python")
    api = FakeApi({stack.build_image: labelled(stack), stack.run_image: labelled(stack)})
    lines: list[str] = []
    with stackimages.stack_lock("python"):  # another build (one in the background, say)
        waiter = threading.Thread(target=stackimages.ensure_images, args=(stack,),
                                  kwargs={"docker_client": api, "on_log": lines.append})
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()
    waiter.join(5)
    assert lines == ["waiting for the python stack's images, which another build is making"]
