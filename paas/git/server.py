"""Git smart HTTP for apps: `http://<controller>/git/<app>.git`, where a push deploys.

git's own `git http-backend` does the protocol, run as a CGI with an argv list: the request
body streams into it and its output streams back as it comes, so the `pre-receive` hook's
lines reach the pusher live as `remote:` lines. Each app's bare repository is
`<data_dir>/git/<app>.git`, made on first access for an existing app; its hook only execs
`python -m paas.git.hook` (`paas/git/hook.py`), which builds and deploys the pushed commit
through the API with the pusher's own token, and whose exit code accepts or rejects the push.

A repository records the creation time of the app it belongs to (`paas.appcreated` in its
config); when an app is deleted and made again under the same name, the old repository is
replaced by a new, empty one on first access.

Also here: `GET/PUT /v1/apps/{app}/git`, the push URL and the deploy branch (`paas.branch`).

The controller mounts these routes with `add_routes(app)` and sets `app[GIT_HOST]`: the host is all
this module knows of the controller (where repositories live, its own URL, its tokens, and how
to tell whether an app exists), so the git endpoint reads and tests on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

import paas
from paas.auth import credentials
from paas.errors import BadRequest, Forbidden, Unauthorized, Unavailable
from paas.git import hook as githook
from paas.names import validate_app_name

log = logging.getLogger("paas.git.server")

CHALLENGE = 'Basic realm="paas"'
SERVICES = frozenset({"git-upload-pack", "git-receive-pack"})
CHUNK = 64 * 1024
CREATED_KEY = "paas.appcreated"
BRANCH_KEY = "paas.branch"
_USER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:.,_-]{1,100}$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
REPO_LOCKS = web.AppKey("git_repo_locks", dict)


@dataclass(frozen=True, kw_only=True)
class GitHost:
    """What the git endpoint needs of the controller that serves it."""

    repos_dir: Path
    """Where the bare repositories live (`<data_dir>/git`)."""
    controller_url: str
    """The controller's own URL, for the hook to call the API back."""
    admin_token: str
    """The token a pusher must give as the HTTP Basic password."""
    join_token: str
    """The agents' token: refused here with a sentence saying which token to use."""
    app_created_at: Callable[[str], str]
    """The creation mark of an existing app; raises `paas.errors.NotFound` for another name."""


GIT_HOST = web.AppKey("git_host", GitHost)


class GitFailed(Exception):
    """A git command the controller ran failed; the message is its first line of stderr."""


