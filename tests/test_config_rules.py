"""Every rule of the stack configuration: an invalid config names the stack, the key and the rule."""

from __future__ import annotations

from typing import Any

import pytest

from stacks import mocked
from stacks.defaults import deep_merge
from stacks.loader import StackConfigError, load
from stacks.stackfile import read_stack_config
from tests.conftest import PROJECT_DIR


def stack_file(stack: str) -> tuple[dict[str, Any], set[str]]:
    return read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")


def violations(stack: str, overrides: dict[str, Any], secret_keys: set[str] | None = None) -> list[str]:
    config, secrets = stack_file(stack)
    with pytest.raises(StackConfigError) as info:
        load(stack, deep_merge(config, overrides), secrets if secret_keys is None else secret_keys)
    assert info.value.stack == stack
    return info.value.violations


def assert_violation(found: list[str], expected_prefix: str, *fragments: str) -> None:
    matching = [v for v in found if v.startswith(expected_prefix)]
    assert matching, f"no violation starting with {expected_prefix!r} in {found}"
    for fragment in fragments:
        assert any(fragment in v for v in matching), f"{fragment!r} not in {matching}"


def test_committed_stacks_are_valid() -> None:
    for stack in ("dev", "prod"):
        config, secrets = stack_file(stack)
        cfg = load(stack, config, secrets)
        assert cfg.environment == stack


def test_environment_defaults_differ_where_prod_needs_safety() -> None:
    dev = load("dev", *stack_file("dev"))
    prod = load("prod", *stack_file("prod"))
    assert (dev.redis.min_replicas_to_write, prod.redis.min_replicas_to_write) == (0, 1)
    assert prod.redis.pod_anti_affinity == "hard"
    assert (dev.zitadel.protect_masterkey, prod.zitadel.protect_masterkey) == (False, True)
    assert (dev.zitadel.database.mode, prod.zitadel.database.mode) == ("bundled", "external")
    assert (dev.vault.manage_backends, prod.vault.manage_backends) == (True, False)


# --- Sentinel ------------------------------------------------------------------------------------------------------


def test_quorum_above_nodes() -> None:
    assert_violation(violations("dev", {"redis": {"quorum": 4}}), "dev: redis.quorum: ", "must be <= redis.nodes (3)")


def test_quorum_must_be_a_majority() -> None:
    assert_violation(
        violations("dev", {"redis": {"nodes": 5, "quorum": 2}}), "dev: redis.quorum: ", "majority", "at least 3"
    )


def test_min_replicas_to_write_that_can_never_be_met() -> None:
    found = violations("prod", {"redis": {"minReplicasToWrite": 3}})
    assert_violation(found, "prod: redis.minReplicasToWrite: ", "every write would be refused")


# --- DB layout -----------------------------------------------------------------------------------------------------


def test_events_db_inside_cache_block() -> None:
    found = violations("dev", {"events": {"db": 5}})
    assert_violation(found, "dev: events.db: ", "inside ZITADEL's cache block 3..9", "FLUSHDB")


def test_cache_offset_moving_block_onto_events_db() -> None:
    assert_violation(violations("dev", {"zitadel": {"cache": {"dbOffset": 0}}}), "dev: events.db: ", "1..7")


def test_events_db_beyond_databases() -> None:
    found = violations("dev", {"events": {"db": 16}})
    assert_violation(found, "dev: events.db: ", "must be < redis.databases (16)")


def test_cache_block_beyond_databases() -> None:
    found = violations("dev", {"zitadel": {"cache": {"dbOffset": 10}}})
    assert_violation(found, "dev: zitadel.cache.dbOffset: ", "11..17", "< redis.databases (16)")


def test_more_databases_admit_zitadels_default_offset() -> None:
    config, secrets = stack_file("dev")
    cfg = load("dev", deep_merge(config, {"redis": {"databases": 32}, "zitadel": {"cache": {"dbOffset": 10}}}), secrets)
    assert cfg.db_layout.cache_dbs == {"Instance": 11, "Milestones": 12, "Organization": 13}


# --- persistence ---------------------------------------------------------------------------------------------------


def test_sentinel_without_persistence_needs_explicit_opt_in() -> None:
    found = violations("dev", {"redis": {"persistence": {"enabled": False}}})
    assert_violation(found, "dev: redis.persistence.enabled: ", "allowDataLossOnRestart")
    config, secrets = stack_file("dev")
    opted_in = {"redis": {"persistence": {"enabled": False}, "allowDataLossOnRestart": True}}
    assert not load("dev", deep_merge(config, opted_in), secrets).redis.persistence.enabled


def test_prod_may_not_opt_into_data_loss() -> None:
    found = violations("prod", {"redis": {"persistence": {"enabled": False}, "allowDataLossOnRestart": True}})
    assert_violation(found, "prod: redis.allowDataLossOnRestart: ", "prod may not")
    assert_violation(found, "prod: redis.persistence.enabled: ", "prod requires persistence")


# --- events --------------------------------------------------------------------------------------------------------


def test_event_streams_must_be_distinct() -> None:
    found = violations("dev", {"events": {"streams": {"low": "zitadel:events:normal"}}})
    assert_violation(found, "dev: events.streams.low: ", "also events.streams.normal")


def test_event_backoff_within_its_cap() -> None:
    found = violations("dev", {"events": {"publishing": {"retryBackoff": "1m", "maxRetryBackoff": "30s"}}})
    assert_violation(found, "dev: events.publishing.retryBackoff: ", "exceeds events.publishing.maxRetryBackoff (30s)")


def test_event_durations_are_go_durations() -> None:
    found = violations("dev", {"events": {"publishing": {"retryBackoff": "two seconds"}}})
    assert_violation(found, "dev: events.publishing.retryBackoff: ", "Go duration")


