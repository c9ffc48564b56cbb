"""The Vagrantfile (a server VM and two node VMs provisioned by scripts/setup.sh and `paas host
install`) cannot boot here, so it is checked with `vagrant validate`; a broken copy must fail
the same check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def validate(directory: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """`vagrant validate` with its home and machine folder in `scratch`, not the repository."""
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=directory,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(scratch),
                               "VAGRANT_DOTFILE_PATH": str(scratch / ".vagrant"),
                               "VAGRANT_DEFAULT_PROVIDER": "virtualbox"})


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by setup")
def test_vagrantfile_validates_and_provisions_with_the_setup_script(tmp_path):
    result = validate(REPO, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
    text = (REPO / "Vagrantfile").read_text()
    assert text.count("/opt/paas/scripts/setup.sh") == 2, "every VM runs the shared setup"
    for name in ('define "controller"', "node-1", "node-2"):
        assert name in text
    # Provisioned by the two commands README gives a team for its own machines.
    assert text.count("paas host install --role server") == 1
    assert text.count("paas host install --role node") == 1
    assert "nohup" not in text and "first draft" not in text

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Vagrantfile").write_text(text.replace('c.vm.hostname = "controller"',
                                                     'c.vm.hostnam = "controller"'))
    result = validate(broken, tmp_path)
    assert result.returncode != 0
    assert "hostnam" in result.stdout + result.stderr
