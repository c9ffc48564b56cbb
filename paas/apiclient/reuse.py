"""Whether a source was built already: the one rule by which `paas package`, `paas deploy` and
a `git push` (`paas.git.hook`) reuse a release instead of building the same source again.

The rule: the app's latest release is reused when it was built from the same source, unless
the caller forces a build (`--rebuild`, `git push -o force`). "The same source" is one of the
source strings that name it (`git:<commit>`, `upload:sha256:...`, see
`paas.builder.context`), or, for a release built from a commit, a commit whose files are the
same (`same_files`: a monorepo's other folders, or only the message, changed). Only the
latest release: a config change makes a new release that copies the source, so an older
release of the same source carries older config, and deploying it would undo the change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from paas.builder.context import source_commit


def reusable_release(releases: Sequence[dict[str, Any]], *, sources: Collection[str],
                     force: bool = False,
                     same_files: Callable[[str], bool] | None = None) -> dict[str, Any] | None:
    """The release to reuse instead of building (see the module docstring), or None.

    `same_files(commit)` is asked only when the latest release names a commit that is not
    among `sources`; without it, only the source strings count.
    """
    if force or not releases:
        return None
    latest = max(releases, key=lambda r: int(r["version"]))
    if latest.get("source") in sources:
        return latest
    commit = source_commit(latest.get("source"))
    if commit is not None and same_files is not None and same_files(commit):
        return latest
    return None
