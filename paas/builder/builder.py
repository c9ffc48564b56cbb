"""The package step of a deploy: build an app's image `paas/<app>:v<N>` from its build context.

`build_image` validates the context (see `paas.builder.context`), picks the app's stack
(`paas.builder.stacks.detect`: a Dockerfile wins, else `paas.toml` `[build] stack`, else a
manifest, else a lone Procfile means busybox), makes the stack's images on first use
(`paas.builder.stackimages`, its log lines streamed to `on_log` prefixed with `STACK_LOG_PREFIX`),
renders the stack's `Dockerfile.j2` into the context, and drives the Docker engine's classic
builder through docker-py's low-level `APIClient.build`, streaming each log line to the caller.
A build whose stack fetches nothing, or whose dependencies are all vendored
(`Stack.vendored`), runs with no network at all (`network_mode="none"`) and its log says so.
It is synchronous; the controller runs it in a thread (`asyncio.to_thread`).

A build that fails because of the app raises `BuildFailed` with one sentence naming the failing
step and the last lines of the log; an engine that cannot be reached raises
`BuilderUnavailable`, which the caller should retry later.

A build that runs longer than `build_timeout_s` (paas.toml `[build] timeout`, wall clock) is
stopped: a timer removes the step's container (named by the log's `---> Running in <id>` line),
which ends the build, and the stream is closed. A failed build leaves nothing behind
(`_BuildLeftovers`): its containers and the untagged images it made are removed. A successful
build keeps its untagged stage images: they are the layer cache of a warm rebuild.
"""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import docker.errors
import requests.exceptions
import urllib3.exceptions

from paas.builder import stackimages, stacks
from paas.builder.appconfig import DEFAULT_BUILD_TIMEOUT_S, BadAppConfig, build_stack
from paas.builder.context import (BadBuildContext, archive_members, pack_context,
                                validate_build_context)

DEFAULT_STACK = stacks.FALLBACK
STACK_LOG_PREFIX = "stack: "  # a line of a stack image's build, shown as the `stack` phase
MAX_LOG_LINES = 5000  # kept in BuildResult.log_lines; older lines are still streamed to on_log
LOG_TAIL_LINES = 20
DEFAULT_TIMEOUT_S = 1800.0
CLEANUP_WAIT_S = 10.0  # how long a failed build's containers are waited for to be removable
CLEANUP_POLL_S = 0.2

# A local image reference `repository:tag` (no registry host); see docker/distribution/reference.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}$")
_STEP_RE = re.compile(r"^Step (\d+/\d+) : (.*)$")
_IMAGE_LINE_RE = re.compile(r"^ *---> ([0-9a-f]{12,64})$")  # a step's resulting image
_CONTAINER_LINE_RE = re.compile(r"^ *---> Running in ([0-9a-f]{12,64})$")


