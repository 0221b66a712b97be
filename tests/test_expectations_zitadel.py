"""ZITADEL as each stack deploys it: every decision-bearing Helm value and configuration key, as a literal per stack.

The values come from README's configuration table (``zitadel.*``, ``zitadel.cache.*``) and architecture section.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.wiring import zitadel_args
from components.zitadel import zitadel_values
from stacks.config import StackConfig
from stacktools.plan import mask
from tests.conftest import recorded, stack_config
from tests.expectations import ABSENT, Row, both, mismatches, resources

CONFIG = "zitadel.configmapConfig"
REDIS = f"{CONFIG}.Caches.Connectors.Redis"
SECRETS_TEMPLATE = (
    "Caches:\n"
    "  Connectors:\n"
    "    Redis:\n"
    '      Password: {{ with secret "secret/data/redis-users/zitadel" }}{{ .Data.data.password | toJSON }}{{ end }}\n'
    "Database:\n"
    "  Postgres:\n"
    '    DSN: {{ with secret "secret/data/zitadel-database" }}{{ .Data.data.dsn | toJSON }}{{ end }}\n'
)


MASTERKEY_TEMPLATE = '{{- with secret "secret/data/zitadel" -}}{{ .Data.data.masterkey }}{{- end }}'
#: The admin machine key of the first instance: valid for a day after the setup job started (the chart's: 2029).
FIRST_INSTANCE_TEMPLATE = (
    "FirstInstance:\n"
    "  Org:\n"
    "    Machine:\n"
    "      MachineKey:\n"
    '        ExpirationDate: "{{ sprig_dateInZone "2006-01-02T15:04:05Z07:00" '
    '(sprig_now | sprig_dateModify "+24h") "UTC" }}"\n'
)


def masterkey(where: str, present: bool) -> list[Row]:
    """The masterkey alone in its file, where ZITADEL decrypts; nowhere else."""
    inject = f'{where}["vault.hashicorp.com/'
    if not present:
        return [both(f'{inject}agent-inject-template-zitadel-masterkey"]', ABSENT)]
    return [
        both(f'{inject}agent-inject-secret-zitadel-masterkey"]', "secret/data/zitadel"),
        both(f'{inject}agent-inject-template-zitadel-masterkey"]', MASTERKEY_TEMPLATE),
        both(f'{inject}agent-inject-file-zitadel-masterkey"]', ABSENT),  # /vault/secrets/zitadel-masterkey
        both(f'{inject}error-on-missing-key-zitadel-masterkey"]', "true"),
    ]


def first_instance(where: str, present: bool) -> list[Row]:
    inject = f'{where}["vault.hashicorp.com/'
    if not present:
        return [both(f'{inject}agent-inject-template-zitadel-first-instance"]', ABSENT)]
    return [
        both(f'{inject}agent-inject-secret-zitadel-first-instance"]', ABSENT),  # it reads no secret
        both(f'{inject}agent-inject-template-zitadel-first-instance"]', FIRST_INSTANCE_TEMPLATE),
        both(f'{inject}agent-inject-file-zitadel-first-instance"]', "zitadel-first-instance.yaml"),
    ]


def injected(where: str) -> list[Row]:
    """The Vault agent on a pod template: init container only, rendering ZITADEL's secrets file."""
    inject = f'{where}["vault.hashicorp.com/'
    return [
        both(f'{inject}agent-inject"]', "true"),
        both(f'{inject}role"]', "zitadel-role"),
        both(f'{inject}auth-path"]', "auth/kubernetes"),
        both(f'{inject}agent-pre-populate-only"]', "true"),
        both(f'{inject}agent-init-first"]', ABSENT),
        both(f'{inject}agent-inject-secret-zitadel-secrets"]', "secret/data/redis-users/zitadel"),
        both(f'{inject}agent-inject-file-zitadel-secrets"]', "zitadel-secrets.yaml"),
        both(f'{inject}agent-inject-template-zitadel-secrets"]', SECRETS_TEMPLATE),
    ]


