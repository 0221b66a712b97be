"""What counts as a pinned release: exact chart versions, build-specific image tags, and their order.

Standard library only, so that the policy pack can use the same rules.
"""

from __future__ import annotations

import re

_EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


def is_exact_version(version: str) -> bool:
    """True for an exact release (``23.1.1``, ``v4.13.0``, ``8.2.1-debian-12-r0``); false for ranges and ``latest``."""
    return bool(_EXACT_VERSION.match(version))


def is_pinned_tag(tag: str) -> bool:
    """True for an image tag naming one build (``v4.13.0``, ``12-debian-12-r51``); false for ``latest`` and empty."""
    return tag not in ("", "latest", "stable") and any(c.isdigit() for c in tag)


def version_key(version: str) -> tuple[int, ...]:
    """Orderable form of a version or tag: its numbers in order (``8.2.1-debian-12-r0`` → 8, 2, 1, 12, 0)."""
    return tuple(int(n) for n in re.findall(r"\d+", version))
