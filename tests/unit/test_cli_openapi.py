"""Issue 13: the CLI (and the git hook) are clients of the API's OpenAPI document. Every API
path their code names, with the method of the call where the code says it, must be an
operation of `/v1/openapi.json`: a call the document does not describe fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from paas.controller.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
CLIENT_CODE = ("paas/cli", "paas/apiclient", "paas/git/hook.py")
METHODS = {"get": "get", "post": "post", "put": "put", "delete": "delete", "patch": "patch"}


def _path_of(node: ast.AST) -> str | None:
    """The path of a string or f-string starting with /v1/: each `{...}` as `{}`, no query."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    else:
        return None
    return text.split("?")[0] if text.startswith("/v1/") else None


def calls() -> set[tuple[str | None, str]]:
    """(method or None when the code does not say, path) of every API path in client code."""
    found: set[tuple[str | None, str]] = set()
    files = [p for c in CLIENT_CODE for p in ((ROOT / c).rglob("*.py") if (ROOT / c).is_dir()
                                             else [ROOT / c])]
    for file in files:
        tree = ast.parse(file.read_text())
        in_calls: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                args = node.args
                method = METHODS.get(node.func.attr)
                if node.func.attr == "request" and args and isinstance(args[0], ast.Constant):
                    method, args = str(args[0].value).lower(), args[1:]
                if method and args and (path := _path_of(args[0])):
                    found.add((method, path))
                    in_calls.add(id(args[0]))
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                 for v in n.values}  # an f-string's pieces are not paths of their own
        for node in ast.walk(tree):
            if id(node) not in in_calls | parts and (path := _path_of(node)):
                found.add((None, path))
    return found


def test_every_api_call_of_the_cli_is_an_operation_of_the_document() -> None:
    document = openapi_document()["paths"]
    patterns = {re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"): ops
                for path, ops in document.items()}
    seen = calls()
    assert len(seen) > 25, seen  # the scan finds the calls
    missing = []
    for method, path in sorted(seen, key=lambda c: (c[1], c[0] or "")):
        concrete = path.replace("{}", "x")
        ops = [o for pattern, o in patterns.items() if pattern.match(concrete)]
        if not ops or (method is not None and not any(method in o for o in ops)):
            missing.append(f"{(method or '?').upper()} {path}")
    assert missing == [], f"the CLI calls what the OpenAPI document does not describe: {missing}"