# --- git commands -------------------------------------------------------------------------
async def _git(*args: str, cwd: Path | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run `git args...` (argv list, no shell) and return its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode not in ok_codes:
        first = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise GitFailed(f"git {args[0]} exited with code {proc.returncode}: {first}")
    return out.decode(errors="replace").strip()


async def config_get(repo: Path, key: str) -> str | None:
    """The value of `key` in the bare repository's config, or None when unset."""
    value = await _git("config", "--file", str(repo / "config"), "--get", key,
                       ok_codes=(0, 1))
    return value or None


async def config_set(repo: Path, key: str, value: str | None) -> None:
    """Set `key` in the repository's config, or unset it when `value` is None."""
    config = str(repo / "config")
    if value is None:
        await _git("config", "--file", config, "--unset-all", key, ok_codes=(0, 5))
    else:
        await _git("config", "--file", config, key, value)


# --- repositories -------------------------------------------------------------------------
def repo_path(host: GitHost, app: str) -> Path:
    return host.repos_dir / f"{validate_app_name(app)}.git"


def hook_script() -> str:
    """The pre-receive hook: it only execs the deploy hook with this controller's Python."""
    return ("#!/bin/sh\n"
            "# Installed by the paas controller (paas/git/server.py): a push deploys.\n"
            f"exec {shlex.quote(sys.executable)} -m paas.git.hook\n")


def _install_hook(repo: Path) -> None:
    """Write the hook if it is missing or stale (a new Python path); atomic."""
    hook = repo / "hooks" / "pre-receive"
    text = hook_script()
    with contextlib.suppress(OSError):
        if hook.read_text() == text and os.access(hook, os.X_OK):
            return
    hook.parent.mkdir(exist_ok=True)
    tmp = hook.with_name(f".pre-receive.{secrets.token_hex(4)}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(hook)


async def _create_repo(final: Path, created: str) -> None:
    """Make a configured bare repository next to `final`, then move it into place."""
    tmp = final.with_name(f".new-{final.name}-{secrets.token_hex(4)}")
    try:
        await _git("init", "--bare", "--quiet", str(tmp))
        for key, value in (("receive.advertisePushOptions", "true"),
                           ("http.receivepack", "true"), (CREATED_KEY, created)):
            await config_set(tmp, key, value)
        _install_hook(tmp)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


async def ensure_repo(request: web.Request, app: str) -> Path:
    """The app's bare repository, made (or remade, if it belonged to an earlier app of the
    same name) on first access. The app must exist."""
    host = request.app[GIT_HOST]
    locks: dict[str, asyncio.Lock] = request.app[REPO_LOCKS]
    async with locks.setdefault(app, asyncio.Lock()):
        created = host.app_created_at(app)
        repo = repo_path(host, app)
        host.repos_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if repo.is_dir() and await config_get(repo, CREATED_KEY) == created:
                _install_hook(repo)
                return repo
            if repo.exists():
                log.info("replacing the repository of a deleted app named %s", app)
                stale = repo.with_name(f".old-{repo.name}-{secrets.token_hex(4)}")
                repo.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            await _create_repo(repo, created)
        except (GitFailed, OSError) as exc:
            raise Unavailable(f"the repository of {app!r} cannot be prepared: {exc}") from None
        return repo


def remove_repo(host: GitHost, app: str) -> None:
    """Delete the app's repository (when the app is deleted; access also replaces a stale
    one, so this is tidiness, not correctness)."""
    shutil.rmtree(repo_path(host, app), ignore_errors=True)


# --- auth ---------------------------------------------------------------------------------
def authenticate(request: web.Request) -> tuple[str, str]:
    """The pusher's (user, token): git sends the token as an HTTP Basic password. Only an
    admin token may read or push; the 401 carries the challenge git needs to send it."""
    user, token = credentials(request.headers.get("Authorization", ""))
    host = request.app[GIT_HOST]
    if not token:
        raise Unauthorized("git needs the token as the password: "
                           "http://x:<token>@<controller>/git/<app>.git")
    if hmac.compare_digest(token, host.admin_token):
        return (user if _USER_RE.fullmatch(user) else "paas"), token
    if hmac.compare_digest(token, host.join_token):
        raise Forbidden("the join token is for node agents; push with an admin token")
    raise Unauthorized("the token is not valid for this controller")


async def add_challenge(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every 401 under /git/ asks for Basic credentials, whichever
    layer refused the request (git only sends its credentials after that challenge)."""
    if response.status == 401 and request.path.startswith("/git/"):
        response.headers["WWW-Authenticate"] = CHALLENGE


# --- the CGI ------------------------------------------------------------------------------
def callback_url(bind_host: str, port: int) -> str:
    """A controller's own URL, for the hook to call back (a wildcard bind is loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_host, bind_host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def cgi_env(request: web.Request, *, app: str, path_info: str, user: str,
            token: str) -> dict[str, str]:
    """The whole environment of `git http-backend` (and so of the hook): nothing else of
    the controller's environment leaks into it."""
    host = request.app[GIT_HOST]
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "GIT_PROJECT_ROOT": str(host.repos_dir),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": user,
        "REMOTE_ADDR": request.remote or "",
        "PYTHONPATH": str(Path(paas.__file__).resolve().parent.parent),
        "PYTHONUNBUFFERED": "1",
        githook.ENV_URL: host.controller_url,
        githook.ENV_TOKEN: token,
        githook.ENV_APP: app,
    }
    protocol = request.headers.get("Git-Protocol", "")
    if _PROTOCOL_RE.fullmatch(protocol):
        env["HTTP_GIT_PROTOCOL"] = protocol  # protocol v2 for fetches
    # aiohttp has already decoded a `Content-Encoding: gzip` body, so HTTP_CONTENT_ENCODING
    # is deliberately left out: http-backend would try to inflate it a second time.
    return env


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """Stream the (decoded) request body into the CGI, then close its stdin."""
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the backend stopped reading; its own output says why
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def _log_stderr(stream: asyncio.StreamReader, app: str) -> None:
    async for line in stream:
        log.info("git http-backend (%s): %s", app, line.decode(errors="replace").rstrip())


async def _read_cgi_head(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers the CGI printed before its body."""
    status, headers = 200, {}
    while True:
        line = (await stdout.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        name, sep, value = line.partition(":")
        if not sep:
            raise Unavailable("git http-backend answered without CGI headers")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers[name] = value


async def _relay(stdout: asyncio.StreamReader, request: web.Request,
                 response: web.StreamResponse) -> None:
    """Copy the CGI's output to the client as it comes (chunked). A client that went away
    stops the copying, not the backend: a deploy it started still ends and updates the ref."""
    connected = True
    while chunk := await stdout.read(CHUNK):
        if not connected:
            continue
        try:
            await response.write(chunk)
        except ConnectionResetError:
            connected = False
            log.info("git client of %s went away; the push runs to its end", request.path)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """End the backend and what it started (receive-pack, the hook): its own session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


async def run_backend(request: web.Request, env: dict[str, str], app: str) -> web.StreamResponse:
    proc = await asyncio.create_subprocess_exec(
        "git", "http-backend", env=env, cwd=env["GIT_PROJECT_ROOT"], start_new_session=True,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeder = asyncio.create_task(_feed(request, proc.stdin))
    errors = asyncio.create_task(_log_stderr(proc.stderr, app))
    try:
        status, headers = await _read_cgi_head(proc.stdout)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        await _relay(proc.stdout, request, response)
        await asyncio.gather(feeder, errors, proc.wait())
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
    except BaseException:
        _kill(proc)
        feeder.cancel()
        errors.cancel()
        raise


# --- handlers -----------------------------------------------------------------------------
async def _git_request(request: web.Request, tail: str) -> web.StreamResponse:
    app = validate_app_name(request.match_info["app"])
    user, token = authenticate(request)
    request.app[GIT_HOST].app_created_at(app)
    if tail == "info/refs" and request.query.get("service") not in SERVICES:
        raise BadRequest("only git's smart HTTP protocol is served: use git 1.6.6 or later")
    await ensure_repo(request, app)
    env = cgi_env(request, app=app, path_info=f"/{app}.git/{tail}", user=user, token=token)
    return await run_backend(request, env, app)


async def info_refs(request: web.Request) -> web.StreamResponse:
    return await _git_request(request, "info/refs")


async def upload_pack(request: web.Request) -> web.StreamResponse:
    return await _git_request(request, "git-upload-pack")


async def receive_pack(request: web.Request) -> web.StreamResponse:
    return await _git_request(request, "git-receive-pack")


def _git_view(request: web.Request, app: str, branch: str | None) -> dict[str, Any]:
    return {"url": f"{request.scheme}://{request.host}/git/{app}.git", "branch": branch}


async def show_git(request: web.Request) -> web.Response:
    """`GET /v1/apps/{app}/git`: the push URL and the deploy branch (null: main or master)."""
    app = validate_app_name(request.match_info["app"])
    repo = await ensure_repo(request, app)
    return web.json_response(_git_view(request, app, await config_get(repo, BRANCH_KEY)))


async def _valid_branch(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _BRANCH_RE.fullmatch(value) or value.endswith(".lock"):
        raise BadRequest("branch must be a branch name like 'main' or 'production', or null")
    try:
        await _git("check-ref-format", f"refs/heads/{value}")
    except GitFailed:
        raise BadRequest(f"{value!r} is not a valid git branch name") from None
    return value


async def set_git(request: web.Request) -> web.Response:
    """`PUT /v1/apps/{app}/git` `{"branch": "production"}`: pushes to that branch deploy;
    `{"branch": null}` goes back to the default (main or master)."""
    app = validate_app_name(request.match_info["app"])
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the request body must be JSON like {\"branch\": \"main\"}") from None
    if not isinstance(body, dict) or "branch" not in body:
        raise BadRequest("the request body must be JSON like {\"branch\": \"main\"}")
    branch = await _valid_branch(body["branch"])
    repo = await ensure_repo(request, app)
    try:
        await config_set(repo, BRANCH_KEY, branch)
    except GitFailed as exc:
        raise Unavailable(f"the deploy branch of {app!r} cannot be saved: {exc}") from None
    return web.json_response(_git_view(request, app, branch))


def add_routes(app: web.Application) -> None:
    """Register the git routes on the controller application; it sets `app[GIT_HOST]` when it
    starts (its tokens are read then)."""
    app[REPO_LOCKS] = {}
    app.on_response_prepare.append(add_challenge)
    r = app.router
    r.add_get("/git/{app}.git/info/refs", info_refs, name="git_info_refs")
    r.add_post("/git/{app}.git/git-upload-pack", upload_pack, name="git_upload_pack")
    r.add_post("/git/{app}.git/git-receive-pack", receive_pack, name="git_receive_pack")
    r.add_get("/v1/apps/{app}/git", show_git, name="show_git")
    r.add_put("/v1/apps/{app}/git", set_git, name="set_git")

