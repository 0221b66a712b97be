"""ZITADEL: the chart as a Helm release, its caches on Redis, its secrets (masterkey included) rendered by the Vault
agent, and the first instance's owner credentials kept short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Union

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import netpol, ownership
from components.edge_objects import GatewayListener, route_parent_refs
from components.helm import chart_args, image_values
from components.isolation import zitadel_network_policies
from components.peers import ClusterNetwork, VaultEndpoint
from components.vault_texts import InjectedFile, injector_annotations, secret_value_template
from components.zitadel_database import BundledPostgres
from stacks import dblayout, names
from stacks.config import ZitadelConfig


@dataclass(frozen=True)
class VaultValue:
    """A leaf of ZITADEL's configuration that the Vault agent fills in from a KV v2 secret."""

    path: str
    key: str

    def template(self) -> str:
        # toJSON quotes and escapes the value, which makes it a valid YAML scalar whatever it holds.
        return f'{{{{ with secret "{self.path}" }}}}{{{{ .Data.data.{self.key} | toJSON }}}}{{{{ end }}}}'


Fragment = Mapping[str, Union["Fragment", VaultValue]]


@dataclass(frozen=True)
class ZitadelArgs:
    """What ZITADEL needs: its own configuration section, the Vault values its agent renders, where Redis and the
    Gateway are."""

    zitadel: ZitadelConfig
    #: The Redis password and the Postgres DSN, as the Vault agent reads them into ZITADEL's configuration.
    redis_password: VaultValue
    database_dsn: VaultValue
    #: The masterkey, which the Vault agent writes alone into a file (``--masterkeyFile``).
    masterkey: VaultValue
    #: The Vault endpoint the pods' agents reach (egress) and the role they log in with.
    vault: VaultEndpoint
    vault_role: str
    #: ``host:port`` of the Service that follows the Sentinel-elected master: ZITADEL's client cannot speak Sentinel.
    redis_master_address: str
    #: How long the cache connector's circuit breaker stays open (about one Sentinel failover).
    breaker_timeout: str
    #: The stack's Gateway listener the chart's routes attach to; its proxies may reach ZITADEL.
    gateway: GatewayListener
    #: The cluster DNS (port 53 is opened to it) and the API server (the setup and cleanup jobs reach it).
    cluster: ClusterNetwork
    namespaces: ownership.NamespacePolicy


#: How long the first instance's admin machine key (user ``iam-admin``, IAM_OWNER) stays valid after the setup job
#: made it: the same ``pulumi up`` creates the relay's identity with it; the copy the chart keeps in the Secret
#: ``iam-admin`` is dead a day later (the chart's default: 2029). A Go duration, for sprig's ``dateModify``.
ADMIN_KEY_LIFETIME: Final = "24h"
#: What the chart's ``masterkeySecretName`` Secret holds, for the setup job's ``ZITADEL_MASTERKEY`` env that the chart
#: hard-codes: not a masterkey (ZITADEL refuses any that is not 32 bytes), and unread (``--masterkeyFromEnv=false``).
MASTERKEY_PLACEHOLDER: Final = "unused: ZITADEL reads its masterkey from the Vault agent's file (--masterkeyFile)"
#: Chart values set to null (Helm then drops the chart's default): the first instance's admin gets no personal
#: access token, so the setup job neither makes one (ZITADEL would print it to the job's log without ``PatPath``)
#: nor writes the Secret ``iam-admin-pat``. Null survives only in a values file (``valueYamlFiles``).
REMOVED_VALUES: Final[dict[str, Any]] = {
    "zitadel": {"configmapConfig": {"FirstInstance": {"Org": {"Machine": {"Pat": None}}}}}
}
#: The chart's default setup arguments (values.yaml ``setupJob.additionalArgs``), which setting the list replaces.
_CHART_SETUP_ARGS: Final = ("--init-projections=true",)
#: The user of the ZITADEL, login and tool images, as the chart runs them.
_ZITADEL_UID = 1000
_RUNTIME_DEFAULT_SECCOMP = {"type": "RuntimeDefault"}
#: The chart's pod-wide default for every pod it renders (server, login, jobs), made Pod Security "restricted".
#: seccomp and runAsNonRoot at pod level also cover the containers the Vault Agent Injector adds.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": _ZITADEL_UID,
    "fsGroup": _ZITADEL_UID,
    "seccompProfile": _RUNTIME_DEFAULT_SECCOMP,
}
#: The chart's default for every container it renders (the login's wait-for-zitadel init container included).
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": _ZITADEL_UID,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": _RUNTIME_DEFAULT_SECCOMP,
}


