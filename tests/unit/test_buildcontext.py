"""Tests of build-context validation with good and evil archives made in the test, of
packing a directory, of the one writer of contexts and of the source strings (issue 8)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from paas.builder.context import (
    BadBuildContext,
    ContextLimits,
    archive_members,
    git_source,
    make_build_context,
    pack_context,
    source_commit,
    upload_source,
    validate_build_context,
)

Entry = Callable[[tarfile.TarFile], None]


def file(name: str, data: bytes = b"x\n") -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def special(name: str, kind: bytes, linkname: str = "") -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    return add


def directory(name: str) -> Entry:
    return special(name, tarfile.DIRTYPE)


def symlink(name: str, target: str) -> Entry:
    return special(name, tarfile.SYMTYPE, target)


def hardlink(name: str, target: str) -> Entry:
    return special(name, tarfile.LNKTYPE, target)


def targz(*entries: Entry) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in entries:
            add(tar)
    return gzip.compress(raw.getvalue())


DOCKERFILE = file("Dockerfile", b"FROM paas/busybox:latest\n")

GOOD = [
    ("dockerfile only", targz(DOCKERFILE), ["Dockerfile"]),
    ("dot-slash names and root dir entry",
     targz(directory("."), file("./Dockerfile", b"FROM x\n"), directory("./src"),
           file("./src/app.sh")), ["Dockerfile", "src", "src/app.sh"]),
    ("relative symlink inside",
     targz(DOCKERFILE, directory("a"), file("a/b"), symlink("c", "a/b")),
     ["Dockerfile", "a", "a/b", "c"]),
    ("symlink that climbs and comes back", targz(DOCKERFILE, directory("a"), directory("a/b"),
                                                 symlink("a/b/up", "../../Dockerfile")),
     ["Dockerfile", "a", "a/b", "a/b/up"]),
    ("dangling symlink inside", targz(DOCKERFILE, symlink("later", "not/yet/there")),
     ["Dockerfile", "later"]),
    ("symlink a/../../x one level down stays inside",
     targz(DOCKERFILE, directory("a"), symlink("a/l", "a/../../x")), ["Dockerfile", "a", "a/l"]),
    ("symlink to the root", targz(DOCKERFILE, symlink("root", ".")), ["Dockerfile", "root"]),
    ("hard link to an earlier entry", targz(DOCKERFILE, file("a"), hardlink("b", "a")),
     ["Dockerfile", "a", "b"]),
    ("procfile only", targz(file("Procfile", b"web: ./start.sh\n")), ["Procfile"]),
]


@pytest.mark.parametrize("data,names", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_contexts(data: bytes, names: list[str]) -> None:
    summary = validate_build_context(context=data)
    assert list(summary.entries) == names
    assert summary.compressed_bytes == len(data)
    assert summary.uncompressed_bytes == len(gzip.decompress(data))


EVIL = [
    ("absolute path", targz(DOCKERFILE, file("/etc/passwd")), "absolute path"),
    ("dot-dot component", targz(DOCKERFILE, file("../x")), "'..'"),
    ("dot-dot in the middle", targz(DOCKERFILE, file("a/../../x")), "'..'"),
    ("symlink to /etc", targz(DOCKERFILE, symlink("etc", "/etc")), "absolute path"),
    ("symlink a/../../x", targz(DOCKERFILE, directory("a"), symlink("l", "a/../../x")),
     "points outside"),
    ("symlink ..", targz(DOCKERFILE, symlink("up", "..")), "points outside"),
    ("chain of symlinks that each look harmless",
     targz(DOCKERFILE, directory("a"), symlink("a/b", ".."), symlink("c", "a/b/a/b/..")),
     "points outside"),
    ("symlink loop", targz(DOCKERFILE, symlink("x", "y"), symlink("y", "x")), "points outside"),
    ("entry beneath a symlink", targz(DOCKERFILE, symlink("d", "."), file("d/x")),
     "beneath a symlink"),
    ("entry beneath a symlink declared later", targz(DOCKERFILE, file("d/x"), symlink("d", ".")),
     "beneath a symlink"),
    ("hard link outside", targz(DOCKERFILE, hardlink("h", "/etc/shadow")), "hard link"),
    ("hard link with ..", targz(DOCKERFILE, hardlink("h", "../x")), "hard link"),
    ("hard link to a missing entry", targz(DOCKERFILE, hardlink("h", "nothere")), "hard link"),
    ("character device", targz(DOCKERFILE, special("null", tarfile.CHRTYPE)), "device"),
    ("block device", targz(DOCKERFILE, special("sda", tarfile.BLKTYPE)), "device"),
    ("fifo", targz(DOCKERFILE, special("pipe", tarfile.FIFOTYPE)), "fifo"),
    ("not gzip", b"PK\x03\x04 a zip file", "not gzip"),
    ("plain tar", gzip.decompress(targz(DOCKERFILE)), "not gzip"),
    ("gzip of non-tar", gzip.compress(b"hello, this is not a tar archive\n" * 100),
     "not a readable"),
    ("truncated gzip", targz(DOCKERFILE, file("big", os.urandom(4096)))[:-200], "not a readable"),
    ("empty bytes", b"", "not gzip"),
    ("gzip of nothing", gzip.compress(b""), "not a readable"),
    ("empty tar", targz(), "empty"),
    ("only the root dir", targz(directory(".")), "empty"),
    ("dockerfile is a symlink", targz(file("real", b"FROM x\n"), symlink("Dockerfile", "real")),
     "regular file"),
    ("dockerfile not utf-8", targz(file("Dockerfile", b"\xff\xfe\x00")), "UTF-8"),
]


@pytest.mark.parametrize("data,message", [e[1:] for e in EVIL], ids=[e[0] for e in EVIL])
def test_evil_contexts_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BadBuildContext, match=message) as caught:
        validate_build_context(context=data)
    text = str(caught.value)
    assert text.count(". ") == 0 and text.endswith("."), "one sentence for the user"


LIMITS = [
    ("compressed size", ContextLimits(max_compressed_bytes=100), "larger than"),
    ("uncompressed size (zip bomb)", ContextLimits(max_uncompressed_bytes=50_000), "uncompressed"),
    ("entry count", ContextLimits(max_entries=3), "more than 3 entries"),
    ("root file size", ContextLimits(max_root_file_bytes=10), "Dockerfile is larger"),
]


@pytest.mark.parametrize("limits,message", [x[1:] for x in LIMITS], ids=[x[0] for x in LIMITS])
def test_limits(limits: ContextLimits, message: str) -> None:
    data = targz(DOCKERFILE, *(file(f"f{i}", b"\0" * 20_000) for i in range(5)))
    assert len(data) > 100 and len(gzip.decompress(data)) > 50_000
    with pytest.raises(BadBuildContext, match=message):
        validate_build_context(context=data, limits=limits)


def test_summary_has_root_files_text() -> None:
    data = targz(DOCKERFILE, file("Procfile", b"web: ./start.sh\n"),
                 file("paas.toml", b'[health]\npath = "/health"\n'),
                 file("sub/Dockerfile", b"FROM other\n"))
    summary = validate_build_context(context=data)
    assert summary.dockerfile == "FROM paas/busybox:latest\n"
    assert summary.procfile == "web: ./start.sh\n"
    assert summary.paas_toml == '[health]\npath = "/health"\n'
    assert summary.has_dockerfile and summary.has_procfile and summary.has_paas_toml


def test_summary_without_root_files() -> None:
    summary = validate_build_context(context=targz(file("sub/Dockerfile")))
    assert (summary.dockerfile, summary.procfile, summary.paas_toml) == (None, None, None)
    assert not summary.has_dockerfile


def test_make_build_context_packs_a_directory_without_git(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM paas/busybox:latest\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "src" / "run.sh").chmod(0o755)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "src" / ".git").write_text("gitdir: elsewhere\n")
    (tmp_path / "link").symlink_to("src/run.sh")
    os.mkfifo(tmp_path / "fifo")

    data = make_build_context(directory=tmp_path)

    summary = validate_build_context(context=data)
    assert summary.entries == ("Dockerfile", "link", "src", "src/run.sh")
    assert summary.dockerfile == "FROM paas/busybox:latest\n"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        run = tar.getmember("src/run.sh")
        assert run.mode & 0o111 and run.uid == 0
        assert tar.getmember("link").linkname == "src/run.sh"
    assert make_build_context(directory=tmp_path) == data, "same tree, same bytes"


def test_make_build_context_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BadBuildContext, match="not a directory"):
        make_build_context(directory=tmp_path / "missing")


# --- the one writer, and the source strings -----------------------------------------------
def owned(name: str, data: bytes, *, uid: int = 1000, mtime: int = 1_700_000_000
          ) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.uid, info.gid, info.uname, info.gname = len(data), uid, uid, "bob", "bob"
    info.mtime, info.mode = mtime, 0o755
    info.pax_headers = {"comment": "from somewhere"}
    return info, io.BytesIO(data)


def test_pack_context_owns_everything_by_root_and_dates_it_when_asked() -> None:
    data = pack_context([owned("Dockerfile", b"FROM x\n"), owned("run.sh", b"#!/bin/sh\n")],
                        mtime=1234)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["Dockerfile", "run.sh"], "in the order given"
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1234)}
    assert all(m.mode == 0o755 and "comment" not in m.pax_headers for m in members)
    assert data[3] == 0 and data[4:8] == b"\0\0\0\0", "gzip header: no name, dated 0"


def test_pack_context_gives_the_same_bytes_whoever_owned_the_files() -> None:
    mine = pack_context([owned("a", b"x", uid=1000)])
    theirs = pack_context([owned("a", b"x", uid=2000)])
    assert mine == theirs
    assert pack_context([owned("a", b"x", mtime=1)]) != pack_context([owned("a", b"x", mtime=2)])
    assert pack_context([owned("a", b"x", mtime=1)], mtime=5) == \
        pack_context([owned("a", b"x", mtime=2)], mtime=5)


def test_archive_members_repack_to_the_same_context() -> None:
    data = pack_context([owned("Dockerfile", b"FROM x\n"), owned("run.sh", b"#!/bin/sh\n")])
    assert pack_context(archive_members(data)) == data
    plain = gzip.decompress(data)  # `git archive --format=tar` gives a plain tar
    assert pack_context(archive_members(plain)) == data


def test_the_builder_adds_a_generated_dockerfile_through_the_one_writer() -> None:
    from paas.builder.builder import _with_dockerfile

    context = targz(file("Procfile", b"web: ./start.sh\n"), file("start.sh"))
    summary = validate_build_context(context=_with_dockerfile(context, "FROM x\n"))
    assert summary.entries == ("Procfile", "start.sh", "Dockerfile")
    assert summary.dockerfile == "FROM x\n"


def test_directory_members_are_sorted_by_path(tmp_path: Path) -> None:
    for name in ("a-b", "a/b", "a/a", "B"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    data = make_build_context(directory=tmp_path)
    assert validate_build_context(context=data).entries == ("B", "a", "a-b", "a/a", "a/b")


def test_source_strings() -> None:
    context = targz(DOCKERFILE)
    source = upload_source(context)
    assert source == "upload:sha256:" + hashlib.sha256(context).hexdigest()[:16]
    assert upload_source(targz(DOCKERFILE)) == source, "the same context, the same source"
    assert git_source("a" * 40) == "git:" + "a" * 40
    assert source_commit(git_source("a" * 40)) == "a" * 40
    assert source_commit(source) is None and source_commit(None) is None
    assert source_commit("git:") is None
