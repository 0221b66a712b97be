"""The one mapping from a stack's Redis config to the settings the Redis and Sentinel processes run with.

The Helm values (``components/redis.py``) and the test bed that starts real processes (``tests/redisbed.py``)
both read these functions, so what is tested is what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass

from stacks import names
from stacks.config import RedisConfig


def redis_directives(redis: RedisConfig) -> list[tuple[str, str]]:
    """redis.conf directives besides auth and renamed commands, in file order."""
    directives = [("databases", str(redis.databases))]
    if redis.persistence.enabled:
        directives += [("appendonly", "yes"), ("appendfsync", redis.persistence.appendfsync)]
    else:
        directives += [("appendonly", "no")]
    # AOF is the persistence; RDB snapshots would only add fork pauses.
    directives.append(("save", '""'))
    if redis.min_replicas_to_write:
        directives += [
            ("min-replicas-to-write", str(redis.min_replicas_to_write)),
            ("min-replicas-max-lag", str(redis.min_replicas_max_lag)),
        ]
    return directives


def redis_conf_text(redis: RedisConfig) -> str:
    """The directives as redis.conf lines (the chart's ``commonConfiguration``)."""
    return "".join(f"{key} {value}\n" for key, value in redis_directives(redis))


def disabled_commands() -> tuple[str, ...]:
    """Commands renamed to "" on every node (the chart's ``replica.disableCommands`` reaches the master too)."""
    return names.REDIS_DISABLED_COMMANDS


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
