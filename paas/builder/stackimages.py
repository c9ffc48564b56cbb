"""The images of a stack, made on this machine from Debian's packages: no image is pulled.

`ensure_images` makes a stack's build and run images unless they are already there with the
digest of their recipe in their label (`Stack.digest`: name, version, packages). Each image is
a Debian bookworm root file system made by `mmdebstrap --variant=minbase --include=<packages>
--format=tar` from the mirror in this machine's apt sources (the same rule as
`scripts/setup.sh`'s `mirror_uri`), then `docker import`ed. The run image also gets the user
`app` (uid 10001) that apps run as.

Images carry the labels `paas.stack`, `paas.stack.version` and `paas.stack.digest`. A changed
recipe (another digest) makes them again, while an edit of the app's template does not; the old
ones are removed when nothing uses them. One build of a stack at a time, across threads and
processes (a file lock), so two deploys that need a stack for the first time build it once;
the second says it waits. The build and the run image are made at once. The user's lines go to
`on_log`: one when an image is begun, one when it is made, with its seconds; mmdebstrap's own
lines go to this module's logger (the controller's log) and, on a failure, with the error.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import glob
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from paas.builder.stacks import DETECT_ORDER, Stack, load_stacks

SUITE = "bookworm"
LABEL_STACK, LABEL_VERSION, LABEL_DIGEST = "paas.stack", "paas.stack.version", "paas.stack.digest"
APP_UID = 10001
# A fixed hook (no user input): the run image's non-root user, home /app, no login shell.
ADD_APP_USER = (f'chroot "$1" useradd --uid {APP_UID} --user-group --no-create-home '
                '--home-dir /app --shell /usr/sbin/nologin app')
SLIM = [*(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info", "locale")),
        # Without it, a postinst that registers a man page with update-alternatives (OpenJDK's
        # java.1.gz) fails: the excluded tree has no man1 folder to put the link in.
        "--essential-hook", 'mkdir -p "$1/usr/share/man/man1"']
PATH_ENV = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A build image trusts what this machine trusts (a TLS-inspecting proxy's CA, say), so pip and
# npm reach their registries from it as they do from here.
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RECIPE = "2"  # how images are made here; a change makes every stack's images again
BUILD_TIMEOUT_S = 1800.0

log = logging.getLogger("paas.builder.stackimages")
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class StackBuildFailed(Exception):
    """A stack's image could not be made: the message says why and what to do; `log_tail`
    holds the last lines of the log."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail


@dataclass(frozen=True, kw_only=True)
class ImageState:
    tag: str
    present: bool
    current: bool  # present and made from the stack folder as it is now
    size_bytes: int | None = None
    created_at: float | None = None  # unix time

    def view(self) -> dict[str, Any]:
        return {"tag": self.tag, "present": self.present, "current": self.current,
                "size_bytes": self.size_bytes, "created_at": self.created_at}


def mirror_uri(*, sources_d: str = "/etc/apt/sources.list.d",
               sources_list: str = "/etc/apt/sources.list") -> str:
    """The first Debian mirror URI of this machine's apt sources (deb822 or one-line format),
    as `scripts/setup.sh` finds it; "" when there is none."""
    for path in sorted(glob.glob(f"{sources_d}/*.sources")):
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("URIs:") and len(line.split()) > 1:
                return line.split()[1].rstrip("/")
    if os.path.isfile(sources_list):
        for line in Path(sources_list).read_text(errors="replace").splitlines():
            words = line.split()
            if words[:1] == ["deb"]:
                for word in words[1:]:
                    if "://" in word and word.split("://")[0].isalpha():
                        return word.rstrip("/")
    return ""


def image_digest(stack: Stack) -> str:
    """The label of a stack's images: their recipe's digest and how they are made here."""
    return f"{stack.digest[:32]}-r{RECIPE}"


def _inspect(api: Any, tag: str) -> dict[str, Any] | None:
    try:
        return api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return None


def image_states(stack: Stack, *, docker_client: Any) -> list[ImageState]:
    """The build and run images of `stack` as the engine has them (one for a prebuilt)."""
    api = getattr(docker_client, "api", docker_client)
    tags = [stack.build_image] if stack.prebuilt_image else [stack.build_image, stack.run_image]
    out = []
    for tag in tags:
        info = _inspect(api, tag)
        if info is None:
            out.append(ImageState(tag=tag, present=False, current=False))
            continue
        labels = (info.get("Config") or {}).get("Labels") or {}
        current = bool(stack.prebuilt_image) or labels.get(LABEL_DIGEST) == image_digest(stack)
        created = info.get("Created") or ""
        out.append(ImageState(tag=tag, present=True, current=current,
                              size_bytes=int(info.get("Size") or 0),
                              created_at=_parse_created(created)))
    return out


def _parse_created(text: str) -> float | None:
    from datetime import datetime  # Docker writes RFC 3339 with nanoseconds
    try:
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return None


