"""One pin per package: the policy pack's and the relay image's requirements repeat the project's pins, never differ."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PROJECT_DIR

#: Files that install a subset of the project's packages elsewhere (the policy pack's venv, the relay's image).
SUBSETS = ("policy/requirements.txt", "relay/requirements.txt")
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines by normalised name (PEP 503); anything else but comments is an error."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        assert match, f"not an exact pin: {line!r}"
        found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def mismatches(subset: str, project: str) -> list[str]:
    """Each pin of ``subset`` the project's requirements do not hold as it is."""
    root = pins(project)
    return [
        f"{name}=={version} (requirements.txt: {root.get(name, 'absent')})"
        for name, version in pins(subset).items()
        if root.get(name) != version
    ]


@pytest.mark.parametrize("path", SUBSETS)
def test_every_pin_is_the_projects(path: str) -> None:
    subset = (PROJECT_DIR / path).read_text()
    assert pins(subset), f"{path}: no pins"
    assert mismatches(subset, (PROJECT_DIR / "requirements.txt").read_text()) == []


def test_a_differing_or_absent_pin_is_caught() -> None:
    project = "pulumi==3.272.0\nPyYAML==6.0.3  # the loader\n"
    subset = "# comment\npulumi==3.271.0\npyyaml==6.0.3\npydantic==2.14.3\n"
    assert mismatches(subset, project) == [
        "pulumi==3.271.0 (requirements.txt: 3.272.0)",
        "pydantic==2.14.3 (requirements.txt: absent)",
    ]


def test_an_unpinned_line_is_caught() -> None:
    with pytest.raises(AssertionError, match="not an exact pin: 'pydantic>=2'"):
        pins("pydantic>=2\n")
