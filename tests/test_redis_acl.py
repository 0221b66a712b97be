"""Each Redis client logs in as its own ACL user and can do exactly its job, on real redis-server and redis-sentinel.

The users are the ones the program declares (``components/redis_acl.py``), loaded by the test bed the way the pods
load them: an ``aclfile`` for redis-server, an ``include``d file for the sentinels. The tables below are the README's
("Redis users"): what each user must be allowed, and what it must be refused with ``NOPERM``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from components import redis_acl
from components.redis import exporter_args
from components.wiring import event_streams
from testbed import exporter
from testbed.redisbed import RedisBed, binaries_available, running_bed
from testbed.required import require
from tests.conftest import stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

#: ZITADEL's cache keys (v4.13.0): an object hash named by a UUID, its key set, an index named by the build version.
OBJECT = "3f2b9c1e-7d4a-4e8b-9a6f-0c1d2e3f4a5b"
INDEX = "v4.13.0:instanceIndexByID:312909075212468632"
#: What ZITADEL's set.lua and get.lua call, in their order (``internal/cache/connector/redis``), as one script each.
ZITADEL_SET = """
redis.call('SELECT', ARGV[1])
redis.call('HSET', KEYS[1], 'object', ARGV[2])
redis.call('HSET', KEYS[1], 'usage', redis.call('TIME')[1])
redis.call('EXPIRE', KEYS[1], 600)
redis.call('SADD', KEYS[1] .. '-keys', KEYS[2])
return redis.call('SET', KEYS[2], KEYS[1])
"""
ZITADEL_GET = """
redis.call('SELECT', ARGV[1])
local id = redis.call('GET', KEYS[1])
local object = redis.call('HGET', id, 'object')
redis.call('EXPIRE', id, 600)
redis.call('UNLINK', unpack(redis.call('SMEMBERS', id .. '-keys')))
return object
"""
#: Commands each user must be allowed: (DB, command...). Keys as the clients name them.
ALLOWED: dict[str, list[tuple[Any, ...]]] = {
    "zitadel": [
        (3, "EVAL", ZITADEL_SET, "2", OBJECT, INDEX, "3", '{"id":"312909075212468632"}'),
        (3, "EVAL", ZITADEL_GET, "1", INDEX, "3"),
        (3, "DEL", OBJECT, f"{OBJECT}-keys"),
        (4, "FLUSHDB"),
    ],
    "event-relay": [
        (1, "EVAL", "return redis.call('HSETNX', KEYS[1], 'a', '1')", "1", "relay:seen:i:1"),
        (1, "EVAL", "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', 9, '*', 'k', 'v')", "1", "zitadel:events:high"),
        (1, "XADD", "zitadel:events:dead_letter", "*", "dead_letter.reason", "unparseable"),
        (1, "SET", "relay:i:cursor", "1"),
        (1, "GET", "relay:i:cursor"),
        (1, "XTRIM", "zitadel:events:low", "MAXLEN", "~", "1000"),
        (1, "SCAN", "0", "MATCH", "relay:seen:*"),
        (1, "UNLINK", "relay:seen:i:0"),
        (1, "EVAL", "return redis.call('DEL', KEYS[1])", "1", "relay:i:lease"),
        (1, "WAIT", "0", "10"),
        (1, "XREVRANGE", "zitadel:events:high", "+", "-", "COUNT", "5"),
        (1, "XDEL", "zitadel:events:dead_letter", "1-1"),
    ],
    "ratelimit": [
        (0, "INCRBY", "rl:zitadel/zitadel-rate-limits_rule-0-match-0_1767225600", "1"),
        (0, "EXPIRE", "rl:zitadel/zitadel-rate-limits_rule-0-match-0_1767225600", "70"),
        (0, "PING"),
    ],
    "exporter": [
        (0, "INFO", "all"),
        (0, "SLOWLOG", "GET", "1"),
        (0, "SLOWLOG", "LEN"),
        (0, "LATENCY", "LATEST"),
        (0, "LATENCY", "HISTOGRAM"),
        (0, "CLIENT", "SETNAME", "redis_exporter"),
        # Its stream checks (the alerts' consumer lag); XINFO CONSUMERS in the scrape test below, which has a group.
        (1, "XINFO", "STREAM", "zitadel:events:high"),
        (1, "XINFO", "GROUPS", "zitadel:events:high"),
    ],
    "event-consumer": [
        (1, "XGROUP", "CREATE", "zitadel:events:normal", "workers", "0", "MKSTREAM"),
        (1, "XREADGROUP", "GROUP", "workers", "w1", "COUNT", "1", "STREAMS", "zitadel:events:normal", ">"),
        (1, "XAUTOCLAIM", "zitadel:events:normal", "workers", "w1", "0", "0-0"),
        (1, "XPENDING", "zitadel:events:normal", "workers"),
        (1, "XACK", "zitadel:events:normal", "workers", "1-1"),
        (1, "XINFO", "GROUPS", "zitadel:events:normal"),
        (1, "XADD", "zitadel:events:dead_letter", "*", "dead_letter.reason", "max_retries"),
        (1, "SET", "consumer:workers:seen:e1", "1", "NX", "EX", "3600"),
        (1, "XDEL", "zitadel:events:dead_letter", "1-1"),
    ],
}
#: Commands each user must be refused (NOPERM): other clients' keys, administration, data-wide destruction.
REFUSED: dict[str, list[tuple[Any, ...]]] = {
    "zitadel": [
        # Other clients' keys, even with commands it has: the streams, the cursor, the counters.
        (1, "GET", "relay:i:cursor"),
        (0, "SET", "rl:x", "1"),
        (1, "DEL", "zitadel:events:high"),
        (1, "EVAL", "return redis.call('GET', KEYS[1])", "1", "relay:i:cursor"),
        (1, "XADD", "zitadel:events:high", "*", "k", "v"),
        (1, "XRANGE", "zitadel:events:high", "-", "+"),
        (3, "EVAL", "return redis.call('XADD', KEYS[1], '*', 'k', 'v')", "1", "zitadel:events:high"),
        (0, "INCRBY", "rl:x", "1"),
        (0, "CONFIG", "SET", "maxmemory", "1"),
        (0, "KEYS", "*"),
        (0, "ACL", "LIST"),
        (0, "SHUTDOWN"),
        (0, "REPLICAOF", "127.0.0.1", "1"),
    ],
    "event-relay": [
        (0, "INCRBY", "rl:x", "1"),
        (3, "GET", "instance:zitadel:1"),
        (1, "EVAL", "return redis.call('DEL', KEYS[1])", "1", "rl:x"),
        (1, "FLUSHDB"),
        # Deleting is for its own keys: never a stream, nor an entry but the dead letter's.
        (1, "DEL", "zitadel:events:high"),
        (1, "UNLINK", "zitadel:events:low"),
        (1, "EVAL", "return redis.call('DEL', KEYS[1])", "1", "zitadel:events:normal"),
        (1, "XDEL", "zitadel:events:high", "1-1"),
        (0, "CONFIG", "GET", "maxmemory"),
        (0, "KEYS", "*"),
        (1, "XREADGROUP", "GROUP", "g", "c", "STREAMS", "zitadel:events:high", ">"),
    ],
    "ratelimit": [
        (0, "EVAL", "return 1", "0"),
        (0, "GET", "zitadel:events:high"),
        (0, "INCRBY", "relay:i:cursor", "1"),
        (0, "SET", "rl:x", "1"),
        (0, "DEL", "rl:x"),
        (0, "FLUSHDB"),
        (0, "KEYS", "*"),
        (0, "SCAN", "0"),
        (0, "CONFIG", "GET", "maxmemory"),
    ],
    "exporter": [
        (0, "GET", "rl:x"),
        (1, "XRANGE", "zitadel:events:high", "-", "+"),
        (1, "XREAD", "STREAMS", "zitadel:events:high", "0"),
        (1, "XLEN", "zitadel:events:high"),
        # XINFO only on the streams: not on another client's key.
        (1, "XINFO", "STREAM", "relay:i:cursor"),
        (1, "XGROUP", "CREATE", "zitadel:events:high", "spy", "0"),
        (0, "SET", "x", "1"),
        (0, "EVAL", "return 1", "0"),
        (0, "CONFIG", "SET", "maxmemory", "1"),
        # CONFIG GET * answers masterauth: the chart's own password, in clear text.
        (0, "CONFIG", "GET", "*"),
        (0, "FLUSHDB"),
        (0, "KEYS", "*"),
        (0, "CLIENT", "KILL", "ID", "1"),
        (0, "CLIENT", "LIST"),
    ],
    "event-consumer": [
        (0, "INCRBY", "rl:x", "1"),
        (1, "SET", "relay:i:cursor", "0"),
        (1, "DEL", "zitadel:events:high"),
        (1, "XTRIM", "zitadel:events:high", "MAXLEN", "0"),
        (1, "XDEL", "zitadel:events:high", "1-1"),
        (1, "EVAL", "return redis.call('SET', KEYS[1], '0')", "1", "relay:i:cursor"),
        (1, "FLUSHDB"),
        (0, "CONFIG", "GET", "maxmemory"),
        (0, "KEYS", "*"),
    ],
}
#: The users that find the master through the sentinels, and what every one of them is refused there.
SENTINEL_USERS = ("event-relay", "ratelimit", "event-consumer")
SENTINEL_REFUSED: list[tuple[str, ...]] = [
    ("SENTINEL", "FAILOVER", "mymaster"),
    ("SENTINEL", "SET", "mymaster", "down-after-milliseconds", "1"),
    ("SENTINEL", "REMOVE", "mymaster"),
    ("SENTINEL", "RESET", "*"),
    ("SENTINEL", "CONFIG", "GET", "*"),
    ("ACL", "LIST"),
    ("SHUTDOWN",),
]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(stack_config("dev").redis, tmp_path_factory.mktemp("redis-acl")) as started:
        # The streams exist, as in a running stack: each command below meets them whatever runs first.
        events = started.client(started.nodes[0].port, db=1)
        for stream in ("zitadel:events:high", "zitadel:events:normal", "zitadel:events:low"):
            events.xadd(stream, {"type": "user.human.added"})
        yield started


def as_user(bed: RedisBed, user: str, db: int) -> redis.Redis:
    return bed.user_client(user, db=db)


def test_the_users_are_the_readme_table() -> None:
    assert [user.name for user in redis_acl.client_users(("a", "b", "c", "d"), "rl:")] == list(ALLOWED)
    assert list(REFUSED) == list(ALLOWED)


@pytest.mark.parametrize(("user", "command"), [(u, c) for u, cs in ALLOWED.items() for c in cs], ids=str)
def test_each_user_can_do_its_job(bed: RedisBed, user: str, command: tuple[Any, ...]) -> None:
    db, *args = command
    as_user(bed, user, db).execute_command(*args)


#: How Redis words a refusal inside a script (a plain error reply there, not NOPERM).
SCRIPT_REFUSALS = ("can't run this command", "can't access at least one of the keys")


@pytest.mark.parametrize(("user", "command"), [(u, c) for u, cs in REFUSED.items() for c in cs], ids=str)
def test_each_user_is_refused_the_rest(bed: RedisBed, user: str, command: tuple[Any, ...]) -> None:
    db, *args = command
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        as_user(bed, user, db).execute_command(*args)
    assert isinstance(refused.value, redis.exceptions.NoPermissionError) or (
        args[0] == "EVAL" and any(text in str(refused.value) for text in SCRIPT_REFUSALS)
    ), refused.value


def test_no_client_password_opens_the_default_user(bed: RedisBed) -> None:
    for user, password in bed.user_passwords.items():
        with pytest.raises(redis.exceptions.AuthenticationError):
            bed.client(bed.nodes[0].port, password=password).ping()
        assert user != "default"
    # The chart's own user still has everything (replication and the sentinels run on it).
    assert bed.client(bed.nodes[0].port).acl_whoami() == "default"


def sentinel_as(bed: RedisBed, user: str) -> redis.Redis:
    return bed.client(bed.sentinels[0].port, username=user, password=bed.user_passwords[user])


@pytest.mark.parametrize("user", SENTINEL_USERS)
def test_sentinel_users_only_discover_the_master(bed: RedisBed, user: str) -> None:
    sentinel = sentinel_as(bed, user)
    _host, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    assert int(port) == bed.master_port()
    sentinel.execute_command("SENTINEL", "SENTINELS", "mymaster")
    sentinel.execute_command("SENTINEL", "REPLICAS", "mymaster")
    for command in SENTINEL_REFUSED:
        with pytest.raises(redis.exceptions.NoPermissionError):
            sentinel.execute_command(*command)


@pytest.mark.parametrize("user", ["zitadel", "exporter"])
def test_users_that_do_not_speak_sentinel_cannot_log_in_there(bed: RedisBed, user: str) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        sentinel_as(bed, user).ping()


def test_the_exporter_scrapes_everything_as_its_user(bed: RedisBed, tmp_path: Path) -> None:
    """Debian's prometheus-redis-exporter with the program's flags, its password file holding the exporter user's
    password: Redis answers every scrape without an error, and the chart's own user is never used."""
    require(exporter.available(), exporter.BINARY, "apt-get install prometheus-redis-exporter")
    cfg = stack_config("dev")
    address = f"redis://localhost:{bed.master_port()}"
    password_file = tmp_path / "redis-exporter.json"
    password_file.write_text(json.dumps({address: bed.user_passwords["exporter"]}))
    flags = {**exporter_args(event_streams(cfg), cfg.events.db), "redis.password-file": str(password_file)}
    operator = bed.client(bed.master_port())
    operator.acl_log_reset()
    # A group with one entry delivered and not acknowledged: what the lag and pending-age alerts read.
    events = bed.client(bed.master_port(), db=1)
    events.xadd("zitadel:events:low", {"k": "v"})
    events.xgroup_create("zitadel:events:low", "exporter-check", id="0")
    events.xreadgroup("exporter-check", "worker-1", {"zitadel:events:low": ">"}, count=1)
    metrics = exporter.scrape(address, flags)
    assert (metrics["redis_up"], metrics['redis_exporter_last_scrape_error{err=""}']) == ("1", "0")
    # What the capacity model and alerts read comes from INFO: maxmemory and memory in use, no CONFIG GET.
    assert float(metrics["redis_memory_max_bytes"]) > 0 and float(metrics["redis_memory_used_bytes"]) > 0
    # And from XINFO STREAM, GROUPS and CONSUMERS on the streams, named exactly.
    group = 'db="db1",group="exporter-check",stream="zitadel:events:low"'
    assert metrics[f"redis_stream_group_messages_pending{{{group}}}"] == "1"
    assert 'redis_stream_last_generated_id{db="db1",stream="zitadel:events:low"}' in metrics
    assert any(key.startswith("redis_stream_group_consumer_idle_seconds{") and "worker-1" in key for key in metrics)
    # Nothing it sends is refused (each refusal would be an ACL LOG entry).
    assert operator.acl_log() == []