# --- prod requirements ---------------------------------------------------------------------------------------------


def test_prod_requires_three_nodes() -> None:
    assert_violation(violations("prod", {"redis": {"nodes": 2, "quorum": 2}}), "prod: redis.nodes: ", "at least 3")


@pytest.mark.parametrize("version", ["23.x", "latest", "", ">=23.0.0"])
def test_prod_requires_exact_chart_versions(version: str) -> None:
    found = violations("prod", {"redis": {"chart": {"version": version}}})
    assert_violation(found, "prod: redis.chart.version: ", "exact chart version")


def test_dev_accepts_a_chart_range() -> None:
    config, secrets = stack_file("dev")
    assert (
        load("dev", deep_merge(config, {"zitadel": {"chart": {"version": "9.x"}}}), secrets).zitadel.chart.version
        == "9.x"
    )


def test_prod_requires_pinned_image_tags() -> None:
    found = violations("prod", {"redis": {"images": {"osShell": {"tag": "latest"}}}, "zitadel": {"image": {"tag": ""}}})
    assert_violation(found, "prod: redis.images.osShell.tag: ", "pinned image tag")
    assert_violation(found, "prod: zitadel.image.tag: ", "pinned image tag")


def test_prod_requires_explicit_resources() -> None:
    found = violations("prod", {"redis": {"resources": {"sentinel": {"limits": {"memory": None}}}}})
    assert_violation(found, "prod: redis.resources.sentinel: ", "limits.memory not set")


def test_prod_requires_external_postgres() -> None:
    found = violations("prod", {"zitadel": {"database": {"mode": "bundled", "dsnVaultSecret": None}}})
    assert_violation(found, "prod: zitadel.database.mode: ", "external Postgres")


def test_external_postgres_needs_exactly_one_dsn_reference() -> None:
    neither = violations("dev", {"zitadel": {"database": {"mode": "external"}}})
    assert_violation(neither, "dev: zitadel.database: ", "exactly one DSN reference")
    both = violations("prod", {"zitadel": {"database": {"dsnFromConfig": True}}}, secret_keys={"postgresDsn"})
    assert_violation(both, "prod: zitadel.database: ", "exactly one DSN reference")


def test_dsn_from_config_needs_the_secret() -> None:
    found = violations("prod", {"zitadel": {"database": {"dsnVaultSecret": None, "dsnFromConfig": True}}})
    assert_violation(found, "prod: postgresDsn: ", "pulumi config set --secret")


def test_prod_requires_tls() -> None:
    found = violations(
        "prod",
        {
            "zitadel": {"externalSecure": False, "ingress": {"tlsSecretName": None}},
            "vault": {"address": "http://vault:8200"},
        },
    )
    assert_violation(found, "prod: zitadel.externalSecure: ", "TLS")
    assert_violation(found, "prod: zitadel.ingress.tlsSecretName: ", "TLS certificate")
    assert_violation(found, "prod: vault.address: ", "https://")


def test_prod_requires_protected_masterkey() -> None:
    assert_violation(
        violations("prod", {"zitadel": {"protectMasterkey": False}}), "prod: zitadel.protectMasterkey: ", "protect"
    )


def test_zitadel_needs_its_own_namespace() -> None:
    assert_violation(
        violations("dev", {"zitadel": {"namespace": "database"}}), "dev: zitadel.namespace: ", "own namespace"
    )


# --- secrets and keys ----------------------------------------------------------------------------------------------


def test_secret_keys_must_be_pulumi_secrets() -> None:
    found = violations("prod", {"postgresDsn": "host=db.example port=5432"}, secret_keys=set())
    assert_violation(found, "prod: postgresDsn: ", "must be a Pulumi secret")


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        (
            {"vault": {"address": "https://admin:example-only@vault.example:8200"}},
            "vault.address",
            "URL with a password",
        ),
        ({"events": {"streams": {"high": "host=x password=example-only"}}}, "events.streams.high", "connection string"),
    ],
)
def test_plain_config_may_not_hold_credentials(key: dict[str, Any], value: str, what: str) -> None:
    assert_violation(violations("prod", key), f"prod: {value}: ", what, "Pulumi secret or a Vault reference")


def test_unknown_keys_are_named() -> None:
    found = violations("dev", {"redis": {"qourum": 2}, "zitadell": {}})
    assert_violation(found, "dev: redis.qourum: ", "unknown key")
    assert_violation(found, "dev: zitadell: ", "unknown key")


def test_stack_without_environment() -> None:
    with pytest.raises(StackConfigError) as info:
        load("staging", {})
    assert info.value.violations == [
        "staging: environment: must be dev or prod (stack 'staging' has no default), not None"
    ]
    config, secrets = stack_file("prod")
    assert load("staging", {**config, "environment": "prod"}, secrets).is_prod


def test_one_message_lists_every_violation() -> None:
    config, secrets = stack_file("prod")
    bad = deep_merge(config, {"redis": {"quorum": 4}, "zitadel": {"protectMasterkey": False}, "events": {"db": 4}})
    with pytest.raises(StackConfigError) as info:
        load("prod", bad, secrets)
    message = str(info.value)
    assert message.startswith("stack 'prod' has 3 configuration errors:")
    for line in ("prod: redis.quorum:", "prod: zitadel.protectMasterkey:", "prod: events.db:"):
        assert line in message


def test_invalid_config_registers_nothing() -> None:
    config, secrets = stack_file("prod")
    recording = mocked.Recording(stack="prod")
    with pytest.raises(StackConfigError, match=r"prod: redis\.quorum"):
        mocked.run_program("prod", deep_merge(config, {"redis": {"quorum": 1}}), secrets, recording=recording)
    assert recording.resources == []
