"""Language stacks: the folders `paas/stacks/<name>/` that say how an app without a Dockerfile
is built, and the detection that picks one for a build context.

A stack is a folder, not code (README, "Languages"). Each holds:

| file | what |
| --- | --- |
| `stack.toml` | `name`, `version`, `detect` (manifest files at the app's root), `[build] packages` and `[run] packages` (Debian packages of its two images), `[start] default` (the web command when the Procfile has none, `""` = a Procfile is required); optional `[run] image` names an image made elsewhere (busybox: `stacks/busybox/build.sh`, run by setup); optional `[build] offline = true` (the build never fetches a dependency, so it always runs with no network) or `[build] offline_with` (top-level names, such as `vendor`, whose presence means every dependency is in the source: the build then runs with no network) |
| `Dockerfile.j2` | a multi-stage Dockerfile template; it gets `build_image`, `run_image`, `cmd_json`, `manifest` and `paths` |
| `README.md` | the stack's conventions: start command, port, dependencies, vendoring |

Detection, in this order (`detect`): a `Dockerfile` wins; else `paas.toml` `[build] stack`;
else the first stack of `DETECT_ORDER` whose `detect` file is at the root; else a lone Procfile
means busybox; else one sentence naming what was looked for. Images are built by
`paas.builder.stackimages`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jinja2

PACKAGE_FOLDER = "stacks"
DETECT_ORDER = ("python", "node", "go", "jvm", "ruby")  # stacks without a folder are skipped
FALLBACK = "busybox"  # a lone Procfile
DOCKERFILE = "dockerfile"  # the "stack" of an app that brings its own Dockerfile
IMAGE_REPO = "paas-stack"
STACK_FILES = ("stack.toml", "Dockerfile.j2", "README.md")

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # a Debian package name
_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_IMAGE_RE = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class BadStack(ValueError):
    """A stack folder is invalid: the message names the folder and the one thing to fix."""


class NoStack(ValueError):
    """No stack fits the app's source: the message says what was looked for and what to add."""


@dataclass(frozen=True, kw_only=True)
class Stack:
    name: str
    version: str
    detect: tuple[str, ...]
    build_packages: tuple[str, ...]
    run_packages: tuple[str, ...]
    default_start: str  # "" = the Procfile must name a web command
    prebuilt_image: str | None  # `[run] image`: made elsewhere, used for both stages
    offline: bool = False  # `[build] offline`: the build never fetches, so it has no network
    offline_with: tuple[str, ...] = ()  # `[build] offline_with`: vendored dependencies' paths
    folder: Traversable
    digest: str  # images_digest(): a change to the images' recipe makes them again

    @property
    def build_image(self) -> str:
        return self.prebuilt_image or f"{IMAGE_REPO}/{self.name}-build:{self.version}"

    @property
    def run_image(self) -> str:
        return self.prebuilt_image or f"{IMAGE_REPO}/{self.name}-run:{self.version}"

    def vendored(self, paths: Iterable[str]) -> str | None:
        """Why a build of a source with these entries needs no network (a sentence's end),
        or None when it may fetch dependencies from a registry."""
        if self.offline:
            return f"the {self.name} stack fetches nothing"
        names = set(top_level(paths))
        found = [name for name in self.offline_with if name in names]
        return f"the dependencies are vendored ({', '.join(found)})" if found else None

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "detect": list(self.detect),
                "build_image": self.build_image, "run_image": self.run_image,
                "build_packages": list(self.build_packages),
                "run_packages": list(self.run_packages), "default_start": self.default_start,
                "prebuilt": self.prebuilt_image is not None, "offline": self.offline,
                "offline_with": list(self.offline_with), "digest": self.digest}


@dataclass(frozen=True, kw_only=True)
class Detection:
    stack: str  # a stack name, or DOCKERFILE
    manifest: str  # the manifest file that decided it, "" when none did
    reason: str  # for the user: "the Dockerfile", "paas.toml [build] stack", "requirements.txt"


