"""The components' boundaries: each takes its typed arguments, and what moved between them keeps its identity."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import wiring
from stacks import names
from tests.conftest import PROJECT_DIR, recorded

RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def stack_config_readers(sources: Mapping[str, str]) -> list[str]:
    """The modules (name → source) that import ``StackConfig``: only they can read another component's section."""
    readers = []
    for module, source in sorted(sources.items()):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and any(alias.name == "StackConfig" for alias in node.names):
                readers.append(module)
    return readers


def component_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((PROJECT_DIR / "components").glob("*.py"))}


def test_only_the_wiring_reads_the_whole_stack_configuration() -> None:
    assert stack_config_readers(component_sources()) == ["wiring.py"]


def test_a_component_reading_the_whole_stack_configuration_is_found() -> None:
    sources = component_sources()
    sources["redis.py"] = "from stacks.config import RedisConfig, StackConfig\n" + sources["redis.py"]
    assert stack_config_readers(sources) == ["redis.py", "wiring.py"]


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


def urn_under_former_parent(stack: str, type_: str, name: str) -> str:
    """The URN a resource has under the parent its alias names (what the engine matches against its state)."""
    pulumi.runtime.set_mocks(_Mocks(), project=names.PROJECT, stack=stack, preview=False)
    found: list[str] = []

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def resolve() -> pulumi.Output[None]:
        return pulumi.create_urn(name, type_, parent=wiring.former_postgres_parent()).apply(found.append)

    resolve()
    return found[0]


@pytest.mark.parametrize("password", ["postgres-admin-password", "postgres-app-password"])
def test_the_bundled_postgres_passwords_keep_the_urns_they_had_under_vault_access(password: str) -> None:
    # Declared inside the Vault component before they moved to ZITADEL's side: a new URN without the alias would
    # replace them, and a new superuser password would not reach a database Postgres initialized with the old one.
    assert urn_under_former_parent("dev", RANDOM_PASSWORD, password) == (
        "urn:pulumi:dev::blinkchamber-identity::blinkchamber:identity:VaultAccess"
        f"$random:index/randomPassword:RandomPassword::{password}"
    )


def test_the_former_parent_is_the_vault_component_the_program_declares() -> None:
    # The alias's URN is built as the engine builds a child's: the Redis password, still under the Vault component,
    # has exactly the URN the alias computes for it.
    recording = recorded("dev")
    redis_password = recording.one(RANDOM_PASSWORD, "redis-password").urn
    assert urn_under_former_parent("dev", RANDOM_PASSWORD, "redis-password") == redis_password
    assert recording.one("blinkchamber:identity:VaultAccess", wiring.VAULT_ACCESS).name == "vault"
    # And the moved passwords are no longer under it: the alias is what keeps them.
    assert "VaultAccess" not in recording.one(RANDOM_PASSWORD, "postgres-admin-password").urn


def test_the_program_gives_the_passwords_their_alias() -> None:
    # Read in the program's source: Pulumi's mocks do not show a resource's aliases.
    source = Path(PROJECT_DIR / "__main__.py").read_text()
    assert "former_parent=wiring.former_postgres_parent()" in source
