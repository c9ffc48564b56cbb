"""A small synchronous HTTP client for the controller API, used by the CLI.

It finds the controller URL and token from flags, then `PAAS_URL`/`PAAS_TOKEN`, then the
local cluster's files, and turns every failure into `ClientError`: one sentence and a hint.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


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


def paas_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("PAAS_HOME") or Path.home() / ".paas")


def cluster_root(environ: Mapping[str, str] | None = None) -> Path:
    return paas_home(environ) / "cluster"


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def resolve_target(*, url: str | None, token: str | None,
                   environ: Mapping[str, str] | None = None) -> Target:
    env = os.environ if environ is None else environ
    url = url or env.get("PAAS_URL")
    token = token or env.get("PAAS_TOKEN")
    root = cluster_root(env)
    if not url:
        try:
            url = json.loads((root / "cluster.json").read_text())["controller_url"]
        except (OSError, ValueError, KeyError):
            raise ClientError("no controller to talk to",
                              hint="start one with 'paas up', or set --url / PAAS_URL") from None
    if not token:
        try:
            token = (root / "controller" / "admin.token").read_text().strip()
        except OSError:
            raise ClientError("no API token", hint="pass --token or set PAAS_TOKEN") from None
    return Target(url=url.rstrip("/"), token=token)


class Client:
    def __init__(self, target: Target, *, timeout: float = 120.0) -> None:
        self.target = target
        self.timeout = timeout

    def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                content_type: str | None = None, timeout: float | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.target.token}", "Accept": "application/json"}
        body = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.target.url + path, data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach the controller at {self.target.url} ({reason})",
                              hint="is it running? 'paas up' starts a local cluster") from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _http_error(exc: urllib.error.HTTPError) -> ClientError:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        message = body.get("error") if isinstance(body, dict) else None
        hint = {401: "check --token / PAAS_TOKEN",
                403: "use an admin token"}.get(exc.code, "")
        return ClientError(message or f"the controller answered HTTP {exc.code}", hint=hint,
                           status=exc.code, body=body if isinstance(body, dict) else {})

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