def stacks_root() -> Traversable:
    return resources.files("paas") / PACKAGE_FOLDER


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadStack(f"{where}: {key} must be a list of strings.")
    return tuple(value)


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise BadStack(f"{where}: [{key}] must be a table.")
    return value


def images_digest(*, name: str, version: str, build_packages: tuple[str, ...],
                  run_packages: tuple[str, ...], prebuilt: str | None) -> str:
    """sha256 over what a stack's images are made from: a change to any of it makes them
    again, while the app's template, the README or the start command leave them as they are."""
    recipe = [name, version, list(build_packages), list(run_packages), prebuilt]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()


def load_stack(folder: Traversable) -> Stack:
    """Read and check one stack folder; raise BadStack with one sentence per mistake."""
    where = f"stack folder {folder.name!r}"
    for required in STACK_FILES:
        if not (folder / required).is_file():
            raise BadStack(f"{where} has no {required}; add it.")
    try:
        doc = tomllib.loads((folder / "stack.toml").read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadStack(f"{where}: stack.toml is not valid TOML ({exc}).") from None
    where = f"{where}, stack.toml"
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise BadStack(f"{where}: name must be a lowercase word like \"python\".")
    if name != folder.name:
        raise BadStack(f"{where}: name {name!r} must be the folder's name {folder.name!r}.")
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise BadStack(f"{where}: version must be a string usable as an image tag, like \"1\".")
    detect = _strings(doc, "detect", where)
    if "detect" not in doc:
        raise BadStack(f"{where}: detect is missing; list the manifest files (or []).")
    for file in detect:
        if not _FILE_RE.fullmatch(file):
            raise BadStack(f"{where}: detect entry {file[:40]!r} must be a file name at the "
                           "app's root.")
    build, run, start = (_table(doc, k, where) for k in ("build", "run", "start"))
    prebuilt = run.get("image")
    if prebuilt is not None and (not isinstance(prebuilt, str)
                                 or not _IMAGE_RE.fullmatch(prebuilt)):
        raise BadStack(f"{where}: [run] image must be a local 'repository:tag'.")
    packages = {}
    for key, table in (("build", build), ("run", run)):
        packages[key] = _strings(table, "packages", f"{where} [{key}]")
        # A build image always needs its toolchain; a run image may be bare minbase (a Go
        # binary needs nothing more), said with an explicit empty list.
        missing = not packages[key] if key == "build" else "packages" not in table
        if missing and prebuilt is None:
            raise BadStack(f"{where}: [{key}] packages must name the Debian packages of the "
                           f"{key} image" + ("." if key == "build" else
                                             " (an empty list for bare minbase)."))
        for package in packages[key]:
            if not _PACKAGE_RE.fullmatch(package):
                raise BadStack(f"{where}: [{key}] package {package[:40]!r} is not a Debian "
                               "package name.")
    default = start.get("default", "")
    if not isinstance(default, str):
        raise BadStack(f"{where}: [start] default must be a string (\"\" = Procfile required).")
    offline, offline_with = _offline(build, where)
    return Stack(name=name, version=version, detect=detect,
                 build_packages=packages["build"], run_packages=packages["run"],
                 default_start=default.strip(), prebuilt_image=prebuilt, folder=folder,
                 digest=images_digest(name=name, version=version,
                                      build_packages=packages["build"],
                                      run_packages=packages["run"], prebuilt=prebuilt),
                 offline=offline, offline_with=offline_with)


def _offline(build: dict[str, Any], where: str) -> tuple[bool, tuple[str, ...]]:
    """`[build] offline` and `[build] offline_with`, checked."""
    offline = build.get("offline", False)
    if not isinstance(offline, bool):
        raise BadStack(f"{where}: [build] offline must be true or false.")
    offline_with = _strings(build, "offline_with", f"{where} [build]")
    for name in offline_with:
        if not _FILE_RE.fullmatch(name):
            raise BadStack(f"{where}: [build] offline_with entry {name[:40]!r} must be a "
                           "top-level name of the source, like \"vendor\".")
    if offline and offline_with:
        raise BadStack(f"{where}: [build] offline = true needs no offline_with; keep one.")
    return offline, offline_with


def load_stacks(root: Traversable | None = None) -> dict[str, Stack]:
    """Every stack folder under `root` (default: the packaged `paas/stacks/`), by name."""
    root = root if root is not None else stacks_root()
    return {entry.name: load_stack(entry)
            for entry in sorted(root.iterdir(), key=lambda e: e.name)
            if entry.is_dir() and not entry.name.startswith(("_", "."))}


def get_stack(name: str, root: Traversable | None = None) -> Stack:
    stacks = load_stacks(root)
    if name not in stacks:
        raise NoStack(f"there is no stack {name[:40]!r}; use one of: {', '.join(stacks)}.")
    return stacks[name]


def top_level(paths: Iterable[str]) -> list[str]:
    """The sorted top-level names of a context's entries ("src/a.py" -> "src")."""
    names = set()
    for path in paths:
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if parts:
            names.add(parts[0])
    return sorted(names)


def detect(paths: Iterable[str], *, configured: str | None = None,
           stacks: dict[str, Stack] | None = None) -> Detection:
    """Pick the stack for a context whose entries are `paths`; `configured` is paas.toml's
    `[build] stack`. Raises NoStack when nothing fits."""
    names = set(top_level(paths))
    stacks = stacks if stacks is not None else load_stacks()
    if "Dockerfile" in names:
        return Detection(stack=DOCKERFILE, manifest="", reason="the Dockerfile")
    if configured:
        if configured not in stacks:
            raise NoStack(f"paas.toml [build] stack names {configured[:40]!r}, which is not a "
                          f"stack; use one of: {', '.join(stacks)}.")
        manifest = next((f for f in stacks[configured].detect if f in names), "")
        return Detection(stack=configured, manifest=manifest, reason="paas.toml [build] stack")
    ordered = [stacks[n] for n in DETECT_ORDER if n in stacks]
    for stack in ordered:
        for manifest in stack.detect:
            if manifest in names:
                return Detection(stack=stack.name, manifest=manifest, reason=manifest)
    if "Procfile" in names and FALLBACK in stacks:
        return Detection(stack=FALLBACK, manifest="", reason="a lone Procfile")
    looked = ", ".join(f for s in ordered for f in s.detect)
    raise NoStack("the source has no Dockerfile, no paas.toml [build] stack, no manifest "
                  f"({looked or 'no stack detects one'}) and no Procfile at its root; add one "
                  "of them.")


def web_command(procfile: str | None) -> str | None:
    """The command of the Procfile's `web` process type, or None when it has none."""
    for line in (procfile or "").splitlines():
        name, sep, command = line.strip().partition(":")
        if sep and name.strip() == "web" and command.strip():
            return command.strip()
    return None


def render(stack: Stack, *, procfile: str | None, manifest: str, paths: Iterable[str]) -> str:
    """The Dockerfile for an app of `stack`: the Procfile's web command, else the stack's
    default; raises NoStack when there is neither."""
    command = web_command(procfile) or stack.default_start
    if not command:
        raise NoStack(f"the {stack.name} stack has no default start command and the Procfile "
                      "has no web process; add a 'web: <command>' line to the Procfile.")
    env = jinja2.Environment(loader=jinja2.DictLoader({}), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    template = env.from_string((stack.folder / "Dockerfile.j2").read_text(encoding="utf-8"))
    # Exec form with a JSON array: the command reaches the shell as one argument, verbatim.
    return template.render(build_image=stack.build_image, run_image=stack.run_image,
                           cmd_json=json.dumps(["/bin/sh", "-c", command]),
                           manifest=manifest, paths=top_level(paths))
