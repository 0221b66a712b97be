"""Literal expectation tables: one row per decision-bearing field, with the value each stack must have.

A row is ``(path, dev, prod)``. The path walks mappings by key and lists by index (``a.b[0].c``); a key holding
dots or slashes is quoted (``podAnnotations["vault.hashicorp.com/role"]``). Values compare strictly (``True`` is
not ``1``). ``ABSENT`` says the key must not be there; ``Contains(x)`` that a list holds ``x`` among other items,
``Lacks(x)`` that it does not. The expected values are written from the stacks' intent (README's tables), never
computed by the code under test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


@dataclass(frozen=True)
class Contains:
    """A list that holds ``item`` (other items may be there too)."""

    item: Any


@dataclass(frozen=True)
class Lacks:
    """A list that does not hold ``item``."""

    item: Any


Row = tuple[str, Any, Any]

_STEP = re.compile(r'\["([^"]+)"\]|\[(\d+)\]|\.?([^.\[\]]+)')


def steps(path: str) -> list[str | int]:
    found: list[str | int] = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"bad path {path!r} at {position}")
        quoted, index, key = match.groups()
        found.append(int(index) if index is not None else (quoted if quoted is not None else key))
        position = match.end()
    return found


def lookup(tree: Any, path: str) -> Any:
    node = tree
    for step in steps(path):
        if isinstance(step, int):
            if not isinstance(node, Sequence) or isinstance(node, str) or step >= len(node):
                return ABSENT
        elif not isinstance(node, Mapping) or step not in node:
            return ABSENT
        node = node[step]
    return node


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Contains):
        return isinstance(actual, list) and any(same(item, expected.item) for item in actual)
    if isinstance(expected, Lacks):
        return isinstance(actual, list) and not any(same(item, expected.item) for item in actual)
    if isinstance(expected, Mapping):
        return (
            isinstance(actual, Mapping)
            and set(actual) == set(expected)
            and all(same(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return type(actual) is type(expected) and actual == expected


def mismatches(tree: Any, rows: Iterable[Row], stack: str) -> list[str]:
    """One line per row whose value differs from the stack's expected one."""
    found = []
    for path, dev, prod in rows:
        expected = dev if stack == "dev" else prod
        actual = lookup(tree, path)
        if not same(actual, expected):
            found.append(f"{path}: expected {expected!r}, got {actual!r}")
    return found


def both(path: str, value: Any) -> Row:
    """A row whose value is the same in every stack."""
    return (path, value, value)


def resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    """A container's resources as the stacks set them: requests, a memory limit, no CPU limit."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}
