"""ZITADEL: the chart as a Helm release, its caches on Redis, its secrets rendered by the Vault agent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import pulumi
import pulumi_kubernetes as k8s

from components.helm import chart_args
from components.vault import VaultAccess, VaultPaths, database_dsn_key
from components.vault_texts import InjectedFile, injector_annotations
from stacks import dblayout, names
from stacks.config import Image, StackConfig


@dataclass(frozen=True)
class VaultValue:
    """A leaf of ZITADEL's configuration that the Vault agent fills in from a KV v2 secret."""

    path: str
    key: str

    def template(self) -> str:
        # toJSON quotes and escapes the value, which makes it a valid YAML scalar whatever it holds.
        return f'{{{{ with secret "{self.path}" }}}}{{{{ .Data.data.{self.key} | toJSON }}}}{{{{ end }}}}'


Fragment = Mapping[str, Union["Fragment", VaultValue]]


def secrets_fragment(cfg: StackConfig) -> dict[str, Any]:
    """The ZITADEL configuration that only the Vault agent sees: the Redis password and the Postgres DSN."""
    paths = VaultPaths.of(cfg)
    return {
        "Caches": {"Connectors": {"Redis": {"Password": VaultValue(paths.redis, names.REDIS_SECRET_KEY)}}},
        "Database": {"Postgres": {"DSN": VaultValue(paths.database, database_dsn_key(cfg))}},
    }


def render_fragment_template(fragment: Fragment, indent: int = 0) -> str:
    """The fragment as a consul-template body that renders to YAML."""
    lines = []
    for key, value in fragment.items():
        pad = "  " * indent
        if isinstance(value, VaultValue):
            lines.append(f"{pad}{key}: {value.template()}\n")
        else:
            lines.append(f"{pad}{key}:\n{render_fragment_template(value, indent + 1)}")
    return "".join(lines)


def zitadel_secrets_file(cfg: StackConfig) -> InjectedFile:
    paths = VaultPaths.of(cfg)
    return InjectedFile(
        name=names.ZITADEL_INJECT_NAME,
        # The injector needs one path per file; the template itself reads each path it names.
        vault_path=paths.redis,
        template=render_fragment_template(secrets_fragment(cfg)),
        file=names.ZITADEL_SECRETS_FILE,
    )


def cache_config(cfg: StackConfig) -> dict[str, Any]:
    """``Caches``: the Redis connector on the master Service, and the caches that use it."""
    cache = cfg.zitadel.cache
    pool = cache.pool
    connector = {
        "Enabled": True,
        # ZITADEL's client takes one address and cannot speak Sentinel: the Service that follows the master.
        "Addr": names.redis_master_address(cfg.kubernetes.cluster_domain),
        "DBOffset": cfg.db_layout.cache_db_offset,
        "PoolSize": pool.pool_size,
        "MaxRetries": pool.max_retries,
        "DialTimeout": pool.dial_timeout,
        "ReadTimeout": pool.read_timeout,
        "WriteTimeout": pool.write_timeout,
        "PoolTimeout": pool.pool_timeout,
        "ConnMaxIdleTime": pool.idle_timeout,
        "ConnMaxLifetime": pool.max_conn_age,
    }
    caches: dict[str, Any] = {"Connectors": {"Redis": connector}}
    # Enabling the connector alone caches nothing: each cache must name it.
    for name in dblayout.REDIS_CACHES:
        caches[name] = {"Connector": "redis", "MaxAge": cache.max_age, "LastUseAge": cache.last_use_age}
    return caches


def configmap_config(cfg: StackConfig) -> dict[str, Any]:
    z = cfg.zitadel
    config: dict[str, Any] = {
        "ExternalDomain": z.external_domain,
        "ExternalPort": z.external_port,
        "ExternalSecure": z.external_secure,
        # TLS ends at the ingress; ZITADEL itself serves h2c inside the cluster.
        "TLS": {"Enabled": False},
        "Caches": cache_config(cfg),
    }
    if z.database.mode == "bundled":
        # A Host here stops the chart from injecting its own DSN env (with the subchart's default password), which
        # would override the Vault-rendered DSN. The DSN wins over these discrete fields inside ZITADEL.
        config["Database"] = {
            "Postgres": {
                "Host": names.ZITADEL_POSTGRES_HOST,
                "Port": names.ZITADEL_POSTGRES_PORT,
                "Database": names.ZITADEL_POSTGRES_DATABASE,
            }
        }
    return config


def _image(image: Image) -> dict[str, str]:
    return {"repository": f"{image.registry}/{image.repository}", "tag": image.tag}


def _ingress(cfg: StackConfig, path: str) -> dict[str, Any]:
    ingress = cfg.zitadel.ingress
    values: dict[str, Any] = {
        "enabled": ingress.enabled,
        "className": ingress.class_name,
        "hosts": [{"paths": [{"path": path, "pathType": "Prefix"}]}],
    }
    if ingress.tls_secret_name:
        values["tls"] = [{"secretName": ingress.tls_secret_name, "hosts": [cfg.zitadel.external_domain]}]
    return values