class BuildFailed(Exception):
    """The app's image did not build: fix the Dockerfile or the app, then push again.

    `message` is one sentence for the user; `log_tail` the last lines of the build log.
    """

    def __init__(self, message: str, log_tail: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = tuple(log_tail)


class BuilderUnavailable(Exception):
    """The Docker engine could not be reached or did not answer: retry the build later."""


class BadImageTag(ValueError):
    """The image tag is not a local `repository:tag` reference: pass a valid one."""


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    image_id: str  # "sha256:..."
    tag: str
    log_lines: tuple[str, ...]  # the last MAX_LOG_LINES lines of the build log
    stack: str = stacks.DOCKERFILE  # the stack it was built with, "dockerfile" for the app's own
    offline: bool = False  # built with no network (the stack fetches nothing, or all is vendored)


def validate_image_tag(tag: str) -> str:
    """Return `tag` if it is a local `repository:tag` reference such as `paas/hello:v3`."""
    if not isinstance(tag, str) or len(tag) > 255 or not _TAG_RE.fullmatch(tag):
        raise BadImageTag(f"invalid image tag {str(tag)[:80]!r}: use 'repository:tag', "
                          "e.g. 'paas/hello:v3'.")
    return tag


def web_command(procfile: str) -> str | None:
    """The command of the Procfile's `web` process type, or None when it has none."""
    return stacks.web_command(procfile)


def render_dockerfile(*, procfile: str | None, stack: str = DEFAULT_STACK, manifest: str = "",
                      paths: Iterable[str] = ()) -> str:
    """The Dockerfile of `stack` for an app: its template rendered with the Procfile's web
    command (else the stack's default), the manifest detected and the context's paths."""
    try:
        return stacks.render(stacks.get_stack(stack), procfile=procfile, manifest=manifest,
                             paths=paths)
    except stacks.NoStack as exc:
        raise BadBuildContext(str(exc)) from None


def _with_dockerfile(context: bytes, dockerfile: str) -> bytes:
    """The (already validated) context with `Dockerfile` added at its root."""
    data = dockerfile.encode()
    info = tarfile.TarInfo("Dockerfile")
    info.size, info.mode = len(data), 0o644
    # compresslevel 1: the engine unpacks it at once, so speed beats size.
    return pack_context(chain(archive_members(context), [(info, io.BytesIO(data))]),
                        compresslevel=1)


class _Log:
    """Collects the build's log lines (the stream sends partial and multi-line chunks)."""

    def __init__(self, on_log: Callable[[str], None] | None) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_LOG_LINES)
        self.step: str | None = None  # e.g. "3/5 (RUN make)"
        self.instruction = ""  # the current step's instruction, e.g. "RUN make"
        self._partial = ""
        self._on_log = on_log
        self.images: list[str] = []  # ids of `---> <id>` lines, in order (short or full)
        self.containers: list[str] = []  # ids of `---> Running in <id>` lines, in order

    def feed(self, text: str) -> None:
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._emit(line)

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        match = _STEP_RE.match(line)
        if match:
            number, instruction = match.groups()
            self.instruction = instruction
            shown = instruction if len(instruction) <= 80 else instruction[:77] + "..."
            self.step = f"{number} ({shown})"
        if found := _IMAGE_LINE_RE.match(line):
            self.images.append(found.group(1))
        elif found := _CONTAINER_LINE_RE.match(line):
            self.containers.append(found.group(1))
        self.lines.append(line)
        if self._on_log is not None:
            self._on_log(line)

    def tail(self) -> tuple[str, ...]:
        return tuple(list(self.lines)[-LOG_TAIL_LINES:])


