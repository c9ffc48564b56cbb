"""The `pre-receive` hook of an app's repository (`python -m paas.git.hook`): a push to the
deploy branch builds and deploys the pushed commit, and the hook's exit code accepts (0) or
rejects (1) the whole push.

`paas.git.server` runs `git http-backend` with the environment this hook reads: `PAAS_GIT_URL`
(the controller), `PAAS_GIT_TOKEN` (the pusher's token) and `PAAS_GIT_APP`. git adds the push
options (`GIT_PUSH_OPTION_COUNT`, `GIT_PUSH_OPTION_<i>`) and the quarantine of the pushed
objects, which `git archive` reads. Every line printed reaches the pusher at once as a
`remote:` line. The phases, as the design names them:

1. assemble — the commit's files as `paas assemble --from-head` packs them
   (`paas.apiclient.source.commit_context`: `git archive`, the same bytes for the same commit);
2. package — `POST /v1/apps/<app>/releases?source=git:<sha>&stream=1` (its log followed
   live: a `stack` phase when a stack's images are made on first use, then the build's
   steps; `paas.apiclient.buildlog`), unless the app's latest release
   was built from that commit or one with the same files (then it is reused, and deployed
   only when it is not live), the same rule as `paas package` (`paas.apiclient.reuse`); the push
   option `force` (`git push -o force`) builds a new release anyway;
3. deploy — `POST /v1/apps/<app>/deployments` at the app's current scale; its events
   (control, test, rollout, finish) are printed as they happen (`paas.apiclient.follow`), then a
   one-line summary.

The deploy branch is `paas.branch` in the repository's config, else `main`, else `master`
(whichever the push updates). Other refs, and deleting the deploy branch, are accepted
without deploying. Errors are one sentence, never a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

from paas.builder.context import git_source, source_commit
from paas.apiclient.buildlog import STACK_HEADER, PhaseLines, build_release
from paas.apiclient.client import Client, ClientError, Target
from paas.apiclient.errors import CliError
from paas.apiclient.follow import StillRunning, follow
from paas.apiclient.reuse import reusable_release
from paas.apiclient.source import commit_context, same_tree

ENV_URL = "PAAS_GIT_URL"
ENV_TOKEN = "PAAS_GIT_TOKEN"
ENV_APP = "PAAS_GIT_APP"
DEFAULT_BRANCHES = ("main", "master")
KNOWN_OPTIONS = frozenset({"force"})
TAIL_LINES = 30
BUILD_TIMEOUT = 900.0
DEPLOY_TIMEOUT = 1800.0
REPOSITORY = Path(".")  # git runs the hook in the (bare) repository
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

EXIT_ACCEPT = 0
EXIT_REJECT = 1


class HookError(Exception):
    """The push cannot be deployed: `message` is one sentence, `log_tail` the failing log."""

    def __init__(self, message: str, *, log_tail: str = "", log_name: str = "log") -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail
        self.log_name = log_name


# --- pure parts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefUpdate:
    """One line of pre-receive's stdin: `<old> <new> <ref>`."""

    old: str
    new: str
    ref: str

    @property
    def deleted(self) -> bool:
        return set(self.new) == {"0"}

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") \
            else None


@dataclass(frozen=True)
class PushOptions:
    force: bool = False
    unknown: tuple[str, ...] = ()


def parse_ref_lines(lines: Iterable[str]) -> list[RefUpdate]:
    """The ref updates of pre-receive's stdin; blank lines are skipped."""
    updates = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not all(_SHA_RE.fullmatch(p) for p in parts[:2]):
            raise HookError(f"git sent a ref update the hook cannot read: {line[:120]!r}")
        updates.append(RefUpdate(*parts))
    return updates


def deploy_branches(configured: str | None) -> tuple[str, ...]:
    """The branches that deploy, in order of preference."""
    return (configured,) if configured else DEFAULT_BRANCHES


def choose_deploy_ref(updates: Sequence[RefUpdate], configured: str | None) -> RefUpdate | None:
    """The update of the deploy branch (the configured one, else main, else master)."""
    for name in deploy_branches(configured):
        for update in updates:
            if update.ref == f"refs/heads/{name}":
                return update
    return None


