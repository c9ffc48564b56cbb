"""Build contexts: the gzip-compressed tar of an app's source that the builder hands to Docker.

An uploaded context is untrusted, so `validate_build_context` reads it as a stream (never
extracting anything) and refuses it unless it is a readable gzip tar within size limits whose
every entry stays inside the context: no absolute paths, no `..`, no entry beneath a symlink,
symlinks that resolve inside the context, hard links to earlier entries only, and no devices or
fifos. It returns the entry names and the text of the root `Dockerfile`, `Procfile` and
`paas.toml` so the controller and the builder need not read the archive again.

The other side is writing one: `pack_context` is the one writer, used by everyone who makes a
context (the CLI's three ways to assemble, the git hook, the builder adding a generated
Dockerfile), fed with `directory_members` or `archive_members`; `make_build_context` packs a
plain directory (without `.git`). `upload_source` and `git_source` are the source strings a
release records for a context.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"
ROOT_FILES = ("Dockerfile", "Procfile", "paas.toml")
_MAX_SYMLINK_HOPS = 40


class BadBuildContext(ValueError):
    """The build context cannot be used: the message says what to fix before uploading again."""


@dataclass(frozen=True, kw_only=True)
class ContextLimits:
    """Limits on an uploaded build context."""

    max_compressed_bytes: int = 100 * 1024 * 1024
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    max_entries: int = 20_000
    max_root_file_bytes: int = 1024 * 1024  # Dockerfile, Procfile, paas.toml


DEFAULT_LIMITS = ContextLimits()


@dataclass(frozen=True, kw_only=True)
class BuildContextSummary:
    """What the builder and controller need to know about a valid context."""

    entries: tuple[str, ...]  # normalised names, in archive order, without "./"
    dockerfile: str | None  # text of the root Dockerfile, None when absent
    procfile: str | None
    paas_toml: str | None
    compressed_bytes: int
    uncompressed_bytes: int

    @property
    def has_dockerfile(self) -> bool:
        return self.dockerfile is not None

    @property
    def has_procfile(self) -> bool:
        return self.procfile is not None

    @property
    def has_paas_toml(self) -> bool:
        return self.paas_toml is not None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


class _BoundedGunzip(io.RawIOBase):
    """Decompresses gzip data, refusing to produce more than `limit` bytes (a zip bomb guard)."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self._limit = limit
        self.produced = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if size is None or size < 0:
            size = 1024 * 1024
        chunk = self._gz.read(min(size, self._limit + 1 - self.produced) or 1)
        self.produced += len(chunk)
        if self.produced > self._limit:
            raise BadBuildContext(
                f"the build context is larger than {_mb(self._limit)} when uncompressed; "
                "leave build outputs and dependencies out of it."
            )
        return chunk


def _normalise(name: str) -> str:
    """The entry name without leading "./" and repeated or trailing slashes."""
    while name.startswith("./"):
        name = name[2:]
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _check_name(raw: str) -> str:
    if raw.startswith("/"):
        raise BadBuildContext(f"the build context has an absolute path {raw[:100]!r}; "
                              "archive paths relative to the app's root.")
    if ".." in raw.split("/"):
        raise BadBuildContext(f"the build context has a path with '..' ({raw[:100]!r}); "
                              "archive paths inside the app's root only.")
    if "\x00" in raw:
        raise BadBuildContext("the build context has an entry name with a NUL byte.")
    return _normalise(raw)


