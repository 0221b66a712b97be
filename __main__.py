"""BlinkChamber identity tier: read the stack's typed configuration and compose the components."""

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from components.redis import RedisSentinel
from components.vault import VaultAccess
from components.zitadel import Zitadel
from stacks import names
from stacks.loader import load_from_pulumi

# Fails with every violation, before any resource is registered.
cfg = load_from_pulumi()

vault_provider = vault.Provider(
    "vault",
    address=cfg.vault.address,
    # Without vaultToken the provider reads VAULT_TOKEN (or the token helper) itself.
    token=pulumi.Config(names.PROJECT).get_secret("vaultToken"),
)
k8s_provider = k8s.Provider("kubernetes", context=cfg.kubernetes.context)

vault_access = VaultAccess("vault", cfg, provider=vault_provider)
redis = RedisSentinel(
    "redis",
    cfg,
    vault_access=vault_access.redis_access,
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)
zitadel = Zitadel(
    "zitadel",
    cfg,
    vault_access=vault_access,
    redis=[redis.release],
    opts=pulumi.ResourceOptions(providers={"kubernetes": k8s_provider}),
)

pulumi.export("redisMasterAddress", redis.master_address)
pulumi.export("redisSentinelAddress", redis.sentinel_address)
pulumi.export("redisSentinelMasterSet", names.SENTINEL_MASTER_SET)
pulumi.export("zitadelUrl", zitadel.url)
pulumi.export(
    "vaultPaths",
    {
        "redisPassword": vault_access.paths.redis,
        "zitadelMasterkey": vault_access.paths.masterkey,
        "zitadelDatabase": vault_access.paths.database,
    },
)
pulumi.export("vaultRoles", {"redis": names.REDIS_VAULT_ROLE, "zitadel": names.ZITADEL_VAULT_ROLE})
pulumi.export("redisDbLayout", cfg.db_layout.as_output())
