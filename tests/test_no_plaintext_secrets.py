"""No secret in plain text: generated secrets stay out of values, config, outputs and plan; stack files hold
credentials only as Pulumi secrets."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from stacks.loader import StackConfigError, load
from stacks.stackfile import parse_stack_config
from stacks.stackfile import read_stack_config as read_stack
from stacktools import mocked
from stacktools.plan import describe, write_plan
from tests.conftest import PROJECT_DIR, recorded


def plain_text(value: Any) -> str:
    """Everything in ``value`` that is not wrapped as a Pulumi secret, as text."""
    if rpc.is_rpc_secret(value):
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k} {plain_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(plain_text(v) for v in value)
    return str(value)


#: The chart's own Redis password and one per client user (README "Redis users"), sorted.
REDIS_PASSWORDS = [
    "redis-event-consumer-password",
    "redis-event-relay-password",
    "redis-exporter-password",
    "redis-password",
    "redis-ratelimit-password",
    "redis-zitadel-password",
]


def leaks(text: str, recording: mocked.Recording) -> list[str]:
    return [secret for secret in recording.generated_secrets if secret in text]


@pytest.mark.parametrize(
    ("stack", "generated"),
    [
        ("dev", ["postgres-admin-password", "postgres-app-password", *REDIS_PASSWORDS, "zitadel-masterkey"]),
        ("prod", [*REDIS_PASSWORDS, "zitadel-masterkey"]),
    ],
)
def test_the_leak_checks_look_for_every_generated_secret(stack: str, generated: list[str]) -> None:
    recording = recorded(stack)
    randoms = recording.by_type("random:index/randomPassword:RandomPassword")
    assert sorted(r.name for r in randoms) == generated
    assert sorted(recording.generated_secrets) == sorted(mocked.mock_secret_value(name) for name in generated)


def test_no_secret_in_any_plain_resource_input(recording: mocked.Recording) -> None:
    for resource in recording.resources:
        assert leaks(plain_text(resource.inputs), recording) == [], f"{resource.type} {resource.name}"


def test_no_secret_in_helm_values_annotations_or_config(recording: mocked.Recording) -> None:
    for release in recording.by_type("kubernetes:helm.sh/v3:Release"):
        values = release.inputs["values"]
        assert not rpc.is_rpc_secret(values), "values marked secret would hide the whole document from reviews"
        assert leaks(json.dumps(values), recording) == []


def test_no_secret_in_stack_outputs(recording: mocked.Recording) -> None:
    text = json.dumps({name: out.value for name, out in recording.outputs.items()})
    assert leaks(text, recording) == []


def test_no_secret_in_plan_files(recording: mocked.Recording, tmp_path: Path) -> None:
    write_plan(describe(recording), tmp_path)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert leaks(path.read_text(), recording) == [], path.name


# --- the stack files: credentials only as Pulumi secrets -------------------------------------------------------------


def stack_text(stack: str) -> str:
    return (PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text()


def violations(stack: str, text: str) -> list[str]:
    try:
        load(stack, *parse_stack_config(text))
    except StackConfigError as exc:
        return exc.violations
    return []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_hold_no_plaintext_credential(stack: str) -> None:
    assert violations(stack, stack_text(stack)) == []


def ciphertext() -> str:
    """What ``pulumi config set --secret`` writes: the value encrypted, under ``secure:``."""
    return "v1:" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.mark.parametrize("key", ["vaultToken", "postgresDsn", "zitadelAdminKey"])
def test_a_secret_set_as_the_readme_says_passes(key: str) -> None:
    text = stack_text("prod") + f"  blinkchamber-identity:{key}:\n    secure: {ciphertext()}\n"
    assert violations("prod", text) == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            lambda: f"  blinkchamber-identity:vaultToken: hvs.{secrets.token_urlsafe(24)}\n",
            "prod: vaultToken: must be a Pulumi secret: pulumi config set --secret vaultToken ...",
        ),
        (
            lambda: (
                f"  blinkchamber-identity:postgresDsn: postgresql://zitadel:{secrets.token_urlsafe(12)}@db/zitadel\n"
            ),
            "prod: postgresDsn: must be a Pulumi secret: pulumi config set --secret postgresDsn ...",
        ),
        (
            lambda: f'  blinkchamber-identity:zitadelAdminKey: \'{{"keyId": "{secrets.token_hex(8)}"}}\'\n',
            "prod: zitadelAdminKey: must be a Pulumi secret: pulumi config set --secret zitadelAdminKey ...",
        ),
        (
            lambda: f"  blinkchamber-identity:events:\n    streams:\n      high: hvs.{secrets.token_urlsafe(24)}\n",
            "prod: events.streams.high: holds a Vault token in plain config; use a Pulumi secret or a Vault reference",
        ),
        (
            lambda: (
                "  blinkchamber-identity:kubernetes:\n"
                f"    context: https://admin:{secrets.token_urlsafe(12)}@k8s.example\n"
            ),
            "prod: kubernetes.context: holds a URL with a password in plain config; use a Pulumi secret or a Vault "
            "reference",
        ),
    ],
    ids=["vault-token", "dsn", "admin-key", "token-in-a-section", "url-with-password"],
)
def test_a_pasted_credential_fails(entry: Callable[[], str], expected: str) -> None:
    assert expected in violations("prod", stack_text("prod") + entry())


# --- the first instance's admin key: read, never kept in plain text ---------------------------------------------------


def test_the_admin_key_is_read_with_its_data_and_metadata_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The chart's setup job writes the Secret with `kubectl apply`: its last-applied-configuration annotation repeats
    # the key, so the read keeps the metadata encrypted in the state as well as the data.
    import pulumi
    import pulumi_kubernetes as k8s

    reads: list[tuple[str, pulumi.ResourceOptions | None]] = []
    original = k8s.core.v1.Secret.get

    def spy(resource_name: str, id: Any, opts: pulumi.ResourceOptions | None = None) -> k8s.core.v1.Secret:
        reads.append((resource_name, opts))
        return original(resource_name, id, opts)

    monkeypatch.setattr(k8s.core.v1.Secret, "get", staticmethod(spy))
    mocked.run_program("prod", *read_stack(PROJECT_DIR / "Pulumi.prod.yaml"))
    assert [name for name, _ in reads] == ["zitadel-admin-key"]
    opts = reads[0][1]
    assert opts is not None and sorted(opts.additional_secret_outputs or []) == ["data", "metadata", "stringData"]


def test_the_admin_key_from_the_stack_is_a_secret_provider_input() -> None:
    # With zitadelAdminKey set, the key goes to the provider's input as a Pulumi secret: encrypted in the state.
    config, secret_keys = read_stack(PROJECT_DIR / "Pulumi.prod.yaml")
    key = json.dumps({"type": "serviceaccount", "keyId": secrets.token_hex(8), "key": secrets.token_urlsafe(32)})
    recording = mocked.run_program("prod", {**config, "zitadelAdminKey": key}, [*secret_keys, "zitadelAdminKey"])
    provider = recording.one("pulumi:providers:zitadel", "zitadel").inputs
    assert rpc.is_rpc_secret(provider["jwtProfileJson"])
    assert key not in plain_text(provider)
    assert [r for r in recording.resources if r.name == "zitadel-admin-key"] == []
