"""Scripts run with this machine's Python (`bench/zero_downtime`, as README shows it) start
again under the project's virtualenv, whose packages they import. Standard library only: it
runs before anything else is importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def use_the_virtualenv(script: str) -> None:
    """Re-run `script` with the virtualenv's Python unless this is it (or it does not exist:
    then the imports say what is missing)."""
    if sys.prefix != sys.base_prefix or not VENV_PYTHON.exists():
        return
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(script).resolve()), *sys.argv[1:]])
