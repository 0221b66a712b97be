"""Rules across the project's stacks: a stack's configuration checked against its siblings' stack files.

Vault writes are upserts. Two stacks that write the same names into one Vault overwrite each other's policies,
roles and secrets without an error, and one's ``pulumi destroy`` deletes the other's. The program runs this check
before it registers any resource (``pulumi preview``/``up`` and the offline plan alike). A sibling whose file does
not validate cannot be checked, so it stops the run too: skipping it would skip the check.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stacks.config import StackConfig
from stacks.loader import StackConfigError, load
from stacks.rules import shared_vault_names
from stacks.stackfile import path_of, read_stack_config, stacks_in

#: How many of an invalid sibling's violations the message quotes.
_QUOTED = 3


def sibling_configs(project_dir: Path, stack: str) -> dict[str, StackConfig]:
    """Every other ``Pulumi.<stack>.yaml`` of the project, validated; an invalid one raises, naming its file."""
    found: dict[str, StackConfig] = {}
    broken: list[tuple[str, str]] = []
    for other in stacks_in(project_dir):
        if other == stack:
            continue
        path = path_of(project_dir, other)
        try:
            found[other] = load(other, *read_stack_config(path))
        except StackConfigError as error:
            quoted = "; ".join(error.violations[:_QUOTED]) + ("; ..." if len(error.violations) > _QUOTED else "")
            broken.append((path.name, _unchecked(other, quoted)))
        except yaml.YAMLError as error:
            broken.append((path.name, _unchecked(other, f"not YAML: {error}".splitlines()[0])))
    if broken:
        raise StackConfigError(stack, broken)
    return found


def _unchecked(other: str, why: str) -> str:
    return (
        f"sibling stack {other!r} is invalid ({why}), so whether it shares this stack's Vault names cannot be "
        "checked: fix or remove that file"
    )


def require_own_vault_names(cfg: StackConfig, project_dir: Path) -> None:
    """Raise ``StackConfigError`` when a sibling stack shares this stack's Vault and any of its names, or when a
    sibling's file is invalid."""
    found = list(shared_vault_names(cfg, sibling_configs(project_dir, cfg.stack)))
    if found:
        raise StackConfigError(cfg.stack, found)
