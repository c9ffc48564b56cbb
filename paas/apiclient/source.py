"""The assemble step on the user's side: an app directory becomes a build context, the gzip
tar the controller builds a release from.

Three ways, chosen by where the directory is:

- in a git working tree: the files git would commit (`git ls-files --cached --others
  --exclude-standard`, so `.gitignore` is respected), as they are on disk;
- in a git repository with `--from-head`: the committed tree of HEAD (`git archive`), the
  uncommitted changes left out;
- outside git: the whole directory (without `.git`), as `make_build_context` packs it.

A directory may be a subfolder of a repository (a monorepo): only that subfolder is packed,
at the context's root. The release records `git:<commit>` as its source only when the packed
files are exactly the commit's: from HEAD, or from a clean working tree.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paas.builder import stacks
from paas.builder.appconfig import BadAppConfig, build_stack
from paas.builder.context import (BadBuildContext, archive_members, directory_members, git_source,
                                make_build_context, pack_context, upload_source,
                                validate_build_context)
from paas.apiclient.errors import CliError

GIT_TIMEOUT_S = 60


@dataclass(frozen=True, kw_only=True)
class Assembled:
    """A build context and what it was made from."""

    data: bytes
    directory: Path
    mode: str  # "worktree", "head" or "directory"
    files: int
    commit: str | None = None
    dirty: bool = False

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def source(self) -> str | None:
        """`git:<commit>` when the context is exactly that commit's tree, else None (the
        controller then records the upload's digest)."""
        if self.commit and (self.mode == "head" or not self.dirty):
            return git_source(self.commit)
        return None

    @property
    def upload_source(self) -> str:
        """What the controller records for this context when no source is sent."""
        return upload_source(self.data)

    def summary(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "mode": self.mode, "digest": self.digest,
                "bytes": len(self.data), "files": self.files, "commit": self.commit,
                "dirty": self.dirty, "source": self.source or self.upload_source}


