"""Vault: the generated secrets (KV v2), one read-only policy per consumer, and the Kubernetes-auth roles."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_vault as vault

from components import redis_acl
from components.passwords import random_password
from components.preflight import require_secret_keys
from components.vault_texts import read_policy
from stacks import names
from stacks.config import VaultConfig
from stacks.names import REDIS_CLIENT_USERS

#: The component's type token: part of the URN of every resource under it.
VAULT_ACCESS_TYPE: Final = names.component_type("VaultAccess")
#: ZITADEL's chart and binary require exactly 32 bytes; alphanumerics keep characters and bytes equal.
MASTERKEY_LENGTH = 32


@dataclass(frozen=True)
class PodRole:
    """A Kubernetes-auth role: the one service account it admits, and its read-only policy on ``reads``."""

    #: The seed's role and policy names: the Pulumi resource names, stable whatever ``vault.namePrefix`` says.
    role_key: str
    policy_key: str
    #: The names in Vault (``names.VaultNames``).
    role: str
    policy: str
    service_account: str
    namespace: str
    #: KV v2 API paths the policy grants ``read`` on.
    reads: tuple[str, ...]


def pod_roles(n: names.VaultNames, *, zitadel_namespace: str, relay: bool) -> tuple[PodRole, ...]:
    """Redis reads its own password, the hashes of its users' passwords and its exporter's password; ZITADEL (in
    ``zitadel_namespace``) reads its Redis user's password, its DSN and its masterkey; the event relay beside it
    (when ``relay``) reads its Redis user's password and its ZITADEL token."""
    roles = [
        PodRole(
            names.REDIS_VAULT_ROLE,
            names.REDIS_VAULT_POLICY,
            n.redis_role,
            n.redis_policy,
            names.REDIS_SERVICE_ACCOUNT,
            names.REDIS_NAMESPACE,
            (n.redis_path, n.redis_acl_path, n.redis_user_path(names.REDIS_EXPORTER_USER)),
        ),
        PodRole(
            names.ZITADEL_VAULT_ROLE,
            names.ZITADEL_VAULT_POLICY,
            n.zitadel_role,
            n.zitadel_policy,
            names.ZITADEL_SERVICE_ACCOUNT,
            zitadel_namespace,
            # The masterkey too: the server and the setup job read it from the agent's file (--masterkeyFile).
            (n.redis_user_path(names.REDIS_ZITADEL_USER), n.database_path, n.masterkey_path),
        ),
    ]
    if relay:
        roles.append(
            PodRole(
                names.RELAY_VAULT_ROLE,
                names.RELAY_VAULT_POLICY,
                n.relay_role,
                n.relay_policy,
                names.RELAY_SERVICE_ACCOUNT,
                zitadel_namespace,
                (n.redis_user_path(names.REDIS_RELAY_USER), n.relay_token_path),
            )
        )
    return tuple(roles)


def pod_role_settings(v: VaultConfig) -> dict[str, str | int]:
    """What every pod role sets besides its service account, namespace and policy, by API field (unset ones left
    out). The workflows' deploy policy allows exactly these on the roles (``components/ci_access.py``)."""
    settings: dict[str, str | int | None] = {
        "token_ttl": v.token_ttl_seconds,
        # ZITADEL's ServiceAccount is a Helm hook resource, recreated (new UID) on every upgrade.
        "alias_name_source": "serviceaccount_name",
        "audience": v.audience,
    }
    return {field: value for field, value in settings.items() if value is not None}


@dataclass(frozen=True)
class VaultAccessArgs:
    """What the Vault component needs: its configuration section, the stack's names in Vault, and who reads what."""

    vault: VaultConfig
    names: names.VaultNames
    #: One Kubernetes-auth role and read-only policy per pod identity that reads from Vault.
    pods: Sequence[PodRole]
    redis_password_length: int
    #: Losing the masterkey loses every encrypted ZITADEL record: protected in prod.
    protect_masterkey: bool
    #: The Redis client users the stack declares (``components.redis_acl``), each with a password of its own.
    redis_users: tuple[str, ...] = REDIS_CLIENT_USERS


def _kv_json(key: str, value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.from_input(value).apply(lambda v: json.dumps({key: v})))