VALUES: list[Row] = [
    ("replicaCount", 1, 2),
    both("image.repository", "ghcr.io/zitadel/zitadel"),
    both("image.tag", "v4.13.0"),
    both("login.image.repository", "ghcr.io/zitadel/zitadel-login"),
    both("login.image.tag", "v4.13.0"),
    ("login.replicaCount", 1, 2),
    # A PDB only where there is a second replica to keep.
    ("pdb", {"enabled": False}, {"enabled": True, "minAvailable": 1}),
    # Public address: clients use HTTPS in prod; TLS ends at the ingress, ZITADEL serves h2c inside.
    (f"{CONFIG}.ExternalDomain", "localhost", "id.blinkchamber.com"),
    (f"{CONFIG}.ExternalPort", 8080, 443),
    (f"{CONFIG}.ExternalSecure", False, True),
    both(f"{CONFIG}.TLS.Enabled", False),
    # No chart Ingress: the edge gateway routes to ZITADEL and its login UI and ends TLS.
    both("ingress", ABSENT),
    both("login.ingress", ABSENT),
    # Caches on Redis through the master Service, DBs 3..5 (DBOffset 2), the pool of README's table.
    both(f"{REDIS}.Enabled", True),
    both(f"{REDIS}.Addr", "redis-master.database.svc.cluster.local:6379"),
    # Its own ACL user (README "Redis users"); the password comes from the Vault agent's fragment.
    both(f"{REDIS}.Username", "zitadel"),
    both(f"{REDIS}.DBOffset", 2),
    both(f"{REDIS}.PoolSize", 20),
    both(f"{REDIS}.MaxRetries", 3),
    both(f"{REDIS}.DialTimeout", "1s"),
    both(f"{REDIS}.ReadTimeout", "100ms"),
    both(f"{REDIS}.WriteTimeout", "100ms"),
    both(f"{REDIS}.PoolTimeout", "100ms"),
    both(f"{REDIS}.ConnMaxIdleTime", "30m"),
    both(f"{REDIS}.ConnMaxLifetime", "1h"),
    both(f"{REDIS}.Password", ABSENT),
    *(
        both(f"{CONFIG}.Caches.{cache}", {"Connector": "redis", "MaxAge": "1h", "LastUseAge": "10m"})
        for cache in (
            "Instance",
            "Milestones",
            "Organization",
        )
    ),
    # Secrets, all from Vault: the masterkey as a file of its own, the rest in the Vault-rendered config file. The
    # chart requires a masterkeySecretName (its setup job's env): the anchor, which holds no masterkey.
    both("zitadel.masterkeySecretName", "zitadel-vault-config-anchor"),
    both("zitadel.masterkey", ABSENT),
    both("zitadel.configSecretName", "zitadel-vault-config-anchor"),
    both("zitadel.configSecretKey", "../vault/secrets/zitadel-secrets.yaml"),
    *injected("podAnnotations"),
    *injected("setupJob.podAnnotations"),
    *injected("initJob.podAnnotations"),
    *masterkey("podAnnotations", True),
    *masterkey("setupJob.podAnnotations", True),
    *masterkey("initJob.podAnnotations", False),
    # The setup job: the chart's default argument, then the masterkey from the file alone (the last value of a flag
    # wins: the chart's --masterkeyFromEnv is undone), then the admin key's expiry, after the chart's steps.
    both(
        "setupJob.additionalArgs",
        [
            "--init-projections=true",
            "--masterkeyFromEnv=false",
            "--masterkeyFile",
            "/vault/secrets/zitadel-masterkey",
            "--steps",
            "/vault/secrets/zitadel-first-instance.yaml",
        ],
    ),
    *first_instance("setupJob.podAnnotations", True),
    *first_instance("podAnnotations", False),
    *first_instance("initJob.podAnnotations", False),
    # The first instance as the chart defines it (the nulls file removes its admin's PAT: test_zitadel_release).
    both(f"{CONFIG}.FirstInstance", ABSENT),
    # Postgres: bundled in dev (its passwords in a program-made Secret), external in prod.
    ("postgresql.enabled", True, False),
    both("postgresql.auth.existingSecret", "zitadel-postgresql-auth"),
    both("postgresql.auth.password", ""),
    both("postgresql.auth.postgresPassword", ""),
    both("postgresql.auth.database", "zitadel"),
    both("postgresql.image.registry", "docker.io"),
    both("postgresql.image.repository", "bitnamilegacy/postgresql"),
    both("postgresql.primary.persistence.enabled", False),
    (f"{CONFIG}.Database", {"Postgres": {"Host": "zitadel-postgresql", "Port": 5432, "Database": "zitadel"}}, ABSENT),
    # Sizing.
    ("resources", resources("100m", "256Mi", "512Mi"), resources("500m", "512Mi", "1Gi")),
    ("login.resources", resources("50m", "128Mi", "256Mi"), resources("100m", "256Mi", "512Mi")),
    ("setupJob.resources", resources("100m", "256Mi", "512Mi"), resources("250m", "512Mi", "1Gi")),
    ("initJob.resources", resources("100m", "256Mi", "512Mi"), resources("250m", "512Mi", "1Gi")),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_zitadel_values(stack: str) -> None:
    assert mismatches(zitadel_values(zitadel_args(stack_config(stack))), VALUES, stack) == []


RELEASE: list[Row] = [
    # Nulls reach Helm only from a values file, and only with allowNullValues: no PAT for the first admin.
    both(
        "valueYamlFiles",
        [
            {
                "text": "zitadel:\n  configmapConfig:\n    FirstInstance:\n      Org:\n        Machine:\n"
                "          Pat: null\n"
            }
        ],
    ),
    both("allowNullValues", True),
    # The Deployment's masterkey from the agent's file (chart 9.34.0 has no value for it).
    both("postrender", "bin/zitadel-postrender"),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_zitadel_release(stack: str) -> None:
    release = mask(recorded(stack).one("kubernetes:helm.sh/v3:Release", "zitadel").inputs)
    assert mismatches(release, RELEASE, stack) == []


def with_zitadel(cfg: StackConfig, **changes: Any) -> StackConfig:
    return cfg.model_copy(update={"zitadel": cfg.zitadel.model_copy(update=changes)})


def test_pdb_from_the_second_replica() -> None:
    dev = stack_config("dev")
    assert zitadel_values(zitadel_args(with_zitadel(dev, replicas=2)))["pdb"] == {"enabled": True, "minAvailable": 1}
    assert zitadel_values(zitadel_args(with_zitadel(dev, replicas=3)))["pdb"] == {"enabled": True, "minAvailable": 1}
    assert zitadel_values(zitadel_args(with_zitadel(stack_config("prod"), replicas=1)))["pdb"] == {"enabled": False}


def test_stack_knobs_reach_zitadel() -> None:
    prod = stack_config("prod")
    cache = prod.zitadel.cache
    tuned = with_zitadel(
        prod,
        external_port=8443,
        cache=cache.model_copy(
            update={
                "db_offset": 5,
                "max_age": "2h",
                "last_use_age": "5m",
                "pool": cache.pool.model_copy(update={"dial_timeout": "2s", "max_retries": 0}),
            }
        ),
    )
    values = zitadel_values(zitadel_args(tuned))
    config = values["zitadel"]["configmapConfig"]
    assert config["ExternalPort"] == 8443
    assert (
        config["Caches"]["Connectors"]["Redis"]["DBOffset"],
        config["Caches"]["Connectors"]["Redis"]["DialTimeout"],
    ) == (
        5,
        "2s",
    )
    assert config["Caches"]["Connectors"]["Redis"]["MaxRetries"] == 0
    assert config["Caches"]["Milestones"] == {"Connector": "redis", "MaxAge": "2h", "LastUseAge": "5m"}
    bundled = stack_config("dev")
    persistent = with_zitadel(
        bundled, database=bundled.zitadel.database.model_copy(update={"bundled_persistence": True})
    )
    assert zitadel_values(zitadel_args(persistent))["postgresql"]["primary"]["persistence"] == {"enabled": True}
