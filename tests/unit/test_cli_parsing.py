"""The `paas` command's pure parts: argument parsing, app names, versions, durations, masking,
the exit code of each failed phase, and how an error is printed (issue 4)."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from paas.cli import main as cli
from paas.cli.apps import log_record, logs_path, split_config_words
from paas.cli.common import (EXIT_BUILD, EXIT_CONTROL, EXIT_ERROR, EXIT_FINISH, EXIT_PUBLISH,
                             EXIT_ROLLOUT, EXIT_TEST, EXIT_USAGE, CliError, exit_code_for_step,
                             mask, parse_duration, parse_version, the_app)
from paas.cli.deploy import parse_counts
from paas.apiclient.follow import EventPrinter, StillRunning, failure, follow
from paas.apiclient.client import ClientError


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


# --- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, app", [
    (["ps", "hello"], "hello"),
    (["ps", "--app", "hello"], "hello"),
    (["releases", "hello", "--json"], "hello"),
    (["promote", "--app", "hello", "--version", "v3"], "hello"),
    (["rollback", "hello", "--no-checks", "--no-wait"], "hello"),
    (["events", "hello", "--deployment", "4"], "hello"),
    (["logs", "hello", "-f", "--since", "5m"], "hello"),
    (["git-remote", "--app", "hello", "--add"], "hello"),
])
def test_the_app_comes_from_apps_positional_or_option(argv, app):
    assert the_app(parse(*argv)) == app


def test_two_different_apps_is_a_usage_error():
    with pytest.raises(CliError) as exc:
        the_app(parse("ps", "one", "--app", "two"))
    assert exc.value.code == EXIT_USAGE


@pytest.mark.parametrize("name", ["Hello", "1abc", "a" * 31, "under_score", ""])
def test_invalid_app_names_are_refused_before_any_request(name, capsys):
    code = cli.main(["ps", name, "--url", "http://127.0.0.1:9", "--token", "t"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert err.startswith("paas: ") and "hint:" in err and "Traceback" not in err


def test_flags_work_before_and_after_the_verb():
    args = parse("--url", "http://a:1", "--json", "nodes")
    assert (args.url, args.json, args.token) == ("http://a:1", True, None)
    args = parse("nodes", "--token", "t")
    assert (args.url, args.json, args.token) == (None, False, "t")


def test_deploy_flags():
    args = parse("deploy", "examples/hello", "--app", "hello", "--replicas", "3",
                 "--hostname", "a.test", "--hostname", "b.test", "--from-head", "--no-wait")
    assert (args.dir, args.app, args.replicas, args.hostname, args.from_head, args.no_wait) == (
        "examples/hello", "hello", 3, ["a.test", "b.test"], True, True)
    assert parse("deploy", "--app", "x").dir == "."


def test_apps_without_action_lists():
    assert parse("apps").func is parse("apps", "list").func


@pytest.mark.parametrize("argv, expected", [
    (["config", "hello"], ("hello", "get", [])),
    (["config", "hello", "GREETING"], ("hello", "get", ["GREETING"])),
    (["config", "hello", "set", "A=1", "B=2"], ("hello", "set", ["A=1", "B=2"])),
    (["config", "--app", "hello", "unset", "A"], ("hello", "unset", ["A"])),
    (["config", "--app", "hello"], ("hello", "get", [])),
    (["config", "set", "get"], ("set", "get", [])),  # an app may be called "set"
])
def test_config_words(argv, expected):
    assert split_config_words(parse(*argv)) == expected


def test_scale_counts():
    assert parse_counts(["web=3", "worker=0"]) == {"web": 3, "worker": 0}
    for bad in (["web"], ["web=-1"], ["=3"], []):
        with pytest.raises(CliError) as exc:
            parse_counts(bad)
        assert exc.value.code == EXIT_USAGE


@pytest.mark.parametrize("text, value", [("v3", 3), ("3", 3), (" V12 ", 12)])
def test_versions(text, value):
    assert parse_version(text) == value


@pytest.mark.parametrize("text", ["v0", "x", "v-1", ""])
def test_bad_versions(text):
    with pytest.raises(CliError):
        parse_version(text)


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("1.5", 1.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800),
    ("1h0m5s", 3605)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "1m1h", "-5s", "-5", "0", "0s", "nan", "inf"])
def test_bad_durations(text):
    with pytest.raises(CliError):
        parse_duration(text)


def test_logs_query_sends_since_as_seconds():
    args = parse("logs", "hello", "-f", "--since", "10m", "--instance", "hello-v1-web-abcdef",
                 "--tail", "5")
    assert logs_path("hello", args) == ("/v1/apps/hello/logs?follow=1&instance="
                                        "hello-v1-web-abcdef&since=600&tail=5")
    assert logs_path("hello", parse("logs", "hello", "--since", "1.5")) == \
        "/v1/apps/hello/logs?since=1.5"
    assert logs_path("hello", parse("logs", "hello")) == "/v1/apps/hello/logs"


def test_log_records():
    assert log_record("hello-v1-web-abcdef | GET / 200") == {
        "instance": "hello-v1-web-abcdef", "line": "GET / 200"}
    assert log_record("no separator") == {"instance": "", "line": "no separator"}


# --- masking ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [
    ("", ""), ("a", "*****"), ("hunter2", "*****"), ("abcdefghijk", "*****"),
    ("sk-live-0123456789", "sk*****")])
def test_mask_hides_short_values_and_every_length(value, shown):
    assert mask(value) == shown


# --- exit codes ---------------------------------------------------------------------------
@pytest.mark.parametrize("step, code", [
    ("build", EXIT_BUILD), ("publish", EXIT_PUBLISH), ("control", EXIT_CONTROL),
    ("test", EXIT_TEST), ("rollout", EXIT_ROLLOUT), ("finish", EXIT_FINISH),
    ("pending", EXIT_FINISH), ("cancelled", EXIT_FINISH), (None, EXIT_FINISH)])
def test_each_failed_phase_has_its_exit_code(step, code):
    assert exit_code_for_step(step) == code


def test_exit_codes_are_distinct():
    codes = [EXIT_ERROR, EXIT_USAGE, EXIT_BUILD, EXIT_CONTROL, EXIT_TEST, EXIT_ROLLOUT,
             EXIT_FINISH, EXIT_PUBLISH]
    assert len(set(codes)) == len(codes)


def dep(**fields):
    return {"id": 7, "app": "hello", "release": 3, "kind": "deploy", "status": "failed",
            "step": "test", "reason": "the integration test exited with code 3",
            "log_tail": "checking\nFAIL: greeting missing\n", "created_at": 100.0, **fields}


def test_a_failed_deployment_is_an_error_with_its_phase_code_and_log(capsys):
    error = failure("hello", dep())
    assert error.code == EXIT_TEST
    assert error.message == "deploy of hello v3 failed at test: the integration test exited " \
                            "with code 3"
    assert "paas events hello --deployment 7" in error.hint
    assert "FAIL: greeting missing" in capsys.readouterr().err


def test_test_output_already_shown_live_is_not_printed_twice(capsys):
    printer = EventPrinter()
    for i, line in enumerate(["checking", "FAIL: greeting missing"]):
        printer({"id": i, "at": 101.0, "step": "test", "message": f"| {line}"})
    capsys.readouterr()
    failure("hello", dep(), printer=printer)
    assert "FAIL" not in capsys.readouterr().err


class FakeApi:
    """Answers `follow`'s two calls from scripts: events in batches, deployment states."""

    def __init__(self, batches, states):
        self.batches, self.states, self.paths = list(batches), list(states), []

    def get(self, path, **kw):
        self.paths.append(path)
        if "/events" in path:
            return {"events": self.batches.pop(0) if self.batches else []}
        return {"deployment": self.states.pop(0)}


