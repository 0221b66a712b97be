"""Names fixed by the design: each is defined here once and imported everywhere else.

A release name, namespace, Service, Vault path or role that appears anywhere in the program, its plan,
its tests or its outputs comes from this module.
"""

from __future__ import annotations

from typing import Final

#: The Pulumi project, and so the namespace of every stack config key (``blinkchamber-identity:redis``).
PROJECT: Final = "blinkchamber-identity"

# --- Redis (Bitnami chart) -------------------------------------------------------------------------------------------
REDIS_RELEASE: Final = "redis"
REDIS_NAMESPACE: Final = "database"
#: The chart's fullname: the release name itself, because it contains "redis" (common.names.fullname).
REDIS_FULLNAME: Final = REDIS_RELEASE
#: Sentinel mode uses the top-level ``serviceAccount`` whose default name is the fullname.
REDIS_SERVICE_ACCOUNT: Final = REDIS_FULLNAME
#: Rendered only with ``sentinel.masterService.enabled``; selects the pod labelled ``isMaster=true``.
REDIS_MASTER_SERVICE: Final = f"{REDIS_FULLNAME}-master"
#: Port 6379 balances over every node (read-only replicas included); 26379 reaches the sentinels.
REDIS_SERVICE: Final = REDIS_FULLNAME
REDIS_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
SENTINEL_MASTER_SET: Final = "mymaster"
#: Where the chart's containers, probes and hooks read the password (hard-coded in the chart's templates).
REDIS_PASSWORD_DIR: Final = "/opt/bitnami/redis/secrets"
REDIS_PASSWORD_FILE: Final = "redis-password"
#: The chart's emptyDir volume that holds the password file when ``usePasswordFileFromSecret`` is false.
REDIS_PASSWORD_VOLUME: Final = "redis-password"
#: ZITADEL's cache truncate needs FLUSHDB; FLUSHALL would also wipe the events DB.
REDIS_DISABLED_COMMANDS: Final = ("FLUSHALL",)

#: Annotations on every Redis object that record the DB layout (events DB; ZITADEL's cache block, "3-9").
EVENTS_DB_ANNOTATION: Final = "blinkchamber.io/events-db"
CACHE_BLOCK_ANNOTATION: Final = "blinkchamber.io/zitadel-cache-dbs"

# --- ZITADEL chart --------------------------------------------------------------------------------------------------
ZITADEL_RELEASE: Final = "zitadel"
#: The chart's fullname: the release name itself, because it contains "zitadel".
ZITADEL_FULLNAME: Final = ZITADEL_RELEASE
#: One ServiceAccount (a hook resource) serves the Deployment and the init/setup jobs.
ZITADEL_SERVICE_ACCOUNT: Final = ZITADEL_FULLNAME
ZITADEL_MASTERKEY_SECRET: Final = "zitadel-masterkey"
ZITADEL_MASTERKEY_KEY: Final = "masterkey"
#: A Secret holding no secret: the chart mounts it at /zitadel-secret-config-yaml, and ``configSecretKey`` walks
#: out of that mount point to the Vault-rendered file (``--config /zitadel-secret-config-yaml/../vault/...``).
ZITADEL_CONFIG_ANCHOR_SECRET: Final = "zitadel-vault-config-anchor"
ZITADEL_CONFIG_MOUNT: Final = "/zitadel-secret-config-yaml"
#: The bundled (dev) Postgres: Bitnami subchart ``<release>-postgresql`` reading its passwords from this Secret.
ZITADEL_POSTGRES_HOST: Final = f"{ZITADEL_RELEASE}-postgresql"
ZITADEL_POSTGRES_AUTH_SECRET: Final = "zitadel-postgresql-auth"
ZITADEL_POSTGRES_DATABASE: Final = "zitadel"
ZITADEL_POSTGRES_PORT: Final = 5432

# --- Vault ---------------------------------------------------------------------------------------------------------
VAULT_SECRETS_DIR: Final = "/vault/secrets"
REDIS_VAULT_ROLE: Final = "redis-role"
ZITADEL_VAULT_ROLE: Final = "zitadel-role"
REDIS_VAULT_POLICY: Final = "redis-read"
ZITADEL_VAULT_POLICY: Final = "zitadel-read"
#: KV v2 secret names (inside the stack's KV mount) and the key that holds the value.
REDIS_SECRET_NAME: Final = "redis"
REDIS_SECRET_KEY: Final = "password"
ZITADEL_SECRET_NAME: Final = "zitadel"
ZITADEL_MASTERKEY_VAULT_KEY: Final = "masterkey"
DATABASE_SECRET_NAME: Final = "zitadel-database"
DATABASE_SECRET_KEY: Final = "dsn"
#: Injector secret names; the injector lower-cases them into the file name under /vault/secrets.
REDIS_INJECT_NAME: Final = "redis-password"
ZITADEL_INJECT_NAME: Final = "zitadel-secrets"
ZITADEL_SECRETS_FILE: Final = "zitadel-secrets.yaml"


def kv2_api_path(mount: str, name: str) -> str:
    """The API path of a KV v2 secret: what policies and injector templates name (``secret/data/redis``)."""
    return f"{mount}/data/{name}"


def service_host(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def redis_master_address(cluster_domain: str) -> str:
    """``host:port`` of the Service that follows the Sentinel-elected master (what ZITADEL connects to)."""
    return f"{service_host(REDIS_MASTER_SERVICE, REDIS_NAMESPACE, cluster_domain)}:{REDIS_PORT}"


def sentinel_address(cluster_domain: str) -> str:
    """``host:port`` of the sentinels, for clients that speak Sentinel."""
    return f"{service_host(REDIS_SERVICE, REDIS_NAMESPACE, cluster_domain)}:{SENTINEL_PORT}"
