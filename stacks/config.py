"""The typed stack configuration: every knob of a stack, documented next to its meaning.

A stack file carries only what differs from its environment's defaults (``stacks/defaults.py``). Field names
are camelCase in the stack files (``redis.downAfterMilliseconds``) and snake_case in Python.
Cross-field rules live in ``stacks/rules.py``; they run on the whole model and report every violation at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from stacks import dblayout

Environment = Literal["dev", "prod"]

_GO_DURATION = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


def _go_duration(value: str) -> str:
    if not _GO_DURATION.match(value):
        raise ValueError(f"{value!r} is not a Go duration such as 100ms, 1s, 30m or 1h")
    return value


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float:
    """Seconds in a Go duration (``1m30s`` → 90.0)."""
    sign = -1.0 if value.startswith("-") else 1.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 250m, 512Mi or 1Gi")
    return value


GoDuration = Annotated[str, AfterValidator(_go_duration)]
Quantity = Annotated[str, AfterValidator(_quantity)]
PositiveInt = Annotated[int, Field(gt=0)]
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class Model(BaseModel):
    """Closed (a misspelled key is an error), immutable, camelCase in the stack files."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --- shared building blocks ----------------------------------------------------------------------------------------


class Chart(Model):
    #: Chart reference: an ``oci://`` URL, or the chart name inside ``repository``.
    chart: str
    #: Helm repository URL; empty for an OCI chart.
    repository: str = ""
    #: Exact chart version. Prod refuses ranges, ``latest`` and empty versions.
    version: str


class Image(Model):
    registry: str = "docker.io"
    repository: str
    #: Exact image tag. Prod refuses ``latest`` and empty tags.
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


