"""The relay's settings: one JSON document (``relay.json``), rendered from the stack's typed config.

Durations arrive in seconds. Credentials never appear here: the document names the files the Vault agent renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Streams:
    high: str = "zitadel:events:high"
    normal: str = "zitadel:events:normal"
    low: str = "zitadel:events:low"
    dead_letter: str = "zitadel:events:dead_letter"

    def by_priority(self) -> tuple[str, str, str]:
        """The event streams, the most urgent first (the order consumers drain them in)."""
        return (self.high, self.normal, self.low)

    def of(self, priority: str) -> str:
        return {"high": self.high, "normal": self.normal, "low": self.low}[priority]


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
    #: File holding the password of Redis and the sentinels (rendered by the Vault agent).
    password_file: str
    socket_timeout: float = 2.0


@dataclass(frozen=True)
class SourceSettings:
    poll_interval: float = 1.0
    clock_skew: float = 5.0
    page_size: int = 1000
    look_back_window: float = 1800.0
    look_back_period: float = 600.0
    dedup_ttl: float = 3600.0
    max_event_bytes: int = 65536
    start_from: str = "beginning"


@dataclass(frozen=True)
class PublishingSettings:
    #: Events per round trip to Redis.
    batch_size: int = 100
    #: Deliveries of a stream entry before a consumer moves it to the dead-letter stream.
    max_retries: int = 5
    retry_backoff: float = 0.2
    max_retry_backoff: float = 10.0
    require_replica_ack: bool = True
    #: How long ``WAIT 1`` may take before the page counts as not acknowledged (and is written again).
    replica_ack_timeout: float = 2.0
    max_stream_length: int = 1_000_000


@dataclass(frozen=True)
class LeaseSettings:
    #: The lease expires this long after its holder's last renewal (a dead holder frees it after at most this).
    ttl: float = 10.0
    renew_every: float = 3.0


@dataclass(frozen=True)
class Settings:
    #: The instance's name in the dedup, cursor and lease keys.
    instance: str
    zitadel: ZitadelSettings
    redis: RedisSettings
    streams: Streams = field(default_factory=Streams)
    source: SourceSettings = field(default_factory=SourceSettings)
    publishing: PublishingSettings = field(default_factory=PublishingSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    metrics_port: int = 9090
    #: The address the metrics and probes listen on: every interface in a pod (the kubelet and Prometheus reach
    #: it there), loopback anywhere else.
    metrics_host: str = "127.0.0.1"

    @staticmethod
    def from_document(doc: dict[str, Any]) -> Settings:
        z, r = doc["zitadel"], doc["redis"]
        return Settings(
            instance=doc["instance"],
            zitadel=ZitadelSettings(
                url=z["url"].rstrip("/"),
                instance_host=z["instanceHost"],
                token_file=z["tokenFile"],
                timeout=float(z.get("timeout", 10.0)),
            ),
            redis=RedisSettings(
                sentinels=tuple((str(h), int(p)) for h, p in r["sentinels"]),
                master_set=r["masterSet"],
                db=int(r["db"]),
                password_file=r["passwordFile"],
                socket_timeout=float(r.get("socketTimeout", 2.0)),
            ),
            streams=Streams(**_snake(doc.get("streams", {}))),
            source=SourceSettings(**_snake(doc.get("source", {}))),
            publishing=PublishingSettings(**_snake(doc.get("publishing", {}))),
            lease=LeaseSettings(**_snake(doc.get("lease", {}))),
            metrics_port=int(doc.get("metricsPort", 9090)),
            metrics_host=str(doc.get("metricsHost", "127.0.0.1")),
        )

    def with_overrides(self, **sections: Any) -> Settings:
        """A copy with whole sections or fields replaced (``source=replace(s.source, poll_interval=0.1)``)."""
        return replace(self, **sections)


def load(path: str | Path) -> Settings:
    return Settings.from_document(json.loads(Path(path).read_text()))


def read_secret_file(path: str) -> str:
    """A credential rendered by the Vault agent: the file's content without a trailing newline."""
    return Path(path).read_text().rstrip("\n")


def _snake(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
        out[snake] = value
    return out