class VaultAccess(pulumi.ComponentResource):
    """Everything in Vault that lets exactly the Redis and ZITADEL pods read exactly their secrets."""

    #: Resources a release must wait for: its secrets, its policy and its role.
    redis_access: list[pulumi.Resource]
    zitadel_access: list[pulumi.Resource]
    masterkey: pulumi.Output[str]
    #: Each Redis client user's generated password (Pulumi secrets), by user name: the edge's ratelimit pods take
    #: theirs from their environment, the only client that cannot read Vault.
    redis_user_passwords: dict[str, pulumi.Output[str]]
    #: The KV version of each Redis client user's secret (never the value), for its readers' pod templates.
    redis_user_versions: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        args: VaultAccessArgs,
        *,
        provider: vault.Provider,
        database_dsn: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``database_dsn``: the DSN this stack writes for ZITADEL; ``None`` when it lives in a secret the stack only
        reads (``args.names.external_database``)."""
        super().__init__(VAULT_ACCESS_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # Losing the masterkey loses every encrypted ZITADEL record: in prod nothing may delete or replace it.
        guarded = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=args.protect_masterkey))
        v = args.vault
        vault_names = args.names
        # Shared with every other stack on this Vault and with whatever else uses them: never deleted by this one.
        retained = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True))

        mount: pulumi.Input[str] = v.kv_mount
        auth_backend: pulumi.Input[str] = v.kubernetes_auth_path
        backends: list[pulumi.Resource] = []
        # A dev-mode Vault already has secret/ (KV v2) and refuses a second mount there: a separate switch.
        if v.manage_kv_mount:
            kv = vault.Mount(
                "kv",
                path=v.kv_mount,
                type="kv",
                options={"version": "2"},
                description="Secrets of the BlinkChamber identity tier",
                opts=retained,
            )
            mount = kv.path
            backends.append(kv)
        if v.manage_backends:
            auth = vault.AuthBackend("kubernetes", type="kubernetes", path=v.kubernetes_auth_path, opts=retained)
            auth_config = vault.kubernetes.AuthBackendConfig(
                "kubernetes", backend=auth.path, kubernetes_host=v.kubernetes_host, opts=retained
            )
            auth_backend = auth.path
            backends += [auth, auth_config]

        redis_password = random_password(
            "redis-password", args.redis_password_length, pulumi.ResourceOptions(parent=self)
        )
        self.masterkey = random_password(
            names.MASTERKEY_PASSWORD_RESOURCE,
            MASTERKEY_LENGTH,
            pulumi.ResourceOptions(parent=self, protect=args.protect_masterkey),
        )
        redis_secret = self._kv_secret(
            mount, names.REDIS_SECRET_NAME, vault_names.redis_secret, names.REDIS_SECRET_KEY, redis_password, child
        )
        # The secret's KV version, never its value: on the pod templates of its readers, so that a new password
        # rolls every one of them (the Helm values would not change otherwise).
        self.redis_password_version = redis_secret.metadata.apply(_kv_version)
        # One password per Redis client user; the Redis pods read only their hashes (``redis-acl``).
        self.redis_user_passwords = {}
        self.redis_user_versions = {}
        user_secrets: dict[str, vault.kv.SecretV2] = {}
        for user in args.redis_users:
            password = random_password(
                f"redis-{user}-password", args.redis_password_length, pulumi.ResourceOptions(parent=self)
            )
            self.redis_user_passwords[user] = password
            secret_name = vault_names.redis_user_secret(user)
            user_secrets[user] = self._kv_secret(
                mount, f"redis-user-{user}", secret_name, names.REDIS_SECRET_KEY, password, child
            )
            self.redis_user_versions[user] = user_secrets[user].metadata.apply(_kv_version)
        acl_secret = vault.kv.SecretV2(
            names.REDIS_ACL_SECRET_NAME,
            mount=mount,
            name=vault_names.redis_acl_secret,
            data_json=_acl_hashes({names.REDIS_DEFAULT_USER: redis_password, **self.redis_user_passwords}),
            opts=child,
        )
        self.redis_acl_version = acl_secret.metadata.apply(_kv_version)
        masterkey_secret = self._kv_secret(
            mount,
            names.ZITADEL_SECRET_NAME,
            vault_names.masterkey_secret,
            names.ZITADEL_MASTERKEY_VAULT_KEY,
            self.masterkey,
            guarded,
        )

        database_secrets: list[pulumi.Resource] = []
        # Without a DSN to write, it lives in an existing Vault secret (dsnVaultSecret) that this stack only reads:
        # confirmed there (its keys, never its value) before ZITADEL's release waits for it.
        #: The DSN secret's path once Vault has confirmed it; None when the stack writes the DSN itself.
        self.database_preflight: pulumi.Output[str] | None = None
        if vault_names.external_database is not None:
            external_secret, external_key = vault_names.external_database
            self.database_preflight = require_secret_keys(
                "zitadel-database",
                mount=v.kv_mount,
                secret=external_secret,
                keys=[external_key],
                needed_by="ZITADEL (its init job first)",
                provider=provider,
            )
        if database_dsn is not None:
            database_secrets.append(
                self._kv_secret(
                    mount,
                    names.DATABASE_SECRET_NAME,
                    vault_names.database_secret,
                    names.DATABASE_SECRET_KEY,
                    database_dsn,
                    child,
                )
            )

        common_role_args = {"backend": auth_backend, **pod_role_settings(v)}
        granted: dict[str, list[pulumi.Resource]] = {}
        for pod in args.pods:
            policy = vault.Policy(pod.policy_key, name=pod.policy, policy=read_policy(pod.reads), opts=child)
            role = vault.kubernetes.AuthBackendRole(
                pod.role_key,
                role_name=pod.role,
                bound_service_account_names=[pod.service_account],
                bound_service_account_namespaces=[pod.namespace],
                token_policies=[policy.name],
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=backends)),
                **common_role_args,  # type: ignore[arg-type]
            )
            granted[pod.role_key] = [policy, role]
        self.redis_access = [
            redis_secret,
            acl_secret,
            user_secrets[names.REDIS_EXPORTER_USER],
            *granted[names.REDIS_VAULT_ROLE],
        ]
        self.zitadel_access = [
            user_secrets[names.REDIS_ZITADEL_USER],
            masterkey_secret,
            *database_secrets,
            *granted[names.ZITADEL_VAULT_ROLE],
        ]
        #: The event relay's policy and role (empty when the relay is off); its token secret is the relay's own.
        self.relay_access: list[pulumi.Resource] = (
            [user_secrets[names.REDIS_RELAY_USER], *granted[names.RELAY_VAULT_ROLE]]
            if names.RELAY_VAULT_ROLE in granted
            else []
        )
        # Product workers' own Kubernetes-auth roles attach this policy to read the consumer user's password.
        if names.REDIS_CONSUMER_USER in args.redis_users:
            vault.Policy(
                "event-consumer-read",
                name=vault_names.consumer_policy,
                policy=read_policy([vault_names.redis_user_path(names.REDIS_CONSUMER_USER)]),
                opts=child,
            )
        #: The KV v2 mount (an output of the mount resource when this stack creates it).
        self.kv_mount = mount
        self.register_outputs(
            {
                "paths": {
                    "redis": vault_names.redis_path,
                    "redisAcl": vault_names.redis_acl_path,
                    **{f"redisUser:{user}": vault_names.redis_user_path(user) for user in args.redis_users},
                    "masterkey": vault_names.masterkey_path,
                    "database": vault_names.database_path,
                },
                "roles": [pod.role for pod in args.pods],
            }
        )

    def _kv_secret(
        self,
        mount: pulumi.Input[str],
        resource_name: str,
        name: str,
        key: str,
        value: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> vault.kv.SecretV2:
        return vault.kv.SecretV2(resource_name, mount=mount, name=name, data_json=_kv_json(key, value), opts=opts)


def _acl_hashes(passwords: Mapping[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """The ``redis-acl`` secret: each user's password hash as its ACL rule takes it, by user name."""
    users = list(passwords)
    return pulumi.Output.secret(
        pulumi.Output.all(*passwords.values()).apply(
            lambda values: json.dumps(
                {
                    redis_acl.hash_key(user): redis_acl.password_sha256(str(value))
                    for user, value in zip(users, values, strict=True)
                }
            )
        )
    )


def _kv_version(metadata: Mapping[str, str] | None) -> str:
    """The ``version`` of a KV v2 secret's metadata, as the provider reads it back after each write."""
    if not metadata or "version" not in metadata:
        raise ValueError("the Vault provider returned no KV version for the secret: is disable_read set?")
    return str(metadata["version"])
