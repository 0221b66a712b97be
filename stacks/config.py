"""The typed stack configuration: every knob of a stack, documented next to its meaning.

A stack file carries only what differs from its environment's defaults (``stacks/defaults.py``). Each default has
one home: a knob the environment tables set (in every environment) has no default here, and a default here is one
the tables never set (``tests/test_defaults.py``). Field names are camelCase in the stack files
(``redis.downAfterMilliseconds``) and snake_case in Python.
Cross-field rules live in ``stacks/rules.py``; they run on the whole model and report every violation at once.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from stacks import capacity, dblayout, images, names

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


_QUANTITY_FACTORS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


_MIB: Final = 2**20


def quantity_bytes(value: str) -> int:
    """Bytes in a memory quantity (``512Mi`` → 536870912); a fraction of a byte rounds down."""
    match = re.match(r"^(\d+(?:\.\d+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$", value)
    if match is None or match.group(2) == "m":
        raise ValueError(f"{value!r} is not a memory quantity such as 512Mi or 1Gi")
    return int(float(match.group(1)) * _QUANTITY_FACTORS[match.group(2) or ""])


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block such as 10.0.0.0/8 or 192.0.2.10/32") from exc
    return value


GoDuration = Annotated[str, AfterValidator(_go_duration)]
Quantity = Annotated[str, AfterValidator(_quantity)]
PositiveInt = Annotated[int, Field(gt=0)]
Port = Annotated[int, Field(gt=0, lt=65536)]
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
Cidr = Annotated[str, AfterValidator(_cidr)]
#: A Pod Security Standard version as the admission labels take it: ``v1.30`` or ``latest``.
PodSecurityVersion = Annotated[str, Field(pattern=r"^(latest|v1\.\d+)$")]


class Model(BaseModel):
    """Closed (a misspelled key is an error), immutable, camelCase in the stack files."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --- shared building blocks ----------------------------------------------------------------------------------------


class Chart(Model):
    #: Chart reference: an ``oci://`` URL, or the chart name inside ``repository``.
    chart: str
    #: Helm repository URL; empty for an OCI chart.
    repository: str
    #: Exact chart version. Prod refuses ranges, ``latest`` and empty versions.
    version: str


class Image(Model):
    registry: str
    repository: str
    #: Exact image tag. Prod refuses ``latest`` and empty tags.
    tag: str
    #: The pushed image's content address (``sha256:…``): set, the pods pull ``repository@digest`` and the tag only
    #: names the release. A release writes it into dev's train (``stacks/images.py``); every stack deploys the images
    #: this project builds only by digest (``stacks/rules.py``).
    digest: Annotated[str, Field(pattern=images.DIGEST_PATTERN)] | None = None

    @property
    def reference(self) -> str:
        """What a pod pulls: by digest when there is one, else by tag."""
        if self.digest is not None:
            return f"{self.registry}/{self.repository}@{self.digest}"
        return f"{self.registry}/{self.repository}:{self.tag}"


