"""Vault as each stack declares it: generated secrets, KV v2 secrets, policies and roles, as literals per stack.

Rows address the offline plan's resources (``type::name``); the values come from README's architecture section and
configuration table (``vault.*``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi.runtime import rpc

from stacks.defaults import deep_merge
from stacks.stackfile import SECRET, read_stack_config
from stacktools import mocked
from stacktools.plan import describe
from tests.conftest import PROJECT_DIR, recorded
from tests.expectations import ABSENT, Row, both, mismatches

RANDOM = '["random:index/randomPassword:RandomPassword::{}"]'
KV = '["vault:kv/secretV2:SecretV2::{}"]'
ROLE = '["vault:kubernetes/authBackendRole:AuthBackendRole::{}"]'
POLICY = '["vault:index/policy:Policy::{}"]'
AUTH = '["vault:index/authBackend:AuthBackend::kubernetes"]'
AUTH_CONFIG = '["vault:kubernetes/authBackendConfig:AuthBackendConfig::kubernetes"]'


def read(*paths: str) -> str:
    return "".join(f'path "{path}" {{\n  capabilities = ["read"]\n}}\n' for path in paths)


def role(name: str, account: str, namespace: str, policy: str) -> list[Row]:
    inputs = f"{ROLE.format(name)}.inputs"
    return [
        both(f"{inputs}.roleName", name),
        both(f"{inputs}.backend", "kubernetes"),
        both(f"{inputs}.boundServiceAccountNames", [account]),
        both(f"{inputs}.boundServiceAccountNamespaces", [namespace]),
        both(f"{inputs}.tokenPolicies", [policy]),
        both(f"{inputs}.tokenTtl", 3600),
        # ZITADEL's ServiceAccount is a hook resource, recreated with a new UID on each upgrade.
        both(f"{inputs}.aliasNameSource", "serviceaccount_name"),
        # Default pod tokens carry no "vault" audience.
        both(f"{inputs}.audience", ABSENT),
    ]


def password(name: str, length: int) -> list[Row]:
    inputs = f"{RANDOM.format(name)}.inputs"
    # Letters and digits only: URL-safe, as many bytes as characters.
    return [both(f"{inputs}.length", length), both(f"{inputs}.special", False)]


VAULT: list[Row] = [
    (
        '["pulumi:providers:vault::vault"].inputs.address',
        "http://vault.vault.svc.cluster.local:8200",
        "https://vault.blinkchamber.internal:8200",
    ),
    both('["pulumi:providers:vault::vault"].inputs.token', ABSENT),
    *password("redis-password", 48),
    *password("zitadel-masterkey", 32),
    # The bundled Postgres's two passwords, dev only.
    (f"{RANDOM.format('postgres-admin-password')}.inputs.length", 32, ABSENT),
    (f"{RANDOM.format('postgres-app-password')}.inputs.length", 32, ABSENT),
    # The KV v2 secrets, in the stack's mount.
    both(f"{KV.format('redis')}.inputs.mount", "secret"),
    both(f"{KV.format('redis')}.inputs.name", "redis"),
    both(f"{KV.format('redis')}.inputs.dataJson", "[secret]"),
    both(f"{KV.format('zitadel')}.inputs.mount", "secret"),
    both(f"{KV.format('zitadel')}.inputs.name", "zitadel"),
    both(f"{KV.format('zitadel')}.inputs.dataJson", "[secret]"),
    # dev writes the bundled Postgres's DSN; prod only reads an existing secret.
    (f"{KV.format('zitadel-database')}.inputs.name", "zitadel-database", ABSENT),
    (f"{KV.format('zitadel-database')}.inputs.dataJson", "[secret]", ABSENT),
    # Losing the masterkey loses every encrypted record: protected in prod, and nothing else is.
    (f"{RANDOM.format('zitadel-masterkey')}.protect", False, True),
    (f"{KV.format('zitadel')}.protect", False, True),
    both(f"{RANDOM.format('redis-password')}.protect", False),
    both(f"{KV.format('redis')}.protect", False),
    # Read, and only read, on exactly the paths each consumer needs; ZITADEL alone reads its masterkey.
    both(f"{POLICY.format('redis-read')}.inputs.name", "redis-read"),
    both(
        f"{POLICY.format('redis-read')}.inputs.policy",
        read("secret/data/redis", "secret/data/redis-acl", "secret/data/redis-users/exporter"),
    ),
    both(f"{POLICY.format('zitadel-read')}.inputs.name", "zitadel-read"),
    both(
        f"{POLICY.format('zitadel-read')}.inputs.policy",
        read("secret/data/redis-users/zitadel", "secret/data/zitadel", "secret/data/zitadel-database"),
    ),
    both(f"{POLICY.format('event-consumer-read')}.inputs.policy", read("secret/data/redis-users/event-consumer")),
    # One password per Redis client user, and their hashes for the Redis pods, all Pulumi secrets.
    *(
        both(f"{KV.format(f'redis-user-{user}')}.inputs.name", f"redis-users/{user}")
        for user in ("zitadel", "event-relay", "ratelimit", "exporter", "event-consumer")
    ),
    *(
        both(f"{RANDOM.format(f'redis-{user}-password')}.inputs.length", 48)
        for user in ("zitadel", "event-relay", "ratelimit", "exporter", "event-consumer")
    ),
    both(f"{KV.format('redis-acl')}.inputs.name", "redis-acl"),
    both(f"{KV.format('redis-acl')}.inputs.dataJson", "[secret]"),
    *role("redis-role", "redis", "database", "redis-read"),
    *role("zitadel-role", "zitadel", "zitadel", "zitadel-read"),
    # dev manages the Kubernetes auth backend; prod uses the existing one.
    (f"{AUTH}.inputs", {"path": "kubernetes", "type": "kubernetes"}, ABSENT),
    (f"{AUTH_CONFIG}.inputs", {"backend": "kubernetes", "kubernetesHost": "https://kubernetes.default.svc"}, ABSENT),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_vault_resources(stack: str) -> None:
    assert mismatches(describe(recorded(stack)).resources, VAULT, stack) == []


def kv_data(recording: mocked.Recording, name: str) -> dict[str, Any]:
    secret = recording.one("vault:kv/secretV2:SecretV2", name)
    data_json = secret.inputs["dataJson"]
    assert rpc.is_rpc_secret(data_json), name
    data: dict[str, Any] = json.loads(rpc.unwrap_rpc_secret(data_json))
    return data


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_kv_secrets_hold_the_generated_values_under_the_keys_the_templates_read(stack: str) -> None:
    recording = recorded(stack)
    assert kv_data(recording, "redis") == {"password": mocked.mock_secret_value("redis-password")}
    assert kv_data(recording, "zitadel") == {"masterkey": mocked.mock_secret_value("zitadel-masterkey")}


def test_dev_writes_the_bundled_postgres_dsn() -> None:
    admin = mocked.mock_secret_value("postgres-admin-password")
    assert kv_data(recorded("dev"), "zitadel-database") == {
        "dsn": f"postgresql://postgres:{admin}@zitadel-postgresql.zitadel.svc.cluster.local:5432/zitadel?sslmode=disable"
    }


def test_dsn_from_config_is_written_to_vault() -> None:
    config, secret_keys = read_stack_config(PROJECT_DIR / "Pulumi.prod.yaml")
    config = deep_merge(config, {"zitadel": {"database": {"dsnVaultSecret": None, "dsnFromConfig": True}}})
    config["postgresDsn"] = SECRET
    recording = mocked.run_program("prod", config, {*secret_keys, "postgresDsn"})
    assert kv_data(recording, "zitadel-database") == {"dsn": "[secret]"}
    resource = recording.one("vault:kv/secretV2:SecretV2", "zitadel-database")
    assert (resource.inputs["mount"], resource.inputs["name"]) == ("secret", "zitadel-database")
