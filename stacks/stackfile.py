"""Read a stack file (``Pulumi.<stack>.yaml``) the way the Pulumi engine hands its config to the program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stacks import names

#: What a secret shows as offline: the stand-in for a ``secure:`` value this tool cannot decrypt, and every secret in
#: a plan.
SECRET = "[secret]"
#: A stack file's name around the stack's: ``Pulumi.<stack>.yaml``, where the Pulumi CLI keeps it.
_PREFIX = "Pulumi."
_SUFFIX = ".yaml"


def _undecrypted(value: Any) -> tuple[Any, bool]:
    """Replace ``secure:`` values (ciphertext this tool cannot decrypt) by a stand-in; report whether any was."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET, True
        found = False
        out = {}
        for key, item in value.items():
            out[key], secret = _undecrypted(item)
            found |= secret
        return out, found
    if isinstance(value, list):
        pairs = [_undecrypted(item) for item in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    return value, False


def path_of(project_dir: Path, stack: str) -> Path:
    """The stack file of ``stack`` in ``project_dir``."""
    return project_dir / f"{_PREFIX}{stack}{_SUFFIX}"


def stacks_in(project_dir: Path) -> list[str]:
    """Every stack with a stack file in ``project_dir``, sorted."""
    return sorted(path.name[len(_PREFIX) : -len(_SUFFIX)] for path in project_dir.glob(f"{_PREFIX}*{_SUFFIX}"))


def read_stack_config(path: Path) -> tuple[dict[str, Any], set[str]]:
    """The project's config keys (without the ``blinkchamber-identity:`` prefix) and which of them are secrets."""
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name} in {path.parent}")
    return parse_stack_config(path.read_text())


def parse_stack_config(text: str) -> tuple[dict[str, Any], set[str]]:
    """``read_stack_config`` for the text of a stack file."""
    document = yaml.safe_load(text) or {}
    prefix = f"{names.PROJECT}:"
    config: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for key, value in (document.get("config") or {}).items():
        if not key.startswith(prefix):
            continue  # provider settings such as kubernetes:context belong to the providers, not to this program
        short = key[len(prefix) :]
        config[short], secret = _undecrypted(value)
        if secret:
            secret_keys.add(short)
    return config, secret_keys
