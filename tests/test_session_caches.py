"""The login-state caches (``IdPFormCallbacks``, ``FederatedLogouts``) and the Redis DB layout around them, on a real
redis-server: each cache purpose's ``FLUSHDB`` leaves the events DB and the rate-limit DB alone; ZITADEL's connector
names itself.

Expected DBs are README's layout: rate-limit counters in DB 0, event streams in DB 1, ZITADEL's caches in
``DBOffset (2) + purpose``: Instance 3, Milestones 4, Organization 5, IdPFormCallbacks 6, FederatedLogouts 7,
the webkey caches 8 and 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stacks.config import StackConfig
from testbed.breaker import ZITADEL_DEFAULTS, CircuitBreaker
from testbed.redisbed import RedisBed, binaries_available, running_bed
from testbed.required import in_ci
from testbed.zitadel_cache import CacheClient
from tests.conftest import stack_config
from tests.test_zitadel_breaker import found

RATE_LIMIT_DB = 0
EVENTS_DB = 1
CACHE_DBS = {
    "Instance": 3,
    "Milestones": 4,
    "Organization": 5,
    "IdPFormCallbacks": 6,
    "FederatedLogouts": 7,
    "WebkeyActiveSigningKey": 8,
    "WebkeyPublicKeys": 9,
}


@pytest.mark.parametrize(
    ("stack", "on_redis"),
    [
        # README, "What Redis does for ZITADEL": dev keeps login state on Redis, prod on Postgres.
        ("dev", {"Instance": 3, "Milestones": 4, "Organization": 5, "IdPFormCallbacks": 6, "FederatedLogouts": 7}),
        ("prod", {"Instance": 3, "Milestones": 4, "Organization": 5}),
    ],
)
def test_caches_on_redis_per_stack(stack: str, on_redis: dict[str, int]) -> None:
    layout = stack_config(stack).db_layout
    assert layout.cache_dbs == on_redis
    assert (layout.cache_block.start, layout.cache_block.stop - 1) == (3, 9)


def test_the_connector_is_a_stack_setting() -> None:
    assert found("prod", {"zitadel": {"cache": {"sessionCacheConnector": "memory"}}}) == [
        "prod: zitadel.cache.sessionCacheConnector: Input should be 'postgres' or 'redis'"
    ]


# --- on a real redis-server ----------------------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(
    not binaries_available() and not in_ci(), reason="redis-server/redis-sentinel not installed"
)


@pytest.fixture(scope="module")
def dev() -> StackConfig:
    return stack_config("dev")


@pytest.fixture(scope="module")
def bed(dev: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(dev.redis, tmp_path_factory.mktemp("session-caches"), with_sentinels=False) as running:
        yield running


def zitadel_cache(dev: StackConfig, bed: RedisBed, purpose: str) -> CacheClient:
    """ZITADEL's connector for one cache, as the dev stack configures it, on the master."""
    password = bed.user_passwords["zitadel"]
    return CacheClient(dev, bed.nodes[0].port, password, CircuitBreaker(ZITADEL_DEFAULTS), purpose=purpose)


@needs_redis
@pytest.mark.parametrize("purpose", list(CACHE_DBS))
def test_each_cache_truncate_stays_in_its_db(dev: StackConfig, bed: RedisBed, purpose: str) -> None:
    master = bed.nodes[0].port
    ratelimit = bed.client(master, db=RATE_LIMIT_DB)
    events = bed.client(master, db=EVENTS_DB)
    ratelimit.set("ratelimit:zitadel:203.0.113.7", 3, ex=60)
    events.xadd("zitadel:events:high", {"type": "user.human.added"})
    others = {name: bed.client(master, db=db) for name, db in CACHE_DBS.items() if name != purpose}
    for name, client in others.items():
        client.set(f"v4.13.0:index:{name}", "cached")

    cache = zitadel_cache(dev, bed, purpose)
    try:
        assert cache.redis.connection_pool.connection_kwargs["db"] == CACHE_DBS[purpose]
        # A key of ZITADEL's (an index named by its version), as its own ACL user writes it.
        cache.redis.set(f"v4.13.0:index:{purpose}", "cached")
        assert cache.redis.flushdb() is True  # ZITADEL's Truncate: SELECT db; FLUSHDB, as its own user
        assert bed.client(master, db=CACHE_DBS[purpose]).dbsize() == 0
    finally:
        cache.close()
    assert ratelimit.get("ratelimit:zitadel:203.0.113.7") == "3"
    assert events.xlen("zitadel:events:high") >= 1
    assert all(client.get(f"v4.13.0:index:{name}") == "cached" for name, client in others.items())


@needs_redis
def test_zitadel_names_its_connection(dev: StackConfig, bed: RedisBed) -> None:
    cache = zitadel_cache(dev, bed, "IdPFormCallbacks")
    try:
        assert cache.call() is True
        clients = bed.client(bed.nodes[0].port).client_list()
        assert [c["db"] for c in clients if c["name"] == "zitadel"] == ["6"]
    finally:
        cache.close()
