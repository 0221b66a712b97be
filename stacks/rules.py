"""Cross-field rules of a stack configuration. Each returns ``(config key, rule)`` pairs for what it finds broken."""

from __future__ import annotations

import ipaddress
import math
import urllib.parse
from collections.abc import Callable, Iterator, Mapping

from pydantic.alias_generators import to_camel

from stacks import capacity, images, names
from stacks.config import SENTINEL_ELECTION_SECONDS, Resources, StackConfig, duration_seconds
from stacks.names import REDIS_NAMESPACE, ZITADEL_HEADER_PREFIX, VaultNames
from stacks.versions import is_exact_version, is_pinned_tag

Violation = tuple[str, str]


def _sentinel_quorum(cfg: StackConfig) -> Iterator[Violation]:
    r = cfg.redis
    if r.quorum > r.nodes:
        yield "redis.quorum", f"quorum {r.quorum} must be <= redis.nodes ({r.nodes})"
    if r.quorum <= r.nodes // 2:
        yield (
            "redis.quorum",
            f"quorum {r.quorum} must be a majority of redis.nodes ({r.nodes}): at least {r.nodes // 2 + 1}",
        )
    if r.min_replicas_to_write > r.nodes - 1:
        yield (
            "redis.minReplicasToWrite",
            f"{r.min_replicas_to_write} replicas can never be connected with redis.nodes {r.nodes} "
            f"(at most {r.nodes - 1}): every write would be refused",
        )


def _db_layout(cfg: StackConfig) -> Iterator[Violation]:
    yield from cfg.db_layout.violations()


def _persistence(cfg: StackConfig) -> Iterator[Violation]:
    r = cfg.redis
    if not r.persistence.enabled and not r.allow_data_loss_on_restart:
        yield (
            "redis.persistence.enabled",
            "Sentinel without persistence loses every write on all nodes when the master restarts before "
            "down-after expires; keep it on or set redis.allowDataLossOnRestart: true",
        )
    if cfg.is_prod and r.allow_data_loss_on_restart:
        yield "redis.allowDataLossOnRestart", "prod may not opt into data loss on restart"
    if cfg.is_prod and not r.persistence.enabled:
        yield "redis.persistence.enabled", "prod requires persistence"


def _events(cfg: StackConfig) -> Iterator[Violation]:
    streams = cfg.events.streams.model_dump(by_alias=True)
    seen: dict[str, str] = {}
    for key, name in streams.items():
        if name in seen:
            yield f"events.streams.{key}", f"stream {name!r} is also events.streams.{seen[name]}"
        seen.setdefault(name, key)
    publishing = cfg.events.publishing
    if duration_seconds(publishing.retry_backoff) > duration_seconds(publishing.max_retry_backoff):
        yield (
            "events.publishing.retryBackoff",
            f"{publishing.retry_backoff} exceeds events.publishing.maxRetryBackoff ({publishing.max_retry_backoff})",
        )


def _event_source(cfg: StackConfig) -> Iterator[Violation]:
    source = cfg.events.source
    prefix = "events.source"
    for key, value in (("pollInterval", source.poll_interval), ("clockSkew", source.clock_skew)):
        if duration_seconds(value) <= 0:
            yield f"{prefix}.{key}", f"must be positive, not {value}"
    window, period = duration_seconds(source.look_back_window), duration_seconds(source.look_back_period)
    if period > window:
        yield (
            f"{prefix}.lookBackPeriod",
            f"{source.look_back_period} exceeds {prefix}.lookBackWindow ({source.look_back_window}): "
            "events between two re-scans would never be re-read",
        )
    if window <= duration_seconds(source.clock_skew):
        yield f"{prefix}.lookBackWindow", f"must be longer than {prefix}.clockSkew ({source.clock_skew})"
    if duration_seconds(source.dedup_ttl) <= window + period:
        yield (
            f"{prefix}.dedupTtl",
            f"{source.dedup_ttl} must outlive the look-back ({source.look_back_window} + {source.look_back_period}): "
            "a re-scan would write events again whose dedup key has expired",
        )