def zitadel_values(cfg: StackConfig) -> dict[str, Any]:
    """The ZITADEL chart values of a stack. No secret: they arrive through Vault and Kubernetes Secrets."""
    z = cfg.zitadel
    vault_annotations = injector_annotations(
        role=names.ZITADEL_VAULT_ROLE,
        auth_path=cfg.vault.kubernetes_auth_path,
        files=[zitadel_secrets_file(cfg)],
    )
    jobs = {"podAnnotations": vault_annotations, "resources": z.resources.jobs.as_k8s()}
    bundled = z.database.mode == "bundled"
    return {
        "replicaCount": z.replicas,
        "image": _image(z.image),
        "zitadel": {
            "masterkeySecretName": names.ZITADEL_MASTERKEY_SECRET,
            # The chart mounts this Secret at /zitadel-secret-config-yaml and passes
            # --config <mount>/<key>: the key walks out of the mount to the Vault agent's file.
            "configSecretName": names.ZITADEL_CONFIG_ANCHOR_SECRET,
            "configSecretKey": f"..{names.VAULT_SECRETS_DIR}/{names.ZITADEL_SECRETS_FILE}",
            "configmapConfig": configmap_config(cfg),
        },
        # Deployment pods; the init job needs the DSN, and the setup job also starts the cache connectors.
        "podAnnotations": vault_annotations,
        "initJob": jobs,
        "setupJob": jobs,
        "resources": z.resources.zitadel.as_k8s(),
        "ingress": _ingress(cfg, "/"),
        "pdb": {"enabled": z.replicas > 1, "minAvailable": 1} if z.replicas > 1 else {"enabled": False},
        "login": {
            "image": _image(z.login_image),
            "replicaCount": z.replicas,
            "resources": z.resources.login.as_k8s(),
            "ingress": _ingress(cfg, "/ui/v2/login"),
        },
        "postgresql": {
            "enabled": bundled,
            "auth": {
                # Passwords come from a Pulumi-made Secret; no password in these values.
                "existingSecret": names.ZITADEL_POSTGRES_AUTH_SECRET,
                "password": "",
                "postgresPassword": "",
                "database": names.ZITADEL_POSTGRES_DATABASE,
            },
            "image": {"registry": "docker.io", "repository": "bitnamilegacy/postgresql"},
            "primary": {"persistence": {"enabled": z.database.bundled_persistence}},
        },
    }


class Zitadel(pulumi.ComponentResource):
    """Namespace, the Kubernetes Secrets the chart needs, and the ZITADEL Helm release."""

    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        *,
        vault_access: VaultAccess,
        redis: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("blinkchamber:identity:Zitadel", name, None, opts)
        z = cfg.zitadel
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            z.namespace, metadata=k8s.meta.v1.ObjectMetaArgs(name=z.namespace), opts=child
        )

        def secret(
            resource_name: str, data: Mapping[str, pulumi.Input[str]], protect: bool = False
        ) -> k8s.core.v1.Secret:
            return k8s.core.v1.Secret(
                resource_name,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=resource_name, namespace=namespace.metadata.name),
                string_data=data,
                opts=pulumi.ResourceOptions(parent=self, protect=protect),
            )

        secrets = [
            secret(
                names.ZITADEL_MASTERKEY_SECRET,
                {names.ZITADEL_MASTERKEY_KEY: vault_access.masterkey},
                protect=z.protect_masterkey,
            ),
            secret(
                names.ZITADEL_CONFIG_ANCHOR_SECRET,
                {"README": f"Mount point only: ZITADEL reads {names.VAULT_SECRETS_DIR}/{names.ZITADEL_SECRETS_FILE}."},
            ),
        ]
        if vault_access.postgres_passwords is not None:
            admin, app = vault_access.postgres_passwords
            secrets.append(secret(names.ZITADEL_POSTGRES_AUTH_SECRET, {"postgres-password": admin, "password": app}))

        self.release = k8s.helm.v3.Release(
            names.ZITADEL_RELEASE,
            name=names.ZITADEL_RELEASE,
            namespace=namespace.metadata.name,
            values=zitadel_values(cfg),
            atomic=True,
            # The init and setup hook jobs run migrations; give them the chart's own deadline and then some.
            timeout=900,
            **chart_args(cfg.zitadel.chart),
            # The hook jobs log in to Vault at pre-install, and the setup job connects to Redis.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[namespace, *secrets, *vault_access.zitadel_access, *redis]
            ),
        )
        scheme = "https" if z.external_secure else "http"
        default_port = 443 if z.external_secure else 80
        port = "" if z.external_port == default_port else f":{z.external_port}"
        self.url = pulumi.Output.from_input(f"{scheme}://{z.external_domain}{port}")
        self.register_outputs({"url": self.url})
