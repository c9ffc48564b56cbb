"""Every bench runs when called directly, as README shows it, even from a Python without the
virtualenv's packages: it starts again under the virtualenv (paas.venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.name for p in (REPO / "bench").iterdir() if p.is_file())
SYSTEM_PYTHON = "/usr/bin/python3"


def test_make_bench_runs_every_bench() -> None:
    makefile = (REPO / "Makefile").read_text()
    listed = next(line for line in makefile.splitlines() if line.startswith("BENCHES :="))
    assert sorted(listed.split(":=")[1].split()) == BENCHES


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system Python")
@pytest.mark.parametrize("bench", BENCHES)
def test_each_bench_starts_from_the_system_python(bench: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    done = subprocess.run([SYSTEM_PYTHON, str(REPO / "bench" / bench), "--help"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_scheduler_runs_directly_and_prints_its_figures() -> None:
    assert shutil.which("python3")
    done = subprocess.run([str(REPO / "bench" / "scheduler"), "--apps", "3", "--per-app", "2"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "placements/s" in done.stdout and "5,000 nodes" in done.stdout