def test_follow_prints_phases_until_the_deployment_ends(capsys):
    running = dep(status="running", step="control")
    api = FakeApi(
        batches=[[{"id": 1, "at": 100.5, "step": "control",
                   "message": "started control instance hello-v3-web-abcdef on node-1"}],
                 [{"id": 2, "at": 102.0, "step": "rollout", "message": "x healthy"}],
                 [{"id": 3, "at": 103.0, "step": "finish", "message": "v3 is live"}]],
        states=[running, dep(status="succeeded", step="done")])
    final = follow(api, "hello", running, printer=EventPrinter(origin=100.0))
    assert final["status"] == "succeeded"
    err = capsys.readouterr().err
    assert err.index("==> control") < err.index("0.5s  started control instance") \
        < err.index("==> rollout") < err.index("==> finish") < err.index("3.0s  v3 is live")
    assert "after=1" in api.paths[2] and "after=2" in api.paths[4]


def test_follow_hands_every_event_to_any_printer_once():
    running = dep(status="running", step="control")
    api = FakeApi(batches=[[{"id": 1, "step": "control", "message": "a"}], [],
                           [{"id": 2, "step": "finish", "message": "b"}]],
                  states=[running, dep(status="succeeded", step="done")])
    seen: list[str] = []
    follow(api, "hello", running, printer=lambda event: seen.append(event["message"]))
    assert seen == ["a", "b"]


