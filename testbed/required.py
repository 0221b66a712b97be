"""What CI must have: a tool the tests need is skipped on a developer's machine without it, and fails in CI.

GitHub Actions and ``.ci/run`` set ``CI=true``; ``CI=false`` (or ``0``, ``no``, empty) is a machine outside CI. A
skipped test proves nothing, so in CI a missing tool is an error, never a quiet skip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

#: Values of ``CI`` that mean "not CI".
_NOT_CI = frozenset({"", "0", "false", "no", "off"})


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether these tests run in CI (``CI`` set to anything but a false value)."""
    return (os.environ if env is None else env).get("CI", "").strip().lower() not in _NOT_CI


def require(available: bool, what: str, how: str, *, env: Mapping[str, str] | None = None) -> None:
    """At a test module's top: skip the module when ``what`` is missing, and fail instead in CI.

    ``how`` says how to install it, for both messages."""
    if available:
        return
    if in_ci(env):
        raise RuntimeError(f"CI must provide {what} ({how}): the tests that need it fail instead of skipping")
    pytest.skip(f"{what} not installed ({how})", allow_module_level=True)