@contextmanager
def stack_lock(name: str, *, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Held while a stack's images are checked and made: threads, then processes. `waiting`
    is called once if another build holds it (one made in the background, say)."""
    with _thread_locks_guard:
        lock = _thread_locks.setdefault(name, threading.Lock())
    if not lock.acquire(blocking=False):
        if waiting:
            waiting()
            waiting = None
        lock.acquire()
    try:
        path = Path(tempfile.gettempdir()) / f"paas-stack-{name}.lock"
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    waiting()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        lock.release()


def ensure_images(stack: Stack, *, docker_client: Any,
                  on_log: Callable[[str], None] | None = None, force: bool = False) -> bool:
    """Make `stack`'s images unless they are current; return whether anything was built.
    Raises StackBuildFailed."""
    api = getattr(docker_client, "api", docker_client)
    emit = on_log or (lambda line: None)
    if stack.prebuilt_image:
        if _inspect(api, stack.prebuilt_image) is None:
            raise StackBuildFailed(f"the {stack.name} stack's image {stack.prebuilt_image} is "
                                   "not on this Docker engine; run scripts/setup.sh to make it.")
        return False
    with stack_lock(stack.name, waiting=lambda: emit(
            f"waiting for the {stack.name} stack's images, which another build is making")):
        todo = [s for s in image_states(stack, docker_client=api) if force or not s.current]

        def make(state: ImageState) -> None:
            run = state.tag == stack.run_image
            packages = stack.run_packages if run else stack.build_packages
            emit(f"making {state.tag} from Debian {SUITE} packages: {', '.join(packages)}")
            started = time.monotonic()
            old = _inspect(api, state.tag)
            _make_image(stack, api=api, tag=state.tag, packages=packages, run=run)
            emit(f"made {state.tag} in {time.monotonic() - started:.1f}s")
            if old is not None:
                _remove_quietly(api, str(old["Id"]))

        # The build and the run image at once: each is mostly one mmdebstrap, and they share
        # nothing but the mirror.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(make, state) for state in todo]:
                done.result()  # the first failure, with its sentence
        return bool(todo)


def _remove_quietly(api: Any, image_id: str) -> None:
    """Remove the image a rebuild replaced, unless a container or a release still uses it."""
    try:
        api.remove_image(image_id)
    except docker.errors.APIError:
        pass


def _make_image(stack: Stack, *, api: Any, tag: str, packages: tuple[str, ...],
                run: bool) -> None:
    uri = mirror_uri()
    if not uri:
        raise StackBuildFailed("no Debian mirror was found in this machine's apt sources; "
                               "add one to /etc/apt/sources.list.d/.")
    with tempfile.TemporaryDirectory(prefix=f"paas-stack-{stack.name}-") as work:
        out = os.path.join(work, "rootfs.tar")
        trust: list[str] = []
        if not run:
            packages = (*packages, "ca-certificates")
            if os.path.isfile(HOST_CA_BUNDLE):
                trust = ["--customize-hook", f"upload {HOST_CA_BUNDLE} {HOST_CA_BUNDLE}"]
        # An empty `--include=` is a usage error to mmdebstrap: a bare minbase names none.
        include = [f"--include={','.join(packages)}"] if packages else []
        argv = ["mmdebstrap", "--variant=minbase", *include, "--format=tar", *(SLIM if run else []), *trust,
                *(["--customize-hook", ADD_APP_USER] if run else []), SUITE, out, uri]
        _run(argv, what=f"mmdebstrap for {tag}")
        changes = [PATH_ENV, f"LABEL {LABEL_STACK}={stack.name}",
                   f"LABEL {LABEL_VERSION}={stack.version}",
                   f"LABEL {LABEL_DIGEST}={image_digest(stack)}"]
        repository, _, version = tag.rpartition(":")
        try:
            api.import_image_from_file(out, repository=repository, tag=version, changes=changes)
        except docker.errors.APIError as exc:
            raise StackBuildFailed(f"docker import of {tag} failed: {exc.explanation or exc}; "
                                   "check the Docker engine.") from None


def _run(argv: list[str], *, what: str) -> None:
    """Run a tool whose own lines go to this process's log (the controller's), not to the
    user, who sees one line per image; its last lines come with a failure."""
    tail: deque[str] = deque(maxlen=20)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise StackBuildFailed(f"{argv[0]} is not installed; run scripts/setup.sh, which "
                               "installs it.") from None
    assert proc.stdout is not None
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        log.info("%s: %s", what, line)
        if time.monotonic() > deadline:
            proc.kill()
    code = proc.wait()
    if code != 0:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise StackBuildFailed(f"{what} failed with exit status {code}: {last.strip()[:200]}",
                               tuple(tail))


def stack_views(*, docker_client: Any) -> list[dict[str, Any]]:
    """Every stack with its images' state, in detection order (then the others by name)."""
    loaded = load_stacks()
    order = [n for n in DETECT_ORDER if n in loaded] + sorted(set(loaded) - set(DETECT_ORDER))
    out = []
    for name in order:
        stack = loaded[name]
        states = image_states(stack, docker_client=docker_client)
        out.append({**stack.view(), "images": [s.view() for s in states],
                    "built": all(s.current for s in states)})
    return out
