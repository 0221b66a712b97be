"""What a credential looks like when it is pasted as plain text: for the config loader (stack files) and the policy
pack (Helm values) alike."""

from __future__ import annotations

import re
from typing import Final

#: Each pattern, and what a match holds.
PLAINTEXT_CREDENTIALS: Final = (
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "a URL with a password"),
    (re.compile(r"(^|\s)password\s*=\s*\S", re.IGNORECASE), "a connection string with a password"),
    (re.compile(r"^(hv[sbr]\.|s\.)[A-Za-z0-9_-]{20,}$"), "a Vault token"),
)


def credential_in(text: str) -> str | None:
    """What credential ``text`` holds in plain text, if any."""
    return next((what for pattern, what in PLAINTEXT_CREDENTIALS if pattern.search(text)), None)