def parse_push_options(environ: Mapping[str, str]) -> PushOptions:
    """The push options git passed (`git push -o force`)."""
    try:
        count = int(environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)
    except ValueError:
        count = 0
    given = [environ.get(f"GIT_PUSH_OPTION_{i}", "").strip() for i in range(max(count, 0))]
    given = [o for o in given if o]
    return PushOptions(force="force" in given,
                       unknown=tuple(o for o in given if o not in KNOWN_OPTIONS))


def short(sha: str) -> str:
    return sha[:12]


def tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    return [line.rstrip() for line in (text or "").strip().splitlines()[-lines:]]


# --- output -------------------------------------------------------------------------------
class Out:
    """Lines for the pusher, flushed at once (git relays them as `remote:` lines)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def phase(self, text: str) -> None:
        self._line(f"-----> {text}")

    def detail(self, text: str) -> None:
        self._line(f"       {text}")

    def warn(self, text: str) -> None:
        self._line(f" !     {text}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class StepPrinter:
    """The hook's printer of a deployment's events: a `-----> <step>` line when the step
    changes, then each event's message."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.step = ""

    def __call__(self, event: dict[str, Any]) -> None:
        if event["step"] != self.step:
            self.step = event["step"]
            self.out.phase(self.step)
        self.out.detail(event["message"])


# --- the deploy ---------------------------------------------------------------------------
@dataclass
class Pusher:
    """Builds and deploys one pushed commit through the controller's API."""

    api: Client
    app: str
    out: Out
    options: PushOptions

    def run(self, update: RefUpdate) -> None:
        self.out.phase(f"deploying {update.ref} at {short(update.new)} to {self.app}")
        release = reusable_release(
            self.api.get(f"/v1/apps/{self.app}/releases")["releases"],
            sources={git_source(update.new)}, force=self.options.force,
            same_files=lambda built: same_tree(REPOSITORY, built, update.new))
        if release is not None:
            built = source_commit(release["source"]) or update.new
            same = "" if built == update.new else f" ({short(built)}, the same files)"
            self.out.phase(f"build: v{release['version']} was already built from "
                           f"{short(update.new)}{same}: no new release (git push -o force "
                           "makes one)")
            if release.get("status") == "live":
                self.summary(f"{self.app} v{release['version']} is already live: nothing to "
                             "deploy")
                return
        else:
            release = self.package(update.new, self.assemble(update.new))
        self.deploy(release["version"])

    def assemble(self, sha: str) -> bytes:
        self.out.phase(f"assemble: git archive {short(sha)}")
        try:
            context = commit_context(REPOSITORY, sha)
        except CliError as exc:
            raise HookError(f"git archive of {short(sha)} failed: "
                            f"{exc.data.get('git_error') or exc.message}") from None
        self.out.detail(f"{len(context) / 1024:.1f} KB of source")
        return context

    def package(self, sha: str, context: bytes) -> dict[str, Any]:
        self.out.phase(f"build: a new release of {self.app} from {git_source(short(sha))}")
        started = time.monotonic()
        printer = PhaseLines(header=lambda phase: self.out.phase(
            f"stack: {STACK_HEADER}" if phase == "stack" else "build: the app's image"),
            detail=self.out.detail, announce_package=False)
        try:
            release = build_release(self.api, self.app, context, source=git_source(sha),
                                    on_line=printer, timeout=BUILD_TIMEOUT)
        except ClientError as exc:
            if exc.status == 422:
                raise HookError(f"the build failed: {exc.message}",
                                log_tail=str(exc.body.get("log_tail") or ""),
                                log_name="the build log") from None
            raise
        self.out.detail(f"stack: {release.get('stack') or 'unknown'}")
        self.out.detail(f"built {release['image']} as v{release['version']} in "
                        f"{time.monotonic() - started:.1f}s")
        return release

    def deploy(self, version: int) -> None:
        try:
            dep = self.api.post(f"/v1/apps/{self.app}/deployments",
                                {"release": version})["deployment"]
        except ClientError as exc:
            if exc.status == 409:
                raise HookError(f"{exc.message}; push again when it has finished") from None
            raise
        replicas = " ".join(f"{p}={n}" for p, n in sorted(dep["replicas"].items()))
        self.out.phase(f"deploy: deployment {dep['id']} of v{version} ({replicas or 'no instances'})")
        dep = self.follow(dep)
        if dep["status"] != "succeeded":
            raise HookError(f"deployment {dep['id']} of {self.app} v{version} failed at "
                            f"{dep['step']}: {dep['reason']}",
                            log_tail=str(dep.get("log_tail") or ""),
                            log_name=f"the failing {dep['step']} log")
        urls = self.api.get(f"/v1/apps/{self.app}")["app"].get("urls") or []
        where = f" at {urls[0]}" if urls else ""
        self.summary(f"{self.app} v{version} is live{where} (deployment {dep['id']}, "
                     f"{dep['reason']})")

    def follow(self, dep: dict[str, Any]) -> dict[str, Any]:
        """Print the deployment's events as they come, a heading per step; its end state."""
        try:
            return follow(self.api, self.app, dep, printer=StepPrinter(self.out),
                          timeout_s=DEPLOY_TIMEOUT)
        except StillRunning as exc:
            raise HookError(f"{exc}; follow it with 'paas events {self.app} --deployment "
                            f"{dep['id']}'") from None

    def summary(self, text: str) -> None:
        self.out.phase(f"summary: {text}")


