"""The exit codes of `paas` and of `git push`'s hook, and the one error type they raise: a
sentence, a hint and an exit code (`paas.cli.main` prints it; the hook prints it as `remote:`
lines)."""

from __future__ import annotations

from typing import Any

# Exit codes (listed in README): a CI pipeline can tell which phase failed.
EXIT_OK = 0
EXIT_ERROR = 1  # the controller is unreachable, the token is wrong, the app unknown, ...
EXIT_USAGE = 2  # a bad flag or argument
EXIT_BUILD = 3  # package: the image did not build (the build log's tail is printed)
EXIT_CONTROL = 4  # deploy: the control instance did not become healthy
EXIT_TEST = 5  # deploy: the integration test failed (its output is printed)
EXIT_ROLLOUT = 6  # deploy: a new live instance failed, or could not be placed
EXIT_FINISH = 7  # deploy: failed after the rollout, or was cancelled
EXIT_PUBLISH = 8  # publish: the release's image is not available to the nodes
EXIT_INTERRUPTED = 130

STEP_EXIT_CODES = {"build": EXIT_BUILD, "publish": EXIT_PUBLISH, "control": EXIT_CONTROL,
                   "test": EXIT_TEST, "rollout": EXIT_ROLLOUT, "finish": EXIT_FINISH}


def exit_code_for_step(step: str | None) -> int:
    """The exit code of a deployment that failed at `step` (pending/cancelled count as finish:
    the deployment did not complete, and no earlier phase is to blame)."""
    return STEP_EXIT_CODES.get(step or "", EXIT_FINISH)


class CliError(Exception):
    """A failure the user can act on: one sentence, a hint, an exit code, and for `--json`
    extra fields (`data`) to print with the error."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.code, self.data = message, hint, code, data or {}
