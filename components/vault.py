"""Vault: the generated secrets (KV v2), one read-only policy per consumer, and the Kubernetes-auth roles."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_random as random
import pulumi_vault as vault

from components.vault_texts import read_policy
from stacks import names
from stacks.config import StackConfig

#: ZITADEL's chart and binary require exactly 32 bytes; alphanumerics keep characters and bytes equal.
MASTERKEY_LENGTH = 32
POSTGRES_PASSWORD_LENGTH = 32


@dataclass(frozen=True)
class VaultPaths:
    """The KV v2 API paths each consumer reads, as the policies and the injector templates name them."""

    redis: str
    masterkey: str
    database: str

    @staticmethod
    def of(cfg: StackConfig) -> VaultPaths:
        mount = cfg.vault.kv_mount
        db = cfg.zitadel.database
        database_secret = db.dsn_vault_secret if db.dsn_vault_secret else names.DATABASE_SECRET_NAME
        return VaultPaths(
            redis=names.kv2_api_path(mount, names.REDIS_SECRET_NAME),
            masterkey=names.kv2_api_path(mount, names.ZITADEL_SECRET_NAME),
            database=names.kv2_api_path(mount, database_secret),
        )


def database_dsn_key(cfg: StackConfig) -> str:
    """The key of the DSN inside its Vault secret."""
    db = cfg.zitadel.database
    return db.dsn_vault_key if db.dsn_vault_secret else names.DATABASE_SECRET_KEY


def policy_documents(cfg: StackConfig) -> dict[str, str]:
    """Policy name → HCL. Redis reads its password; ZITADEL reads the Redis password and its DSN."""
    paths = VaultPaths.of(cfg)
    return {
        names.REDIS_VAULT_POLICY: read_policy([paths.redis]),
        names.ZITADEL_VAULT_POLICY: read_policy([paths.redis, paths.database]),
    }


def _kv_json(key: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.from_input(value).apply(lambda v: json.dumps({key: v})))


class VaultAccess(pulumi.ComponentResource):
    """Everything in Vault that lets exactly the Redis and ZITADEL pods read exactly their secrets."""

    #: Resources a release must wait for: its secrets, its policy and its role.
    redis_access: list[pulumi.Resource]
    zitadel_access: list[pulumi.Resource]
    masterkey: pulumi.Output[str]
    #: The bundled Postgres's superuser and application passwords (dev only).
    postgres_passwords: tuple[pulumi.Output[str], pulumi.Output[str]] | None

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        *,
        provider: vault.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("blinkchamber:identity:VaultAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # Losing the masterkey loses every encrypted ZITADEL record: in prod nothing may delete or replace it.
        guarded = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=cfg.zitadel.protect_masterkey))
        v = cfg.vault
        paths = VaultPaths.of(cfg)

        mount: pulumi.Input[str] = v.kv_mount
        auth_backend: pulumi.Input[str] = v.kubernetes_auth_path
        backends: list[pulumi.Resource] = []
        if v.manage_backends:
            kv = vault.Mount(
                "kv",
                path=v.kv_mount,
                type="kv",
                options={"version": "2"},
                description="Secrets of the BlinkChamber identity tier",
                opts=child,
            )
            auth = vault.AuthBackend("kubernetes", type="kubernetes", path=v.kubernetes_auth_path, opts=child)
            auth_config = vault.kubernetes.AuthBackendConfig(
                "kubernetes", backend=auth.path, kubernetes_host=v.kubernetes_host, opts=child
            )
            mount, auth_backend = kv.path, auth.path
            backends = [kv, auth, auth_config]

        redis_password = self._password("redis-password", cfg.redis.password_length)
        self.masterkey = self._password("zitadel-masterkey", MASTERKEY_LENGTH, protect=cfg.zitadel.protect_masterkey)
        redis_secret = self._kv_secret(mount, names.REDIS_SECRET_NAME, names.REDIS_SECRET_KEY, redis_password, child)
        masterkey_secret = self._kv_secret(
            mount, names.ZITADEL_SECRET_NAME, names.ZITADEL_MASTERKEY_VAULT_KEY, self.masterkey, guarded
        )

        database_secrets: list[pulumi.Resource] = []
        self.postgres_passwords = None
        db = cfg.zitadel.database
        dsn: pulumi.Input[str] | None = None
        if db.mode == "bundled":
            admin = self._password("postgres-admin-password", POSTGRES_PASSWORD_LENGTH)
            app = self._password("postgres-app-password", POSTGRES_PASSWORD_LENGTH)
            self.postgres_passwords = (admin, app)
            host = names.service_host(names.ZITADEL_POSTGRES_HOST, cfg.zitadel.namespace, cfg.kubernetes.cluster_domain)
            dsn = pulumi.Output.format(
                "postgresql://postgres:{0}@{1}:{2}/{3}?sslmode=disable",
                admin,
                host,
                names.ZITADEL_POSTGRES_PORT,
                names.ZITADEL_POSTGRES_DATABASE,
            )
        elif db.dsn_from_config:
            dsn = pulumi.Config(names.PROJECT).require_secret("postgresDsn")
        # Otherwise the DSN lives in an existing Vault secret (dsnVaultSecret) that this stack only reads.
        if dsn is not None:
            database_secrets.append(
                self._kv_secret(mount, names.DATABASE_SECRET_NAME, names.DATABASE_SECRET_KEY, dsn, child)
            )

        policies = {
            policy: vault.Policy(policy, name=policy, policy=text, opts=child)
            for policy, text in policy_documents(cfg).items()
        }
        common_role_args = {
            "backend": auth_backend,
            "token_ttl": v.token_ttl_seconds,
            # ZITADEL's ServiceAccount is a Helm hook resource, recreated (new UID) on every upgrade.
            "alias_name_source": "serviceaccount_name",
            "audience": v.audience,
        }
        redis_role = vault.kubernetes.AuthBackendRole(
            names.REDIS_VAULT_ROLE,
            role_name=names.REDIS_VAULT_ROLE,
            bound_service_account_names=[names.REDIS_SERVICE_ACCOUNT],
            bound_service_account_namespaces=[names.REDIS_NAMESPACE],
            token_policies=[policies[names.REDIS_VAULT_POLICY].name],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=backends)),
            **common_role_args,  # type: ignore[arg-type]
        )
        zitadel_role = vault.kubernetes.AuthBackendRole(
            names.ZITADEL_VAULT_ROLE,
            role_name=names.ZITADEL_VAULT_ROLE,
            bound_service_account_names=[names.ZITADEL_SERVICE_ACCOUNT],
            bound_service_account_namespaces=[cfg.zitadel.namespace],
            token_policies=[policies[names.ZITADEL_VAULT_POLICY].name],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=backends)),
            **common_role_args,  # type: ignore[arg-type]
        )
        self.redis_access = [redis_secret, policies[names.REDIS_VAULT_POLICY], redis_role]
        self.zitadel_access = [
            redis_secret,
            masterkey_secret,
            *database_secrets,
            policies[names.ZITADEL_VAULT_POLICY],
            zitadel_role,
        ]
        self.paths = paths
        self.register_outputs(
            {
                "paths": {"redis": paths.redis, "masterkey": paths.masterkey, "database": paths.database},
                "roles": [names.REDIS_VAULT_ROLE, names.ZITADEL_VAULT_ROLE],
            }
        )

    def _password(self, name: str, length: int, protect: bool = False) -> pulumi.Output[str]:
        """Letters and digits only: URL-safe, and as many bytes as characters."""
        password = random.RandomPassword(
            name, length=length, special=False, opts=pulumi.ResourceOptions(parent=self, protect=protect)
        )
        return pulumi.Output.secret(password.result)

    def _kv_secret(
        self, mount: pulumi.Input[str], name: str, key: str, value: pulumi.Input[str], opts: pulumi.ResourceOptions
    ) -> vault.kv.SecretV2:
        return vault.kv.SecretV2(name, mount=mount, name=name, data_json=_kv_json(key, value), opts=opts)