# --- entry point --------------------------------------------------------------------------
def configured_branch() -> str | None:
    """`paas.branch` of the repository the hook runs in, or None."""
    proc = subprocess.run(["git", "config", "--get", "paas.branch"], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or None


def reject(out: Out, exc: HookError) -> int:
    out.phase(f"summary: {exc.message}")
    lines = tail(exc.log_tail)
    if lines:
        out.detail(f"tail of {exc.log_name}:")
        for line in lines:
            out.detail(f"| {line}")
    out.warn("push rejected: whatever was live before keeps serving")
    return EXIT_REJECT


def handle(updates: Sequence[RefUpdate], *, branch: str | None, pusher: Pusher) -> int:
    out = pusher.out
    for option in pusher.options.unknown:
        out.warn(f"ignoring the unknown push option {option[:60]!r} (known: force)")
    target = choose_deploy_ref(updates, branch)
    for update in updates:
        if update is not target:
            out.phase(f"{update.ref}: not the deploy branch "
                      f"({' or '.join(deploy_branches(branch))}): accepted without deploying")
    if target is None:
        return EXIT_ACCEPT
    if target.deleted:
        out.phase(f"{target.ref} deleted: nothing deployed, {pusher.app} keeps running")
        return EXIT_ACCEPT
    try:
        pusher.run(target)
    except HookError as exc:
        return reject(out, exc)
    except (ClientError, CliError) as exc:
        return reject(out, HookError(exc.message + (f" ({exc.hint})" if exc.hint else "")))
    return EXIT_ACCEPT


def main(stdin: TextIO | None = None, stdout: TextIO | None = None,
         environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    out = Out(stdout or sys.stdout)
    missing = [k for k in (ENV_URL, ENV_TOKEN, ENV_APP) if not env.get(k)]
    if missing:
        return reject(out, HookError(f"the hook was run without {', '.join(missing)}; "
                                     "push through the controller's /git/ URL"))
    try:
        updates = parse_ref_lines(stdin or sys.stdin)
        branch = configured_branch()
    except HookError as exc:
        return reject(out, exc)
    except OSError as exc:
        return reject(out, HookError(f"git cannot be run by the hook: {exc.strerror}"))
    pusher = Pusher(api=Client(Target(env[ENV_URL].rstrip("/"), env[ENV_TOKEN])),
                    app=env[ENV_APP], out=out, options=parse_push_options(env))
    try:
        return handle(updates, branch=branch, pusher=pusher)
    except OSError as exc:
        return reject(out, HookError(f"the deploy hook failed: {exc}"))
    except Exception as exc:  # noqa: BLE001 - the pusher sees one sentence, not a traceback
        return reject(out, HookError(f"the deploy hook failed unexpectedly "
                                     f"({type(exc).__name__}: {str(exc)[:200]})"))


if __name__ == "__main__":
    sys.exit(main())
