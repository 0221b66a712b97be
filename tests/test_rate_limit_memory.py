"""Redis memory with rate-limit counters, ZITADEL's caches and the event streams on one server: ``maxmemory`` from the
redis container's memory limit, ``volatile-lru`` eviction, proven on a real redis-server to spare every stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from components import redis_settings
from relay.store import Item, Store, cursor_key, seen_bucket, seen_key
from stacks.config import RedisConfig, ResourceList, Resources
from testbed.redisbed import RedisBed, binaries_available, running_bed
from testbed.required import require
from tests.conftest import stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

#: The README's layout.
RATE_LIMIT_DB, EVENTS_DB, INSTANCE_CACHE_DB = 0, 1, 3
#: The relay's instance name in prod, and a cursor: 2026-08-01T00:00:00Z in microseconds, as relay.store keeps it.
INSTANCE = "id.blinkchamber.com"
CURSOR_US = 1785542400000000
STREAMS = ("zitadel:events:high", "zitadel:events:normal", "zitadel:events:low", "zitadel:events:dead_letter")
MIB = 2**20


@pytest.mark.parametrize(
    ("stack", "limit", "maxmemory"),
    # 70 % of the redis container's memory limit, in whole MiB: dev 256Mi, prod 1Gi.
    [("dev", "256Mi", "179mb"), ("prod", "1Gi", "716mb")],
)
def test_maxmemory_follows_the_container_limit(stack: str, limit: str, maxmemory: str) -> None:
    cfg = stack_config(stack).redis
    assert cfg.resources.redis.limits.memory == limit
    directives = dict(redis_settings.redis_directives(cfg))
    assert (directives["maxmemory"], directives["maxmemory-policy"]) == (maxmemory, "volatile-lru")


def small(memory_limit: str) -> RedisConfig:
    """dev's Redis as a single node whose container is limited to ``memory_limit``."""
    cfg = stack_config("dev").redis
    redis_resources = Resources(requests=cfg.resources.redis.requests, limits=ResourceList(memory=memory_limit))
    resources = cfg.resources.model_copy(update={"redis": redis_resources})
    return cfg.model_copy(update={"nodes": 1, "quorum": 1, "resources": resources})


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(small("32Mi"), tmp_path_factory.mktemp("memory"), with_sentinels=False) as bed:
        yield bed


def test_the_server_runs_the_derived_settings(server: RedisBed) -> None:
    client = server.client(server.nodes[0].port)
    # 32Mi * 70 % = 22.4 MiB, rounded down to 22 MiB.
    assert client.config_get("maxmemory") == {"maxmemory": str(22 * MIB)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}


def fill_events(client: redis.Redis, per_stream: int) -> list[Item]:
    """As the relay writes: entries with their dedup records (no TTL) through its own write path, then its cursor."""
    store = Store(
        client,
        INSTANCE,
        dedup_keep_us=3_600_000_000,
        max_stream_length=1_000_000,
        batch_size=100,
        require_replica_ack=False,  # a single node here
        replica_ack_timeout_ms=0,
    )
    items = [
        Item.of(
            f"user:{stream}-{index}:1",
            seen_bucket(CURSOR_US - index * 1_000_000),
            stream,
            {"type": "user.human.added", "seq": str(index), "payload": "e" * 200},
        )
        for stream in STREAMS
        for index in range(per_stream)
    ]
    store.write(items, cursor=CURSOR_US)
    return items


def missing_dedup_records(client: redis.Redis, items: list[Item]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for item in items:
        pipe.hexists(seen_key(INSTANCE, item.bucket), item.dedup)
    return [item.dedup for item, found in zip(items, pipe.execute(), strict=True) if not found]


def fill_caches(client: redis.Redis, objects: int) -> None:
    """As ZITADEL's cache connector writes (``internal/cache/connector/redis/set.lua``): the object as a hash with a
    TTL (its LastUseAge), an index key pointing at it and a set of its keys, those two without a TTL."""
    pipe = client.pipeline(transaction=False)
    for index in range(objects):
        object_id = f"instance:{index}"
        pipe.hset(object_id, mapping={"object": "o" * 1024, "usage_lifetime": 600})
        pipe.expire(object_id, 600)
        pipe.sadd(f"{object_id}-keys", f"instance:id:{index}")
        pipe.set(f"instance:id:{index}", object_id)
        if index % 500 == 499:
            pipe.execute()
    pipe.execute()


def fill_counters(client: redis.Redis, counters: int, start: int = 0) -> None:
    """As envoyproxy/ratelimit writes a counter: INCRBY then EXPIRE (``src/redis/fixed_cache_impl.go`` L35-38)."""
    pipe = client.pipeline(transaction=False)
    for index in range(start, start + counters):
        key = f"rl:zitadel/zitadel-rate-limits_r_remote_address_10.{index // 65536}.{index // 256 % 256}.{index % 256}"
        pipe.incrby(key, 1)
        pipe.expire(key, 65)
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


def test_eviction_takes_caches_and_counters_and_never_a_stream(server: RedisBed) -> None:
    port = server.nodes[0].port
    events = server.client(port, db=EVENTS_DB)
    caches = server.client(port, db=INSTANCE_CACHE_DB)
    counters = server.client(port, db=RATE_LIMIT_DB)
    relay_records = fill_events(events, per_stream=1000)
    # About 9 MB of counters, then 14 MB of cache objects: past the 22 MiB maxmemory, the older counters go first.
    fill_counters(counters, counters=80000)
    fill_caches(caches, objects=12000)
    assert counters.dbsize() < 80000
    # Then newer counters: now the cache objects are the least recently used.
    fill_counters(counters, counters=80000, start=80000)
    written = range(12000)
    assert caches.exists(*[f"instance:{index}" for index in written]) < 12000

    assert events.info("stats")["evicted_keys"] > 0
    assert events.info("memory")["used_memory"] <= 22 * MIB * 1.05
    # Every stream, the relay's cursor and every one of its dedup records as written (no TTL: a lost dedup record
    # would let a replay write an event twice); the cache's index keys and key sets (no TTL) too.
    assert [events.xlen(stream) for stream in STREAMS] == [1000] * 4
    assert events.get(cursor_key(INSTANCE)) == "1785542400000000"
    assert events.ttl(seen_key(INSTANCE, relay_records[0].bucket)) == -1
    assert missing_dedup_records(events, relay_records) == []
    assert caches.exists(*[f"instance:id:{index}" for index in written]) == 12000
    assert caches.exists(*[f"instance:{index}-keys" for index in written]) == 12000


def test_with_nothing_left_to_evict_writes_fail_and_streams_stay(server: RedisBed) -> None:
    # Past maxmemory with only keys without a TTL, Redis refuses the write (OOM) instead of dropping an event:
    # the relay sees an error and retries; nothing it wrote before is lost.
    events = server.client(server.nodes[0].port, db=EVENTS_DB)
    fill_events(events, per_stream=100)
    written = 0
    # redis-py maps the "OOM" error reply to OutOfMemoryError.
    with pytest.raises(redis.exceptions.OutOfMemoryError, match="when used memory > 'maxmemory'"):
        for _ in range(100000):
            events.xadd("zitadel:events:normal", {"payload": "x" * 4096})
            written += 1
    assert events.xlen("zitadel:events:normal") == 100 + written
    assert [events.xlen(stream) for stream in STREAMS if stream != "zitadel:events:normal"] == [100] * 3
    assert events.info("stats")["evicted_keys"] == 0