def _escapes(start: list[str], target: str, symlinks: dict[str, str]) -> bool:
    """Whether resolving `target` from the directory `start` leaves the context's root.

    Follows the archive's own symlinks as the kernel would, so a chain of individually
    harmless links cannot climb out; a loop counts as escaping.
    """
    stack = list(start)
    pending = [p for p in reversed(target.split("/")) if p not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        link = symlinks.get("/".join(stack))
        if link is None:
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS or link.startswith("/"):
            return True
        stack.pop()
        pending.extend(p for p in reversed(link.split("/")) if p not in ("", "."))
    return False


def _read_root_file(archive: tarfile.TarFile, member: tarfile.TarInfo, *, name: str,
                    limit: int) -> str:
    if not member.isreg():
        raise BadBuildContext(f"the {name} at the root of the build context must be a regular "
                              "file, not a link or a directory.")
    if member.size > limit:
        raise BadBuildContext(f"the {name} is larger than {_mb(limit)}.")
    handle = archive.extractfile(member)
    assert handle is not None  # a regular member always has data
    try:
        return handle.read().decode("utf-8")
    except UnicodeDecodeError:
        raise BadBuildContext(f"the {name} is not UTF-8 text.") from None


def _check_member(member: tarfile.TarInfo, name: str, *, regular_files: set[str],
                  symlinks: dict[str, str]) -> None:
    if member.isreg() or member.isdir():
        return
    if member.issym():
        if member.linkname.startswith("/"):
            raise BadBuildContext(f"the symlink {name!r} points to the absolute path "
                                  f"{member.linkname[:100]!r}; use a relative target inside "
                                  "the context.")
        symlinks[name] = member.linkname
        return
    if member.islnk():
        target = _normalise(member.linkname)
        if member.linkname.startswith("/") or ".." in member.linkname.split("/") \
                or target not in regular_files:
            raise BadBuildContext(f"the hard link {name!r} points outside the build context; "
                                  "archive the file itself instead.")
        return
    kind = ("device" if member.ischr() or member.isblk()
            else "fifo" if member.isfifo() else "special file")
    raise BadBuildContext(f"the build context has a {kind} {name!r}; only files, directories "
                          "and links are allowed.")


def validate_build_context(
    *, context: bytes, limits: ContextLimits = DEFAULT_LIMITS
) -> BuildContextSummary:
    """Check an uploaded build context and summarise it; raise BadBuildContext if unusable."""
    if len(context) > limits.max_compressed_bytes:
        raise BadBuildContext(f"the build context is larger than "
                              f"{_mb(limits.max_compressed_bytes)}; leave build outputs and "
                              "dependencies out of it.")
    if not context.startswith(GZIP_MAGIC):
        raise BadBuildContext("the build context is not gzip-compressed; send a .tar.gz archive.")
    stream = _BoundedGunzip(context, limits.max_uncompressed_bytes)
    entries: list[str] = []
    regular_files: set[str] = set()
    symlinks: dict[str, str] = {}
    texts: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                if len(entries) >= limits.max_entries:
                    raise BadBuildContext(f"the build context has more than {limits.max_entries} "
                                          "entries; leave dependencies out of it.")
                name = _check_name(member.name)
                _check_member(member, name, regular_files=regular_files, symlinks=symlinks)
                if not name:  # the root directory itself, "." or "./"
                    if not member.isdir():
                        raise BadBuildContext("the build context has an entry with no name.")
                    continue
                entries.append(name)
                if member.isreg() or member.islnk():
                    regular_files.add(name)
                if name in ROOT_FILES:
                    texts[name] = _read_root_file(archive, member, name=name,
                                                  limit=limits.max_root_file_bytes)
            # Drain the rest (tar padding) so the whole stream is checked and counted.
            while stream.read(1024 * 1024):
                pass
    except BadBuildContext:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        raise BadBuildContext("the build context is not a readable gzip-compressed tar archive; "
                              "create it with 'tar -czf'.") from None
    if not entries:
        raise BadBuildContext("the build context is empty; it needs at least a Dockerfile or a "
                              "Procfile.")
    _check_links(entries=entries, symlinks=symlinks)
    return BuildContextSummary(
        entries=tuple(entries),
        dockerfile=texts.get("Dockerfile"),
        procfile=texts.get("Procfile"),
        paas_toml=texts.get("paas.toml"),
        compressed_bytes=len(context),
        uncompressed_bytes=stream.produced,
    )


def _check_links(*, entries: list[str], symlinks: dict[str, str]) -> None:
    """Refuse entries beneath a symlink and symlinks that resolve outside the context.

    Done once the whole archive is known, because a link may come before or after the
    entries it would affect.
    """
    if not symlinks:
        return
    for name in entries:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in symlinks:
                raise BadBuildContext(f"the entry {name!r} lies beneath a symlink; archive the "
                                      "real directory instead.")
    for name, target in symlinks.items():
        if _escapes(name.split("/")[:-1], target, symlinks):
            raise BadBuildContext(f"the symlink {name!r} points outside the build context "
                                  f"({target[:100]!r}); use a target inside it.")


# --- writing contexts ---------------------------------------------------------------------
Member = tuple[tarfile.TarInfo, IO[bytes] | None]
"""An entry to write and, for a regular file, where its data is read from."""


def pack_context(members: Iterable[Member], *, mtime: int | None = None,
                 compresslevel: int = 9) -> bytes:
    """The one writer of build contexts: a gzip PAX tar of `members`, in the order given.

    Every entry is owned by root (uid and gid 0, no user or group name) and carries no extra
    PAX headers; with `mtime` every entry is dated then. The gzip header has no name and no
    date. So the same members always give the same bytes, and the same source the same
    `upload_source`. Callers give members sorted by name (`directory_members` does).
    """
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=compresslevel) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for info, handle in members:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.pax_headers = {}
            if mtime is not None:
                info.mtime = mtime
            archive.addfile(info, handle if info.isreg() else None)
    return buffer.getvalue()