def test_follow_gives_up_after_its_timeout_and_says_the_deployment_goes_on():
    running = dep(status="running", step="control")
    api = FakeApi(batches=[], states=[running] * 3)
    with pytest.raises(StillRunning) as exc:
        follow(api, "hello", running, timeout_s=0.0)
    assert exc.value.deployment is running and "still runs after 0s" in str(exc.value)
    assert len(api.paths) == 1, "it stops before asking for the deployment again"


# --- how errors are printed ---------------------------------------------------------------
def test_an_api_sentence_with_a_semicolon_becomes_message_and_hint(capsys):
    code = cli.report(ClientError("app 'x' does not exist; create it with 'paas apps create x'",
                                  status=404), as_json=False)
    err = capsys.readouterr().err.splitlines()
    assert code == EXIT_ERROR
    assert err == ["paas: app 'x' does not exist", "hint: create it with 'paas apps create x'"]


def test_with_json_an_error_is_json_on_stdout_too(capsys):
    code = cli.report(CliError("boom", hint="do this", code=EXIT_TEST, data={"deployment": {}}),
                      as_json=True)
    out, err = capsys.readouterr()
    assert code == EXIT_TEST
    assert json.loads(out) == {"error": "boom", "hint": "do this", "exit_code": EXIT_TEST,
                               "deployment": {}}
    assert err.startswith("paas: boom")


def test_an_unexpected_error_is_one_sentence_too(monkeypatch, capsys):
    def broken(args):
        raise KeyError("latest_release")

    monkeypatch.delenv("PAAS_DEBUG", raising=False)
    monkeypatch.setattr(cli.cli_apps, "cmd_nodes", broken)
    code = cli.main(["nodes"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err.startswith("paas: unexpected error: KeyError") and "Traceback" not in err
    monkeypatch.setenv("PAAS_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["nodes"])


def test_deploy_assembles_before_it_creates_the_app(tmp_path, capsys):
    """A source that cannot be assembled (a git repository with no commit yet) is refused
    before any request: no new, empty app is left behind. The URL answers nothing."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "app.py").write_text("print('hi')\n")
    code = cli.main(["--url", "http://127.0.0.1:9", "--token", "t", "deploy", str(tmp_path),
                     "--app", "fresh"])
    err = capsys.readouterr().err
    assert code != 0
    assert "nothing is committed in the git repository" in err, err
    assert "created" not in err and "127.0.0.1:9" not in err, err