# --- git ----------------------------------------------------------------------------------
def git(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in `directory`; argv only, output captured, never a shell."""
    try:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise CliError("git is not installed", hint="install git, or assemble a directory "
                                                    "that is not a git repository") from None
    except subprocess.TimeoutExpired:
        raise CliError(f"git {args[0]} did not finish within {GIT_TIMEOUT_S}s",
                       hint="check the repository with 'git status'") from None


def _git_out(directory: Path, *args: str) -> bytes:
    result = git(directory, *args)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise CliError(f"git {args[0]} failed in {directory}"
                       + (f": {detail[-1]}" if detail else ""),
                       hint="check the repository with 'git status'",
                       data={"git_error": detail[-1] if detail else ""})
    return result.stdout


def in_git_repo(directory: Path) -> bool:
    try:
        result = subprocess.run(["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == b"true"


def head_commit(directory: Path) -> str | None:
    """HEAD's commit id, or None when nothing is committed yet."""
    result = git(directory, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if result.returncode != 0:
        return None
    return result.stdout.decode().strip() or None


def same_tree(directory: Path, commit_a: str, commit_b: str) -> bool:
    """Whether `directory` (a repository's subfolder, or its top) has the same content in
    both commits: a monorepo's other folders may change without this app changing."""
    prefix = _git_out(directory, "rev-parse", "--show-prefix").decode().strip()
    trees = []
    for commit in (commit_a, commit_b):
        result = git(directory, "rev-parse", "--verify", "--quiet", f"{commit}:{prefix}")
        if result.returncode != 0:  # unknown here (not fetched), or the folder did not exist
            return False
        trees.append(result.stdout.strip())
    return trees[0] == trees[1]


def is_dirty(directory: Path) -> bool:
    """Uncommitted changes or untracked (not ignored) files under `directory`."""
    return bool(_git_out(directory, "status", "--porcelain", "-z", "--", ".").strip(b"\0"))


def worktree_files(directory: Path) -> list[str]:
    """The paths git would commit under `directory`, relative to it: tracked files still on
    disk plus untracked ones that .gitignore does not exclude."""
    out = _git_out(directory, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    names = sorted({n for n in out.decode("utf-8", "surrogateescape").split("\0") if n})
    return [n for n in names if not n.endswith("/") and _packable(directory / n)]


def _packable(path: Path) -> bool:
    try:
        mode = path.lstat().st_mode
    except OSError:  # deleted but still in the index
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)  # a directory here is a submodule


# --- packing ------------------------------------------------------------------------------
def count_files(data: bytes) -> int:
    """Entries that are not directories."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return sum(1 for m in archive if not m.isdir())


# --- the three ways -----------------------------------------------------------------------
def commit_context(repository: Path, commit: str, *, folder: str = "") -> bytes:
    """The build context of `folder` ("" for the top) as `commit` has it, at the context's
    root: `git archive`, every entry dated at the commit's time, so the same commit always
    gives the same bytes. `repository` is the top of a working tree, or a bare repository
    (the git hook)."""
    # git archive limits itself to the current directory, so it runs at the top level and
    # takes the folder's tree (`<commit>:<folder>`), which puts it at the context's root.
    raw = _git_out(repository, "archive", "--format=tar", f"{commit}:{folder}")
    when = int(_git_out(repository, "show", "-s", "--format=%ct", commit).decode().strip())
    return pack_context(archive_members(raw), mtime=when)


def _from_head(directory: Path, commit: str) -> bytes:
    prefix = _git_out(directory, "rev-parse", "--show-prefix").decode().strip()
    top = Path(_git_out(directory, "rev-parse", "--show-toplevel").decode().strip())
    return commit_context(top, commit, folder=prefix)


def _check(data: bytes, directory: Path) -> None:
    try:
        summary = validate_build_context(context=data)
    except BadBuildContext as exc:
        raise CliError(f"{directory} cannot be built: {exc}".rstrip("."),
                       hint="fix the files named, then assemble again") from None
    try:
        stacks.detect(summary.entries, configured=build_stack(summary.paas_toml))
    except BadAppConfig as exc:
        raise CliError(f"{directory} cannot be built: {exc}", hint="fix paas.toml") from None
    except stacks.NoStack as exc:
        if summary.has_procfile or summary.has_paas_toml:  # e.g. an unknown [build] stack
            raise CliError(f"{directory} cannot be built: {str(exc).rstrip('.')}") from None
        raise CliError(f"{directory} has neither a Dockerfile nor a Procfile nor a manifest "
                       "that a stack detects",
                       hint="add one ('paas init' writes a Procfile), and commit it") from None


def assemble(directory: Path, *, from_head: bool = False, check: bool = True) -> Assembled:
    """Pack `directory` as described in the module docstring."""
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory",
                       hint="name the app's directory, e.g. 'paas assemble examples/hello'")
    if not in_git_repo(directory):
        if from_head:
            raise CliError(f"{directory} is not in a git repository, so it has no HEAD",
                           hint="drop --from-head to pack the directory as it is")
        data = make_build_context(directory=directory)
        assembled = Assembled(data=data, directory=directory, mode="directory",
                              files=count_files(data))
    else:
        assembled = _assemble_git(directory, from_head=from_head)
    if check:
        _check(assembled.data, directory)
    return assembled


def _assemble_git(directory: Path, *, from_head: bool) -> Assembled:
    commit = head_commit(directory)
    if commit is None:
        raise CliError(f"nothing is committed in the git repository of {directory} yet",
                       hint="commit the app first: git add -A && git commit -m 'first'")
    dirty = is_dirty(directory)
    if from_head:
        data = _from_head(directory, commit)
        mode = "head"
    else:
        names = worktree_files(directory)
        if not names:
            raise CliError(f"git lists no files under {directory}",
                           hint="add the app's files, or check .gitignore")
        data = pack_context(directory_members(directory, names))
        mode = "worktree"
    return Assembled(data=data, directory=directory, mode=mode, files=count_files(data),
                     commit=commit, dirty=dirty)


def write_context(assembled: Assembled, output: Path) -> None:
    """Write the context to `output` (atomically; the directory must exist)."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(assembled.data)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {output}: {exc.strerror or exc}",
                       hint="name a file in a directory you can write to") from None
