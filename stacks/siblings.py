"""Rules across the project's stacks: a stack's configuration checked against its siblings' stack files.

Vault writes are upserts. Two stacks that write the same names into one Vault overwrite each other's policies,
roles and secrets without an error, and one's ``pulumi destroy`` deletes the other's. The program runs this check
before it registers any resource (``pulumi preview``/``up`` and the offline plan alike).
"""

from __future__ import annotations

from pathlib import Path

from stacks.config import StackConfig
from stacks.loader import StackConfigError, load
from stacks.rules import shared_vault_names
from stacks.stackfile import read_stack_config


def sibling_configs(project_dir: Path, stack: str) -> dict[str, StackConfig]:
    """Every other ``Pulumi.<stack>.yaml`` of the project, validated; one that is invalid is left to its own run."""
    found: dict[str, StackConfig] = {}
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        other = path.name[len("Pulumi.") : -len(".yaml")]
        if other == stack:
            continue
        try:
            found[other] = load(other, *read_stack_config(path))
        except StackConfigError:
            continue
    return found


def require_own_vault_names(cfg: StackConfig, project_dir: Path) -> None:
    """Raise ``StackConfigError`` when a sibling stack shares this stack's Vault and any of its names."""
    found = list(shared_vault_names(cfg, sibling_configs(project_dir, cfg.stack)))
    if found:
        raise StackConfigError(cfg.stack, found)