def directory_members(directory: Path, names: Iterable[str]) -> Iterator[Member]:
    """Members for `names` (paths relative to `directory`), sorted by name, each file open
    only while it is written. Files keep their mode and modification time (an app serving
    them may send it as Last-Modified); what is neither a file, a directory nor a symlink,
    or is gone, is left out."""
    for name in sorted(names):
        path = directory / name
        try:
            info = _path_info(path, name)
            if info is None or not info.isreg():
                if info is not None:
                    yield info, None
                continue
            with open(path, "rb") as handle:
                yield info, handle
        except FileNotFoundError:
            continue


def _path_info(path: Path, name: str) -> tarfile.TarInfo | None:
    found = path.lstat()
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(found.st_mode)
    info.mtime = int(found.st_mtime)
    if stat.S_ISREG(found.st_mode):
        info.size = found.st_size
    elif stat.S_ISDIR(found.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(found.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    else:
        return None
    return info


def archive_members(data: bytes) -> Iterator[Member]:
    """The members of a tar (plain or compressed), in its order, read as a stream."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as source:
        for member in source:
            yield member, source.extractfile(member) if member.isreg() else None


def make_build_context(*, directory: Path, exclude: frozenset[str] = frozenset({".git"})) -> bytes:
    """Pack `directory` into a gzip tar build context, skipping `.git` at any depth.

    Symlinks are kept as links (a linked directory is not followed); sockets and other
    special files are left out.
    """
    root = Path(directory)
    if not root.is_dir():
        raise BadBuildContext(f"{str(root)[:200]!r} is not a directory.")
    return pack_context(directory_members(root, _tree_names(root, "", exclude)))


def _tree_names(root: Path, relative: str, exclude: frozenset[str]) -> Iterator[str]:
    with os.scandir(root / relative if relative else root) as scan:
        children = list(scan)
    for child in children:
        if child.name in exclude:
            continue
        name = posixpath.join(relative, child.name) if relative else child.name
        yield name
        if child.is_dir(follow_symlinks=False):
            yield from _tree_names(root, name, exclude)


# --- what a release records as its source -------------------------------------------------
def upload_source(context: bytes) -> str:
    """The source of a release built from `context` when no commit names it:
    `upload:sha256:<the first 16 hex digits of its SHA-256>`."""
    return "upload:sha256:" + hashlib.sha256(context).hexdigest()[:16]


def git_source(commit: str) -> str:
    """The source of a release built from exactly the files of `commit`: `git:<commit>`."""
    return f"git:{commit}"


def source_commit(source: str | None) -> str | None:
    """The commit a `git:<commit>` source names, else None."""
    if source and source.startswith("git:"):
        return source.removeprefix("git:") or None
    return None