class ResourceList(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(Model):
    """Requests and limits of one container. Prod requires requests.cpu, requests.memory and limits.memory."""

    requests: ResourceList = ResourceList()
    limits: ResourceList = ResourceList()

    def as_k8s(self) -> dict[str, dict[str, str]]:
        return {
            "requests": self.requests.model_dump(exclude_none=True),
            "limits": self.limits.model_dump(exclude_none=True),
        }


# --- kubernetes & vault --------------------------------------------------------------------------------------------


class KubernetesConfig(Model):
    #: kubeconfig context to deploy into; empty uses the current context.
    context: str | None = None
    #: The cluster's DNS domain, used in every in-cluster address this program writes.
    cluster_domain: str = "cluster.local"


class VaultConfig(Model):
    #: Vault API address for the Pulumi Vault provider (the token comes from ``vaultToken`` or ``VAULT_TOKEN``).
    address: str
    #: True: this stack creates the KV v2 mount and the Kubernetes auth backend (dev). False: they exist (prod).
    manage_backends: bool
    #: KV v2 mount that holds this stack's secrets.
    kv_mount: str = "secret"
    #: Path of the Kubernetes auth backend (``auth/<path>``) the injector logs in with.
    kubernetes_auth_path: str = "kubernetes"
    #: Kubernetes API address Vault uses to review tokens (only when ``manageBackends``).
    kubernetes_host: str = "https://kubernetes.default.svc"
    #: Namespace and port of the Vault server: the Redis network policy opens egress to them for the agent.
    namespace: DnsLabel = "vault"
    port: PositiveInt = 8200
    #: TTL in seconds of the Vault tokens the injector's agents receive.
    token_ttl_seconds: PositiveInt = 3600
    #: Required ``aud`` of pod tokens; empty accepts the default pod token (which does not carry ``vault``).
    audience: str | None = None


# --- redis ---------------------------------------------------------------------------------------------------------


class RedisImages(Model):
    redis: Image
    sentinel: Image
    exporter: Image
    kubectl: Image
    os_shell: Image


class RedisResources(Model):
    redis: Resources
    sentinel: Resources
    metrics: Resources
    kubectl: Resources
    #: The init container that copies the Vault-rendered password into the chart's emptyDir.
    password_copy: Resources


class RedisPersistence(Model):
    #: AOF on a PersistentVolume. Off only with ``redis.allowDataLossOnRestart`` (see DESIGN.md).
    enabled: bool = True
    size: Quantity = "8Gi"
    #: Empty uses the cluster's default StorageClass.
    storage_class: str | None = None
    #: ``everysec`` loses at most about one second of acknowledged writes on a crash; ``always`` none.
    appendfsync: Literal["everysec", "always"] = "everysec"


class RedisConfig(Model):
    chart: Chart
    images: RedisImages
    #: Redis pods (each a master-or-replica plus a sentinel). Prod requires at least 3.
    nodes: PositiveInt = 3
    #: Sentinels that must agree the master is down. Must be a majority of ``nodes``.
    quorum: PositiveInt = 2
    #: ``databases`` of redis.conf; every DB index of the layout must be below it.
    databases: PositiveInt = dblayout.DEFAULT_DATABASES
    #: Sentinel timings. The chart's 60000/180000 mean a minute of write outage per failure.
    down_after_milliseconds: PositiveInt = 60000
    failover_timeout: PositiveInt = 180000
    parallel_syncs: PositiveInt = 1
    #: Refuse writes unless this many replicas are connected and at most ``minReplicasMaxLag`` seconds behind.
    min_replicas_to_write: Annotated[int, Field(ge=0)] = 0
    min_replicas_max_lag: PositiveInt = 10
    persistence: RedisPersistence = RedisPersistence()
    #: Explicit opt-in to running Sentinel without persistence: a fast restart of the master then wipes every node.
    allow_data_loss_on_restart: bool = False
    #: ``soft`` prefers, ``hard`` requires Redis pods on different nodes.
    pod_anti_affinity: Literal["soft", "hard"] = "soft"
    #: Prometheus exporter sidecar.
    metrics: bool = True
    resources: RedisResources
    #: Length of the generated password (URL-safe characters only).
    password_length: Annotated[int, Field(ge=32, le=128)] = 48
    #: Namespaces besides ZITADEL's whose pods may reach Redis (e.g. the event relay).
    client_namespaces: tuple[DnsLabel, ...] = ()
    #: Ports of the Kubernetes API, for the chart's kubectl sidecar that moves the master Service.
    kube_api_ports: tuple[PositiveInt, ...] = (443, 6443)


# --- zitadel -------------------------------------------------------------------------------------------------------


class RedisPool(Model):
    """The Redis client pool of ZITADEL's cache connector (mapped to ``Caches.Connectors.Redis.*``)."""

    pool_size: PositiveInt = 20
    max_retries: Annotated[int, Field(ge=0)] = 3
    dial_timeout: GoDuration = "1s"
    read_timeout: GoDuration = "100ms"
    write_timeout: GoDuration = "100ms"
    pool_timeout: GoDuration = "100ms"
    #: Close connections idle for longer than this (``ConnMaxIdleTime``).
    idle_timeout: GoDuration = "30m"
    #: Close connections older than this (``ConnMaxLifetime``).
    max_conn_age: GoDuration = "1h"


class ZitadelCache(Model):
    #: ZITADEL's caches live in DBs ``dbOffset+1 .. dbOffset+7``; keep the events DB out of that block.
    db_offset: Annotated[int, Field(ge=0)] = dblayout.DEFAULT_CACHE_DB_OFFSET
    #: How long an entry may live, and how long it may go unused, in each Redis cache.
    max_age: GoDuration = "1h"
    last_use_age: GoDuration = "10m"
    pool: RedisPool = RedisPool()


class ZitadelDatabase(Model):
    #: ``bundled``: the chart's Postgres subchart (dev). ``external``: a managed Postgres reached by DSN (prod).
    mode: Literal["bundled", "external"]
    #: external only, one of the two: the name of an existing secret in the KV mount holding the DSN (key
    #: ``dsnVaultKey``), maintained outside this program; or ``fromConfig`` to write the ``postgresDsn``
    #: Pulumi secret (``pulumi config set --secret postgresDsn ...``) into Vault.
    dsn_vault_secret: str | None = None
    dsn_vault_key: str = "dsn"
    dsn_from_config: bool = False
    #: Bundled Postgres only: persistent volume for its data.
    bundled_persistence: bool = False


class ZitadelIngress(Model):
    enabled: bool = False
    class_name: str = ""
    #: Secret with the TLS certificate for ``externalDomain``; required in prod.
    tls_secret_name: str | None = None


class ZitadelResources(Model):
    zitadel: Resources
    login: Resources
    jobs: Resources


class ZitadelConfig(Model):
    namespace: DnsLabel = "zitadel"
    chart: Chart
    image: Image
    login_image: Image
    replicas: PositiveInt = 1
    #: The public name of ZITADEL (issuer, redirects, cookies) and the port and scheme clients use.
    external_domain: str
    external_port: Annotated[int, Field(gt=0, lt=65536)] = 443
    external_secure: bool = True
    ingress: ZitadelIngress = ZitadelIngress()
    database: ZitadelDatabase
    cache: ZitadelCache = ZitadelCache()
    resources: ZitadelResources
    #: Pulumi ``protect`` on the masterkey (random value, Vault secret, Kubernetes Secret).
    protect_masterkey: bool = False


# --- events (consumed by the event relay) --------------------------------------------------------------------------


class EventStreams(Model):
    high: str = "zitadel:events:high"
    normal: str = "zitadel:events:normal"
    low: str = "zitadel:events:low"
    dead_letter: str = "zitadel:events:dead_letter"


class EventPublishing(Model):
    #: Events written per round trip to Redis.
    batch_size: PositiveInt = 100
    #: Attempts before an event goes to the dead-letter stream.
    max_retries: Annotated[int, Field(ge=0)] = 5
    retry_backoff: GoDuration = "200ms"
    max_retry_backoff: GoDuration = "10s"
    #: Acknowledge an event only after a replica has it (``WAIT 1``).
    require_replica_ack: bool = True


class EventPerformance(Model):
    #: Commands per pipeline.
    pipeline_size: PositiveInt = 50
    #: Approximate cap of each stream (``XADD MAXLEN ~``).
    max_stream_length: PositiveInt = 1_000_000
    workers: PositiveInt = 2


class EventsConfig(Model):
    #: Redis DB of the event streams; outside ZITADEL's cache block.
    db: Annotated[int, Field(ge=0)] = dblayout.DEFAULT_EVENTS_DB
    streams: EventStreams = EventStreams()
    publishing: EventPublishing = EventPublishing()
    performance: EventPerformance = EventPerformance()


# --- the stack -----------------------------------------------------------------------------------------------------


class SecretPresence(Model):
    """Which secret config keys the stack sets. Values never enter the model: they stay Pulumi secrets."""

    vault_token: bool = False
    postgres_dsn: bool = False


class StackConfig(Model):
    stack: str
    environment: Environment
    kubernetes: KubernetesConfig = KubernetesConfig()
    vault: VaultConfig
    redis: RedisConfig
    zitadel: ZitadelConfig
    events: EventsConfig = EventsConfig()
    secrets: SecretPresence = SecretPresence()

    @property
    def db_layout(self) -> dblayout.DbLayout:
        return dblayout.DbLayout(
            events_db=self.events.db,
            cache_db_offset=self.zitadel.cache.db_offset,
            databases=self.redis.databases,
        )

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"
