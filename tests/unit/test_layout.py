"""The layout table of docs/architecture.md is the law: every package and top-level `paas/`
module is listed in it, and no import crosses a line it does not allow (issue 8)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "architecture.md"
CODE_ROOTS = ("paas", "agent", "router")


def layout_table() -> list[tuple[list[str], list[str]]]:
    """(paths of the unit, paths it may import) for each row of the Layout table."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        unit = re.findall(r"`([^`]+)`", cells[0])
        allowed = re.findall(r"`([^`]+)`", cells[2])
        if "the kernel" in cells[2]:
            allowed.append("<kernel>")
        rows.append((unit, allowed))
    return rows


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_key(path: str) -> str:
    """`paas/controller/` -> `paas.controller`, `paas/names.py` -> `paas.names`."""
    return path.rstrip("/").removesuffix(".py").replace("/", ".")


class Layout:
    def __init__(self) -> None:
        self.rows = layout_table()
        self.kernel = set(unit_key(p) for p in self.rows[0][0])
        self.unit_of_key: dict[str, int] = {}
        for index, (unit, _) in enumerate(self.rows):
            for path in unit:
                self.unit_of_key[unit_key(path)] = index

    def unit(self, module: str) -> int | None:
        """The row a first-party module belongs to: its longest listed prefix."""
        parts = module.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in self.unit_of_key:
                return self.unit_of_key[key]
        return None

    def allowed(self, row: int) -> set[int]:
        allowed = {row}
        for path in self.rows[row][1]:
            if path == "<kernel>":
                allowed.add(0)
            elif (target := self.unit(unit_key(path))) is not None:
                allowed.add(target)
        return allowed


def source_files() -> list[Path]:
    return sorted(p for root in CODE_ROOTS for p in (REPO / root).rglob("*.py"))


def imports_of(path: Path) -> list[str]:
    """First-party modules a file imports (`from paas import x` counts as `paas.x`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in found if name.split(".")[0] in CODE_ROOTS]


def test_the_table_has_a_kernel_and_every_unit_once() -> None:
    layout = Layout()
    assert "paas.names" in layout.kernel
    keys = [unit_key(p) for unit, _ in layout.rows for p in unit]
    assert len(keys) == len(set(keys)), "a unit is listed twice"


def test_every_package_and_top_level_module_is_listed() -> None:
    layout = Layout()
    missing = []
    for path in source_files():
        name = module_name(path)
        is_package = path.name == "__init__.py"
        top_module = path.parent == REPO / "paas" and not is_package
        if (is_package or top_module) and name != "paas" and layout.unit(name) is None:
            missing.append(name)
    assert not missing, f"not in the layout table of docs/architecture.md: {missing}"


def test_no_import_crosses_a_forbidden_line() -> None:
    layout = Layout()
    crossings = []
    for path in source_files():
        source = layout.unit(module_name(path))
        if source is None:
            continue  # the package root `paas/__init__.py`
        for target_name in imports_of(path):
            target = layout.unit(target_name)
            if target is None:
                # `from paas import templating` names a module; `import paas` the root.
                continue
            if target not in layout.allowed(source):
                crossings.append(f"{path.relative_to(REPO)} imports {target_name}")
    assert not crossings, "imports the layout table forbids:\n" + "\n".join(crossings)


@pytest.mark.parametrize("source, target, ok", [
    ("agent.daemon", "paas.names", True),
    ("agent.daemon", "paas.controller.store", False),
    ("router.render", "paas.templating", True),
    ("paas.builder.builder", "paas.controller.store", False),
    ("paas.controller.releases", "paas.builder.builder", True),
    ("paas.names", "paas.controller.store", False),
])
def test_the_rules_read_from_the_table(source: str, target: str, ok: bool) -> None:
    layout = Layout()
    src, dst = layout.unit(source), layout.unit(target)
    assert src is not None and dst is not None
    assert (dst in layout.allowed(src)) is ok


def test_the_controller_daemon_does_not_load_the_cli() -> None:
    """The git hook shares the API client with the CLI (`paas/apiclient/`), not the CLI
    itself, so the controller, which mounts the git endpoint, never imports a `paas.cli`
    module."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import sys, paas.controller.server, paas.git.hook; "
         "print(' '.join(sorted(m for m in sys.modules if m.startswith('paas.cli'))))"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    assert done.stdout.strip() == "", done.stdout
