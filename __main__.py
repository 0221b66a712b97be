"""BlinkChamber identity tier: read the stack's typed configuration, compose the components, export."""

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from components import wiring
from components.ci_access import CiAccess
from components.edge import Edge, ZitadelRoutePolicies
from components.event_relay import EventRelay
from components.observability import Observability
from components.redis import RedisSentinel
from components.vault import VaultAccess
from components.zitadel import Zitadel
from components.zitadel_database import BundledPostgres
from stacks import names
from stacks.loader import load_from_pulumi
from stacks.siblings import require_own_vault_names

# Fails with every violation, before any resource is registered; then with any sibling stack writing the same names
# into the same Vault.
cfg = load_from_pulumi()
require_own_vault_names(cfg, Path(__file__).resolve().parent)
vault_names = names.VaultNames.of(cfg)
secret_config = pulumi.Config(names.PROJECT)

vault_provider = vault.Provider(
    "vault",
    address=cfg.vault.address,
    # Without vaultToken the provider reads VAULT_TOKEN (or the token helper) itself.
    token=secret_config.get_secret(names.VAULT_TOKEN_KEY),
    # The provider's child token must outlive the Helm releases' waits (a rule checks it).
    max_lease_ttl_seconds=cfg.vault.provider_token_ttl_seconds,
)
k8s_provider = k8s.Provider("kubernetes", **wiring.cluster_target(cfg).provider_args())
in_cluster = pulumi.ResourceOptions(providers={"kubernetes": k8s_provider})

# ZITADEL's DSN, which the Vault component stores: the bundled Postgres's (dev), or the postgresDsn secret; with
# neither, an existing Vault secret that the stack only reads.
postgres_args = wiring.bundled_postgres_args(cfg)
postgres = (
    BundledPostgres(postgres_args, former_parent=wiring.former_postgres_parent()) if postgres_args is not None else None
)
database_dsn: pulumi.Input[str] | None = None
if postgres is not None:
    database_dsn = postgres.dsn
elif cfg.zitadel.database.dsn_from_config:
    database_dsn = secret_config.require_secret(names.POSTGRES_DSN_KEY)

vault_access = VaultAccess(
    wiring.VAULT_ACCESS, wiring.vault_access_args(cfg), provider=vault_provider, database_dsn=database_dsn
)
if cfg.vault.ci.enabled:
    CiAccess("ci", wiring.ci_access_args(cfg), provider=vault_provider)
redis = RedisSentinel(
    "redis",
    wiring.redis_args(cfg),
    vault_objects_ready=vault_access.redis_access,
    password_version=vault_access.redis_password_version,
    acl_version=vault_access.redis_acl_version,
    opts=in_cluster,
)
edge = Edge(
    "edge",
    wiring.edge_args(cfg),
    redis_password=vault_access.redis_user_passwords[names.REDIS_RATE_LIMIT_USER],
    opts=in_cluster,
)
zitadel = Zitadel(
    "zitadel",
    wiring.zitadel_args(cfg),
    redis_password_version=vault_access.redis_user_versions[names.REDIS_ZITADEL_USER],
    database_checked=vault_access.database_preflight,
    postgres=postgres,
    vault_objects_ready=vault_access.zitadel_access,
    redis_ready=[redis.release],
    gateway_ready=[edge.release],
    opts=in_cluster,
)
ZitadelRoutePolicies(
    "zitadel-route-policies",
    wiring.zitadel_route_policies_args(cfg),
    crds_ready=[edge.release],
    namespace_ready=[zitadel.namespace],
    opts=in_cluster,
)

if cfg.events.relay.enabled:
    EventRelay(
        "event-relay",
        wiring.event_relay_args(cfg),
        vault_provider=vault_provider,
        kv_mount=vault_access.kv_mount,
        admin_key=secret_config.require_secret(names.ZITADEL_ADMIN_KEY_KEY) if cfg.secrets.zitadel_admin_key else None,
        redis_password_version=vault_access.redis_user_versions[names.REDIS_RELAY_USER],
        zitadel_release=zitadel.release,
        vault_objects_ready=vault_access.relay_access,
        redis_ready=[redis.release],
        opts=in_cluster,
    )

# Scrape targets, alert rules and dashboards: only where the cluster runs the Prometheus Operator.
if cfg.observability.enabled:
    Observability(
        "observability",
        wiring.observability_args(cfg),
        zitadel_ready=[zitadel.namespace],
        edge_ready=[edge.release],
        opts=in_cluster,
    )

pulumi.export("redisMasterAddress", redis.master_address)
pulumi.export("redisSentinelAddress", redis.sentinel_address)
pulumi.export("redisSentinelMasterSet", names.SENTINEL_MASTER_SET)
pulumi.export("zitadelUrl", zitadel.url)
pulumi.export("edgeGateway", {"namespace": cfg.edge.namespace, "name": names.EDGE_GATEWAY})
pulumi.export(
    "vaultPaths",
    {
        "redisPassword": vault_names.redis_path,
        "zitadelMasterkey": vault_names.masterkey_path,
        "zitadelDatabase": vault_names.database_path,
    },
)
pulumi.export("vaultRoles", {"redis": vault_names.redis_role, "zitadel": vault_names.zitadel_role})
pulumi.export("redisDbLayout", cfg.db_layout.as_output())
