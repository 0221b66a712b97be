"""Names fixed by the design: each is defined here once and imported everywhere else.

A release name, namespace, Service, Vault path or role that appears anywhere in the program, its plan,
its tests or its outputs comes from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from stacks.config import StackConfig

#: The Pulumi project, and so the namespace of every stack config key (``blinkchamber-identity:redis``).
PROJECT: Final = "blinkchamber-identity"
#: The stack whose release train a release writes (``stacktools/release.py``): it deploys a release first, and
#: promotion carries it on to the others.
TRAIN_STACK: Final = "dev"
#: The Pulumi type of a Helm release (``kubernetes.helm.v3.Release``): how the plan, its diff and the policy pack
#: pick the releases out of a stack's resources.
HELM_RELEASE_TYPE: Final = "kubernetes:helm.sh/v3:Release"
#: The type tokens of the program's components begin so (``component_type``); a token is part of the URN of every
#: resource under its component, so it never changes.
COMPONENT_TYPE_PREFIX: Final = "blinkchamber:identity:"
#: Other Pulumi types the offline runner, the plan's replacement table and the policy pack single out.
RANDOM_PASSWORD_TYPE: Final = "random:index/randomPassword:RandomPassword"
VAULT_KV_SECRET_TYPE: Final = "vault:kv/secretV2:SecretV2"
VAULT_POLICY_TYPE: Final = "vault:index/policy:Policy"
KUBERNETES_SECRET_TYPE: Final = "kubernetes:core/v1:Secret"
KUBERNETES_NAMESPACE_TYPE: Final = "kubernetes:core/v1:Namespace"

#: Config keys that may only hold Pulumi secrets (``pulumi config set --secret``): the Vault provider's token, the
#: external Postgres DSN, an existing ZITADEL's admin machine key.
VAULT_TOKEN_KEY: Final = "vaultToken"
POSTGRES_DSN_KEY: Final = "postgresDsn"
ZITADEL_ADMIN_KEY_KEY: Final = "zitadelAdminKey"

#: Pod Security admission on the stack's namespaces: the label prefix, its modes (``enforce`` rejects a violating
#: pod, ``audit`` and ``warn`` report it) and the level every mode is held to.
POD_SECURITY_PREFIX: Final = "pod-security.kubernetes.io/"
POD_SECURITY_MODES: Final = ("enforce", "audit", "warn")
POD_SECURITY_LEVEL: Final = "restricted"

# --- Redis (Bitnami chart) -------------------------------------------------------------------------------------------
#: The chart's name: its pods' ``app.kubernetes.io/name`` label.
REDIS_CHART_NAME: Final = "redis"
#: Where the Bitnami images are; the chart calls an image from any other registry "relocated".
BITNAMI_REGISTRY: Final = "docker.io"
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

#: The chart's StatefulSet (``<fullname>-node``) and the headless Service that names each pod, so each Sentinel.
REDIS_NODE_STATEFULSET: Final = f"{REDIS_FULLNAME}-node"
REDIS_HEADLESS_SERVICE: Final = f"{REDIS_FULLNAME}-headless"

#: Annotations on every Redis object that record the DB layout for operators (``kubectl describe``): the events DB,
#: ZITADEL's cache block ("3-9"). Nothing reads them back: the policy pack takes the layout from the stack's config.
EVENTS_DB_ANNOTATION: Final = "blinkchamber.io/events-db"
CACHE_BLOCK_ANNOTATION: Final = "blinkchamber.io/zitadel-cache-dbs"

# --- ZITADEL chart --------------------------------------------------------------------------------------------------
#: The chart's name: its pods' ``app.kubernetes.io/name`` label.
ZITADEL_CHART_NAME: Final = "zitadel"
ZITADEL_RELEASE: Final = "zitadel"
#: The chart's fullname: the release name itself, because it contains "zitadel".
ZITADEL_FULLNAME: Final = ZITADEL_RELEASE
#: One ServiceAccount (a hook resource) serves the Deployment and the init/setup jobs.
ZITADEL_SERVICE_ACCOUNT: Final = ZITADEL_FULLNAME
#: The key the chart's ``masterkeySecretName`` Secret must have (its setup job's ``ZITADEL_MASTERKEY`` env).
ZITADEL_MASTERKEY_KEY: Final = "masterkey"
#: The Pulumi name of the masterkey's generated value (a ``RandomPassword``).
MASTERKEY_PASSWORD_RESOURCE: Final = "zitadel-masterkey"
#: A Secret holding no secret: the chart mounts it at /zitadel-secret-config-yaml, and ``configSecretKey`` walks
#: out of that mount point to the Vault-rendered file (``--config /zitadel-secret-config-yaml/../vault/...``). It is
#: also the chart's ``masterkeySecretName``, with a placeholder that is not a masterkey: ZITADEL reads the real one
#: from the Vault agent's file (``--masterkeyFile``).
ZITADEL_CONFIG_ANCHOR_SECRET: Final = "zitadel-vault-config-anchor"
#: The Helm post-renderer of the ZITADEL release (``components/zitadel_postrender.py``), relative to the project
#: directory, where Pulumi starts the Kubernetes provider that runs it.
ZITADEL_POSTRENDERER: Final = "bin/zitadel-postrender"
#: The bundled (dev) Postgres: Bitnami subchart ``<release>-postgresql`` reading its passwords from this Secret.
ZITADEL_POSTGRES_HOST: Final = f"{ZITADEL_RELEASE}-postgresql"
ZITADEL_POSTGRES_AUTH_SECRET: Final = "zitadel-postgresql-auth"
ZITADEL_POSTGRES_DATABASE: Final = "zitadel"
ZITADEL_POSTGRES_PORT: Final = 5432
#: ``CLIENT SETNAME`` of ZITADEL's cache connector: ``CLIENT LIST`` on a Redis node shows who is connected.
ZITADEL_REDIS_CLIENT_NAME: Final = "zitadel"
#: The chart's Services: the API (h2c, REST and gRPC on one port) and the login UI.
ZITADEL_SERVICE: Final = ZITADEL_FULLNAME
ZITADEL_SERVICE_PORT: Final = 8080
ZITADEL_LOGIN_FULLNAME: Final = f"{ZITADEL_FULLNAME}-login"
#: The Gateway API routes the chart renders (``gateway.httpRoute``, ``gateway.grpcRoute``, ``login.gateway``).
ZITADEL_HTTP_ROUTE: Final = ZITADEL_FULLNAME
ZITADEL_GRPC_ROUTE: Final = f"{ZITADEL_FULLNAME}-grpc"
ZITADEL_LOGIN_ROUTE: Final = ZITADEL_LOGIN_FULLNAME
#: ZITADEL reads request headers with this prefix (``x-zitadel-orgid``, ``x-zitadel-public-host``, ...).
ZITADEL_HEADER_PREFIX: Final = "x-zitadel-"

# --- Edge (Envoy Gateway) ---------------------------------------------------------------------------------------------
#: The chart's name: its controller's ``app.kubernetes.io/name`` label.
EDGE_CHART_NAME: Final = "gateway-helm"
EDGE_RELEASE: Final = "eg"
#: Fixed in the chart's templates: the controller's Deployment, Service and pod label.
EDGE_CONTROLLER: Final = "envoy-gateway"
#: The controller name Envoy Gateway claims GatewayClasses with (the chart's ``config.envoyGateway.gateway``).
EDGE_CONTROLLER_NAME: Final = "gateway.envoyproxy.io/gatewayclass-controller"
EDGE_GATEWAY_CLASS: Final = "envoy-gateway"
#: The EnvoyProxy (data plane settings), the Gateway, and the policies on them.
EDGE_PROXY_CONFIG: Final = "identity-edge"
EDGE_GATEWAY: Final = "identity-edge"
EDGE_CLIENT_TRAFFIC_POLICY: Final = "identity-edge-clients"
EDGE_RATE_LIMIT_POLICY: Final = "zitadel-rate-limits"
EDGE_JWT_POLICY: Final = "zitadel-jwt-claims"
#: The EnvoyPatchPolicy that keys per-client-IP buckets on a client's network (``edge.rateLimit.ipv6PrefixLength``).
EDGE_CLIENT_NETWORK_PATCH: Final = "identity-edge-client-networks"
#: The ratelimit Deployment Envoy Gateway runs (``internal/infrastructure/kubernetes/ratelimit``).
EDGE_RATE_LIMIT_DEPLOYMENT: Final = "envoy-ratelimit"
#: The ratelimit pods' Redis credentials, ``user:password`` (they read them only from their environment).
RATE_LIMIT_REDIS_SECRET: Final = "ratelimit-redis"
RATE_LIMIT_REDIS_SECRET_KEY: Final = "auth"
#: On the ratelimit pods: a digest of that password, so that a rotation rolls them.
RATE_LIMIT_PASSWORD_DIGEST_ANNOTATION: Final = "blinkchamber.io/redis-password-sha256"
#: The request headers the gateway copies ZITADEL JWT claims into (``edge.jwt.claimHeaders``): the token's user
#: (``sub``) and organization; the default rate-limit rules key on them.
RATE_LIMIT_SUB_HEADER: Final = "x-rl-sub"
RATE_LIMIT_ORG_HEADER: Final = "x-rl-org"

#: The Secret the chart's setup job writes with the first instance's admin machine key (``FirstInstance.Org.Machine``
#: defaults in the chart's values.yaml: user ``iam-admin``, key file ``iam-admin.json``, role IAM_OWNER). Its PAT
#: Secret (``iam-admin-pat``) is never written: the stack removes ``FirstInstance.Org.Machine.Pat``.
ZITADEL_ADMIN_SECRET: Final = "iam-admin"
ZITADEL_ADMIN_SECRET_KEY: Final = "iam-admin.json"

# --- Event relay (the bridge from ZITADEL's Event API into the events DB) ------------------------------------------
#: Deployment, ServiceAccount, Service, ConfigMap, PDB and NetworkPolicy of the bridge, in ZITADEL's namespace.
RELAY_NAME: Final = "event-relay"
RELAY_SERVICE_ACCOUNT: Final = RELAY_NAME
RELAY_METRICS_PORT: Final = 9090
RELAY_CONFIG_DIR: Final = "/etc/event-relay"
RELAY_CONFIG_FILE: Final = "relay.json"
#: The bridge's ZITADEL machine user and its only role (``events.read``; cmd/defaults.yaml InternalAuthZ).
RELAY_MACHINE_USER: Final = "event-relay"
RELAY_ZITADEL_ROLE: Final = "IAM_OWNER_VIEWER"
#: On the bridge's pod template: a digest of ``relay.json``, so that a new configuration rolls the pods.
RELAY_CONFIG_DIGEST_ANNOTATION: Final = "blinkchamber.io/relay-config-sha256"

# --- Observability (Prometheus Operator objects, Grafana dashboards) -------------------------------------------------
#: ZITADEL's metrics (the chart's ServiceMonitor scrapes the same): on its API port, the Service's port name.
ZITADEL_METRICS_PATH: Final = "/debug/metrics"
ZITADEL_SERVICE_PORT_NAME: Final = "http2-server"
#: The Envoy proxies' PodMonitor (the ratelimit pods' takes the Deployment's name, ``EDGE_RATE_LIMIT_DEPLOYMENT``).
EDGE_PROXY_MONITOR: Final = "identity-edge-proxies"
#: The alert rules of the tier (one PrometheusRule, in Prometheus's namespace) and the dashboards' ConfigMap.
PROMETHEUS_RULE: Final = "identity-tier"
DASHBOARDS_CONFIG_MAP: Final = "identity-tier-dashboards"
#: The network policies that admit the configured Prometheus, each to one kind of pod's metrics port.
PROMETHEUS_POLICY_PREFIX: Final = "prometheus-to-"

# --- Vault ---------------------------------------------------------------------------------------------------------
VAULT_SECRETS_DIR: Final = "/vault/secrets"
#: The Vault Agent Injector's annotation prefix (vault-k8s): every annotation it reads on a pod starts with it.
VAULT_INJECT_PREFIX: Final = "vault.hashicorp.com/"
REDIS_VAULT_ROLE: Final = "redis-role"
ZITADEL_VAULT_ROLE: Final = "zitadel-role"
REDIS_VAULT_POLICY: Final = "redis-read"
ZITADEL_VAULT_POLICY: Final = "zitadel-read"
RELAY_VAULT_ROLE: Final = "event-relay-role"
RELAY_VAULT_POLICY: Final = "event-relay-read"
#: The bridge's personal access token in the KV mount, and the injector file it reads it from.
RELAY_SECRET_NAME: Final = "event-relay"
RELAY_SECRET_KEY: Final = "pat"
RELAY_PAT_INJECT_NAME: Final = "zitadel-pat"
#: KV v2 secret names (inside the stack's KV mount) and the key that holds the value.
REDIS_SECRET_NAME: Final = "redis"
REDIS_SECRET_KEY: Final = "password"
ZITADEL_SECRET_NAME: Final = "zitadel"
ZITADEL_MASTERKEY_VAULT_KEY: Final = "masterkey"
DATABASE_SECRET_NAME: Final = "zitadel-database"
DATABASE_SECRET_KEY: Final = "dsn"
#: Redis ACL users (components/redis_acl.py has their rules): one per client, each with its own generated password in
#: the KV folder ``redis-users/<user>`` (key ``password``). ``default`` keeps the password at ``redis`` and is the
#: chart's own (replication, the sentinels, probes); no client logs in with it.
REDIS_DEFAULT_USER: Final = "default"
REDIS_ZITADEL_USER: Final = "zitadel"
REDIS_RELAY_USER: Final = "event-relay"
REDIS_RATE_LIMIT_USER: Final = "ratelimit"
REDIS_EXPORTER_USER: Final = "exporter"
REDIS_CONSUMER_USER: Final = "event-consumer"
#: Every client user, each with a password of its own.
REDIS_CLIENT_USERS: Final = (
    REDIS_ZITADEL_USER,
    REDIS_RELAY_USER,
    REDIS_RATE_LIMIT_USER,
    REDIS_EXPORTER_USER,
    REDIS_CONSUMER_USER,
)
REDIS_USERS_SECRET_FOLDER: Final = "redis-users"
#: The SHA-256 of every Redis user's password (key: the user name), the only thing the Redis pods read of them.
REDIS_ACL_SECRET_NAME: Final = "redis-acl"
#: The injector files the Redis pods load: the ACL file of redis-server and the sentinels' client users.
REDIS_ACL_INJECT_NAME: Final = "redis-users.acl"
SENTINEL_ACL_INJECT_NAME: Final = "sentinel-users.conf"
#: The exporter sidecar's password, as redis_exporter's password file takes it (JSON: address → password).
REDIS_EXPORTER_INJECT_NAME: Final = "redis-exporter.json"
#: Where the chart's exporter sidecar scrapes (redis_exporter's default ``REDIS_ADDR``; the chart sets it only with
#: TLS), and the same address with the user in it, as redis_exporter 1.76 looks the password file up.
REDIS_EXPORTER_ADDRESSES: Final = ("redis://localhost:6379", "redis://exporter@localhost:6379")
#: On the Redis pod template: the KV version of the hashes, so that a rotated client password rolls Redis.
REDIS_ACL_VERSION_ANNOTATION: Final = "blinkchamber.io/redis-acl-version"
#: The consumers' policy: product workers' Kubernetes-auth roles attach it to read the consumer user's password.
CONSUMER_VAULT_POLICY: Final = "event-consumer-read"
#: Key prefixes in the events DB: the bridge's cursor, lease and dedup records; the consumers' dedup records.
RELAY_KEY_PREFIX: Final = "relay:"
CONSUMER_KEY_PREFIX: Final = "consumer:"
#: Injector secret names; the injector lower-cases them into the file name under /vault/secrets.
REDIS_INJECT_NAME: Final = "redis-password"
ZITADEL_INJECT_NAME: Final = "zitadel-secrets"
ZITADEL_SECRETS_FILE: Final = "zitadel-secrets.yaml"
#: ZITADEL's masterkey, exactly its 32 bytes (``--masterkeyFile``): the server's and the setup job's pods.
ZITADEL_MASTERKEY_INJECT_NAME: Final = "zitadel-masterkey"
#: The setup job's own ``--steps`` file: the first instance's admin key expiry, dated when the job starts.
ZITADEL_FIRST_INSTANCE_INJECT_NAME: Final = "zitadel-first-instance"
ZITADEL_FIRST_INSTANCE_FILE: Final = "zitadel-first-instance.yaml"
#: On the pod templates of everything that reads the Redis password: the KV version of that secret (never the
#: value), so that a new password rolls Redis and its clients.
REDIS_PASSWORD_VERSION_ANNOTATION: Final = "blinkchamber.io/redis-password-version"
#: GitHub Actions' OIDC issuer: the JWT auth backend the workflows log in with trusts the tokens it signs.
GITHUB_OIDC_ISSUER: Final = "https://token.actions.githubusercontent.com"
#: The workflows' identity in a stack's Vault: a JWT role and the policy it grants (``python -m stacktools.ci``).
CI_VAULT_ROLE: Final = "ci-deploy"
CI_VAULT_POLICY: Final = "ci-deploy"
#: The previews' read-only identity: a JWT role and its policy.
CI_PREVIEW_ROLE: Final = "ci-preview"
CI_PREVIEW_POLICY: Final = "ci-preview"


@dataclass(frozen=True)
class VaultNames:
    """Every name a stack gives an object in Vault: policies, roles, KV paths, and the backends they live in.

    ``vault.namePrefix`` scopes them to the stack, so that two stacks can share one Vault: ``dev`` makes the roles
    and policies ``dev-redis-role``, ``dev-redis-read`` and the secrets ``<kvMount>/data/dev/redis``. Without a
    prefix they are the plain names (one environment per Vault). The KV mount and the auth backends are shared by the
    stacks of one Vault and keep their configured paths. Policies, roles, injector annotations, the workflows' login
    and the cross-stack rule all read their names here.
    """

    prefix: str
    kv_mount: str
    kubernetes_auth_path: str
    ci_auth_path: str
    #: The Postgres DSN's secret when it is maintained outside the stack (``zitadel.database.dsnVaultSecret``, not
    #: prefixed: the database team names it), with its key; ``None`` when the stack writes the DSN itself.
    external_database: tuple[str, str] | None = None

    @staticmethod
    def of(cfg: StackConfig) -> VaultNames:
        v, db = cfg.vault, cfg.zitadel.database
        external = (db.dsn_vault_secret, db.dsn_vault_key) if db.mode == "external" and db.dsn_vault_secret else None
        return VaultNames(v.name_prefix, v.kv_mount, v.kubernetes_auth_path, v.ci.auth_path, external)

    def scoped(self, name: str) -> str:
        """A policy or role name of this stack."""
        return f"{self.prefix}-{name}" if self.prefix else name

    def secret(self, name: str) -> str:
        """A KV secret name of this stack (a folder per stack inside the shared mount)."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def kv_path(self, secret: str) -> str:
        """The KV v2 API path of one of the names below (``secret/data/dev/redis``)."""
        return kv2_api_path(self.kv_mount, secret)

    def subkeys_path(self, secret: str) -> str:
        """The KV v2 path that lists a secret's keys, never its values (``secret/subkeys/zitadel-database``)."""
        return f"{self.kv_mount}/subkeys/{secret}"

    def metadata_path(self, secret: str) -> str:
        """The KV v2 path of a secret's metadata: its versions, never its values (``secret/metadata/redis``)."""
        return f"{self.kv_mount}/metadata/{secret}"

    def kubernetes_role_path(self, role: str) -> str:
        """The API path of a role of the Kubernetes auth backend (``auth/kubernetes/role/dev-redis-role``)."""
        return f"auth/{self.kubernetes_auth_path}/role/{role}"

    def ci_role_path(self, role: str) -> str:
        """The API path of a role of the workflows' JWT auth backend (``auth/github-actions/role/dev-ci-deploy``)."""
        return f"auth/{self.ci_auth_path}/role/{role}"

    @staticmethod
    def policy_path(policy: str) -> str:
        """The API path of an ACL policy (``sys/policies/acl/dev-redis-read``)."""
        return f"sys/policies/acl/{policy}"

    @property
    def redis_role(self) -> str:
        return self.scoped(REDIS_VAULT_ROLE)

    @property
    def zitadel_role(self) -> str:
        return self.scoped(ZITADEL_VAULT_ROLE)

    @property
    def relay_role(self) -> str:
        return self.scoped(RELAY_VAULT_ROLE)

    @property
    def ci_role(self) -> str:
        return self.scoped(CI_VAULT_ROLE)

    @property
    def ci_preview_role(self) -> str:
        return self.scoped(CI_PREVIEW_ROLE)

    @property
    def redis_policy(self) -> str:
        return self.scoped(REDIS_VAULT_POLICY)

    @property
    def zitadel_policy(self) -> str:
        return self.scoped(ZITADEL_VAULT_POLICY)

    @property
    def relay_policy(self) -> str:
        return self.scoped(RELAY_VAULT_POLICY)

    @property
    def consumer_policy(self) -> str:
        return self.scoped(CONSUMER_VAULT_POLICY)

    @property
    def ci_policy(self) -> str:
        return self.scoped(CI_VAULT_POLICY)

    @property
    def ci_preview_policy(self) -> str:
        return self.scoped(CI_PREVIEW_POLICY)

    @property
    def redis_secret(self) -> str:
        return self.secret(REDIS_SECRET_NAME)

    @property
    def masterkey_secret(self) -> str:
        return self.secret(ZITADEL_SECRET_NAME)

    @property
    def relay_secret(self) -> str:
        return self.secret(RELAY_SECRET_NAME)

    @property
    def redis_acl_secret(self) -> str:
        return self.secret(REDIS_ACL_SECRET_NAME)

    def redis_user_secret(self, user: str) -> str:
        """A Redis client user's password (``redis-users/zitadel``)."""
        return self.secret(f"{REDIS_USERS_SECRET_FOLDER}/{user}")

    @property
    def database_secret(self) -> str:
        """Where ZITADEL's DSN is read: the external secret, else the one the stack writes."""
        return self.external_database[0] if self.external_database else self.secret(DATABASE_SECRET_NAME)

    @property
    def database_key(self) -> str:
        return self.external_database[1] if self.external_database else DATABASE_SECRET_KEY

    # The KV v2 API paths each consumer reads, as the policies and the injector templates name them.

    @property
    def redis_path(self) -> str:
        return self.kv_path(self.redis_secret)

    @property
    def masterkey_path(self) -> str:
        return self.kv_path(self.masterkey_secret)

    @property
    def database_path(self) -> str:
        return self.kv_path(self.database_secret)

    @property
    def redis_acl_path(self) -> str:
        return self.kv_path(self.redis_acl_secret)

    def redis_user_path(self, user: str) -> str:
        return self.kv_path(self.redis_user_secret(user))

    @property
    def relay_token_path(self) -> str:
        """The event relay's ZITADEL personal access token."""
        return self.kv_path(self.relay_secret)

    def owned(self) -> frozenset[str]:
        """The API path of every object this stack may write and delete: what no other stack on its Vault may use."""
        roles = (self.redis_role, self.zitadel_role, self.relay_role)
        policies = (
            self.redis_policy,
            self.zitadel_policy,
            self.relay_policy,
            self.consumer_policy,
            self.ci_policy,
            self.ci_preview_policy,
        )
        secrets = (
            self.redis_secret,
            self.redis_acl_secret,
            *(self.redis_user_secret(user) for user in REDIS_CLIENT_USERS),
            self.masterkey_secret,
            self.relay_secret,
            self.secret(DATABASE_SECRET_NAME),
        )
        return frozenset(
            [self.kubernetes_role_path(role) for role in roles]
            + [self.ci_role_path(role) for role in (self.ci_role, self.ci_preview_role)]
            + [self.policy_path(policy) for policy in policies]
            + [self.kv_path(secret) for secret in secrets]
        )


