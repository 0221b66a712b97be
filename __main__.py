"""BlinkChamber identity tier: read the stack's typed configuration and compose the components."""

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from components import ownership
from components.ci_access import CiAccess
from components.edge import Edge, ZitadelRoutePolicies
from components.event_relay import EventRelay
from components.redis import RedisSentinel
from components.vault import VaultAccess
from components.zitadel import Zitadel
from stacks import names
from stacks.loader import load_from_pulumi
from stacks.siblings import require_own_vault_names

# Fails with every violation, before any resource is registered; then with any sibling stack writing the same names
# into the same Vault.
cfg = load_from_pulumi()
require_own_vault_names(cfg, Path(__file__).resolve().parent)
vault_names = names.VaultNames.of(cfg)

vault_provider = vault.Provider(
    "vault",
    address=cfg.vault.address,
    # Without vaultToken the provider reads VAULT_TOKEN (or the token helper) itself.
    token=pulumi.Config(names.PROJECT).get_secret("vaultToken"),
    # The provider's child token must outlive the Helm releases' waits (a rule checks it).
    max_lease_ttl_seconds=cfg.vault.provider_token_ttl_seconds,
)
k8s_provider = k8s.Provider("kubernetes", **ownership.provider_args(cfg))

vault_access = VaultAccess("vault", cfg, provider=vault_provider)
if cfg.vault.ci.enabled:
    CiAccess("ci", cfg, provider=vault_provider)
redis = RedisSentinel(
    "redis",
    cfg,
    vault_access=vault_access.redis_access,
    password_version=vault_access.redis_password_version,
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)
edge = Edge(
    "edge",
    cfg,
    redis_password=vault_access.redis_password,
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)
zitadel = Zitadel(
    "zitadel",
    cfg,
    vault_access=vault_access,
    redis=[redis.release],
    gateway=[edge.release],
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)
ZitadelRoutePolicies(
    "zitadel-route-policies",
    cfg,
    after=[edge.release, zitadel.namespace],
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)

if cfg.events.relay.enabled:
    EventRelay(
        "event-relay",
        cfg,
        vault_provider=vault_provider,
        vault_access=vault_access,
        zitadel_release=zitadel.release,
        redis=[redis.release],
        opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
    )

pulumi.export("redisMasterAddress", redis.master_address)
pulumi.export("redisSentinelAddress", redis.sentinel_address)
pulumi.export("redisSentinelMasterSet", names.SENTINEL_MASTER_SET)
pulumi.export("zitadelUrl", zitadel.url)
pulumi.export("edgeGateway", {"namespace": cfg.edge.namespace, "name": names.EDGE_GATEWAY})
pulumi.export(
    "vaultPaths",
    {
        "redisPassword": vault_access.paths.redis,
        "zitadelMasterkey": vault_access.paths.masterkey,
        "zitadelDatabase": vault_access.paths.database,
    },
)
pulumi.export("vaultRoles", {"redis": vault_names.redis_role, "zitadel": vault_names.zitadel_role})
pulumi.export("redisDbLayout", cfg.db_layout.as_output())
