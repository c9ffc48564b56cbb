"""Tests of the pre-receive hook's pure parts: ref lines, the deploy branch, push options,
release reuse, and what it prints and returns for refs that do not deploy (issue 4)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from paas.git import hook as githook
from paas.cli.client import Client, ClientError, Target
from paas.git.hook import (
    HookError,
    Out,
    Pusher,
    PushOptions,
    RefUpdate,
    choose_deploy_ref,
    existing_release,
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


# --- release reuse ------------------------------------------------------------------------
def test_existing_release_is_the_newest_from_that_source():
    releases = [{"version": 1, "source": f"git:{A}"}, {"version": 2, "source": f"git:{B}"},
                {"version": 3, "source": f"git:{A}"}]  # v3: a config change of v1
    assert existing_release(releases, f"git:{A}")["version"] == 3
    assert existing_release(releases, "git:" + "c" * 40) is None


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