def _sentence(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
    if len(first) > 300:
        first = first[:297] + "..."
    return first if first.endswith((".", "!", "?")) else first + "."


def _failure(log: _Log, error: str, *, generated: str | None) -> BuildFailed:
    """A BuildFailed naming the failing step; `error` is also appended to the log."""
    log.flush()
    log.feed(error.rstrip("\n") + "\n")
    what = (f"the Dockerfile generated for the {generated} stack" if generated
            else "the Dockerfile")
    where = f" at step {log.step}" if log.step else ""
    if log.instruction.upper().startswith("FROM ") and "invalid reference" not in error:
        # Nothing can be pulled here, so a missing base image is the likely cause.
        return BuildFailed(f"{what} failed to build{where}: the base image is not on this "
                           "Docker engine; build FROM paas/busybox:latest or another local "
                           "image.", log.tail())
    return BuildFailed(f"{what} failed to build{where}: {_sentence(error)}", log.tail())


class _TimedOut(Exception):
    """The build's wall-clock limit passed while its stream was being read."""


class _Deadline:
    """Stops a build that runs past `timeout_s`: when it fires, the current step's container
    is removed, which ends the build with an error the stream reports."""

    def __init__(self, *, api: Any, log: _Log, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.fired = threading.Event()
        self._api, self._log = api, log
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired.set()
        for container in list(self._log.containers)[-1:]:
            _remove_container(self._api, container)


def _remove_container(api: Any, container: str, *, wait_s: float = 0.0) -> None:
    """Remove `container` if it exists; retry for up to `wait_s` while the engine is busy
    with it (the classic builder may be removing or stopping it at the same time)."""
    give_up = time.monotonic() + wait_s
    while True:
        try:
            api.remove_container(container, force=True)
            return
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            if time.monotonic() >= give_up:
                return  # the engine is away or will not let go: nothing more to do here
        try:
            if not api.containers(all=True, quiet=True, filters={"id": container}):
                return
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            return
        time.sleep(CLEANUP_POLL_S)


class _BuildLeftovers:
    """What a failed build leaves: its step containers and the untagged images it made.

    The images the engine had before the build are noted first, so cached steps (another
    build's warm cache) and base images are never removed.
    """

    def __init__(self, api: Any) -> None:
        self._api = api
        try:
            self._before = {str(i).removeprefix("sha256:")
                            for i in api.images(all=True, quiet=True)}
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            self._before = None  # cannot tell what is new: remove nothing

    def _is_new(self, short: str) -> bool:
        return self._before is not None and not any(i.startswith(short) for i in self._before)

    def remove(self, log: _Log) -> None:
        for container in log.containers:
            _remove_container(self._api, container, wait_s=CLEANUP_WAIT_S)
        for image in reversed(log.images):  # the newest first: children before parents
            if not self._is_new(image):
                continue
            try:
                tags = self._api.inspect_image(image).get("RepoTags") or []
                if any(t != "<none>:<none>" for t in tags):
                    continue
                self._api.remove_image(image)
            except (docker.errors.DockerException, requests.exceptions.RequestException,
                    OSError):
                pass  # gone with its child already, or still used by another image


def _consume(chunks: Iterator[dict[str, Any]], log: _Log, *, generated: str | None,
             deadline: _Deadline | None = None) -> str | None:
    """Read the build stream into `log`; return the image id it reports, raise on error."""
    image_id = None
    for chunk in chunks:
        if deadline is not None and deadline.fired.is_set():
            raise _TimedOut()
        if "stream" in chunk:
            log.feed(str(chunk["stream"]))
        elif "status" in chunk:  # pulling a base image; progress bars are left out
            log.feed(" ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k)) + "\n")
        if "error" in chunk or "errorDetail" in chunk:
            log.flush()
            detail = chunk.get("errorDetail") or {}
            error = str(chunk.get("error") or detail.get("message") or "unknown error")
            raise _failure(log, error, generated=generated)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            image_id = aux["ID"]
    log.flush()
    return image_id


def build_image(
    *,
    context: bytes,
    tag: str,
    docker_client: Any,
    on_log: Callable[[str], None] | None = None,
    labels: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S,
) -> BuildResult:
    """Build `context` (a gzip tar) into the image `tag`, streaming log lines to `on_log`.

    `docker_client` is a docker-py `APIClient` or `DockerClient`. `labels` are set on the
    image; `timeout_s` bounds how long the engine may stay silent during a step;
    `build_timeout_s` how long the app's build may run (wall clock, the stack's images aside).
    A failed build's containers and untagged images are removed.
    Raises BadBuildContext, BadImageTag, BuildFailed or BuilderUnavailable.
    """
    validate_image_tag(tag)
    summary = validate_build_context(context=context)
    detection = detect_stack(summary.entries, paas_toml=summary.paas_toml)
    generated = None if detection.stack == stacks.DOCKERFILE else detection.stack
    offline = None
    if generated:
        stack = stacks.get_stack(detection.stack)
        dockerfile = render_dockerfile(procfile=summary.procfile, stack=stack.name,
                                       manifest=detection.manifest, paths=summary.entries)
        ensure_stack(stack, docker_client=docker_client, on_log=on_log)
        context = _with_dockerfile(context, dockerfile)
        offline = stack.vendored(summary.entries)
    api = getattr(docker_client, "api", docker_client)
    log = _Log(on_log)
    if offline:
        log.feed(f"network: off for this build: {offline}\n")
    leftovers = _BuildLeftovers(api)
    deadline = _Deadline(api=api, log=log, timeout_s=build_timeout_s)
    try:
        with deadline:
            image_id, inspected = _run_build(api, context=context, tag=tag, log=log,
                                             labels=labels, timeout_s=timeout_s,
                                             generated=generated, deadline=deadline,
                                             offline=offline is not None)
    except (BuildFailed, BuilderUnavailable, _TimedOut) as exc:
        leftovers.remove(log)
        if deadline.fired.is_set() and not isinstance(exc, BuilderUnavailable):
            raise BuildFailed(f"the build ran longer than its [build] timeout of "
                              f"{build_timeout_s:g} s and was stopped; make the build faster "
                              "or raise [build] timeout in paas.toml.", log.tail()) from None
        raise  # _TimedOut is raised only once the deadline fired, so it never gets here
    return BuildResult(image_id=str(inspected.get("Id") or image_id), tag=tag,
                       log_lines=tuple(log.lines), stack=detection.stack,
                       offline=offline is not None)


def _run_build(api: Any, *, context: bytes, tag: str, log: _Log,
               labels: Mapping[str, str] | None, timeout_s: float, generated: str | None,
               deadline: _Deadline, offline: bool) -> tuple[str | None, dict[str, Any]]:
    """Drive the engine's build and read its stream; return (image id, the image inspected).
    `offline`: the build's RUN steps get no network (only a loopback interface)."""
    chunks = None
    try:
        chunks = api.build(
            fileobj=io.BytesIO(context), custom_context=True, encoding="gzip", tag=tag,
            rm=True, forcerm=True, decode=True, pull=False, labels=dict(labels or {}),
            timeout=timeout_s, network_mode="none" if offline else None,
        )
        image_id = _consume(chunks, log, generated=generated, deadline=deadline)
        return image_id, api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        raise BuildFailed(f"the build ended without tagging {tag}; see the build log.",
                          log.tail()) from None
    except docker.errors.APIError as exc:
        # The engine answered: the classic builder reports the app's mistakes (a bad
        # Dockerfile line, a missing file to COPY) this way too, so the user gets its words.
        raise _failure(log, str(exc.explanation or exc), generated=generated) from None
    except (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise BuildFailed(f"the build printed nothing for {timeout_s:g} seconds and was given "
                          "up; make the slow step print progress or run faster.",
                          log.tail()) from None
    except (requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError,
            docker.errors.DockerException, OSError):
        raise BuilderUnavailable("the Docker engine could not be reached; retry the build when "
                                 "it is running.") from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a stopped build's stream is not read to its end: let it go now


def detect_stack(entries: Iterable[str], *, paas_toml: str | None) -> stacks.Detection:
    """The stack of a context with these entries; BadBuildContext when none fits."""
    try:
        return stacks.detect(entries, configured=build_stack(paas_toml))
    except (stacks.NoStack, BadAppConfig) as exc:
        raise BadBuildContext(str(exc)) from None


def ensure_stack(stack: stacks.Stack, *, docker_client: Any,
                 on_log: Callable[[str], None] | None = None) -> None:
    """Make the stack's images on first use, its log lines prefixed with STACK_LOG_PREFIX."""
    def emit(line: str) -> None:
        if on_log is not None:
            on_log(STACK_LOG_PREFIX + line)
    try:
        stackimages.ensure_images(stack, docker_client=docker_client, on_log=emit)
    except stackimages.StackBuildFailed as exc:
        raise BuildFailed(f"the {stack.name} stack's images could not be made: "
                          f"{_sentence(exc.message)}", exc.log_tail) from None
    except docker.errors.DockerException:
        raise BuilderUnavailable("the Docker engine could not be reached; retry the build when "
                                 "it is running.") from None
