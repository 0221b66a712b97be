"""The one mapping from a stack's Redis config to the settings the Redis and Sentinel processes run with.

The Helm values (``components/redis.py``) and the test bed that starts real processes (``testbed/redisbed.py``)
both read these functions, so what is tested is what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from stacks import names
from stacks.config import RedisConfig

#: Under memory pressure Redis evicts only keys with a TTL (caches, rate-limit counters, dedup keys), least recently
#: used first: the event streams and the relay's cursor carry none, so no eviction can ever drop them.
MAXMEMORY_POLICY = "volatile-lru"
_MIB = 2**20


def maxmemory_megabytes(redis: RedisConfig) -> int | None:
    """``maxmemory`` in MiB: ``maxmemoryPercent`` of the redis container's memory limit, rounded down."""
    maxmemory = redis.maxmemory_bytes
    return None if maxmemory is None else maxmemory // _MIB


def redis_directives(redis: RedisConfig) -> list[tuple[str, str]]:
    """redis.conf directives besides auth and renamed commands, in file order."""
    directives = [("databases", str(redis.databases))]
    if redis.persistence.enabled:
        directives += [("appendonly", "yes"), ("appendfsync", redis.persistence.appendfsync)]
    else:
        directives += [("appendonly", "no")]
    # AOF is the persistence; RDB snapshots would only add fork pauses.
    directives.append(("save", '""'))
    megabytes = maxmemory_megabytes(redis)
    if megabytes is not None:
        # Redis's "mb" is MiB.
        directives += [("maxmemory", f"{megabytes}mb"), ("maxmemory-policy", MAXMEMORY_POLICY)]
    if redis.min_replicas_to_write:
        directives += [
            ("min-replicas-to-write", str(redis.min_replicas_to_write)),
            ("min-replicas-max-lag", str(redis.min_replicas_max_lag)),
        ]
    return directives


def redis_conf_text(redis: RedisConfig) -> str:
    """The directives as redis.conf lines (the chart's ``commonConfiguration``)."""
    return "".join(f"{key} {value}\n" for key, value in redis_directives(redis))


@dataclass(frozen=True)
class SentinelSettings:
    master_set: str
    quorum: int
    down_after_milliseconds: int
    failover_timeout: int
    parallel_syncs: int


def sentinel_settings(redis: RedisConfig) -> SentinelSettings:
    return SentinelSettings(
        master_set=names.SENTINEL_MASTER_SET,
        quorum=redis.quorum,
        down_after_milliseconds=redis.down_after_milliseconds,
        failover_timeout=redis.failover_timeout,
        parallel_syncs=redis.parallel_syncs,
    )
