"""The README documents every configuration key and keeps its quick start true."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tests.conftest import PROJECT_DIR, stack_config

README = (PROJECT_DIR / "README.md").read_text()


def documented_keys() -> list[re.Pattern[str]]:
    """Patterns from the first column of the configuration table (``a.<x>.{b,c}`` style)."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    patterns = []
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        for span in re.findall(r"`([^`]+)`", row):
            text = re.escape(span)
            text = re.sub(r"\\\{(.+?)\\\}", lambda m: "(" + m.group(1).replace(",", "|") + ")", text)
            text = re.sub(r"<[^>]+>", "[^.]+", text)
            patterns.append(re.compile(rf"^(?:[a-z]+\.)*{text}(\..+)?$"))
    return patterns


def leaves(tree: dict[str, Any], path: str = "") -> Iterator[str]:
    for key, value in tree.items():
        child = f"{path}.{key}" if path else key
        if isinstance(value, dict) and value:
            yield from leaves(value, child)
        else:
            yield child


def test_every_config_key_is_in_the_readme_table() -> None:
    patterns = documented_keys()
    keys = list(leaves(stack_config("dev").model_dump(by_alias=True, exclude={"stack", "environment", "secrets"})))
    undocumented = [key for key in keys if not any(p.match(key) for p in patterns)]
    # The walk reaches the leaves of every section, nested and top-level alike.
    for key in ("kubernetes.clusterDomain", "vault.tokenTtlSeconds", "redis.quorum", "zitadel.cache.pool.dialTimeout"):
        assert key in keys
    assert "redis.images.osShell.tag" in keys and "events.streams.deadLetter" in keys
    assert undocumented == []


def test_quick_start_names_the_commands_ci_runs() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "./bin/plan dev" in quick_start and "./bin/test" in quick_start
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == "./bin/test"
