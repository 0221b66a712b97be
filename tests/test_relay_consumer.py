"""The consumers' side on real Redis: priority order, acknowledgement, retries, claims, dead letters, replay."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from relay.consumer import Consumer, StreamEntry, replay_dead_letter
from relay.examples import WelcomeMail
from relay.settings import Streams
from stacks.config import StackConfig
from testbed.redisbed import RedisBed, binaries_available, running_bed
from testbed.required import require
from tests.conftest import stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

STREAMS = Streams()


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return stack_config("prod")


@pytest.fixture(scope="module")
def bed(prod: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    # The consumer talks to one master; no sentinels needed.
    with running_bed(prod.redis, tmp_path_factory.mktemp("consumer-bed"), with_sentinels=False) as b:
        yield b


@pytest.fixture
def client(bed: RedisBed, prod: StackConfig) -> redis.Redis:
    c = bed.client(bed.nodes[0].port, db=prod.events.db)
    c.flushdb()
    return c


def add(client: redis.Redis, stream: str, taxonomy: str, aggregate_id: str, **payload: Any) -> str:
    fields = {
        "taxonomy": taxonomy,
        "type": {"auth.failed": "user.human.password.check.failed", "user.created": "user.human.added"}.get(
            taxonomy, taxonomy
        ),
        "aggregate_id": aggregate_id,
        "payload": json.dumps(payload),
    }
    return str(client.xadd(stream, cast(Any, fields)))


def consumer(client: redis.Redis, name: str = "c1", **options: Any) -> Consumer:
    settings: dict[str, Any] = {"max_deliveries": 3, "claim_idle_ms": 100, "batch": 10, "block_ms": 50}
    settings.update(options)
    c = Consumer(client, group="jobs", name=name, streams=STREAMS, **settings)
    c.ensure_groups()
    return c


def drain(c: Consumer, handler: Any, turns: int = 50) -> None:
    for _ in range(turns):
        if c.run_once(handler, block=False) == 0:
            return


def pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, "jobs")["pending"])


def test_high_before_normal_before_low(client: redis.Redis) -> None:
    for i in range(25):
        add(client, STREAMS.low, "unclassified", f"low-{i}")
    for i in range(3):
        add(client, STREAMS.normal, "user.created", f"normal-{i}")
    for i in range(2):
        add(client, STREAMS.high, "auth.failed", f"high-{i}")
    seen: list[str] = []

    def handler(entry: StreamEntry) -> None:
        seen.append(entry.fields["aggregate_id"])
        if entry.fields["aggregate_id"] == "low-0":
            # A high event arriving while low ones are being worked: it waits for this batch only.
            add(client, STREAMS.high, "auth.failed", "high-late")

    drain(consumer(client), handler)
    assert seen[:5] == ["high-0", "high-1", "normal-0", "normal-1", "normal-2"]
    assert seen[5:15] == [f"low-{i}" for i in range(10)]
    assert seen[15] == "high-late"
    assert seen[16:] == [f"low-{i}" for i in range(10, 25)]
    assert [pending(client, s) for s in STREAMS.by_priority()] == [0, 0, 0]


def test_acknowledged_only_after_the_handler_succeeds(client: redis.Redis) -> None:
    add(client, STREAMS.normal, "user.created", "u1")
    c = consumer(client)
    attempts: list[int] = []

    def flaky(entry: StreamEntry) -> None:
        attempts.append(entry.deliveries)
        if len(attempts) == 1:
            raise RuntimeError("downstream unavailable")

    assert c.run_once(flaky, block=False) == 1
    assert pending(client, STREAMS.normal) == 1  # failed: still pending
    assert c.run_once(flaky, block=False) == 0  # not idle long enough to retry
    time.sleep(0.15)
    assert c.run_once(flaky, block=False) == 1
    assert attempts == [1, 2]
    assert pending(client, STREAMS.normal) == 0
    assert client.xlen(STREAMS.dead_letter) == 0


def test_a_failing_entry_moves_to_the_dead_letter_stream_after_max_retries(client: redis.Redis) -> None:
    entry_id = add(client, STREAMS.high, "auth.failed", "u2", userID="u2")
    c = consumer(client)
    attempts: list[int] = []

    def broken(entry: StreamEntry) -> None:
        attempts.append(entry.deliveries)
        raise ValueError("cannot handle")

    for _ in range(5):
        c.run_once(broken, block=False)
        time.sleep(0.12)
    assert attempts == [1, 2, 3]
    assert pending(client, STREAMS.high) == 0
    dead = cast(list[tuple[str, dict[str, str]]], client.xrange(STREAMS.dead_letter))
    assert len(dead) == 1
    assert dead[0][1] == {
        "taxonomy": "auth.failed",
        "type": "user.human.password.check.failed",
        "aggregate_id": "u2",
        "payload": '{"userID": "u2"}',
        "dead_letter.reason": "max_retries",
        "dead_letter.stream": STREAMS.high,
        "dead_letter.id": entry_id,
        "dead_letter.group": "jobs",
        "dead_letter.deliveries": "3",
        "dead_letter.error": "ValueError: cannot handle",
    }


def test_the_stacks_retry_count_is_the_consumers_delivery_limit(prod: StackConfig) -> None:
    assert prod.events.publishing.max_retries == 5


def test_entries_of_a_dead_consumer_are_claimed(client: redis.Redis) -> None:
    for i in range(4):
        add(client, STREAMS.normal, "user.created", f"u{i}")
    dead = consumer(client, name="dead")
    # It read them and died before acknowledging.
    client.xreadgroup("jobs", "dead", {STREAMS.normal: ">"}, count=10)
    assert pending(client, STREAMS.normal) == 4
    alive = consumer(client, name="alive")
    handled: list[tuple[str, int]] = []
    assert alive.run_once(lambda e: handled.append((e.fields["aggregate_id"], e.deliveries)), block=False) == 0
    time.sleep(0.15)
    drain(alive, lambda e: handled.append((e.fields["aggregate_id"], e.deliveries)))
    assert handled == [("u0", 2), ("u1", 2), ("u2", 2), ("u3", 2)]
    assert pending(client, STREAMS.normal) == 0
    assert dead.name == "dead"


def test_an_entry_whose_consumers_keep_dying_is_dead_lettered(client: redis.Redis) -> None:
    add(client, STREAMS.low, "unclassified", "poison")
    consumer(client, name="a")
    # Three consumers in turn take it (the first read, then two claims) and die inside the handler.
    client.xreadgroup("jobs", "a", {STREAMS.low: ">"})
    for name in ("b", "c"):
        time.sleep(0.12)
        client.xautoclaim(STREAMS.low, "jobs", name, 100, "0-0")
    time.sleep(0.12)
    calls: list[str] = []
    drain(consumer(client, name="d"), lambda e: calls.append(e.id))
    assert calls == []
    dead = cast(list[tuple[str, dict[str, str]]], client.xrange(STREAMS.dead_letter))
    assert [(f["dead_letter.reason"], f["dead_letter.deliveries"]) for _i, f in dead] == [("max_deliveries", "4")]


def test_replay_puts_dead_letters_back_where_they_came_from(client: redis.Redis) -> None:
    add(client, STREAMS.normal, "user.created", "u9", email="u9@example.com")
    c = consumer(client, max_deliveries=1)
    c.run_once(lambda e: (_ for _ in ()).throw(RuntimeError("down")), block=False)
    # One the bridge wrote (an unusable event): it names no stream to return to.
    bridge_dead = str(
        client.xadd(
            STREAMS.dead_letter,
            cast(Any, {"dead_letter.reason": "unparseable", "dead_letter.source": "bridge", "type": "x"}),
        )
    )
    replayed, skipped = replay_dead_letter(client, STREAMS, reason=None)
    assert [(r.stream) for r in replayed] == [STREAMS.normal]
    assert skipped == [bridge_dead]
    back = cast(list[tuple[str, dict[str, str]]], client.xrange(STREAMS.normal))
    assert back[-1][1] == {
        "taxonomy": "user.created",
        "type": "user.human.added",
        "aggregate_id": "u9",
        "payload": '{"email": "u9@example.com"}',
    }
    assert client.xlen(STREAMS.dead_letter) == 1  # only the bridge's is left
    handled: list[str] = []
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["u9"]


def test_welcome_mail_example_job(client: redis.Redis) -> None:
    add(client, STREAMS.normal, "user.created", "ada", email="ada@example.com", userName="ada")
    add(client, STREAMS.normal, "user.machine.added", "robot")
    client.xadd(
        STREAMS.normal,
        cast(Any, {"taxonomy": "user.created", "type": "user.machine.added", "aggregate_id": "bot", "payload": "{}"}),
    )
    add(client, STREAMS.high, "auth.failed", "ada")
    add(client, STREAMS.normal, "user.created", "bob", email="bob@example.com")
    sent: list[tuple[str, str]] = []
    failures = iter([True])  # the mail relay is down for the first attempt

    def send(address: str, user_id: str) -> None:
        if next(failures, False):
            raise ConnectionError("mail relay down")
        sent.append((address, user_id))

    c = consumer(client)
    drain(c, WelcomeMail(send))
    time.sleep(0.15)
    drain(c, WelcomeMail(send))
    assert sent == [("bob@example.com", "bob"), ("ada@example.com", "ada")]
    assert [pending(client, s) for s in STREAMS.by_priority()] == [0, 0, 0]
    assert client.xlen(STREAMS.dead_letter) == 0
