"""The Jinja2 templates of the platform, shipped as package data in `paas/templates/`.

One loader for every daemon, so a non-editable install (a wheel, `pip install .`) finds them
through `importlib.resources` wherever it runs from. The templates render configuration files
and Dockerfiles, not HTML: autoescaping is off, and every value a template receives is checked
or encoded by its caller. An undefined variable is an error, never an empty string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

PACKAGE_FOLDER = "templates"


def environment(folder: str = "", *, directory: Path | None = None,
                **options: Any) -> jinja2.Environment:
    """An environment over `paas/templates/<folder>`, or over `directory` when given (an
    operator's own copy, e.g. the router's `--templates-dir`)."""
    loader: jinja2.BaseLoader
    if directory is not None:
        loader = jinja2.FileSystemLoader(str(directory))
    else:
        loader = jinja2.PackageLoader("paas", f"{PACKAGE_FOLDER}/{folder}".rstrip("/"))
    return jinja2.Environment(loader=loader, autoescape=False,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              **options)
