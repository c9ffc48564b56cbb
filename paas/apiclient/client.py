"""A small synchronous HTTP client for the controller API, used by the CLI.

`resolve_target` finds the controller URL and token, in this order: flags, then
`PAAS_URL`/`PAAS_TOKEN`, then the controller saved by `paas login` (`$PAAS_HOME/config.json`,
mode 0600), then the local cluster's files (`$PAAS_HOME/cluster`). A token is only ever sent
to the URL it was saved for. `Client` turns every failure into `ClientError`: one sentence
and a hint, never a traceback.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

LOGIN_FILE = "config.json"


class ClientError(Exception):
    """A failed call: `message` is one sentence, `hint` what to do, `status` the HTTP status
    (0 when the controller did not answer), `body` the JSON error document if any."""

    def __init__(self, message: str, *, hint: str = "", status: int = 0,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.body = body or {}

    @property
    def no_such_route(self) -> bool:
        """The controller does not have this endpoint (an older controller)."""
        return self.status in (404, 405) and str(self.body.get("error", "")).startswith(
            ("no such route", "method "))


def paas_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("PAAS_HOME") or Path.home() / ".paas")


def cluster_root(environ: Mapping[str, str] | None = None) -> Path:
    return paas_home(environ) / "cluster"


# --- where the controller is ----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    url: str
    token: str


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def load_login(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The controller saved by `paas login`, or {} when there is none (or it is unreadable)."""
    try:
        data = json.loads((paas_home(environ) / LOGIN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) \
            or not isinstance(data.get("token"), str):
        return {}
    return {"url": normalise_url(data["url"]), "token": data["token"]}


def save_login(url: str, token: str, environ: Mapping[str, str] | None = None) -> Path:
    """Write `{"url", "token"}` to `$PAAS_HOME/config.json`, readable by the user only."""
    home = paas_home(environ)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / LOGIN_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": normalise_url(url), "token": token}, handle)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    os.replace(tmp, path)
    return path


def forget_login(environ: Mapping[str, str] | None = None) -> bool:
    try:
        (paas_home(environ) / LOGIN_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def local_cluster_login(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The local cluster's controller URL and admin token, as far as its files say."""
    root = cluster_root(environ)
    found: dict[str, str] = {}
    try:
        found["url"] = normalise_url(json.loads((root / "cluster.json").read_text())
                                     ["controller_url"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        found["token"] = (root / "controller" / "admin.token").read_text().strip()
    except OSError:
        pass
    return found


def resolve_target(*, url: str | None, token: str | None,
                   environ: Mapping[str, str] | None = None) -> Target:
    """Flags, then environment, then `paas login`, then the local cluster."""
    env = os.environ if environ is None else environ
    login, local = load_login(env), local_cluster_login(env)
    chosen = url or env.get("PAAS_URL") or login.get("url") or local.get("url")
    if not chosen:
        raise ClientError("no controller to talk to",
                          hint="pass --url, set PAAS_URL, run 'paas login URL --token T', "
                               "or start a local cluster with 'paas up'")
    chosen = normalise_url(chosen)
    token = token or env.get("PAAS_TOKEN")
    for saved in (login, local):  # a saved token only goes to the URL it was saved for
        if not token and saved.get("token") and saved.get("url") == chosen:
            token = saved["token"]
    if not token:
        raise ClientError(f"no API token for {chosen}",
                          hint="pass --token, set PAAS_TOKEN, or run "
                               f"'paas login {chosen} --token T'")
    return Target(url=chosen, token=token)


# --- the client -----------------------------------------------------------------------------
class Client:
    """One method per HTTP verb; every failure is a `ClientError`."""

    def __init__(self, target: Target, *, timeout: float = 120.0) -> None:
        self.target = target
        self.timeout = timeout

    def _open(self, method: str, path: str, *, body: bytes | None, content_type: str | None,
              accept: str, timeout: float | None) -> Any:
        headers = {"Authorization": f"Bearer {self.target.token}", "Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            req = urllib.request.Request(self.target.url + path, data=body, method=method,
                                         headers=headers)
            return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the user's URL
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except ValueError:
            raise ClientError(f"{self.target.url!r} is not a controller URL",
                              hint="use a URL like http://127.0.0.1:7070") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: BaseException) -> ClientError:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        return ClientError(f"cannot reach the controller at {self.target.url} ({reason})",
                           hint="check --url / PAAS_URL; 'paas up' starts a local cluster")

    def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                content_type: str | None = None, timeout: float | None = None) -> Any:
        body = data
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        resp = self._open(method, path, body=body, content_type=content_type,
                          accept="application/json", timeout=timeout or self.timeout)
        try:
            with resp:
                raw = resp.read()
        except OSError as exc:
            raise self._unreachable(exc) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ClientError(f"{self.target.url} answered {path} with something that is not "
                              "JSON", hint="is --url the controller's address?") from None

    def stream_lines(self, path: str, *, timeout: float | None = None) -> Iterator[str]:
        """GET a text/plain stream and yield its lines (without the newline) as they come."""
        resp = self._open("GET", path, body=None, content_type=None, accept="text/plain",
                          timeout=timeout)
        with resp:
            try:
                for raw in resp:
                    yield raw.decode("utf-8", "replace").rstrip("\r\n")
            except OSError as exc:
                raise ClientError(f"the log stream from {self.target.url} broke off ({exc})",
                                  hint="run the command again") from None

    def stream_objects(self, method: str, path: str, *, data: bytes, content_type: str,
                       timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Send `data` and yield the JSON objects of an `application/x-ndjson` answer as they
        come; a plain JSON answer is yielded as one object."""
        resp = self._open(method, path, body=data, content_type=content_type,
                          accept="application/x-ndjson, application/json",
                          timeout=timeout or self.timeout)
        with resp:
            try:
                if not resp.headers.get("Content-Type", "").startswith("application/x-ndjson"):
                    yield self._decode(resp.read(), path)
                    return
                for raw in resp:
                    if raw.strip():
                        yield self._decode(raw, path)
            except OSError as exc:
                raise ClientError(f"the build log from {self.target.url} broke off ({exc})",
                                  hint="see the app's releases, then run the command again"
                                  ) from None

    def _decode(self, raw: bytes, path: str) -> dict[str, Any]:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise ClientError(f"{self.target.url} answered {path} with something that is not "
                              "a JSON object", hint="is --url the controller's address?")
        return obj

    def _http_error(self, exc: urllib.error.HTTPError) -> ClientError:
        try:
            body = json.loads(exc.read() or b"{}")
        except (ValueError, OSError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = body.get("error") or f"the controller answered HTTP {exc.code}"
        if exc.code == 401:
            message = f"the controller at {self.target.url} refused the token"
        hint = {401: "check --token / PAAS_TOKEN, or run 'paas login URL --token T' again",
                403: "use an admin token, not the join token",
                413: "make the app smaller, or add what the build does not need to .gitignore",
                503: "the controller's Docker engine or Consul is away; retry shortly"
                }.get(exc.code, "")
        if exc.code == 409 and "deployment_id" in body:
            hint = (f"wait for it, or follow it with 'paas events APP --deployment "
                    f"{body['deployment_id']}'")
        if exc.code >= 500 and not hint:
            hint = "see the controller's log"
        return ClientError(message, hint=hint, status=exc.code, body=body)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PUT", path, json_body=body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PATCH", path, json_body=body, **kw)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
