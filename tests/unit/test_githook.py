"""Tests of the pre-receive hook's pure parts: ref lines, the deploy branch, push options,
and what it prints and returns for refs that do not deploy (issue 4); and of a deploy against
a fake API in a real bare repository: packing, the shared reuse rule and follower (issue 8)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from paas.git import hook as githook
from paas.apiclient.client import Client, ClientError, Target
from paas.apiclient.source import commit_context
from paas.git.hook import (
    HookError,
    Out,
    Pusher,
    PushOptions,
    RefUpdate,
    choose_deploy_ref,
    parse_push_options,
    parse_ref_lines,
)

A = "a" * 40
B = "b" * 40
ZERO = "0" * 40


def update(ref: str, new: str = B, old: str = A) -> RefUpdate:
    return RefUpdate(old=old, new=new, ref=ref)


# --- ref lines ----------------------------------------------------------------------------
def test_ref_lines_are_parsed_and_blank_lines_skipped():
    text = f"{A} {B} refs/heads/main\n\n{ZERO} {A} refs/tags/v1\n"
    assert parse_ref_lines(io.StringIO(text)) == [update("refs/heads/main"),
                                                   RefUpdate(ZERO, A, "refs/tags/v1")]


def test_sha256_object_names_are_accepted():
    assert parse_ref_lines([f"{'c' * 64} {'d' * 64} refs/heads/main"])[0].new == "d" * 64


@pytest.mark.parametrize("line", [
    f"{A} {B}",                         # no ref
    f"{A} {B} refs/heads/main extra",   # too many fields
    f"{A} xyz refs/heads/main",         # not an object name
    f"{A.upper()} {B} refs/heads/main",  # git sends lowercase hex
    f"{A[:39]} {B} refs/heads/main",    # too short
])
def test_malformed_ref_lines_are_refused_in_one_sentence(line):
    with pytest.raises(HookError) as exc:
        parse_ref_lines([line])
    assert "cannot read" in exc.value.message and "\n" not in exc.value.message


def test_deleted_and_branch():
    assert update("refs/heads/main", new=ZERO).deleted
    assert not update("refs/heads/main").deleted
    assert update("refs/heads/feature/x").branch == "feature/x"
    assert update("refs/tags/v1").branch is None


# --- the deploy branch --------------------------------------------------------------------
@pytest.mark.parametrize("refs, configured, expected", [
    (["refs/heads/main"], None, "refs/heads/main"),
    (["refs/heads/master"], None, "refs/heads/master"),
    (["refs/heads/master", "refs/heads/main"], None, "refs/heads/main"),  # main first
    (["refs/heads/feature"], None, None),
    (["refs/tags/main"], None, None),                   # a tag named main is not the branch
    (["refs/heads/main"], "production", None),          # configured: main no longer deploys
    (["refs/heads/main", "refs/heads/production"], "production", "refs/heads/production"),
    (["refs/heads/mainline"], None, None),              # exact names only
])
def test_choose_deploy_ref(refs, configured, expected):
    chosen = choose_deploy_ref([update(r) for r in refs], configured)
    assert (chosen.ref if chosen else None) == expected


# --- push options -------------------------------------------------------------------------
@pytest.mark.parametrize("environ, expected", [
    ({}, PushOptions()),
    ({"GIT_PUSH_OPTION_COUNT": "0"}, PushOptions()),
    ({"GIT_PUSH_OPTION_COUNT": "1", "GIT_PUSH_OPTION_0": "force"}, PushOptions(force=True)),
    ({"GIT_PUSH_OPTION_COUNT": "2", "GIT_PUSH_OPTION_0": "ci-skip",
      "GIT_PUSH_OPTION_1": "force"}, PushOptions(force=True, unknown=("ci-skip",))),
    ({"GIT_PUSH_OPTION_COUNT": "1", "GIT_PUSH_OPTION_0": "forced"},
     PushOptions(unknown=("forced",))),
    ({"GIT_PUSH_OPTION_COUNT": "2", "GIT_PUSH_OPTION_0": "force"}, PushOptions(force=True)),
    ({"GIT_PUSH_OPTION_COUNT": "x", "GIT_PUSH_OPTION_0": "force"}, PushOptions()),
])
def test_parse_push_options(environ, expected):
    assert parse_push_options(environ) == expected


# --- a deploy, against a fake API and a real repository -----------------------------------
GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid",
          "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *GIT_ID, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A bare repository with one commit, as the current directory (where git runs hooks)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "Procfile").write_text("web: ./start.sh\n")
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "app.git")],
                   check=True)
    monkeypatch.chdir(tmp_path / "app.git")
    return work, git(work, "rev-parse", "HEAD")


class FakeApi:
    """The controller as the hook sees it: releases, builds, a deployment that ends."""

    def __init__(self, releases: list[dict[str, Any]], *, ends: bool = True) -> None:
        self.releases, self.ends = releases, ends
        self.built: list[tuple[str, bytes]] = []
        self.deployed: list[int] = []
        self.stream: list[dict[str, Any]] = []  # the log objects a build answers first

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path.endswith("/releases"):
            return {"releases": self.releases}
        if "/events?" in path:
            after = int(path.rsplit("after=", 1)[1])
            events = [{"id": 1, "step": "control", "message": "control instance healthy"},
                      {"id": 2, "step": "finish", "message": "v1 is live"}]
            return {"events": [e for e in events if e["id"] > after]}
        if "/deployments/" in path:
            return {"deployment": self.deployment("succeeded" if self.ends else "running")}
        return {"app": {"urls": ["http://hello.localhost/"]}}

    def stream_objects(self, method: str, path: str, *, data: bytes,
                       **_: Any) -> Iterator[dict[str, Any]]:
        self.built.append((path, data))
        yield from self.stream
        yield {"release": {"version": len(self.releases) + 1, "image": "paas/hello:vN"}}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.deployed.append(body["release"])
        return {"deployment": self.deployment("running")}

    def deployment(self, status: str) -> dict[str, Any]:
        return {"id": 7, "status": status, "step": "finish", "reason": "all healthy",
                "replicas": {"web": 1}}


def push(api: FakeApi, sha: str, *, force: bool = False) -> str:
    stream = io.StringIO()
    pusher = Pusher(api=api, app="hello", out=Out(stream),  # type: ignore[arg-type]
                    options=PushOptions(force=force))
    pusher.run(RefUpdate(A, sha, "refs/heads/main"))
    return stream.getvalue()


def test_a_new_commit_is_packed_built_deployed_and_followed(bare):
    work, sha = bare
    api = FakeApi([])
    out = push(api, sha)
    [(path, context)] = api.built
    assert path.endswith(f"?stream=1&source=git:{sha}")
    assert context == commit_context(work, sha), "the same bytes as paas assemble --from-head"
    assert api.deployed == [1]
    assert "-----> control\n       control instance healthy\n-----> finish\n" in out
    assert out.splitlines()[-1] == "-----> summary: hello v1 is live at " \
                                   "http://hello.localhost/ (deployment 7, all healthy)"


def test_the_commit_of_the_live_release_is_neither_built_nor_deployed(bare):
    _, sha = bare
    api = FakeApi([{"version": 1, "source": f"git:{sha}", "status": "live"}])
    out = push(api, sha)
    assert api.built == [] and api.deployed == []
    assert f"v1 was already built from {sha[:12]}: no new release" in out
    assert "summary: hello v1 is already live: nothing to deploy" in out


def test_a_built_release_that_is_not_live_is_deployed_without_building(bare):
    _, sha = bare
    api = FakeApi([{"version": 1, "source": f"git:{sha}", "status": "failed"}])
    push(api, sha)
    assert api.built == [] and api.deployed == [1]


def test_force_builds_the_same_commit_again(bare):
    _, sha = bare
    api = FakeApi([{"version": 1, "source": f"git:{sha}", "status": "live"}])
    push(api, sha, force=True)
    assert len(api.built) == 1 and api.deployed == [2]


def test_a_commit_with_the_same_files_reuses_the_release(bare):
    work, first = bare
    git(work, "commit", "-q", "--allow-empty", "-m", "only the message")
    git(work, "push", "-q", str(Path.cwd()), "HEAD:main")
    second = git(work, "rev-parse", "HEAD")
    api = FakeApi([{"version": 1, "source": f"git:{first}", "status": "live"}])
    out = push(api, second)
    assert api.built == [] and api.deployed == []
    assert f"({first[:12]}, the same files)" in out


def test_an_older_release_of_the_commit_is_not_reused(bare):
    _, sha = bare
    api = FakeApi([{"version": 1, "source": f"git:{sha}", "status": "retired"},
                   {"version": 2, "source": "git:" + "c" * 40, "status": "live"}])
    push(api, sha)
    assert len(api.built) == 1 and api.deployed == [3]


def test_a_deployment_that_does_not_end_in_time_rejects(bare, monkeypatch):
    _, sha = bare
    monkeypatch.setattr(githook, "DEPLOY_TIMEOUT", 0.0)
    api = FakeApi([{"version": 1, "source": f"git:{sha}", "status": "failed"}], ends=False)
    with pytest.raises(HookError) as exc:
        push(api, sha)
    assert exc.value.message == "deployment 7 still runs after 0s; follow it with " \
                                "'paas events hello --deployment 7'"


def test_a_commit_git_cannot_pack_rejects_in_one_sentence(bare):
    stream = io.StringIO()
    pusher = Pusher(api=FakeApi([]), app="hello", out=Out(stream),  # type: ignore[arg-type]
                    options=PushOptions())
    code = githook.handle([update("refs/heads/main", new="c" * 40)], branch=None,
                          pusher=pusher)
    out = stream.getvalue()
    assert code == githook.EXIT_REJECT
    summary = out.splitlines()[-2]  # git's own words follow, in git's language
    assert summary.startswith("-----> summary: git archive of cccccccccccc failed: ")
    assert "check the repository" not in summary, "no hint meant for a local user"
    assert "Traceback" not in out


# --- what the hook does without deploying -------------------------------------------------
class RecordingPusher(Pusher):
    def __init__(self, stream: io.StringIO, *, fail: Exception | None = None,
                 options: PushOptions = PushOptions()) -> None:
        super().__init__(api=Client(Target("http://127.0.0.1:1", "t")), app="hello",
                         out=Out(stream), options=options)
        self.deployed: list[RefUpdate] = []
        self.fail = fail

    def run(self, update: RefUpdate) -> None:
        if self.fail is not None:
            raise self.fail
        self.deployed.append(update)


def run_handle(refs: list[RefUpdate], branch: str | None = None,
               **kw: Any) -> tuple[int, str, RecordingPusher]:
    stream = io.StringIO()
    pusher = RecordingPusher(stream, **kw)
    code = githook.handle(refs, branch=branch, pusher=pusher)
    return code, stream.getvalue(), pusher


def test_other_refs_are_accepted_without_deploying():
    code, out, pusher = run_handle([update("refs/heads/feature"), update("refs/tags/v1")])
    assert code == githook.EXIT_ACCEPT and pusher.deployed == []
    assert "-----> refs/heads/feature: not the deploy branch (main or master): accepted " \
           "without deploying" in out


def test_the_deploy_branch_deploys_and_the_others_are_named():
    code, out, pusher = run_handle([update("refs/heads/feature"), update("refs/heads/main")])
    assert code == 0 and [u.ref for u in pusher.deployed] == ["refs/heads/main"]
    assert "refs/heads/feature: not the deploy branch" in out
    assert "refs/heads/main: not" not in out


def test_deleting_the_deploy_branch_deploys_nothing():
    code, out, pusher = run_handle([update("refs/heads/main", new=ZERO)])
    assert code == 0 and pusher.deployed == []
    assert "refs/heads/main deleted: nothing deployed" in out


def test_unknown_push_options_are_named():
    _, out, _ = run_handle([update("refs/heads/main")],
                           options=PushOptions(unknown=("ci-skip",)))
    assert "ignoring the unknown push option 'ci-skip'" in out


def test_a_failure_rejects_with_the_reason_and_the_log_tail():
    failure = HookError("deployment 3 of hello v2 failed at test: the integration test exited "
                        "with code 3", log_tail="checking\nFAIL: greeting missing\n",
                        log_name="the failing test log")
    code, out, _ = run_handle([update("refs/heads/main")], fail=failure)
    assert code == githook.EXIT_REJECT
    lines = out.splitlines()
    assert lines[0] == "-----> summary: deployment 3 of hello v2 failed at test: the " \
                       "integration test exited with code 3"
    assert "       | FAIL: greeting missing" in lines
    assert lines[-1].startswith(" !     push rejected")


def test_an_api_error_rejects_in_one_sentence():
    code, out, _ = run_handle([update("refs/heads/main")],
                              fail=ClientError("the token is not valid", hint="check it",
                                               status=401))
    assert code == 1 and "summary: the token is not valid (check it)" in out
    assert "Traceback" not in out


def test_main_without_its_environment_rejects():
    stream = io.StringIO()
    code = githook.main(stdin=io.StringIO(f"{A} {B} refs/heads/main\n"), stdout=stream,
                        environ={})
    assert code == 1
    assert "without PAAS_GIT_URL, PAAS_GIT_TOKEN, PAAS_GIT_APP" in stream.getvalue()


def test_tail_keeps_the_last_lines():
    assert githook.tail("\n".join(str(i) for i in range(100)), 3) == ["97", "98", "99"]
    assert githook.tail("") == []


def test_the_stack_phase_is_printed_live_only_when_a_stack_is_made(bare):
    _, sha = bare
    api = FakeApi([])
    api.stream = [{"phase": "stack", "line": "making paas-stack/go-build:1 from Debian"},
                  {"phase": "stack", "line": "made paas-stack/go-build:1 in 80.0s"},
                  {"phase": "package", "line": "Step 1/9 : FROM paas-stack/go-build:1"},
                  {"phase": "package", "line": " ---> 1234"}]
    out = push(api, sha)
    assert ("-----> stack: making the stack's images: first use only, cached after\n"
            "       making paas-stack/go-build:1 from Debian\n"
            "       made paas-stack/go-build:1 in 80.0s\n"
            "-----> build: the app's image\n"
            "       Step 1/9 : FROM paas-stack/go-build:1\n") in out
    assert " ---> 1234" not in out

    cached = FakeApi([])
    cached.stream = api.stream[2:]
    out = push(cached, sha)
    assert "-----> stack" not in out and "-----> build: the app's image" not in out
    assert "       Step 1/9 : FROM paas-stack/go-build:1\n" in out
