"""ZITADEL's configuration as the program sets it: every key real, the Redis wiring and the Vault fragment."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from components.zitadel import VaultValue, configmap_config, render_fragment_template, secrets_fragment
from stacks import dblayout, names
from stacks.config import StackConfig
from tests import reference


def lower_paths(tree: dict[str, Any]) -> set[str]:
    # ZITADEL reads its config through viper, whose keys are case-insensitive (defaults.yaml has Database.postgres).
    return {path.lower() for path in reference.key_paths(tree)}


def test_every_configmap_key_exists_in_zitadel_defaults(cfg: StackConfig) -> None:
    defaults = lower_paths(reference.zitadel_defaults())
    unknown = sorted(p for p in reference.key_paths(configmap_config(cfg)) if p.lower() not in defaults)
    assert unknown == []


def test_every_vault_fragment_key_exists_in_zitadel_defaults(cfg: StackConfig) -> None:
    defaults = lower_paths(reference.zitadel_defaults())
    fragment = secrets_fragment(cfg)
    paths = list(reference.key_paths(fragment))
    assert paths == ["Caches.Connectors.Redis.Password", "Database.Postgres.DSN"]
    assert [p for p in paths if p.lower() not in defaults] == []


def test_key_check_catches_a_misspelled_key() -> None:
    defaults = lower_paths(reference.zitadel_defaults())
    assert "caches.connectors.redis.poolsize" in defaults
    assert "caches.connectors.redis.maxconnage" not in defaults  # the seed's name; ZITADEL calls it ConnMaxLifetime


def test_caches_use_redis_through_the_master_service(cfg: StackConfig) -> None:
    caches = configmap_config(cfg)["Caches"]
    redis = caches["Connectors"]["Redis"]
    assert redis["Enabled"] is True
    assert redis["Addr"] == "redis-master.database.svc.cluster.local:6379"
    assert redis["DBOffset"] == cfg.zitadel.cache.db_offset
    pool = cfg.zitadel.cache.pool
    assert (redis["PoolSize"], redis["MaxRetries"], redis["ConnMaxIdleTime"], redis["ConnMaxLifetime"]) == (
        pool.pool_size,
        pool.max_retries,
        pool.idle_timeout,
        pool.max_conn_age,
    )
    assert "Password" not in redis  # only the Vault-rendered file carries it
    for cache in ("Instance", "Milestones", "Organization"):
        assert caches[cache]["Connector"] == "redis"
    # The caches on Redis land in DBs outside the events DB.
    used = {
        cfg.zitadel.cache.db_offset + dblayout.ZITADEL_CACHE_PURPOSES[c]
        for c in ("Instance", "Milestones", "Organization")
    }
    assert cfg.events.db not in used and used == set(cfg.db_layout.cache_dbs.values())


def render_like_vault_agent(template: str, secrets: dict[str, dict[str, str]]) -> str:
    """Evaluate the two constructs the fragment uses: ``with secret "P"`` blocks and ``.Data.data.K | toJSON``."""

    def block(match: re.Match[str]) -> str:
        data = secrets[match.group(1)]
        return re.sub(
            r"\{\{ \.Data\.data\.(\w+) \| toJSON \}\}", lambda m: json.dumps(data[m.group(1)]), match.group(2)
        )

    return re.sub(r'\{\{ with secret "([^"]+)" \}\}(.*?)\{\{ end \}\}', block, template, flags=re.S)


def test_fragment_renders_to_the_config_zitadel_reads(cfg: StackConfig) -> None:
    fragment = secrets_fragment(cfg)
    redis_ref = fragment["Caches"]["Connectors"]["Redis"]["Password"]
    dsn_ref = fragment["Database"]["Postgres"]["DSN"]
    assert isinstance(redis_ref, VaultValue) and isinstance(dsn_ref, VaultValue)
    assert redis_ref.path == "secret/data/redis" and redis_ref.key == "password"
    # Values with YAML-hostile characters must survive: toJSON quotes them.
    stand_ins = {redis_ref.path: {"password": 'x: "y" #z'}, dsn_ref.path: {dsn_ref.key: "postgresql://u@h:5432/db?a=b"}}
    rendered = yaml.safe_load(render_like_vault_agent(render_fragment_template(fragment), stand_ins))
    assert rendered == {
        "Caches": {"Connectors": {"Redis": {"Password": 'x: "y" #z'}}},
        "Database": {"Postgres": {"DSN": "postgresql://u@h:5432/db?a=b"}},
    }


def test_prod_reads_the_dsn_from_the_existing_vault_secret(cfg: StackConfig) -> None:
    dsn = secrets_fragment(cfg)["Database"]["Postgres"]["DSN"]
    assert dsn.path == f"secret/data/{names.DATABASE_SECRET_NAME}"
    assert dsn.key == "dsn"