def secrets_fragment(args: ZitadelArgs) -> dict[str, Any]:
    """The ZITADEL configuration that only the Vault agent sees: its Redis user's password and the Postgres DSN."""
    return {
        "Caches": {"Connectors": {"Redis": {"Password": args.redis_password}}},
        "Database": {"Postgres": {"DSN": args.database_dsn}},
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


def zitadel_secrets_file(args: ZitadelArgs) -> InjectedFile:
    return InjectedFile(
        name=names.ZITADEL_INJECT_NAME,
        # Informational only: the template names every path it reads (since vault-k8s 1.3.0 a template alone
        # declares a file, and the injector uses this path only for its default template).
        vault_path=args.redis_password.path,
        template=render_fragment_template(secrets_fragment(args)),
        file=names.ZITADEL_SECRETS_FILE,
    )


def masterkey_file(args: ZitadelArgs) -> InjectedFile:
    """``/vault/secrets/zitadel-masterkey``: exactly the key's bytes, no newline (ZITADEL reads the file as it is)."""
    return InjectedFile(
        name=names.ZITADEL_MASTERKEY_INJECT_NAME,
        vault_path=args.masterkey.path,
        template=secret_value_template(args.masterkey.path, args.masterkey.key),
    )


def first_instance_template(lifetime: str = ADMIN_KEY_LIFETIME) -> str:
    """The setup job's ``--steps`` file: the admin machine key expires ``lifetime`` after the job's pod started.

    Dated by the agent (sprig's date functions in consul-template) rather than in the chart values, whose date would
    change the ConfigMap, and roll ZITADEL, on every ``pulumi up``. Only the first setup creates the first instance.
    """
    expires = (
        f'{{{{ sprig_dateInZone "2006-01-02T15:04:05Z07:00" (sprig_now | sprig_dateModify "+{lifetime}") "UTC" }}}}'
    )
    return f'FirstInstance:\n  Org:\n    Machine:\n      MachineKey:\n        ExpirationDate: "{expires}"\n'


def first_instance_file() -> InjectedFile:
    return InjectedFile(
        name=names.ZITADEL_FIRST_INSTANCE_INJECT_NAME,
        vault_path=None,
        template=first_instance_template(),
        file=names.ZITADEL_FIRST_INSTANCE_FILE,
    )


def setup_args() -> list[str]:
    """``setupJob.additionalArgs``: after the chart's own ``setup --masterkeyFromEnv --config ... --steps ...``.

    The last value of a flag wins, so ``--masterkeyFromEnv=false`` undoes the chart's and the masterkey comes from
    the agent's file alone (ZITADEL accepts exactly one source); the steps file comes after the chart's and wins.
    """
    return [
        *_CHART_SETUP_ARGS,
        "--masterkeyFromEnv=false",
        "--masterkeyFile",
        f"{names.VAULT_SECRETS_DIR}/{names.ZITADEL_MASTERKEY_INJECT_NAME}",
        "--steps",
        f"{names.VAULT_SECRETS_DIR}/{names.ZITADEL_FIRST_INSTANCE_FILE}",
    ]


def removed_values_yaml() -> str:
    return yaml.safe_dump(REMOVED_VALUES, sort_keys=True)


def cache_config(args: ZitadelArgs) -> dict[str, Any]:
    """``Caches``: the Redis connector on the master Service, its circuit breaker, and the caches that use it."""
    cache = args.zitadel.cache
    pool = cache.pool
    breaker = cache.circuit_breaker
    connector = {
        "Enabled": True,
        # ZITADEL's client takes one address and cannot speak Sentinel: the Service that follows the master.
        "Addr": args.redis_master_address,
        "ClientName": names.ZITADEL_REDIS_CLIENT_NAME,
        # Its own ACL user (components/redis_acl.py); the password comes from the Vault agent's fragment.
        "Username": names.REDIS_ZITADEL_USER,
        "DBOffset": cache.db_offset,
        "PoolSize": pool.pool_size,
        "MaxRetries": pool.max_retries,
        "DialTimeout": pool.dial_timeout,
        "ReadTimeout": pool.read_timeout,
        "WriteTimeout": pool.write_timeout,
        "PoolTimeout": pool.pool_timeout,
        "ConnMaxIdleTime": pool.idle_timeout,
        "ConnMaxLifetime": pool.max_conn_age,
        # Open about as long as a failover takes (ZITADEL's default: 60 s, counting since the pod started).
        "CircuitBreaker": {
            "Interval": breaker.interval,
            "MaxConsecutiveFailures": breaker.max_consecutive_failures,
            "MaxFailureRatio": breaker.max_failure_ratio,
            "Timeout": args.breaker_timeout,
            "MaxRetryRequests": breaker.max_retry_requests,
        },
    }
    caches: dict[str, Any] = {"Connectors": {"Redis": connector}}
    # Enabling the connector alone caches nothing: each cache must name it. The login-state caches are named
    # either way, so the plan shows where they live.
    for name in (*dblayout.REDIS_CACHES, *dblayout.SESSION_CACHES):
        connector_name = "redis" if name in cache.redis_caches else "postgres"
        caches[name] = {"Connector": connector_name, "MaxAge": cache.max_age, "LastUseAge": cache.last_use_age}
    return caches


def configmap_config(args: ZitadelArgs) -> dict[str, Any]:
    z = args.zitadel
    config: dict[str, Any] = {
        "ExternalDomain": z.external_domain,
        "ExternalPort": z.external_port,
        "ExternalSecure": z.external_secure,
        # TLS ends at the gateway; ZITADEL itself serves h2c inside the cluster.
        "TLS": {"Enabled": False},
        "Caches": cache_config(args),
    }
    if z.database.bundled:
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


def _route(gateway: GatewayListener) -> dict[str, Any]:
    """A Gateway API route the chart renders, attached to the stack's Gateway (hostname: ``ExternalDomain``)."""
    return {"enabled": True, "parentRefs": route_parent_refs(gateway)}


def zitadel_values(args: ZitadelArgs, redis_password_version: pulumi.Input[str] | None = None) -> dict[str, Any]:
    """The ZITADEL chart values of a stack. No secret: they arrive through Vault and Kubernetes Secrets.

    ``redis_password_version`` (the KV version of the Redis password) goes on the Deployment's pods, so that a new
    password restarts ZITADEL too; the hook jobs run again on every upgrade anyway.
    """
    z = args.zitadel

    def vault_annotations(*files: InjectedFile) -> dict[str, str]:
        return injector_annotations(
            role=args.vault_role, auth_path=args.vault.auth_path, files=[zitadel_secrets_file(args), *files]
        )

    # The masterkey only where ZITADEL decrypts (the server, the setup job); the init job only creates the database.
    server_annotations = vault_annotations(masterkey_file(args))
    job_resources = z.resources.jobs.as_k8s()
    bundled = z.database.bundled
    return {
        "replicaCount": z.replicas,
        "image": image_values(z.image, registry_apart=False),
        "podSecurityContext": POD_SECURITY_CONTEXT,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "zitadel": {
            # The chart needs a Secret here for its setup job's env; the masterkey itself comes from Vault as a file
            # (setupJob.additionalArgs; the Deployment's args through the release's post-renderer).
            "masterkeySecretName": names.ZITADEL_CONFIG_ANCHOR_SECRET,
            # The chart mounts this Secret at /zitadel-secret-config-yaml and passes
            # --config <mount>/<key>: the key walks out of the mount to the Vault agent's file.
            "configSecretName": names.ZITADEL_CONFIG_ANCHOR_SECRET,
            "configSecretKey": f"..{names.VAULT_SECRETS_DIR}/{names.ZITADEL_SECRETS_FILE}",
            "configmapConfig": configmap_config(args),
        },
        # Deployment pods; the init job needs the DSN, and the setup job also starts the cache connectors.
        "podAnnotations": {
            **server_annotations,
            **(
                {names.REDIS_PASSWORD_VERSION_ANNOTATION: redis_password_version}
                if redis_password_version is not None
                else {}
            ),
        },
        "initJob": {"podAnnotations": vault_annotations(), "resources": job_resources},
        "setupJob": {
            "podAnnotations": vault_annotations(masterkey_file(args), first_instance_file()),
            "resources": job_resources,
            "additionalArgs": setup_args(),
        },
        "cleanupJob": {"resources": z.resources.cleanup.as_k8s()},
        # The login's wait-for-zitadel init container.
        "tools": {"wait4x": {"resources": z.resources.wait_for_zitadel.as_k8s()}},
        "resources": z.resources.zitadel.as_k8s(),
        # The API (REST and gRPC-Web on HTTP, native gRPC); the chart's own paths ("/"). No Ingress.
        "gateway": {"httpRoute": _route(args.gateway), "grpcRoute": _route(args.gateway)},
        "pdb": {"enabled": z.replicas > 1, "minAvailable": 1} if z.replicas > 1 else {"enabled": False},
        "login": {
            "image": image_values(z.login_image, registry_apart=False),
            "replicaCount": z.replicas,
            "resources": z.resources.login.as_k8s(),
            "gateway": {"httpRoute": _route(args.gateway)},
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
            # A Bitnami subchart: the registry apart.
            "image": image_values(z.postgres_image, registry_apart=True),
            "primary": {
                "persistence": {"enabled": z.database.bundled_persistence},
                # Without explicit resources the subchart falls back to its "nano" preset.
                **({"resources": z.resources.postgres.as_k8s()} if bundled and z.resources.postgres else {}),
                # Its own policy admits port 5432 from anywhere; ZITADEL's namespace policies cover it instead.
                "networkPolicy": {"enabled": False},
            },
        },
    }


class Zitadel(pulumi.ComponentResource):
    """Namespace, the Kubernetes Secrets the chart needs, and the ZITADEL Helm release."""

    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: ZitadelArgs,
        *,
        redis_password_version: pulumi.Input[str] | None,
        database_checked: pulumi.Output[str] | None,
        postgres: BundledPostgres | None,
        vault_objects_ready: Sequence[pulumi.Resource],
        redis_ready: Sequence[pulumi.Resource],
        gateway_ready: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``database_checked``: the external DSN's path once Vault has confirmed it (the release waits for it);
        ``postgres``: the bundled Postgres's passwords (dev). ``vault_objects_ready``: ZITADEL's Vault secrets, policy
        and role; ``redis_ready``: the Redis release (the setup job connects to it); ``gateway_ready``: the release that
        installs the Gateway API CRDs of the chart's routes."""
        super().__init__(names.component_type("Zitadel"), name, None, opts)
        z = args.zitadel
        child = pulumi.ResourceOptions(parent=self)
        namespace = ownership.namespace(z.namespace, args.namespaces, parent=self)
        self.namespace = namespace
        # Before the release: its hook jobs already run under them.
        policies = zitadel_network_policies(
            z, gateway_namespace=args.gateway.namespace, vault=args.vault, cluster=args.cluster
        )
        network_policies = netpol.declare(policies, namespace.metadata.name, child)

        def secret(resource_name: str, data: Mapping[str, pulumi.Input[str]]) -> k8s.core.v1.Secret:
            return k8s.core.v1.Secret(
                resource_name,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=resource_name, namespace=namespace.metadata.name),
                string_data=data,
                opts=child,
            )

        secrets = [
            # No secret in it: the masterkey is in Vault only, and reaches the pods as the agent's file.
            secret(
                names.ZITADEL_CONFIG_ANCHOR_SECRET,
                {
                    "README": (
                        f"Mount point only: ZITADEL reads {names.VAULT_SECRETS_DIR}/{names.ZITADEL_SECRETS_FILE}, and "
                        f"its masterkey from {names.VAULT_SECRETS_DIR}/{names.ZITADEL_MASTERKEY_INJECT_NAME}."
                    ),
                    names.ZITADEL_MASTERKEY_KEY: MASTERKEY_PLACEHOLDER,
                },
            ),
        ]
        if postgres is not None:
            # The subchart's key names (auth.secretKeys): the superuser's and the application user's passwords.
            passwords = {"postgres-password": postgres.admin_password, "password": postgres.user_password}
            secrets.append(secret(names.ZITADEL_POSTGRES_AUTH_SECRET, passwords))

        self.release = k8s.helm.v3.Release(
            names.ZITADEL_RELEASE,
            name=names.ZITADEL_RELEASE,
            namespace=namespace.metadata.name,
            values=_after(zitadel_values(args, redis_password_version), database_checked),
            # The nulls of REMOVED_VALUES: the provider drops a null from ``values``, not from a values file.
            value_yaml_files=[pulumi.StringAsset(removed_values_yaml())],
            allow_null_values=True,
            # The Deployment's masterkey from the agent's file (components/zitadel_postrender.py).
            postrender=names.ZITADEL_POSTRENDERER,
            # Not atomic: the setup hook migrates the database forward only, so a rollback after a later readiness
            # timeout would run the old image on the new schema. A failure stays in place for the operator (README,
            # "Deploying for real": a failed release).
            atomic=False,
            # The init and setup hook jobs run migrations; give them the chart's own deadline and then some.
            timeout=z.release_timeout_seconds,
            **chart_args(z.chart),
            # The hook jobs log in to Vault at pre-install, and the setup job connects to Redis; the routes need the
            # Gateway API CRDs the gateway release installs.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    namespace,
                    *secrets,
                    *network_policies,
                    *vault_objects_ready,
                    *redis_ready,
                    *gateway_ready,
                ],
            ),
        )
        self.url = pulumi.Output.from_input(z.public_url)
        self.register_outputs({"url": self.url})


def _after(values: dict[str, Any], check: pulumi.Output[str] | None) -> pulumi.Input[dict[str, Any]]:
    """``values``, available only once ``check`` has passed: the release is not created or updated before that."""
    if check is None:
        return values
    return pulumi.Output.all(pulumi.Output.from_input(values), check).apply(lambda both: both[0])