class ResourceList(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(Model):
    """Requests and limits of one container. Prod requires requests.cpu, requests.memory and limits.memory."""

    requests: ResourceList
    limits: ResourceList

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
    #: Namespace of the cluster DNS: the network policies open port 53 (UDP and TCP) to it.
    dns_namespace: DnsLabel = "kube-system"
    #: Pod Security Standard version the namespaces enforce; audit and warn follow ``latest``, so a rule added by a
    #: newer Kubernetes shows up as a warning before it can reject a pod.
    pod_security_version: PodSecurityVersion = "v1.30"
    #: Where the API server answers pods (``kubectl get endpoints kubernetes``), and on which ports: what the Redis
    #: kubectl sidecar, ZITADEL's setup and cleanup jobs and the edge's controller and certgen job may reach of it.
    #: Prod requires the addresses narrowed from "anywhere".
    api_server_cidrs: tuple[Cidr, ...] = ("0.0.0.0/0",)
    api_server_ports: tuple[Port, ...] = (443, 6443)
    #: Namespaces that exist already: taken over (upsert, for them alone) and left in place by ``pulumi destroy``.
    #: Every other namespace the stack declares is created, and its creation fails if it exists.
    adopt_namespaces: tuple[DnsLabel, ...] = ()
    #: Pulumi ``protect`` on the namespaces the stack declares (deleting one deletes the Redis volumes in it).
    protect_namespaces: bool
    #: What the Kubernetes provider's identity is bound to: a context or kubeconfig change (an operator's laptop,
    #: the in-cluster runner) is then an update, never a replacement of every object. Unset: the stack's name.
    cluster_identifier: str | None = None


def _numeric_id(value: object) -> object:
    # YAML reads an unquoted ID as a number; GitHub's claims carry it as a string.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: A GitHub numeric ID, as its OIDC claims carry it (a string of digits).
GitHubId = Annotated[str, BeforeValidator(_numeric_id), Field(pattern=r"^[1-9][0-9]*$")]


class VaultCiPreview(Model):
    """A read-only login for ``pulumi preview`` (``vault-login --preview``): its own role, which can write nothing."""

    #: The GitHub environment of the preview jobs (one with no reviewers): the token's ``environment`` claim.
    environment: Annotated[str, Field(min_length=1)]
    #: The events whose jobs may log in (the ``event_name`` claim); empty: any.
    event_names: tuple[str, ...]
    #: Git refs whose jobs may log in (the ``ref`` claim); empty: any ref, as a pull request's.
    refs: tuple[str, ...]


class VaultCi(Model):
    """The workflows' login to this stack's Vault: GitHub's OIDC token exchanged for a short-lived Vault token."""

    #: Declare the JWT role and its deploy policy (``python -m stacktools.ci vault-login`` uses them).
    enabled: bool = True
    #: The GitHub repository (``owner/name``) whose workflows may log in: the token's ``repository`` claim.
    repository: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")]
    #: GitHub's numeric IDs of that repository and of its owner (``repository_id``, ``repository_owner_id``): a
    #: name can be taken again after a rename or a deletion, an ID never.
    repository_id: GitHubId
    repository_owner_id: GitHubId
    #: The GitHub environment whose jobs may log in: the token's ``environment`` claim.
    environment: Annotated[str, Field(min_length=1)]
    #: Git refs whose jobs may log in (the ``ref`` claim, e.g. ``refs/heads/main``); empty: any ref of the repository.
    refs: tuple[str, ...]
    #: Path of the JWT auth backend that trusts GitHub's issuer; shared by the stacks of one Vault.
    auth_path: str = "github-actions"
    #: True: this stack creates that backend (dev). False: it exists (prod).
    manage_backend: bool
    #: The ``aud`` the workflows request and the role requires: a token minted for anything else is refused.
    audience: Annotated[str, Field(min_length=1)] = "blinkchamber-identity-vault"
    #: Lifetime of the Vault token a login gets (no renewal beyond it): at least the provider's token TTL.
    token_ttl_seconds: PositiveInt = 3600
    #: The read-only role of the previews; unset: none.
    preview: VaultCiPreview | None = None


class VaultConfig(Model):
    #: Vault API address for the Pulumi Vault provider (the token comes from ``vaultToken`` or ``VAULT_TOKEN``).
    address: str
    #: True: this stack creates the Kubernetes auth backend and its config (dev). False: it exists (prod).
    manage_backends: bool
    #: True: this stack creates the KV v2 mount ``kvMount``. False (default): it exists, as in a dev-mode Vault.
    manage_kv_mount: bool = False
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
    #: Scopes every Vault name of the stack (``dev`` → ``dev-redis-role``, ``secret/data/dev/redis``); empty keeps the
    #: plain names, for one environment per Vault. Stacks sharing a Vault need distinct prefixes.
    name_prefix: Annotated[str, Field(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", max_length=32)] = ""
    #: TTL of the child token Pulumi's Vault provider works with (its ``maxLeaseTtlSeconds``); it must outlive the
    #: Helm releases' waits, or the Vault writes after them fail with an expired token.
    provider_token_ttl_seconds: PositiveInt = 2700
    ci: VaultCi


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
    #: AOF on a PersistentVolume. Off only with ``redis.allowDataLossOnRestart`` (README, "Redis HA, proven on real
    #: processes": a master restarted empty wipes its replicas).
    enabled: bool = True
    size: Quantity
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
    #: Sentinel timings. The chart's own 60000/180000 would mean a minute of write outage per failure.
    down_after_milliseconds: PositiveInt
    failover_timeout: PositiveInt
    parallel_syncs: PositiveInt = 1
    #: Refuse writes unless this many replicas are connected and at most ``minReplicasMaxLag`` seconds behind.
    min_replicas_to_write: Annotated[int, Field(ge=0)]
    min_replicas_max_lag: PositiveInt = 10
    persistence: RedisPersistence
    #: Explicit opt-in to running Sentinel without persistence: a fast restart of the master then wipes every node.
    allow_data_loss_on_restart: bool = False
    #: ``soft`` prefers, ``hard`` requires Redis pods on different nodes.
    pod_anti_affinity: Literal["soft", "hard"]
    #: Prometheus exporter sidecar.
    metrics: bool = True
    resources: RedisResources
    #: Length of the generated password (URL-safe characters only).
    password_length: Annotated[int, Field(ge=32, le=128)] = 48
    #: Namespaces besides ZITADEL's whose pods may reach Redis (e.g. the event relay).
    client_namespaces: tuple[DnsLabel, ...] = ()
    #: Pulumi ``protect`` on the Helm release (its volumes hold the event streams). Prod requires it.
    protect: bool
    #: How long ``pulumi up`` waits for the release's pods to be ready.
    release_timeout_seconds: PositiveInt = 600
    #: ``maxmemory`` as a share of the redis container's memory limit; the rest is headroom for replication and
    #: client output buffers, the AOF rewrite's copy-on-write pages and the allocator's fragmentation.
    maxmemory_percent: Annotated[int, Field(ge=10, le=90)] = 70

    @property
    def maxmemory_bytes(self) -> int | None:
        """``maxmemory``: ``maxmemoryPercent`` of the redis container's memory limit, rounded down to whole MiB (the
        unit redis.conf gets); None without a limit."""
        limit = self.resources.redis.limits.memory
        if limit is None:
            return None
        return quantity_bytes(limit) * self.maxmemory_percent // 100 // _MIB * _MIB


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


#: A failover as a client of the master Service lives it, after Sentinel's down-after: the sentinels' agreement,
#: election and promotion (measured on real Sentinel: failover = down-after + about 1 s), then the chart's kubectl
#: sidecar, which polls for a new master every second and labels its pod, and the Service's endpoints following it.
SENTINEL_ELECTION_SECONDS: Final = 1.0
MASTER_RELABEL_SECONDS: Final = 2.0
#: Added to the failover for the breaker's default open time, so that its first probe finds the new master.
BREAKER_SLACK_SECONDS: Final = 2.0


class ZitadelCircuitBreaker(Model):
    """ZITADEL's circuit breaker around every Redis call (``Caches.Connectors.Redis.CircuitBreaker``, sony/gobreaker).

    It trips after more than ``maxConsecutiveFailures`` failed calls in a row (``maxFailureRatio``, ZITADEL's other
    trigger, stays off); open, it fails every call at once for ``timeout``, then lets ``maxRetryRequests`` calls
    probe Redis. ZITADEL's own defaults keep it open 60 s and count since the pod started.
    """

    #: The closed-state window after which the counts reset. 0 counts from the start of the pod (or the last close).
    interval: GoDuration = "60s"
    #: Trip after more than this many failures in a row (0 turns the check off).
    max_consecutive_failures: Annotated[int, Field(ge=0)] = 5
    #: Trip when failures / calls in the window exceed this. 0 turns the check off, and the rules require it: the
    #: ratio has no minimum call count, so the first failed attempt of a window would trip it (1 of 1).
    max_failure_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    #: How long it stays open. Unset: derived from the Sentinel timings (``StackConfig.breaker_timeout``).
    timeout: GoDuration | None = None
    #: Calls let through half-open; that many successes close it, one failure opens it again.
    max_retry_requests: PositiveInt = 1


class ZitadelCache(Model):
    #: ZITADEL's caches live in DBs ``dbOffset+1 .. dbOffset+7``; keep the events DB out of that block.
    db_offset: Annotated[int, Field(ge=0)] = dblayout.DEFAULT_CACHE_DB_OFFSET
    #: How long an entry may live, and how long it may go unused, in each cache the program configures.
    max_age: GoDuration = "1h"
    last_use_age: GoDuration = "10m"
    pool: RedisPool = RedisPool()
    circuit_breaker: ZitadelCircuitBreaker = ZitadelCircuitBreaker()
    #: Connector of the caches that carry login state across replicas (``IdPFormCallbacks``, ``FederatedLogouts``):
    #: ``postgres`` (ZITADEL's default, durable) or ``redis`` (no Postgres writes on the login path; a failover can
    #: fail a federated login in flight). README, "What Redis does for ZITADEL".
    session_cache_connector: Literal["postgres", "redis"]

    @property
    def redis_caches(self) -> tuple[str, ...]:
        """Every cache this stack puts on Redis."""
        on_redis = self.session_cache_connector == "redis"
        return dblayout.REDIS_CACHES + (dblayout.SESSION_CACHES if on_redis else ())


class ZitadelDatabase(Model):
    #: ``bundled``: the chart's Postgres subchart (dev). ``external``: a managed Postgres reached by DSN (prod).
    mode: Literal["bundled", "external"]
    #: external only, one of the two: the name of an existing secret in the KV mount holding the DSN (key
    #: ``dsnVaultKey``), maintained outside this program; or ``fromConfig`` to write the ``postgresDsn``
    #: Pulumi secret (``pulumi config set --secret postgresDsn ...``) into Vault.
    dsn_vault_secret: str | None = None
    #: Unset: the key of the DSN secret the stack writes itself.
    dsn_vault_key: str = names.DATABASE_SECRET_KEY
    dsn_from_config: bool = False
    #: Bundled Postgres only: persistent volume for its data.
    bundled_persistence: bool = False

    @property
    def bundled(self) -> bool:
        return self.mode == "bundled"

    @property
    def dsn_written_by_stack(self) -> bool:
        """The stack writes ZITADEL's DSN to Vault (the bundled Postgres's, or ``postgresDsn``); else only reads it."""
        return self.bundled or self.dsn_from_config


class ZitadelResources(Model):
    zitadel: Resources
    login: Resources
    #: The init and setup jobs (and the setup job's secret writers).
    jobs: Resources
    #: The login pod's init container that waits for ZITADEL (the chart's ``tools.wait4x``).
    wait_for_zitadel: Resources
    #: The post-delete job that removes the secrets the setup job wrote.
    cleanup: Resources
    #: The bundled Postgres (``database.mode: bundled``); unused with an external one.
    postgres: Resources | None = None


class EgressTarget(Model):
    """Addresses outside the cluster that ZITADEL may reach, and on which ports."""

    cidr: Cidr
    #: Blocks inside ``cidr`` that stay closed (private ranges, the cloud metadata address).
    except_: tuple[Cidr, ...] = Field(default=(), alias="except")
    ports: tuple[Port, ...]
    protocol: Literal["TCP", "UDP"] = "TCP"


#: Everything but private, shared, loopback and link-local space: the cluster's own addresses and the cloud
#: metadata endpoint (169.254.169.254) stay out of reach of the identity providers ZITADEL is told to call.
_PUBLIC_EXCEPT = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16")


class ZitadelNetworkPolicy(Model):
    """What ZITADEL's namespace may receive and reach beyond its own pods, Redis, Vault, DNS and the API server."""

    #: Further namespaces that may reach ZITADEL and its login UI besides the gateway's proxies (none by default:
    #: only the gateway; e.g. a second ingress during a migration).
    ingress_namespaces: tuple[DnsLabel, ...] = ()
    #: External Postgres only: its address blocks and port (the bundled one is reached by its pod labels).
    postgres_cidrs: tuple[Cidr, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    postgres_port: Port = 5432
    #: External services of the ZITADEL server: identity providers (HTTPS) and the mail relay (SMTP submission).
    external_egress: tuple[EgressTarget, ...] = (
        EgressTarget(cidr="0.0.0.0/0", except_=_PUBLIC_EXCEPT, ports=(443, 465, 587)),
    )


class ZitadelConfig(Model):
    namespace: DnsLabel = "zitadel"
    chart: Chart
    image: Image
    login_image: Image
    #: The bundled Postgres subchart's image (``database.mode: bundled``); a pinned tag in every stack.
    postgres_image: Image
    replicas: PositiveInt
    #: The public name of ZITADEL (issuer, redirects, cookies) and the port and scheme clients use.
    external_domain: str
    external_port: Annotated[int, Field(gt=0, lt=65536)]
    external_secure: bool
    database: ZitadelDatabase
    cache: ZitadelCache
    resources: ZitadelResources
    network_policy: ZitadelNetworkPolicy = ZitadelNetworkPolicy()
    #: Pulumi ``protect`` on the masterkey (its random value and its Vault secret; no Kubernetes Secret holds it).
    protect_masterkey: bool
    #: How long ``pulumi up`` waits for the release (its init and setup jobs run the database migrations).
    release_timeout_seconds: PositiveInt = 900

    @property
    def public_url(self) -> str:
        """ZITADEL as clients reach it (its issuer): scheme, domain, and the port unless the scheme's default."""
        scheme = "https" if self.external_secure else "http"
        default_port = 443 if self.external_secure else 80
        port = "" if self.external_port == default_port else f":{self.external_port}"
        return f"{scheme}://{self.external_domain}{port}"


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
    #: Approximate cap (``MAXLEN ~``) of each priority stream; unset: derived from maxmemory (``events.capacity``). A
    #: rule refuses a cap whose entries, at ``events.capacity.entryBytes``, could exceed the streams' share.
    max_stream_length: PositiveInt | None = None
    #: Approximate cap of the dead-letter stream; unset: derived likewise, at ``deadLetterEntryBytes``.
    dead_letter_max_length: PositiveInt | None = None


#: A share of ``maxmemory`` in whole percent.
Percent = Annotated[int, Field(ge=1, le=100)]


class EventCapacity(Model):
    """How the events' data shares each Redis's ``maxmemory`` with the keys Redis may evict (README, "Capacity: one
    Redis, three workloads"). The streams, the dead-letter stream and the dedup records have no TTL and are never
    evicted: each gets a share, and the caps derive from it. The shares add up to at most 100."""

    #: The three priority streams together; each stream's cap is a third of it at ``entryBytes`` per entry.
    streams_percent: Percent = 50
    #: The dead-letter stream, at ``deadLetterEntryBytes`` per entry.
    dead_letter_percent: Percent = 5
    #: The relay's dedup records (kept ``events.source.dedupTtl`` behind its cursor): they must hold
    #: ``peakEventRate`` over that time plus two 10-minute buckets, at ``dedupRecordBytes`` each.
    dedup_percent: Percent = 10
    #: What the keys Redis may evict can count on — the rate-limit counters (DB 0), ZITADEL's cache objects — and
    #: Redis's own memory (about 1.3 MB empty, the replication backlog, scripts, client buffers).
    reserve_percent: Annotated[int, Field(ge=10, le=100)] = 35
    #: Memory budgeted per stream entry, dead-letter entry and dedup record: measured with a margin
    #: (``stacks/capacity.py``); a rule refuses less than the measured size.
    entry_bytes: PositiveInt = capacity.ENTRY_BYTES
    dead_letter_entry_bytes: PositiveInt = capacity.DEAD_LETTER_ENTRY_BYTES
    dedup_record_bytes: PositiveInt = capacity.DEDUP_RECORD_BYTES
    #: The highest ZITADEL event rate (events/s, sustained over the dedup window; a backfill replays history at its
    #: own density) the dedup share is sized for.
    peak_event_rate: PositiveInt
    #: The relay trims entries older than this from every stream, the dead-letter stream included.
    max_stream_age: GoDuration = "168h"
    #: How often the active relay trims every stream by age and by cap, without waiting for a new event.
    trim_interval: GoDuration = "1m"


class EventSource(Model):
    """How the bridge reads ZITADEL's Event API (``POST /admin/v1/events/_search``, ascending, by creation date)."""

    #: The instance the events belong to, in the dedup key (the Event API's events carry no instance ID); unset
    #: uses ``zitadel.externalDomain`` (prod must set it). Changing it replays every event: new cursor, new dedup.
    instance: str | None = None
    #: Pause between polls once the bridge has caught up.
    poll_interval: GoDuration = "1s"
    #: Each read stops at ``now - clockSkew``: the clock difference between the bridge and Postgres it covers.
    clock_skew: GoDuration = "5s"
    #: Events per request; ZITADEL caps it at 1000.
    page_size: Annotated[int, Field(gt=0, le=1000)] = 1000
    #: The periodic re-scan of the last ``lookBackWindow``, every ``lookBackPeriod``.
    look_back_window: GoDuration = "30m"
    look_back_period: GoDuration = "10m"
    #: How far behind the cursor (by creation date) dedup records are kept; longer than the look-back window plus
    #: its period.
    dedup_ttl: GoDuration = "1h"
    #: An event whose JSON is larger goes to the dead-letter stream.
    max_event_bytes: Annotated[int, Field(ge=1024)] = 65536
    #: Where a bridge without a stored cursor starts: ZITADEL's first event, or the current time.
    start_from: Literal["beginning", "now"] = "beginning"


class RelayAdminApi(Model):
    """Where the Pulumi program reaches ZITADEL's API to declare the relay's machine user (unset: the public URL)."""

    domain: str | None = None
    port: Port | None = None
    insecure: bool | None = None


class EventRelay(Model):
    """The bridge's Deployment (in ZITADEL's namespace) and its identity in ZITADEL."""

    enabled: bool = True
    image: Image
    #: Pods; one is active at a time through a lease in the events DB, the others stand by.
    replicas: PositiveInt = 2
    resources: Resources
    admin_api: RelayAdminApi = RelayAdminApi()


class EventsConfig(Model):
    #: Redis DB of the event streams; outside ZITADEL's cache block.
    db: Annotated[int, Field(ge=0)] = dblayout.DEFAULT_EVENTS_DB
    streams: EventStreams = EventStreams()
    publishing: EventPublishing = EventPublishing()
    performance: EventPerformance = EventPerformance()
    capacity: EventCapacity
    source: EventSource = EventSource()
    relay: EventRelay


# --- edge (Envoy Gateway and its rate limits) ----------------------------------------------------------------------

#: The units of Envoy Gateway's ``limit.unit`` (``api/v1alpha1/ratelimit_types.go``, v1.9.0).
RateLimitUnit = Literal["Second", "Minute", "Hour", "Day", "Week", "Month", "Year"]
#: A request header as the rules and the claim copy name it: lower case, as HTTP/2 carries it.
HeaderName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=256)]
#: A path prefix of a rule: plain characters only, so that it reads the same in the rule's RE2 pattern.
PathPrefix = Annotated[str, Field(pattern=r"^/[A-Za-z0-9/._~-]*$", max_length=256)]
#: A Gateway API duration (``20ms``, ``1s``): what Envoy Gateway's ``rateLimit.timeout`` accepts.
GatewayDuration = Annotated[str, Field(pattern=r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")]
DnsSubdomain = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", max_length=253)
]


class RateLimitRule(Model):
    """One limit of the gateway's global rate limiting: which requests count together, and how many may pass."""

    #: Unique; it names the rule in the README and in reviews (Envoy Gateway itself numbers rules by position).
    name: DnsLabel
    requests: PositiveInt
    unit: RateLimitUnit
    #: One bucket per client address (as ``edge.clientIpDetection`` finds it).
    per_client_ip: bool = False
    #: One bucket per distinct value of each header; a request without one of them skips the rule. Only headers the
    #: gateway writes from a verified JWT claim (``edge.jwt.claimHeaders``): a client-sent header is any value.
    per_headers: tuple[HeaderName, ...] = ()
    #: Only requests whose path starts with one of these (at a ``/`` or ``?``), all counted together.
    paths: tuple[PathPrefix, ...] = ()
    #: Count and report in the ratelimit metrics but never reject: for rolling out a new limit.
    shadow_mode: bool = False


class EdgeRateLimit(Model):
    #: True: a request is refused (500) when the rate-limit service cannot answer. False (default): it passes.
    fail_closed: bool = False
    #: How long Envoy waits for the rate-limit service before ``failClosed`` decides.
    timeout: GatewayDuration = "20ms"
    #: Prefix of every counter key in Redis DB 0 (``CACHE_KEY_PREFIX``): easy to SCAN, count and purge.
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+:$", max_length=32)] = "rl:"
    #: Random seconds added to each counter's TTL (``EXPIRATION_JITTER_MAX_SECONDS``; upstream default 300). Short:
    #: during a flood every distinct client IP or header value is one key, and the jitter keeps them longer.
    expiration_jitter_max_seconds: Annotated[int, Field(ge=0, le=60)] = 10
    #: The address ranges per-client-IP rules cover, one Envoy Gateway rule each (a selector takes one range).
    client_cidrs: tuple[Cidr, ...] = ("0.0.0.0/0", "::/0")
    #: The bits of a client address that name its per-client-IP bucket. IPv6: 64, since one subscriber usually holds
    #: a whole /64 and would otherwise get 2^64 buckets; IPv4: 32, one bucket per address. Shorter than the full
    #: length, the program patches Envoy Gateway's xDS (README, "Rate limits at the edge").
    ipv4_prefix_length: Annotated[int, Field(ge=16, le=32)] = 32
    ipv6_prefix_length: Annotated[int, Field(ge=32, le=128)] = 64
    rules: tuple[RateLimitRule, ...]

    def expanded(self) -> list[tuple[RateLimitRule, str | None]]:
        """Each rule as Envoy Gateway gets it: a per-client-IP rule once per range of ``clientCidrs``."""
        return [(rule, cidr) for rule in self.rules for cidr in (self.client_cidrs if rule.per_client_ip else (None,))]


class ClaimHeader(Model):
    #: A claim of ZITADEL's JWT access tokens (``sub``, ``urn:zitadel:iam:user:resourceowner:id``).
    claim: Annotated[str, Field(min_length=1, max_length=256)]
    #: The request header the gateway writes it to; client-sent copies are removed first.
    header: HeaderName


class EdgeJwt(Model):
    """Claims of valid ZITADEL JWT access tokens copied into headers the rules key on. Requests without a JWT (or
    with an opaque token, ZITADEL's default) pass unchanged and skip those rules: the gateway authenticates nobody,
    ZITADEL does."""

    enabled: bool = True
    claim_headers: tuple[ClaimHeader, ...] = (
        ClaimHeader(claim="sub", header=names.RATE_LIMIT_SUB_HEADER),
        ClaimHeader(claim="urn:zitadel:iam:user:resourceowner:id", header=names.RATE_LIMIT_ORG_HEADER),
    )


class EdgeListener(Model):
    #: The Gateway listener's port (the proxies' Service port).
    port: Port
    #: TLS Secret (in ``edge.namespace``) for ``zitadel.externalDomain``: an HTTPS listener. Unset: HTTP.
    tls_secret_name: DnsSubdomain | None = None


class EdgeClientIpDetection(Model):
    #: Proxies in front of the gateway that append to X-Forwarded-For: 0 behind an L4 load balancer that keeps the
    #: client address (the proxies' Service uses ``externalTrafficPolicy: Local``), 1 behind one L7 load balancer.
    xff_num_trusted_hops: Annotated[int, Field(ge=0, le=8)] = 0


class EdgeResources(Model):
    #: The Envoy Gateway controller and its certgen job (the chart).
    controller: Resources
    certgen: Resources
    #: The Envoy proxies and their shutdown-manager sidecar (the EnvoyProxy).
    proxy: Resources
    shutdown_manager: Resources
    #: The envoyproxy/ratelimit pods.
    rate_limit: Resources


class EdgeConfig(Model):
    """ZITADEL's edge: Envoy Gateway, a Gateway for ``zitadel.externalDomain``, and global rate limits on Redis."""

    namespace: DnsLabel = "envoy-gateway-system"
    chart: Chart
    listener: EdgeListener
    #: The proxies' Service; ``LoadBalancer`` and ``NodePort`` keep the client address (``Local`` traffic policy).
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    proxy_replicas: PositiveInt
    rate_limit_replicas: PositiveInt
    client_ip_detection: EdgeClientIpDetection = EdgeClientIpDetection()
    rate_limit: EdgeRateLimit
    jwt: EdgeJwt = EdgeJwt()
    resources: EdgeResources
    #: How long ``pulumi up`` waits for the Envoy Gateway release. It runs beside Redis's; ZITADEL's waits for both.
    release_timeout_seconds: PositiveInt = 600


# --- observability (Prometheus Operator, Grafana) ------------------------------------------------------------------

#: A label key (``app.kubernetes.io/name``, ``release``) and value as Kubernetes takes them.
_LABEL_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_PREFIX: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
LabelKey = Annotated[str, Field(pattern=rf"^({_LABEL_PREFIX})?{_LABEL_NAME}$", max_length=316)]
LabelValue = Annotated[str, Field(pattern=rf"^({_LABEL_NAME})?$", max_length=63)]
#: A Prometheus duration as the Operator's CRDs take it (``30s``, ``1m``): its ``Duration`` pattern.
PrometheusDuration = Annotated[
    str, Field(pattern=r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
]


class Prometheus(Model):
    """The Prometheus that scrapes the tier: where it runs (the only source the metrics ports admit) and the labels it
    selects ServiceMonitors, PodMonitors and PrometheusRules by."""

    #: Its namespace: the network policies admit its pods there, on the metrics ports only.
    namespace: DnsLabel = "monitoring"
    #: Labels of its pods in that namespace (kube-prometheus-stack's Prometheus pods carry this one).
    pod_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"}, min_length=1
    )
    #: Labels on every ServiceMonitor, PodMonitor and PrometheusRule: what its ``serviceMonitorSelector``,
    #: ``podMonitorSelector`` and ``ruleSelector`` match (kube-prometheus-stack: ``release: <its release>``).
    selector_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"}, min_length=1
    )
    #: How often each target is scraped.
    scrape_interval: PrometheusDuration = "30s"


class GrafanaDashboards(Model):
    """The dashboards' ConfigMap, for Grafana's dashboard sidecar (kube-prometheus-stack's watches for
    ``grafana_dashboard: "1"`` in its namespace)."""

    namespace: DnsLabel = "monitoring"
    #: The label the sidecar picks ConfigMaps by.
    label: dict[LabelKey, LabelValue] = Field(default_factory=lambda: {"grafana_dashboard": "1"}, min_length=1)


class ObservabilityAlerts(Model):
    """Thresholds of the alert rules (``components/alerts.py``; README, "Alerts and runbooks"). What the stack states
    elsewhere the rules read from there: the stream caps (``StackConfig.stream_caps``), maxmemory,
    ``redis.minReplicasToWrite`` and ``minReplicasMaxLag``, ``redis.nodes``, the relay's clock skew and poll interval,
    ``edge.rateLimit.failClosed``."""

    #: The relay's freshness goal is ``events.source.clockSkew`` + ``pollInterval`` (what a caught-up bridge delivers:
    #: measured p99 6.0 s at 5 s + 1 s, README "Benchmark") plus this margin. Over it for 10 minutes while writing:
    #: the bridge is falling behind ZITADEL.
    relay_freshness_margin: GoDuration = "2s"
    #: A consumer group whose last delivered entry is this much older than its stream's newest, for 5 minutes.
    consumer_lag_seconds: PositiveInt = 300
    #: A group with more undelivered entries than this share of its stream's cap is about to lose the oldest to the
    #: trim (each becomes a ``trimmed`` dead letter). Needs redis_exporter 1.50 or later (``redis_stream_group_lag``).
    consumer_lag_cap_percent: Percent = 50
    #: A consumer holding pending entries and idle this long: dead, and no live consumer of its group claims them
    #: (``relay.consumer`` claims after ``claim_idle_ms``, 30 s by default).
    consumer_pending_idle_seconds: PositiveInt = 300
    #: More dead letters than this added within an hour (0: any). Each is an event no job handled.
    dead_letters_per_hour: Annotated[int, Field(ge=0)] = 0
    #: A stream at this share of its cap: from there each new entry trims the oldest. Info for the priority streams
    #: (the buffer is full, as designed), a warning for the dead letter (the next ones trim unreplayed dead letters).
    stream_near_cap_percent: Percent = 90
    #: ``used_memory`` over this share of ``maxmemory`` for 5 minutes: the evictable reserve is nearly used up.
    memory_used_percent: Percent = 90
    #: More master changes (Sentinel failovers) than this within an hour. A rolling update of the Redis pods makes up
    #: to ``redis.nodes`` - 1 of them.
    failovers_per_hour: Annotated[int, Field(ge=0)] = 2
    #: Over-limit answers of one rate-limit rule per second, sustained for 5 minutes: an attack, or a limit too tight.
    rate_limit_over_limit_per_second: Annotated[float, Field(gt=0)] = 1.0
    #: Where each alert's ``runbook_url`` points (``<url>#alert-<name>``). Unset: the README of
    #: ``vault.ci.repository`` on GitHub, branch main.
    runbook_url: str | None = None


class ObservabilityConfig(Model):
    """Scrape targets, alert rules and dashboards for the Prometheus Operator and Grafana."""

    #: Declare the ServiceMonitors, PodMonitors, PrometheusRule, dashboards and the network policies that let
    #: Prometheus in. The cluster must run the Prometheus Operator (its CRDs), or the objects cannot be created.
    enabled: bool
    prometheus: Prometheus = Prometheus()
    dashboards: GrafanaDashboards = GrafanaDashboards()
    #: The alert rules' thresholds (the PrometheusRule's groups: ``components/alerts.py``).
    alerts: ObservabilityAlerts = ObservabilityAlerts()


# --- the stack -----------------------------------------------------------------------------------------------------


class SecretPresence(Model):
    """Which secret config keys the stack sets. Values never enter the model: they stay Pulumi secrets."""

    postgres_dsn: bool = False
    #: The first instance's admin machine key (JSON) for an existing ZITADEL; unset reads the Secret the chart writes.
    zitadel_admin_key: bool = False


class StackConfig(Model):
    stack: str
    environment: Environment
    kubernetes: KubernetesConfig
    vault: VaultConfig
    redis: RedisConfig
    zitadel: ZitadelConfig
    events: EventsConfig
    edge: EdgeConfig
    observability: ObservabilityConfig
    secrets: SecretPresence = SecretPresence()

    @property
    def db_layout(self) -> dblayout.DbLayout:
        return dblayout.DbLayout(
            events_db=self.events.db,
            cache_db_offset=self.zitadel.cache.db_offset,
            databases=self.redis.databases,
            redis_caches=self.zitadel.cache.redis_caches,
        )

    @property
    def stream_caps(self) -> capacity.StreamCaps:
        """Each priority stream's cap and the dead-letter stream's: explicit (``events.performance``), else derived
        from maxmemory and ``events.capacity``. Without a memory limit only explicit caps exist (a rule requires a
        limit)."""
        performance, shares = self.events.performance, self.events.capacity
        maxmemory = self.redis.maxmemory_bytes
        streams, dead_letter = performance.max_stream_length, performance.dead_letter_max_length
        if maxmemory is not None:
            if streams is None:
                streams = capacity.stream_cap(maxmemory, shares.streams_percent, shares.entry_bytes)
            if dead_letter is None:
                dead_letter = capacity.dead_letter_cap(
                    maxmemory, shares.dead_letter_percent, shares.dead_letter_entry_bytes
                )
        if streams is None or dead_letter is None:
            raise ValueError("stream caps derive from redis.resources.redis.limits.memory, and it is not set")
        return capacity.StreamCaps(max_stream_length=streams, dead_letter_max_length=dead_letter)

    @property
    def failover_seconds(self) -> float:
        """Kill of the master → the master Service reaches the new one: down-after, election, relabel."""
        return self.redis.down_after_milliseconds / 1000 + SENTINEL_ELECTION_SECONDS + MASTER_RELABEL_SECONDS

    @property
    def breaker_timeout(self) -> str:
        """ZITADEL's breaker open time: ``zitadel.cache.circuitBreaker.timeout``, else the failover plus slack."""
        explicit = self.zitadel.cache.circuit_breaker.timeout
        if explicit is not None:
            return explicit
        milliseconds = round((self.failover_seconds + BREAKER_SLACK_SECONDS) * 1000)
        return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"
