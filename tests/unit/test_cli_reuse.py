"""The one reuse rule of `paas package/deploy` and the git hook (issue 8): the app's latest
release is reused when it was built from the same source, unless forced."""

from __future__ import annotations

from typing import Any

import pytest

from paas.apiclient.reuse import reusable_release

A, B, C = "a" * 40, "b" * 40, "c" * 40
UPLOAD = "upload:sha256:0123456789abcdef"


def rel(version: int, source: str) -> dict[str, Any]:
    return {"version": version, "source": source}


# (case, releases, sources, force, commits with the same files, the version reused or None)
CASES = [
    ("no release yet", [], {f"git:{A}"}, False, set(), None),
    ("the latest from that commit", [rel(1, f"git:{A}")], {f"git:{A}"}, False, set(), 1),
    ("forced", [rel(1, f"git:{A}")], {f"git:{A}"}, True, set(), None),
    ("the latest from another commit", [rel(1, f"git:{B}")], {f"git:{A}"}, False, set(), None),
    ("an older release of that commit is not reused: it carries older config",
     [rel(1, f"git:{A}"), rel(2, f"git:{B}")], {f"git:{A}"}, False, set(), None),
    ("a config change copies the source: the latest carries it",
     [rel(1, f"git:{B}"), rel(2, f"git:{A}"), rel(3, f"git:{A}")], {f"git:{A}"}, False,
     set(), 3),
    ("the order of the list does not matter",
     [rel(3, f"git:{A}"), rel(1, f"git:{A}"), rel(2, f"git:{B}")], {f"git:{A}"}, False,
     set(), 3),
    ("the same upload digest", [rel(1, UPLOAD)], {UPLOAD}, False, set(), 1),
    ("any of the names of this source", [rel(1, UPLOAD)], {f"git:{A}", UPLOAD}, False,
     set(), 1),
    ("a commit with the same files", [rel(1, f"git:{B}")], {f"git:{A}"}, False, {B}, 1),
    ("the same files, but forced", [rel(1, f"git:{B}")], {f"git:{A}"}, True, {B}, None),
    ("other files", [rel(1, f"git:{B}")], {f"git:{A}"}, False, {C}, None),
    ("an upload is not a commit to compare", [rel(1, UPLOAD)], {f"git:{A}"}, False, {A},
     None),
    ("an image release", [rel(1, "image:busybox")], {f"git:{A}"}, False, set(), None),
]


@pytest.mark.parametrize("releases, sources, force, same, expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reuse_rule(releases, sources, force, same, expected):
    found = reusable_release(releases, sources=sources, force=force,
                             same_files=lambda commit: commit in same)
    assert (found["version"] if found else None) == expected


def test_without_same_files_only_the_source_strings_count():
    assert reusable_release([rel(1, f"git:{B}")], sources={f"git:{A}"}) is None
    assert reusable_release([rel(1, f"git:{A}")], sources={f"git:{A}"})["version"] == 1


def test_same_files_is_asked_only_of_the_latest_release_and_only_when_needed():
    asked: list[str] = []

    def same(commit: str) -> bool:
        asked.append(commit)
        return False

    reusable_release([rel(1, f"git:{A}"), rel(2, f"git:{B}")], sources={f"git:{C}"},
                     same_files=same)
    reusable_release([rel(1, f"git:{C}")], sources={f"git:{C}"}, same_files=same)
    reusable_release([rel(1, f"git:{C}")], sources={f"git:{C}"}, force=True, same_files=same)
    assert asked == [B]
