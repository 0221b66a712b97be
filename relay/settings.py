"""The relay's settings: one JSON document (``relay.json``), rendered from the stack's typed config.

Durations arrive in seconds. Credentials never appear here: the document names the files the Vault agent renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Streams:
    # The program's defaults (``events.streams``), for consumers built without a relay.json; a test ties the two.
    high: str = "zitadel:events:high"
    normal: str = "zitadel:events:normal"
    low: str = "zitadel:events:low"
    dead_letter: str = "zitadel:events:dead_letter"

    def by_priority(self) -> tuple[str, str, str]:
        """The event streams, the most urgent first (the order consumers drain them in)."""
        return (self.high, self.normal, self.low)

    def of(self, priority: str) -> str:
        return {"high": self.high, "normal": self.normal, "low": self.low}[priority]


# Below, a default marks a value relay.json does not carry (the relay's own); everything else the document must name.


@dataclass(frozen=True)
class ZitadelSettings:
    #: Base URL of ZITADEL's API inside the cluster (its Service), without a trailing slash.
    url: str
    #: The instance's domain, sent as ``x-zitadel-instance-host``: ZITADEL picks the instance from it.
    instance_host: str
    #: File holding the machine user's personal access token (rendered by the Vault agent).
    token_file: str
    timeout: float = 10.0


@dataclass(frozen=True)
class RedisSettings:
    #: ``(host, port)`` of the sentinels; the bridge always writes to the master they name.
    sentinels: tuple[tuple[str, int], ...]
    master_set: str
    db: int
    #: The bridge's ACL user, on the Redis nodes and on the sentinels alike.
    username: str
    #: File holding that user's password (rendered by the Vault agent).
    password_file: str
    socket_timeout: float = 2.0


@dataclass(frozen=True)
class SourceSettings:
    poll_interval: float
    clock_skew: float
    page_size: int
    look_back_window: float
    look_back_period: float
    dedup_ttl: float
    max_event_bytes: int
    start_from: str


@dataclass(frozen=True)
class PublishingSettings:
    #: Events per round trip to Redis.
    batch_size: int
    #: Deliveries of a stream entry before a consumer moves it to the dead-letter stream.
    max_retries: int
    retry_backoff: float
    max_retry_backoff: float
    require_replica_ack: bool
    #: ``MAXLEN ~`` of each priority stream and of the dead-letter stream (derived from Redis's maxmemory).
    max_stream_length: int
    dead_letter_max_length: int
    #: Every ``trim_interval`` the active bridge trims every stream to its cap and drops entries older than
    #: ``max_stream_age`` (seconds), whether or not an event arrives.
    max_stream_age: float
    trim_interval: float
    #: How long ``WAIT 1`` may take before the page counts as not acknowledged (and is written again).
    replica_ack_timeout: float = 2.0


@dataclass(frozen=True)
class LeaseSettings:
    #: The lease expires this long after its holder's last renewal (a dead holder frees it after at most this).
    ttl: float
    renew_every: float


class SettingsError(ValueError):
    """A relay.json that lacks a key the relay reads, or has one it does not know."""


@dataclass(frozen=True)
class Settings:
    #: The instance's name in the dedup, cursor and lease keys.
    instance: str
    zitadel: ZitadelSettings
    redis: RedisSettings
    streams: Streams
    source: SourceSettings
    publishing: PublishingSettings
    lease: LeaseSettings
    metrics_port: int
    #: The address the metrics and probes listen on: every interface in a pod (the kubelet and Prometheus reach
    #: it there), loopback anywhere else.
    metrics_host: str

    @staticmethod
    def from_document(doc: dict[str, Any]) -> Settings:
        """Every key is required: a default here could drift from the program's (``events.*``)."""
        read = _Reader(doc)
        settings = Settings(
            instance=str(read("instance")),
            zitadel=ZitadelSettings(
                url=str(read("zitadel.url")).rstrip("/"),
                instance_host=str(read("zitadel.instanceHost")),
                token_file=str(read("zitadel.tokenFile")),
            ),
            redis=RedisSettings(
                sentinels=tuple((str(h), int(p)) for h, p in read("redis.sentinels")),
                master_set=str(read("redis.masterSet")),
                db=int(read("redis.db")),
                username=str(read("redis.username")),
                password_file=str(read("redis.passwordFile")),
            ),
            streams=Streams(
                high=str(read("streams.high")),
                normal=str(read("streams.normal")),
                low=str(read("streams.low")),
                dead_letter=str(read("streams.deadLetter")),
            ),
            source=SourceSettings(
                poll_interval=float(read("source.pollInterval")),
                clock_skew=float(read("source.clockSkew")),
                page_size=int(read("source.pageSize")),
                look_back_window=float(read("source.lookBackWindow")),
                look_back_period=float(read("source.lookBackPeriod")),
                dedup_ttl=float(read("source.dedupTtl")),
                max_event_bytes=int(read("source.maxEventBytes")),
                start_from=str(read("source.startFrom")),
            ),
            publishing=PublishingSettings(
                batch_size=int(read("publishing.batchSize")),
                max_retries=int(read("publishing.maxRetries")),
                retry_backoff=float(read("publishing.retryBackoff")),
                max_retry_backoff=float(read("publishing.maxRetryBackoff")),
                require_replica_ack=bool(read("publishing.requireReplicaAck")),
                max_stream_length=int(read("publishing.maxStreamLength")),
                dead_letter_max_length=int(read("publishing.deadLetterMaxLength")),
                max_stream_age=float(read("publishing.maxStreamAge")),
                trim_interval=float(read("publishing.trimInterval")),
            ),
            lease=LeaseSettings(ttl=float(read("lease.ttl")), renew_every=float(read("lease.renewEvery"))),
            metrics_port=int(read("metricsPort")),
            metrics_host=str(read("metricsHost")),
        )
        read.check_all_read()
        return settings


def load(path: str | Path) -> Settings:
    return Settings.from_document(json.loads(Path(path).read_text()))


def read_secret_file(path: str) -> str:
    """A credential rendered by the Vault agent: the file's content without a trailing newline."""
    return Path(path).read_text().rstrip("\n")


class _Reader:
    """Reads relay.json by dotted path and remembers what it read: a missing key and a key nobody reads (a typo,
    or a setting the program writes that the relay ignores) are both errors."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self._doc = doc
        self._read: set[str] = set()

    def __call__(self, path: str) -> Any:
        node: Any = self._doc
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise SettingsError(f"relay.json: missing {path!r}")
            node = node[key]
        self._read.add(path)
        return node

    def check_all_read(self) -> None:
        unknown = sorted(_leaf_paths(self._doc) - self._read)
        if unknown:
            raise SettingsError(f"relay.json: unknown {', '.join(map(repr, unknown))}")


def _leaf_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths |= _leaf_paths(value, f"{path}.") if isinstance(value, dict) else {path}
    return paths
