"""`paas assemble`'s three ways to pack an app (issue 4): the git working tree respecting
.gitignore, HEAD with --from-head, a plain directory; a subfolder of a repository; the errors
for nothing committed, and the warning for uncommitted changes. Real git, in tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from paas.cli import main as cli
from paas.cli.common import CliError
from paas.apiclient.source import assemble, same_tree

GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid",
          "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *GIT_ID, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def names(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.isreg() else None
            if not member.isdir():
                out[member.name] = handle.read() if handle else b""
    return out


def app(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Procfile").write_text("web: ./start.sh\n")
    (root / "start.sh").write_text("#!/bin/sh\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "debug.log").write_text("ignored\n")
    (root / "build").mkdir(exist_ok=True)
    (root / "build" / "out").write_text("ignored\n")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = app(tmp_path / "repo")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_worktree_respects_gitignore_and_includes_untracked_files(repo):
    (repo / "new.txt").write_text("not committed yet\n")
    result = assemble(repo)
    assert set(names(result.data)) == {".gitignore", "Procfile", "start.sh", "new.txt"}
    assert result.mode == "worktree" and result.dirty
    assert result.source is None, "a dirty tree names no commit"
    assert result.files == 4


def test_clean_worktree_names_its_commit(repo):
    result = assemble(repo)
    assert not result.dirty
    assert result.source == f"git:{git(repo, 'rev-parse', 'HEAD')}"


def test_from_head_leaves_uncommitted_changes_out_and_is_reproducible(repo):
    (repo / "Procfile").write_text("web: ./changed.sh\n")
    (repo / "new.txt").write_text("x\n")
    first = assemble(repo, from_head=True)
    files = names(first.data)
    assert set(files) == {".gitignore", "Procfile", "start.sh"}
    assert files["Procfile"] == b"web: ./start.sh\n"
    assert first.dirty and first.source == f"git:{git(repo, 'rev-parse', 'HEAD')}"
    assert assemble(repo, from_head=True).digest == first.digest


def test_a_subfolder_of_a_repository_is_packed_at_the_root(tmp_path):
    root = tmp_path / "mono"
    app(root / "services" / "web")
    (root / "README").write_text("the monorepo\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    for from_head in (False, True):
        result = assemble(root / "services" / "web", from_head=from_head)
        assert set(names(result.data)) == {".gitignore", "Procfile", "start.sh"}, from_head


def test_same_tree_ignores_commits_that_changed_other_folders(tmp_path):
    root = tmp_path / "mono"
    web = app(root / "web")
    (root / "other").mkdir()
    (root / "other" / "x").write_text("1\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    first = git(root, "rev-parse", "HEAD")
    (root / "other" / "x").write_text("2\n")
    git(root, "commit", "-q", "-am", "other only")
    second = git(root, "rev-parse", "HEAD")
    assert same_tree(web, first, second)
    (web / "start.sh").write_text("#!/bin/sh\necho changed\n")
    git(root, "commit", "-q", "-am", "web changed")
    assert not same_tree(web, second, git(root, "rev-parse", "HEAD"))
    assert not same_tree(web, first, "0" * 40)


def test_plain_directory_outside_git(tmp_path):
    result = assemble(app(tmp_path / "plain"))
    assert result.mode == "directory" and result.commit is None
    assert "debug.log" in names(result.data), ".gitignore means nothing outside git"
    assert result.source is None and result.upload_source.startswith("upload:sha256:")


def test_nothing_committed_is_an_error(tmp_path):
    root = app(tmp_path / "fresh")
    git(root, "init", "-q")
    for from_head in (False, True):
        with pytest.raises(CliError) as exc:
            assemble(root, from_head=from_head)
        assert "nothing is committed" in exc.value.message and "git commit" in exc.value.hint


def test_from_head_outside_git_is_an_error(tmp_path):
    with pytest.raises(CliError) as exc:
        assemble(app(tmp_path / "plain"), from_head=True)
    assert "not in a git repository" in exc.value.message


def test_an_app_needs_a_dockerfile_or_a_procfile(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "index.html").write_text("hi\n")
    with pytest.raises(CliError) as exc:
        assemble(root)
    assert "neither a Dockerfile nor a Procfile" in exc.value.message


def test_assemble_verb_prints_and_writes_the_context(repo, tmp_path, capsys):
    (repo / "new.txt").write_text("x\n")
    out = tmp_path / "context.tar.gz"
    assert cli.main(["assemble", str(repo), "-o", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    summary = json.loads(stdout)
    assert summary["files"] == 4 and summary["bytes"] == out.stat().st_size
    assert summary["digest"].startswith("sha256:") and summary["output"] == str(out)
    assert "warning: " in stderr and "uncommitted changes" in stderr and "hint:" in stderr


def test_assemble_verb_errors_are_one_sentence(tmp_path, capsys):
    root = app(tmp_path / "fresh")
    git(root, "init", "-q")
    assert cli.main(["assemble", str(root)]) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert stderr.splitlines()[0].startswith("paas: nothing is committed")
    assert stderr.splitlines()[1].startswith("hint: ")