def kv2_api_path(mount: str, name: str) -> str:
    """The API path of a KV v2 secret: what policies and injector templates name (``secret/data/redis``)."""
    return f"{mount}/data/{name}"


def component_type(name: str) -> str:
    """The Pulumi type token of one of the program's components (``blinkchamber:identity:RedisSentinel``)."""
    return f"{COMPONENT_TYPE_PREFIX}{name}"


def service_host(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def redis_master_address(cluster_domain: str) -> str:
    """``host:port`` of the Service that follows the Sentinel-elected master (what ZITADEL connects to)."""
    return f"{service_host(REDIS_MASTER_SERVICE, REDIS_NAMESPACE, cluster_domain)}:{REDIS_PORT}"


def sentinel_address(cluster_domain: str) -> str:
    """``host:port`` of the sentinels, for clients that speak Sentinel."""
    return f"{service_host(REDIS_SERVICE, REDIS_NAMESPACE, cluster_domain)}:{SENTINEL_PORT}"


def sentinel_addresses(cluster_domain: str, nodes: int) -> list[str]:
    """``host:port`` of every Sentinel of the Redis release: one per node pod, through the headless Service."""
    return [
        f"{REDIS_NODE_STATEFULSET}-{index}.{service_host(REDIS_HEADLESS_SERVICE, REDIS_NAMESPACE, cluster_domain)}"
        f":{SENTINEL_PORT}"
        for index in range(nodes)
    ]
