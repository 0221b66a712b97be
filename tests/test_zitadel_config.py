"""ZITADEL's configuration as the program sets it: every key real at the version deployed, the Redis wiring, the
Vault fragment."""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.wiring import zitadel_args
from components.zitadel import configmap_config, secrets_fragment
from stacks.config import StackConfig
from testbed import artifacts
from testbed.charts import key_paths
from tests.conftest import stack_config
from tests.rendering import zitadel_defaults

#: A later main commit of zitadel/zitadel, also in the mirror: its defaults know keys v4.13.0 does not.
NEWER_ZITADEL_REF = "001144819d1d3e16fad93c699d068ca908d254ab"


def lower_paths(tree: dict[str, Any]) -> set[str]:
    # ZITADEL reads its config through viper, whose keys are case-insensitive (defaults.yaml has Database.postgres).
    return {path.lower() for path in key_paths(tree)}


def unknown_keys(config: dict[str, Any], ref: str) -> list[str]:
    """The keys of ``config`` that ZITADEL's ``cmd/defaults.yaml`` at ``ref`` does not have."""
    known = lower_paths(zitadel_defaults(ref))
    return sorted(p for p in key_paths(config) if p.lower() not in known)


def pinned_ref(cfg: StackConfig) -> str:
    return artifacts.zitadel_defaults_ref(cfg.zitadel.image)


def test_keys_are_checked_at_the_image_tag_the_stack_deploys(cfg: StackConfig) -> None:
    assert pinned_ref(cfg) == "v4.13.0"
    # A promotion that moves the image moves the reference: the check then needs that version's defaults.
    promoted = cfg.zitadel.image.model_copy(update={"tag": "v4.14.0"})
    assert artifacts.zitadel_defaults_ref(promoted) == "v4.14.0"
    assert artifacts.zitadel_defaults_file_name("v4.14.0") == "zitadel-defaults-v4.14.0.yaml"


def test_every_configmap_key_exists_in_zitadel_defaults(cfg: StackConfig) -> None:
    assert unknown_keys(configmap_config(zitadel_args(cfg)), pinned_ref(cfg)) == []


def test_every_vault_fragment_key_exists_in_zitadel_defaults(cfg: StackConfig) -> None:
    fragment = secrets_fragment(zitadel_args(cfg))
    assert list(key_paths(fragment)) == ["Caches.Connectors.Redis.Password", "Database.Postgres.DSN"]
    assert unknown_keys(fragment, pinned_ref(cfg)) == []


def test_key_check_catches_a_misspelled_key() -> None:
    wrong = {"Caches": {"Connectors": {"Redis": {"PoolSize": 20, "MaxConnAge": "1h"}}}}
    # The seed's name; ZITADEL calls it ConnMaxLifetime.
    assert unknown_keys(wrong, "v4.13.0") == ["Caches.Connectors.Redis.MaxConnAge"]


def test_key_check_catches_a_key_only_a_newer_zitadel_has(cfg: StackConfig) -> None:
    # HTTPClient arrived after v4.13.0: set against the deployed version it would be ignored, so it must fail.
    newer_only = {**configmap_config(zitadel_args(cfg)), "HTTPClient": {"Timeout": "30s"}}
    assert unknown_keys(newer_only, NEWER_ZITADEL_REF) == []
    assert unknown_keys(newer_only, pinned_ref(cfg)) == ["HTTPClient.Timeout"]


def test_a_version_without_mirrored_defaults_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.MIRROR_ENV, str(artifacts.default_cache_dir() / "no-such-mirror"))
    with pytest.raises(artifacts.ArtifactUnavailableError, match=re.escape("zitadel-defaults-v4.14.0.yaml")):
        artifacts.zitadel_defaults("v4.14.0")


BREAKER = {
    "Interval": "60s",
    "MaxConsecutiveFailures": 5,
    "MaxFailureRatio": 0,
    "Timeout": "10s",
    "MaxRetryRequests": 1,
}


@pytest.mark.parametrize(
    ("stack", "session_connector"),
    [
        # README, "What Redis does for ZITADEL": login state on Redis in dev, durable on Postgres in prod.
        ("dev", "redis"),
        ("prod", "postgres"),
    ],
)
def test_caches_use_redis_through_the_master_service(stack: str, session_connector: str) -> None:
    caches = configmap_config(zitadel_args(stack_config(stack)))["Caches"]
    redis = caches["Connectors"]["Redis"]
    assert redis["Enabled"] is True
    assert redis["Addr"] == "redis-master.database.svc.cluster.local:6379"
    assert redis["ClientName"] == "zitadel"
    # README: DBOffset 2, so the caches land in DBs 3..7, clear of the events DB 1 and the rate-limit DB 0.
    assert redis["DBOffset"] == 2
    assert (redis["PoolSize"], redis["MaxRetries"], redis["ConnMaxIdleTime"], redis["ConnMaxLifetime"]) == (
        20,
        3,
        "30m",
        "1h",
    )
    # README's failover section: open 10 s (down-after 5 s + election 1 s + relabel 2 s + 2 s), a 60 s window.
    assert redis["CircuitBreaker"] == BREAKER
    assert "Password" not in redis  # only the Vault-rendered file carries it
    connectors = {name: cache["Connector"] for name, cache in caches.items() if name != "Connectors"}
    assert connectors == {
        "Instance": "redis",
        "Milestones": "redis",
        "Organization": "redis",
        "IdPFormCallbacks": session_connector,
        "FederatedLogouts": session_connector,
    }


def test_the_dsn_is_read_from_the_database_secret(cfg: StackConfig) -> None:
    # prod: the existing secret the database team maintains; dev: the one this stack writes for the bundled Postgres.
    dsn = secrets_fragment(zitadel_args(cfg))["Database"]["Postgres"]["DSN"]
    assert (dsn.path, dsn.key) == ("secret/data/zitadel-database", "dsn")
