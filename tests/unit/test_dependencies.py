"""Honest dependencies (issue 8): every third-party module that paas/, agent/ and router/
import is provided by a runtime dependency in pyproject.toml, every one that tests/ and bench/
import by a runtime or `test` dependency; every declared dependency is used; and each is
pinned in constraints.txt at the version installed here.

Imports are read with `ast` (every `import` and `from ... import`, lazy ones in functions
too); which distribution provides a module comes from
`importlib.metadata.packages_distributions()`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = ("paas", "agent", "router")
TEST_DIRS = ("tests", "bench")

# Declared but not imported yet, on purpose: name -> why. Keep this short.
NOT_YET_IMPORTED = {
    "py-consul": "all Consul access is being moved to it (paas/consul.py) in parallel work",
}


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Jinja2` == `jinja2`,
    `prometheus_client` == `prometheus-client`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    return canonical(match.group(1))


def declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, the `test` extra), canonical names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    test = {requirement_name(r) for r in project["optional-dependencies"]["test"]}
    return runtime, test


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt pins exact versions only: {line!r}"
            found[canonical(name)] = version.strip()
    return found


def python_files(dirs: Iterable[str]) -> list[Path]:
    files = []
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py" or (path.is_file() and not path.suffix
                                        and path.read_bytes().startswith(b"#!")
                                        and b"python" in path.read_bytes().split(b"\n", 1)[0]):
                files.append(path)
    return files


def top_level_imports(source: str) -> set[str]:
    """The top-level names of the absolute imports in `source`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def first_party(path: Path) -> set[str]:
    """The project's own top-level names as `path` sees them: the packages and modules at the
    top of the repository, and, outside a package, the modules beside it (a test's helper like
    agent_it: pytest puts its folder on sys.path). Inside a package a sibling is no
    top-level name: `import consul` in paas/ is py-consul, not paas/consul.py."""
    in_package = (path.parent / "__init__.py").exists()
    beside = set() if in_package else {p.stem for p in path.parent.glob("*.py")}
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {p.stem for p in ROOT.glob("*.py")}
    return top | beside | {"__future__"}


def third_party_imports(dirs: Iterable[str]) -> dict[str, list[str]]:
    """{module: the files importing it} for modules neither standard nor the project's."""
    found: dict[str, list[str]] = {}
    for path in python_files(dirs):
        own = first_party(path)
        for name in top_level_imports(path.read_text()):
            if name not in sys.stdlib_module_names and name not in own:
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


PROVIDERS = {module: {canonical(d) for d in dists}
             for module, dists in importlib.metadata.packages_distributions().items()}


def undeclared(imports: dict[str, list[str]], allowed: set[str]) -> list[str]:
    return [f"{module} (imported by {files[0]}{' and more' if len(files) > 1 else ''}; "
            f"provided by {sorted(PROVIDERS.get(module, [])) or 'nothing installed'})"
            for module, files in sorted(imports.items())
            if not PROVIDERS.get(module, set()) & allowed]


def test_the_scan_reads_every_kind_of_import() -> None:
    source = ("import a.b as c, d\nfrom e.f import g\nfrom . import h\nfrom .i import j\n"
              "def later():\n    import k\n")
    assert top_level_imports(source) == {"a", "d", "e", "k"}
    assert "aiohttp" in third_party_imports(RUNTIME_DIRS), "the scan finds real imports"
    assert "pytest" in third_party_imports(TEST_DIRS)
    assert "consul" not in first_party(ROOT / "paas" / "consul.py")
    assert "agent_it" in first_party(ROOT / "tests" / "integration" / "agent" / "conftest.py")


def test_runtime_imports_are_runtime_dependencies() -> None:
    runtime, _ = declared()
    missing = undeclared(third_party_imports(RUNTIME_DIRS), runtime)
    assert not missing, f"declare in pyproject.toml's dependencies: {missing}"


def test_test_and_bench_imports_are_declared() -> None:
    runtime, test = declared()
    missing = undeclared(third_party_imports(TEST_DIRS), runtime | test)
    assert not missing, f"declare in the `test` extra: {missing}"


def test_every_runtime_dependency_is_imported() -> None:
    runtime, _ = declared()
    used = set().union(*(PROVIDERS.get(m, set()) for m in third_party_imports(RUNTIME_DIRS)))
    unused = sorted(runtime - used - set(NOT_YET_IMPORTED))
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"


def test_every_test_dependency_is_imported_or_a_pytest_plugin() -> None:
    _, test = declared()
    used = set().union(*(PROVIDERS.get(m, set()) for m in third_party_imports(TEST_DIRS)))
    plugins = {canonical(ep.dist.name) for ep in importlib.metadata.entry_points(group="pytest11")
               if ep.dist is not None}
    unused = sorted(test - used - plugins)
    assert not unused, f"in the `test` extra but neither imported nor a pytest plugin: {unused}"


@pytest.mark.parametrize("name", sorted(set().union(*declared())))
def test_each_dependency_is_pinned_at_the_installed_version(name: str) -> None:
    pinned = pins()
    assert name in pinned, f"pin {name} in constraints.txt"
    installed = importlib.metadata.version(name)
    assert pinned[name] == installed, \
        f"constraints.txt pins {name}=={pinned[name]} but {installed} is installed: " \
        "run scripts/setup.sh, or pin what is installed"