def _event_relay(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod or not cfg.events.relay.enabled:
        return
    relay = cfg.events.relay
    if not cfg.events.publishing.require_replica_ack:
        yield (
            "events.publishing.requireReplicaAck",
            "prod requires replica acknowledgement: a failover would otherwise lose events the cursor moved past",
        )
    if relay.replicas < 2:
        yield "events.relay.replicas", f"prod requires a standby bridge: at least 2 replicas (has {relay.replicas})"
    if not cfg.events.source.instance:
        yield (
            "events.source.instance",
            "prod requires an explicit instance name: derived from zitadel.externalDomain, a new domain would name "
            "new cursor and dedup keys and replay every event",
        )
    yield from _explicit_resources("events.relay.resources", relay.resources)


def _explicit_resources(key: str, res: Resources) -> Iterator[Violation]:
    """Prod sizes every container: a scheduler without requests overcommits, a container without a limit OOMs nodes."""
    missing = [
        path
        for path, value in (
            ("requests.cpu", res.requests.cpu),
            ("requests.memory", res.requests.memory),
            ("limits.memory", res.limits.memory),
        )
        if value is None
    ]
    if missing:
        yield key, f"prod requires explicit resources: {', '.join(missing)} not set"


def _prod_sizing(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    if cfg.redis.nodes < 3:
        yield "redis.nodes", f"prod requires at least 3 nodes (has {cfg.redis.nodes})"


def _prod_pinned(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    for key, chart in (("redis.chart.version", cfg.redis.chart), ("zitadel.chart.version", cfg.zitadel.chart)):
        if not is_exact_version(chart.version):
            yield key, f"prod requires an exact chart version, not {chart.version!r}"
    images = {f"redis.images.{k}": v for k, v in cfg.redis.images}
    images["zitadel.image"] = cfg.zitadel.image
    images["zitadel.loginImage"] = cfg.zitadel.login_image
    images["events.relay.image"] = cfg.events.relay.image
    for key, image in images.items():
        if not is_pinned_tag(image.tag):
            yield f"{_camel_path(key)}.tag", f"prod requires a pinned image tag, not {image.tag!r}"


def _prod_resources(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    groups: dict[str, dict[str, Resources | None]] = {
        "redis.resources": dict(cfg.redis.resources),
        "zitadel.resources": dict(cfg.zitadel.resources),
    }
    for prefix, containers in groups.items():
        for name, res in containers.items():
            if res is not None:  # None: an optional container this stack does not run (checked by its own rule)
                yield from _explicit_resources(f"{prefix}.{to_camel(name)}", res)


def _database(cfg: StackConfig) -> Iterator[Violation]:
    db = cfg.zitadel.database
    if db.bundled:
        if cfg.zitadel.resources.postgres is None:
            yield "zitadel.resources.postgres", "the bundled Postgres needs requests and a memory limit"
        if cfg.is_prod:
            yield "zitadel.database.mode", "prod requires an external Postgres (mode: external with a DSN reference)"
        if db.dsn_vault_secret or db.dsn_from_config:
            yield "zitadel.database", "a DSN reference is only used with mode: external"
        return
    if bool(db.dsn_vault_secret) == db.dsn_from_config:
        yield (
            "zitadel.database",
            "mode: external needs exactly one DSN reference: dsnVaultSecret (an existing Vault secret) "
            "or dsnFromConfig: true (the postgresDsn Pulumi secret)",
        )
    if db.dsn_from_config and not cfg.secrets.postgres_dsn:
        yield "postgresDsn", "dsnFromConfig is set but the stack has no postgresDsn secret (pulumi config set --secret)"


def _prod_tls(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    z = cfg.zitadel
    if not z.external_secure:
        yield "zitadel.externalSecure", "prod requires TLS towards clients (externalSecure: true)"
    if not cfg.vault.address.startswith("https://"):
        yield "vault.address", f"prod requires TLS to Vault (https://), not {cfg.vault.address!r}"


#: Headers that carry credentials: as a bucket key they would be written into Redis key names.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: Envoy Gateway's cap on the rules of one policy (``GlobalRateLimit.Rules``, MaxItems).
_MAX_GATEWAY_RULES = 256


def _edge(cfg: StackConfig) -> Iterator[Violation]:
    edge = cfg.edge
    limits = edge.rate_limit
    claim_headers = [claim.header for claim in edge.jwt.claim_headers]
    names: dict[str, int] = {}
    for index, rule in enumerate(limits.rules):
        key = f"edge.rateLimit.rules[{index}]"
        if rule.name in names:
            yield f"{key}.name", f"{rule.name!r} is also edge.rateLimit.rules[{names[rule.name]}]"
        names.setdefault(rule.name, index)
        if len(set(rule.per_headers)) != len(rule.per_headers):
            yield f"{key}.perHeaders", "a header is listed twice"
        for header in rule.per_headers:
            if header in _CREDENTIAL_HEADERS:
                yield (
                    f"{key}.perHeaders",
                    f"{header} carries credentials: keyed on it, they would become Redis key names",
                )
        if rule.per_client_ip and not limits.client_cidrs:
            yield "edge.rateLimit.clientCidrs", f"rule {rule.name!r} is per client IP: it needs an address range"
    if len(limits.expanded()) > _MAX_GATEWAY_RULES:
        yield (
            "edge.rateLimit.rules",
            f"{len(limits.expanded())} gateway rules (per-client-IP rules count once per clientCidrs range); "
            f"Envoy Gateway takes at most {_MAX_GATEWAY_RULES}",
        )
    if len(set(claim_headers)) != len(claim_headers):
        yield "edge.jwt.claimHeaders", "two claims are copied to the same header"
    for index, header in enumerate(claim_headers):
        if header.startswith(ZITADEL_HEADER_PREFIX) or header in _CREDENTIAL_HEADERS:
            yield (
                f"edge.jwt.claimHeaders[{index}].header",
                f"{header}: the gateway removes client copies of claim headers, and ZITADEL reads this one",
            )
    for other, namespace in (("zitadel.namespace", cfg.zitadel.namespace), ("Redis's", REDIS_NAMESPACE)):
        if edge.namespace == namespace:
            yield "edge.namespace", f"the gateway needs its own namespace, not {other} {namespace!r}"


def _edge_rule_keys(cfg: StackConfig) -> Iterator[Violation]:
    """A bucket key the client chooses is no limit: sending another's value burns their bucket, a fresh value gets a
    fresh one. Rules key only on headers the gateway itself writes from a verified JWT claim (client copies removed)."""
    jwt = cfg.edge.jwt
    claim_headers = [claim.header for claim in jwt.claim_headers]
    for index, rule in enumerate(cfg.edge.rate_limit.rules):
        for header in rule.per_headers:
            if header not in claim_headers:
                yield (
                    f"edge.rateLimit.rules[{index}].perHeaders",
                    f"rule {rule.name!r} keys on {header}, which the client sends: only headers the gateway writes "
                    f"from a verified JWT claim (edge.jwt.claimHeaders: {', '.join(claim_headers) or 'none'})",
                )
            elif not jwt.enabled:
                yield (
                    f"edge.rateLimit.rules[{index}].perHeaders",
                    f"rule {rule.name!r} keys on {header}, which only a verified JWT claim sets, and edge.jwt.enabled "
                    "is false",
                )


def _edge_prod(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    edge = cfg.edge
    if not edge.listener.tls_secret_name:
        yield "edge.listener.tlsSecretName", "prod requires TLS at the gateway: an HTTPS listener with its certificate"
    if not any(
        rule.per_client_ip and not rule.per_headers and not rule.paths and not rule.shadow_mode
        for rule in edge.rate_limit.rules
    ):
        yield (
            "edge.rateLimit.rules",
            "prod requires an enforced per-client-IP rule over every request (perClientIp, no paths or headers, "
            "shadowMode off)",
        )
    if not is_exact_version(edge.chart.version):
        yield "edge.chart.version", f"prod requires an exact chart version, not {edge.chart.version!r}"
    for name, res in edge.resources:
        yield from _explicit_resources(f"edge.resources.{to_camel(name)}", res)


def _event_capacity(cfg: StackConfig) -> Iterator[Violation]:
    """The events' data has no TTL: its shares of maxmemory, and the caps that keep it inside them, must leave the
    reserve to the keys Redis may evict (README, "Capacity: one Redis, three workloads")."""
    c, performance = cfg.events.capacity, cfg.events.performance
    key = "events.capacity"
    shares = (c.streams_percent, c.dead_letter_percent, c.dedup_percent, c.reserve_percent)
    if sum(shares) > 100:
        yield (
            key,
            f"the shares add up to {sum(shares)} % of maxmemory (streamsPercent {c.streams_percent} + "
            f"deadLetterPercent {c.dead_letter_percent} + dedupPercent {c.dedup_percent} + reservePercent "
            f"{c.reserve_percent}): at most 100",
        )
    for field, budget, measured, what in (
        ("entryBytes", c.entry_bytes, capacity.MEASURED_ENTRY_BYTES, "a user.human.added entry"),
        (
            "deadLetterEntryBytes",
            c.dead_letter_entry_bytes,
            capacity.MEASURED_DEAD_LETTER_ENTRY_BYTES,
            "a consumer's dead letter of a user.human.added entry",
        ),
        ("dedupRecordBytes", c.dedup_record_bytes, capacity.MEASURED_DEDUP_RECORD_BYTES, "a dedup record"),
    ):
        if budget < measured:
            yield (
                f"{key}.{field}",
                f"{budget} B is less than {what} takes ({measured} B, measured: stacks/capacity.py): the caps "
                "derived from it would overrun their share",
            )
    for field, value in (("maxStreamAge", c.max_stream_age), ("trimInterval", c.trim_interval)):
        if duration_seconds(value) <= 0:
            yield f"{key}.{field}", f"must be positive, not {value}"
    maxmemory = cfg.redis.maxmemory_bytes
    if maxmemory is None:
        return  # _redis_memory names the missing limit
    mib = maxmemory // 2**20
    for field, cap, percent, entry, largest, count in (
        (
            "maxStreamLength",
            performance.max_stream_length,
            c.streams_percent,
            c.entry_bytes,
            capacity.stream_cap(maxmemory, c.streams_percent, c.entry_bytes),
            capacity.PRIORITY_STREAMS,
        ),
        (
            "deadLetterMaxLength",
            performance.dead_letter_max_length,
            c.dead_letter_percent,
            c.dead_letter_entry_bytes,
            capacity.dead_letter_cap(maxmemory, c.dead_letter_percent, c.dead_letter_entry_bytes),
            1,
        ),
    ):
        share = capacity.share_bytes(maxmemory, percent)
        if cap is not None and cap * count * entry > share:
            streams = "each of the 3 priority streams" if count > 1 else "the dead-letter stream"
            yield (
                f"events.performance.{field}",
                f"{cap:,} entries in {streams} at {entry:,} B take {cap * count * entry:,} B, more than their share "
                f"({percent} % of maxmemory {mib} MiB = {share:,} B): at most {largest:,}, or unset to derive it",
            )
    dedup_ttl = duration_seconds(cfg.events.source.dedup_ttl)
    window = capacity.dedup_window_seconds(dedup_ttl)
    need = c.peak_event_rate * window * c.dedup_record_bytes
    share = capacity.share_bytes(maxmemory, c.dedup_percent)
    if need > share:
        yield (
            f"{key}.peakEventRate",
            f"{c.peak_event_rate:,} events/s hold {need:,.0f} B of dedup records ({window:g} s of them: "
            f"events.source.dedupTtl and two 10-minute buckets, at {c.dedup_record_bytes:,} B), more than the dedup "
            f"share ({c.dedup_percent} % of maxmemory {mib} MiB = {share:,} B): at most "
            f"{capacity.dedup_rate_limit(maxmemory, c.dedup_percent, c.dedup_record_bytes, dedup_ttl)} events/s",
        )


def _redis_memory(cfg: StackConfig) -> Iterator[Violation]:
    if cfg.redis.resources.redis.limits.memory is None:
        yield (
            "redis.resources.redis.limits.memory",
            "maxmemory derives from the redis container's memory limit (redis.maxmemoryPercent): set one",
        )


def _prod_masterkey(cfg: StackConfig) -> Iterator[Violation]:
    if cfg.is_prod and not cfg.zitadel.protect_masterkey:
        yield (
            "zitadel.protectMasterkey",
            "prod requires protect on the masterkey: losing it loses every encrypted record",
        )


def _network_policy(cfg: StackConfig) -> Iterator[Violation]:
    policy = cfg.zitadel.network_policy
    prefix = "zitadel.networkPolicy"
    if cfg.zitadel.database.mode == "external" and not policy.postgres_cidrs:
        yield f"{prefix}.postgresCidrs", "an external Postgres needs the address blocks ZITADEL may reach it at"
    for index, target in enumerate(policy.external_egress):
        block = ipaddress.ip_network(target.cidr)
        for excluded in target.except_:
            inner = ipaddress.ip_network(excluded)
            if inner.version != block.version or not inner.subnet_of(block):  # type: ignore[arg-type]
                yield f"{prefix}.externalEgress[{index}].except", f"{excluded} is not inside {target.cidr}"


def _circuit_breaker(cfg: StackConfig) -> Iterator[Violation]:
    """ZITADEL's breaker around Redis follows the failover: open about as long as Sentinel and the Service need."""
    breaker = cfg.zitadel.cache.circuit_breaker
    key = "zitadel.cache.circuitBreaker"
    timeout = duration_seconds(cfg.breaker_timeout)
    replaced = cfg.redis.down_after_milliseconds / 1000 + SENTINEL_ELECTION_SECONDS
    if timeout < replaced:
        yield (
            f"{key}.timeout",
            f"{cfg.breaker_timeout} is shorter than Sentinel needs to replace the master (redis.downAfterMilliseconds "
            f"+ {SENTINEL_ELECTION_SECONDS:g} s = {replaced:g} s): every probe until then hits the dead master",
        )
    longest = 2 * cfg.failover_seconds
    if timeout > longest:
        yield (
            f"{key}.timeout",
            f"{cfg.breaker_timeout} keeps ZITADEL off Redis long after the failover (about {cfg.failover_seconds:g} s "
            f"to the new master through its Service): at most {longest:g} s",
        )
    if 0 < breaker.max_failure_ratio < 1:
        # gobreaker counts the ratio from each window's first call (interval 0: the pod's) with no minimum of calls.
        early = math.ceil(1 / breaker.max_failure_ratio) - 1
        yield (
            f"{key}.maxFailureRatio",
            f"{breaker.max_failure_ratio:g} opens the breaker for {cfg.breaker_timeout} when one of the first "
            f"{max(early, 1)} calls of a window (interval {breaker.interval}) fails: set 0 and let "
            "maxConsecutiveFailures trip it",
        )
    if breaker.max_consecutive_failures == 0:
        yield (
            f"{key}.maxConsecutiveFailures",
            "0 turns off the one trip left with maxFailureRatio 0: the breaker never opens",
        )


def _postgres_image(cfg: StackConfig) -> Iterator[Violation]:
    tag = cfg.zitadel.postgres_image.tag
    if not is_pinned_tag(tag):
        yield "zitadel.postgresImage.tag", f"the bundled Postgres needs a pinned image tag, not {tag!r}"


def _namespaces(cfg: StackConfig) -> Iterator[Violation]:
    if cfg.zitadel.namespace == REDIS_NAMESPACE:
        yield "zitadel.namespace", f"ZITADEL needs its own namespace, not Redis's {REDIS_NAMESPACE!r}"


def _prod_target(cfg: StackConfig) -> Iterator[Violation]:
    # vault.address has no prod default at all: the model reports it missing.
    if cfg.is_prod and not cfg.kubernetes.context:
        yield (
            "kubernetes.context",
            "prod requires an explicit kubeconfig context: the current one may point at another cluster",
        )


def _ownership(cfg: StackConfig) -> Iterator[Violation]:
    k = cfg.kubernetes
    declared = {REDIS_NAMESPACE, cfg.zitadel.namespace, cfg.edge.namespace}
    for name in k.adopt_namespaces:
        if name not in declared:
            yield "kubernetes.adoptNamespaces", f"{name!r} is not a namespace this stack declares ({sorted(declared)})"
    if cfg.is_prod and not k.protect_namespaces:
        yield (
            "kubernetes.protectNamespaces",
            "prod requires protect on its namespaces: deleting one deletes the volumes in it",
        )
    if cfg.is_prod and not cfg.redis.protect:
        yield "redis.protect", "prod requires protect on the Redis release: its volumes hold the event streams"


def _api_server(cfg: StackConfig) -> Iterator[Violation]:
    cidrs = cfg.kubernetes.api_server_cidrs
    if not cidrs:
        yield (
            "kubernetes.apiServerCidrs",
            "the Redis kubectl sidecar moves the master Service through the API server: it needs its address",
        )
    if not cfg.kubernetes.api_server_ports:
        yield (
            "kubernetes.apiServerPorts",
            "the Redis kubectl sidecar, ZITADEL's setup job and the edge's controller reach the API server: it needs "
            "its ports",
        )
    anywhere = [c for c in cidrs if ipaddress.ip_network(c).prefixlen == 0]
    if cfg.is_prod and anywhere:
        yield (
            "kubernetes.apiServerCidrs",
            f"prod requires the API server's own addresses, not {', '.join(anywhere)} (any host on the API ports)",
        )


def _deploy_tokens(cfg: StackConfig) -> Iterator[Violation]:
    v = cfg.vault
    # ZITADEL's release waits for Redis's and the edge's, which run side by side: the provider's token must outlive
    # the longer of the two and then ZITADEL's wait.
    first = max(cfg.redis.release_timeout_seconds, cfg.edge.release_timeout_seconds)
    waits = first + cfg.zitadel.release_timeout_seconds
    if v.provider_token_ttl_seconds <= waits:
        yield (
            "vault.providerTokenTtlSeconds",
            f"{v.provider_token_ttl_seconds}s expires before the Helm releases' waits end ({waits}s: the longer of "
            "redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then zitadel.releaseTimeoutSeconds)",
        )
    if v.ci.enabled and v.ci.token_ttl_seconds < v.provider_token_ttl_seconds:
        yield (
            "vault.ci.tokenTtlSeconds",
            f"{v.ci.token_ttl_seconds}s is shorter than vault.providerTokenTtlSeconds "
            f"({v.provider_token_ttl_seconds}s): the provider's child token cannot outlive the login's",
        )
    if cfg.is_prod and v.ci.enabled and not v.ci.refs:
        yield "vault.ci.refs", "prod requires the refs whose workflows may deploy it (e.g. refs/heads/main)"
    if v.ci.enabled and v.ci.preview is not None and v.ci.preview.environment == v.ci.environment:
        yield (
            "vault.ci.preview.environment",
            f"{v.ci.preview.environment!r} is also the deploy role's environment: a preview job (a branch's code) "
            "would be admitted by the deploy role too",
        )


def shared_vault_names(cfg: StackConfig, others: Mapping[str, StackConfig]) -> Iterator[Violation]:
    """Other stacks on the same Vault with a name in common: Vault writes are upserts, so each would overwrite the
    other's objects without a word, and delete them on destroy."""
    mine = VaultNames.of(cfg).owned()
    for stack, other in sorted(others.items()):
        if other.stack == cfg.stack or vault_address_key(other.vault.address) != vault_address_key(cfg.vault.address):
            continue
        common = sorted(mine & VaultNames.of(other).owned())
        if common:
            yield (
                "vault.namePrefix",
                f"stack {stack!r} writes to the same Vault ({cfg.vault.address}) under the same names "
                f"({', '.join(common[:3])}{', ...' if len(common) > 3 else ''}): give each a distinct vault.namePrefix",
            )


#: The port a URL without one uses.
_DEFAULT_PORTS = {"http": 80, "https": 443}


def vault_address_key(address: str) -> str:
    """One Vault, however its address is written: scheme and host in lower case, the default port explicit, no
    trailing ``/``."""
    parts = urllib.parse.urlsplit(address.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # not a port number: compare the text as it is
        return address.strip().rstrip("/").lower()
    host = (parts.hostname or "").rstrip(".")
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


#: Rules, each with the config sections it reads (top-level keys of a stack file, ``stacks.loader.SECTIONS``).
RuleTable = tuple[tuple[Callable[[StackConfig], Iterator[Violation]], frozenset[str]], ...]
#: Each rule with the config sections it reads, so that rules can still run when another section is invalid.
RULES: RuleTable = (
    (_sentinel_quorum, frozenset({"redis"})),
    (_db_layout, frozenset({"redis", "zitadel", "events"})),
    (_persistence, frozenset({"redis"})),
    (_events, frozenset({"events"})),
    (_event_source, frozenset({"events"})),
    (_event_relay, frozenset({"events"})),
    (_prod_sizing, frozenset({"redis"})),
    (_prod_pinned, frozenset({"redis", "zitadel", "events"})),
    (_prod_resources, frozenset({"redis", "zitadel"})),
    (_database, frozenset({"zitadel"})),
    (_prod_tls, frozenset({"zitadel", "vault"})),
    (_prod_masterkey, frozenset({"zitadel"})),
    (_network_policy, frozenset({"zitadel"})),
    (_namespaces, frozenset({"zitadel"})),
    (_circuit_breaker, frozenset({"redis", "zitadel"})),
    (_postgres_image, frozenset({"zitadel"})),
    (_edge, frozenset({"edge", "zitadel"})),
    (_edge_rule_keys, frozenset({"edge"})),
    (_edge_prod, frozenset({"edge"})),
    (_redis_memory, frozenset({"redis"})),
    (_event_capacity, frozenset({"events", "redis"})),
    (_prod_target, frozenset({"kubernetes"})),
    (_ownership, frozenset({"kubernetes", "redis", "zitadel", "edge"})),
    (_api_server, frozenset({"kubernetes"})),
    (_deploy_tokens, frozenset({"vault", "redis", "zitadel", "edge"})),
)


def _owned_digests(cfg: StackConfig) -> Iterator[Violation]:
    """A stack runs the images this project builds only as the release pipeline pushed, scanned and signed them: by
    digest. A tag can be pushed again (or not be pushed yet); a digest names one image."""
    for owned in images.OWNED_IMAGES:
        image = owned.configured(cfg)
        if owned is images.RELAY and not cfg.events.relay.enabled:
            continue
        if owned.builds(image) and image.digest is None:
            promote = "" if cfg.stack == names.TRAIN_STACK else f", then promote {names.TRAIN_STACK} to {cfg.stack}"
            yield (
                f"{owned.config_key}.digest",
                f"{cfg.stack} deploys the images this project builds by digest ({image.registry}/{image.repository}"
                f"@sha256:…), and {image.reference} has none: release it (./bin/release-image {owned.release} "
                f"{image.tag}, or the release workflow), which writes its digest into {names.TRAIN_STACK}'s release "
                f"train{promote}",
            )


#: Rules only ``pulumi up`` applies (``stacks.loader.load(..., deploying=True)``): what a plan, a preview and a
#: promotion may still show, but nothing may deploy.
DEPLOY_RULES: RuleTable = ((_owned_digests, frozenset({"events", "redis"})),)


def violations(
    cfg: StackConfig, valid_sections: frozenset[str] | None = None, *, deploying: bool = False
) -> list[Violation]:
    """Every broken rule (with ``deploying``, the deploy rules too); with ``valid_sections``, only the rules that read
    nothing but those sections."""
    table = RULES + DEPLOY_RULES if deploying else RULES
    return [v for rule, sections in table if valid_sections is None or sections <= valid_sections for v in rule(cfg)]


def _camel_path(path: str) -> str:
    # The models' own alias generator: a rule names a key exactly as the stack file spells it.
    return ".".join(to_camel(p) for p in path.split("."))
