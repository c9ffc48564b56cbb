"""README's command reference and `paas --help` tell the same story (issue 4): every verb and
flag in the reference exists in the verb's `--help`, and every verb in `--help` is in the
reference; the exit codes listed in README are the ones the CLI uses."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from paas.cli import common as cli_common
from paas.cli import main as cli

README = Path(__file__).resolve().parents[2] / "README.md"
FLAG_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def reference() -> str:
    text = README.read_text()
    start = text.index("## The `paas` command")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def commands() -> list[str]:
    """The `paas ...` cell of each row of the reference table."""
    rows = re.findall(r"^\| `(paas [^`]+)` \|", reference(), flags=re.MULTILINE)
    assert len(rows) > 10, "the command table was not found"
    return rows


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def verb_parser(command: str) -> argparse.ArgumentParser:
    words = command.split()
    verbs = subparsers(cli.build_parser())
    assert words[1] in verbs, f"README lists 'paas {words[1]}', which --help does not have"
    parser = verbs[words[1]]
    action = words[2].strip("[]") if len(words) > 2 else ""
    return subparsers(parser).get(action, parser)


@pytest.mark.parametrize("command", commands())
def test_every_flag_in_the_reference_is_in_the_verbs_help(command):
    help_text = verb_parser(command).format_help()
    flags = set(FLAG_RE.findall(command))
    assert flags or len(command.split()) <= 4
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", help_text), \
            f"README's '{command}' names {flag}, missing from its --help"


def test_every_verb_and_action_in_help_is_in_the_reference():
    listed = {tuple(c.split()[1:3]) for c in commands()}
    verbs = {c.split()[1] for c in commands()}
    top_help = cli.build_parser().format_help()
    for name, parser in subparsers(cli.build_parser()).items():
        assert name in top_help
        assert name in verbs, f"'paas {name}' is in --help but not in README"
        for action in subparsers(parser):
            assert any(a == name and b.strip("[]") == action for a, b in
                       (p for p in listed if len(p) == 2)), \
                f"'paas {name} {action}' is in --help but not in README"


def test_every_flag_of_every_verb_is_in_the_reference():
    """Each option of a verb (under one of its spellings, e.g. -o or --output) is in that
    verb's rows; the shared --json, --url, --token are described once, in the text."""
    shared = {"--json", "--url", "--token"}
    text = reference()
    for flag in shared:
        assert flag in text
    assert "take it as `APP` or `--app NAME`" in text
    for name, parser in subparsers(cli.build_parser()).items():
        rows = " ".join(c for c in commands() if c.split()[1] == name)
        in_rows = set(FLAG_RE.findall(rows))
        for action in parser._actions:
            spellings = set(action.option_strings) - {"-h", "--help"}
            if spellings == {"--app"} and " APP" in rows:
                continue  # "Verbs that name an app take it as `APP` or `--app NAME`."
            if spellings and not spellings & shared:
                assert spellings & in_rows, f"'paas {name} {sorted(spellings)[-1]}' is not " \
                                            "in README's rows for it"


def test_readme_exit_codes_are_the_clis():
    table = dict(re.findall(r"^\| `(\d+)` \| (\w+)", reference(), flags=re.MULTILINE))
    expected = {cli_common.EXIT_OK: "success", cli_common.EXIT_ERROR: "error",
                cli_common.EXIT_USAGE: "usage", cli_common.EXIT_BUILD: "package",
                cli_common.EXIT_CONTROL: "control", cli_common.EXIT_TEST: "test",
                cli_common.EXIT_ROLLOUT: "rollout", cli_common.EXIT_FINISH: "finish",
                cli_common.EXIT_PUBLISH: "publish", cli_common.EXIT_INTERRUPTED: "interrupted"}
    assert {int(k): v for k, v in table.items()} == expected
    epilog = cli.build_parser().epilog or ""
    for code, word in expected.items():
        if code not in (cli_common.EXIT_OK, cli_common.EXIT_USAGE):
            assert str(code) in epilog
