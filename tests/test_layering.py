"""Which package may import which: configuration, components and policies never reach into the review tooling,
and nothing outside tests/ imports tests/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

#: Package → the project packages it must not import. ``stacks/__main__.py`` is the documented entry of the tooling
#: (``python -m stacks``) and the one exception.
FORBIDDEN: dict[str, frozenset[str]] = {
    "stacks": frozenset({"stacktools", "components", "policy", "relay", "testbed", "tests", "benchmarks"}),
    "components": frozenset({"stacktools", "policy", "relay", "testbed", "tests", "benchmarks"}),
    "policy": frozenset({"stacktools", "components", "relay", "testbed", "tests", "benchmarks"}),
    "stacktools": frozenset({"policy", "relay", "testbed", "tests", "benchmarks"}),
    "relay": frozenset({"stacks", "stacktools", "components", "policy", "testbed", "tests", "benchmarks"}),
    "testbed": frozenset({"tests", "benchmarks"}),
    "benchmarks": frozenset({"tests"}),
}
EXCEPTIONS = frozenset({"stacks/__main__.py"})


def imported_packages(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def violations(root: Path) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative in EXCEPTIONS:
                continue
            for name in sorted(imported_packages(path.read_text()) & forbidden):
                found.append(f"{relative} imports {name}")
    return found


def test_no_package_reaches_where_it_must_not() -> None:
    assert violations(PROJECT_DIR) == []


def test_the_main_program_uses_no_tooling() -> None:
    assert imported_packages((PROJECT_DIR / "__main__.py").read_text()) & {"stacktools", "tests", "testbed"} == set()


@pytest.mark.parametrize(
    ("package", "line", "expected"),
    [
        ("stacks", "from stacktools import mocked", "stacks/bad.py imports stacktools"),
        ("components", "import tests.rendering", "components/bad.py imports tests"),
        ("policy", "from components.redis import redis_values", "policy/bad.py imports components"),
    ],
)
def test_a_forbidden_import_is_found(tmp_path: Path, package: str, line: str, expected: str) -> None:
    (tmp_path / package).mkdir()
    (tmp_path / package / "bad.py").write_text(line + "\n")
    assert violations(tmp_path) == [expected]
