"""The consumers' side on real Redis: priority order, acknowledgement, retries, claims, dead letters, replay, what
trimming takes (reported once, counted), the dead letter's cap, and duplicates."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from prometheus_client import CollectorRegistry

from relay import consumer as consumer_module
from relay.consumer import (
    Consumer,
    ConsumerMetrics,
    Deduplicator,
    EventKey,
    Skipped,
    StreamEntry,
    replay_dead_letter,
)
from relay.examples import WelcomeMail
from relay.settings import Streams
from stacks import names
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


@pytest.fixture
def metrics() -> ConsumerMetrics:
    return ConsumerMetrics(CollectorRegistry())


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
    assert skipped == [Skipped(bridge_dead, "dead-lettered by the bridge: no stream to return to")]
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


# --- what trimming takes: reported once, counted, the group moved past it -------------------------------------------

#: The largest sequence number of a stream ID: the last ID of millisecond ``n`` is ``n-18446744073709551615``.
MAX_SEQ = "18446744073709551615"


def event(client: redis.Redis, stream: str, entry_id: str, aggregate_id: str, sequence: int = 1, **xadd: Any) -> str:
    """An entry with the bridge's identifying fields, at a chosen ID (``xadd``: MAXLEN options)."""
    fields = {
        "taxonomy": "user.created",
        "type": "user.human.added",
        "instance": "instance-1",
        "aggregate_type": "user",
        "aggregate_id": aggregate_id,
        "sequence": str(sequence),
        "payload": "{}",
    }
    return str(client.xadd(stream, cast(Any, fields), id=entry_id, **xadd))


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    return [fields for _id, fields in cast(list[tuple[str, dict[str, str]]], client.xrange(STREAMS.dead_letter))]


def sample(metrics: ConsumerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def trimmed_metrics(metrics: ConsumerMetrics, stream: str) -> tuple[float, float]:
    """(dead letters with reason ``trimmed``, entries lost to trimming) of group ``jobs`` on ``stream``."""
    return (
        sample(metrics, "relay_consumer_dead_lettered_total", group="jobs", stream=stream, reason="trimmed"),
        sample(metrics, "relay_consumer_trimmed_entries_total", group="jobs", stream=stream),
    )


def group_info(client: redis.Redis, stream: str) -> dict[str, Any]:
    return next(g for g in client.xinfo_groups(stream) if g["name"] == "jobs")


def test_an_entry_trimmed_while_pending_is_dead_lettered_acknowledged_and_counted(
    client: redis.Redis, metrics: ConsumerMetrics
) -> None:
    failing = event(client, STREAMS.normal, "100-0", "u1")
    event(client, STREAMS.normal, "101-0", "u2")
    c = consumer(client, metrics=metrics)
    calls: list[str] = []

    def handler(entry: StreamEntry) -> None:
        calls.append(entry.fields["aggregate_id"])
        if entry.fields["aggregate_id"] == "u1":
            raise RuntimeError("downstream unavailable")

    assert c.run_once(handler, block=False) == 2
    assert pending(client, STREAMS.normal) == 1  # u1 failed: pending
    # The stream is trimmed past it while its handler keeps failing.
    for i in range(3):
        event(client, STREAMS.normal, f"200-{i}", f"n{i}", maxlen=3, approximate=False)
    assert [i for i, _f in cast(list[tuple[str, Any]], client.xrange(STREAMS.normal))] == ["200-0", "200-1", "200-2"]
    assert c.run_once(handler, block=False) == 1  # found at once: Redis drops a deleted entry whatever its idle time
    assert dead_letters(client) == [
        {
            "dead_letter.reason": "trimmed",
            "dead_letter.stream": STREAMS.normal,
            "dead_letter.id": failing,
            "dead_letter.group": "jobs",
            "dead_letter.detail": "deleted from the stream while pending: trimmed before it was acknowledged",
        }
    ]
    assert pending(client, STREAMS.normal) == 0
    assert trimmed_metrics(metrics, STREAMS.normal) == (1.0, 1.0)
    drain(c, handler)
    assert calls == ["u1", "u2", "n0", "n1", "n2"]  # u1 not called again; the later entries handled
    assert len(dead_letters(client)) == 1


def test_the_claim_scan_reaches_the_end_of_a_long_pending_list(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    """XAUTOCLAIM looks at ten times its COUNT per call: behind 20 entries another consumer is still working on, a
    deleted one is found only if each turn goes on where the last one stopped."""
    for i in range(25):
        event(client, STREAMS.normal, f"{100 + i}-0", f"u{i}")
    c = consumer(client, batch=2, claim_idle_ms=60_000, metrics=metrics)
    client.xreadgroup("jobs", "busy", {STREAMS.normal: ">"}, count=25)
    client.xdel(STREAMS.normal, "124-0")
    for _ in range(3):
        c.run_once(lambda e: None, block=False)
    assert [(d["dead_letter.id"], d["dead_letter.reason"]) for d in dead_letters(client)] == [("124-0", "trimmed")]
    assert pending(client, STREAMS.normal) == 24


def test_entries_trimmed_before_the_group_read_them_become_one_dead_letter(
    client: redis.Redis, metrics: ConsumerMetrics
) -> None:
    c = consumer(client, metrics=metrics)
    handled: list[str] = []
    for i in range(3):
        event(client, STREAMS.normal, f"10{i}-0", f"a{i}")
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    # The consumers are stopped; ten events arrive, and the stream is trimmed past six of them, by XTRIM and by
    # XADD MAXLEN.
    for i in range(10):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    assert client.xtrim(STREAMS.normal, maxlen=6, approximate=False) == 7  # a0..a2 (read), b0..b3 (unread)
    for i in range(2):
        event(client, STREAMS.normal, f"30{i}-0", f"c{i}", maxlen=6, approximate=False)  # b4, b5
    # The consumers return.
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["a0", "a1", "a2", "b6", "b7", "b8", "b9", "c0", "c1"]
    assert dead_letters(client) == [
        {
            "dead_letter.reason": "trimmed",
            "dead_letter.stream": STREAMS.normal,
            "dead_letter.group": "jobs",
            "dead_letter.after": "102-0",
            "dead_letter.through": f"205-{MAX_SEQ}",
            "dead_letter.count": "6",
            "dead_letter.detail": "trimmed from the stream before the group read it",
        }
    ]
    assert trimmed_metrics(metrics, STREAMS.normal) == (1.0, 6.0)
    # The group was moved with the right read counter: Redis counts every entry as read, none as lagging.
    info = group_info(client, STREAMS.normal)
    assert (info["last-delivered-id"], info["entries-read"], info["lag"], info["pending"]) == ("301-0", 15, 0, 0)
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert len(dead_letters(client)) == 1


@pytest.mark.parametrize(
    "trim", [{"maxlen": 2, "approximate": False}, {"minid": "103-0", "approximate": False}], ids=["maxlen", "age"]
)
def test_entries_trimmed_before_a_new_groups_first_read_are_reported(
    client: redis.Redis, metrics: ConsumerMetrics, trim: dict[str, Any]
) -> None:
    c = consumer(client, metrics=metrics)  # the group exists before any entry
    for i in range(5):
        event(client, STREAMS.high, f"10{i}-0", f"a{i}")
    assert client.xtrim(STREAMS.high, **trim) == 3  # by length, or by age (MINID)
    handled: list[str] = []
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["a3", "a4"]
    assert [
        (d["dead_letter.after"], d["dead_letter.through"], d["dead_letter.count"]) for d in dead_letters(client)
    ] == [("0-0", f"102-{MAX_SEQ}", "3")]


def test_a_stream_trimmed_empty_reports_its_unread_entries(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    c = consumer(client, metrics=metrics)
    event(client, STREAMS.low, "100-0", "a0")
    drain(c, lambda e: None)
    for i in range(4):
        event(client, STREAMS.low, f"20{i}-0", f"b{i}")
    client.xtrim(STREAMS.low, maxlen=0, approximate=False)
    drain(c, lambda e: None)
    # Again before the group reads anything: the group was moved with its read counter, so this one is counted too.
    for i in range(5):
        event(client, STREAMS.low, f"30{i}-0", f"c{i}")
    client.xtrim(STREAMS.low, maxlen=2, approximate=False)
    later: list[str] = []
    drain(c, lambda e: later.append(e.fields["aggregate_id"]))
    assert later == ["c3", "c4"]
    assert [
        (d["dead_letter.after"], d["dead_letter.through"], d["dead_letter.count"]) for d in dead_letters(client)
    ] == [("100-0", "203-0", "4"), ("203-0", f"302-{MAX_SEQ}", "3")]
    assert trimmed_metrics(metrics, STREAMS.low) == (2.0, 7.0)


def test_trimming_only_what_the_group_read_reports_nothing(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    c = consumer(client, metrics=metrics)
    for i in range(5):
        event(client, STREAMS.high, f"10{i}-0", f"a{i}")
    drain(c, lambda e: None)
    for i in range(5):
        event(client, STREAMS.high, f"20{i}-0", f"b{i}")
    # Everything up to the group's last-delivered ID (104-0) goes; the stream now starts right after it.
    assert client.xtrim(STREAMS.high, maxlen=5, approximate=False) == 5
    handled: list[str] = []
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["b0", "b1", "b2", "b3", "b4"]
    assert dead_letters(client) == []
    assert trimmed_metrics(metrics, STREAMS.high) == (0.0, 0.0)


def test_a_group_created_after_a_trim_reports_nothing(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    for i in range(6):
        event(client, STREAMS.normal, f"10{i}-0", f"a{i}")
    client.xtrim(STREAMS.normal, maxlen=2, approximate=False)
    handled: list[str] = []
    drain(consumer(client, metrics=metrics), lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["a4", "a5"]  # what the stream held when the group began; nothing of it lost
    assert dead_letters(client) == []


def turn(c: Consumer, start: threading.Barrier, handler: Any) -> None:
    """One turn of ``c``, as soon as every other party of ``start`` is ready too."""
    start.wait()
    c.run_once(handler, block=False)


def test_two_consumers_of_a_group_report_each_gap_once(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    c1, c2 = consumer(client, "c1", metrics=metrics), consumer(client, "c2", metrics=metrics)
    handled: list[str] = []
    lock = threading.Lock()

    def handler(entry: StreamEntry) -> None:
        with lock:
            handled.append(entry.fields["aggregate_id"])

    rounds = 10
    for r in range(rounds):
        for i in range(5):
            event(client, STREAMS.normal, f"{r + 1}00{i}-0", f"r{r}-{i}")
        client.xtrim(STREAMS.normal, maxlen=2, approximate=False)  # 3 unread entries go each round
        start = threading.Barrier(2)
        threads = [threading.Thread(target=turn, args=(c, start, handler)) for c in (c1, c2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        drain(c1, handler)
    assert [d["dead_letter.count"] for d in dead_letters(client)] == ["3"] * rounds
    assert trimmed_metrics(metrics, STREAMS.normal) == (10.0, 30.0)
    assert sorted(handled) == sorted(f"r{r}-{i}" for r in range(rounds) for i in (3, 4))


def test_a_read_that_passed_a_gap_is_reported_when_the_group_catches_up(
    client: redis.Redis, metrics: ConsumerMetrics
) -> None:
    """What a blocking read right after a trim would do (or a reader of the group that does not check): it delivers
    the first entry left and passes the gap. Redis's counters still show it once the group has read everything."""
    c = consumer(client, metrics=metrics)
    for i in range(3):
        event(client, STREAMS.normal, f"10{i}-0", f"a{i}")
    drain(c, lambda e: None)
    for i in range(10):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    client.xtrim(STREAMS.normal, maxlen=4, approximate=False)
    got = cast(list[Any], client.xreadgroup("jobs", "plain-reader", {STREAMS.normal: ">"}))
    assert [i for i, _f in got[0][1]] == ["206-0", "207-0", "208-0", "209-0"]
    client.xack(STREAMS.normal, "jobs", "206-0", "207-0", "208-0", "209-0")
    assert c.run_once(lambda e: None, block=False) == 0
    assert dead_letters(client) == [
        {
            "dead_letter.reason": "trimmed",
            "dead_letter.stream": STREAMS.normal,
            "dead_letter.group": "jobs",
            "dead_letter.through": "209-0",
            "dead_letter.count": "6",
            "dead_letter.detail": "the group read past entries the stream no longer held; where they were is unknown",
        }
    ]
    assert trimmed_metrics(metrics, STREAMS.normal) == (1.0, 6.0)
    drain(c, lambda e: None)
    assert len(dead_letters(client)) == 1


def test_a_gap_whose_size_xdel_blurs_is_reported_without_a_count(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    c = consumer(client, metrics=metrics)
    for i in range(3):
        event(client, STREAMS.normal, f"10{i}-0", f"a{i}")
    drain(c, lambda e: None)
    for i in range(10):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    client.xdel(STREAMS.normal, "208-0")  # deleted by hand after what will be the first entry left
    client.xtrim(STREAMS.normal, maxlen=3, approximate=False)
    handled: list[str] = []
    drain(c, lambda e: handled.append(e.fields["aggregate_id"]))
    assert handled == ["b6", "b7", "b9"]
    assert dead_letters(client) == [
        {
            "dead_letter.reason": "trimmed",
            "dead_letter.stream": STREAMS.normal,
            "dead_letter.group": "jobs",
            "dead_letter.after": "102-0",
            "dead_letter.through": f"205-{MAX_SEQ}",
            "dead_letter.detail": "trimmed from the stream before the group read it"
            " (how many is unknown: entries deleted with XDEL blur Redis's counters)",
        }
    ]
    assert trimmed_metrics(metrics, STREAMS.normal) == (1.0, 0.0)


def test_replay_skips_trimmed_dead_letters(client: redis.Redis) -> None:
    c = consumer(client)
    event(client, STREAMS.normal, "100-0", "a0")
    drain(c, lambda e: None)
    for i in range(3):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    client.xtrim(STREAMS.normal, maxlen=1, approximate=False)
    drain(c, lambda e: None)
    [(dead_id, _fields)] = cast(list[tuple[str, dict[str, str]]], client.xrange(STREAMS.dead_letter))
    replayed, skipped = replay_dead_letter(client, STREAMS)
    assert replayed == []
    assert skipped == [Skipped(dead_id, "trimmed from the stream: no event to put back")]
    assert client.xlen(STREAMS.dead_letter) == 1
    assert client.xlen(STREAMS.normal) == 1


# --- the dead letter's cap ------------------------------------------------------------------------------------------


def test_the_consumers_dead_letters_are_capped(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    for i in range(250):
        add(client, STREAMS.normal, "user.created", f"u{i}")
    c = consumer(client, max_deliveries=1, batch=50, dead_letter_max_length=100, metrics=metrics)
    drain(c, lambda e: (_ for _ in ()).throw(RuntimeError("down")))
    # MAXLEN ~ trims whole nodes of the stream: at least the cap stays, far fewer than the 250 written.
    assert 100 <= client.xlen(STREAMS.dead_letter) <= 200
    assert (
        sample(metrics, "relay_consumer_dead_lettered_total", group="jobs", stream=STREAMS.normal, reason="max_retries")
        == 250.0
    )


@pytest.mark.parametrize("pending_when_trimmed", [True, False], ids=["deleted_while_pending", "trimmed_unread"])
def test_trimmed_dead_letters_are_capped_too(client: redis.Redis, pending_when_trimmed: bool) -> None:
    for i in range(300):
        client.xadd(STREAMS.dead_letter, {"earlier": str(i)})
    c = consumer(client, dead_letter_max_length=100)
    event(client, STREAMS.normal, "100-0", "a0")

    def first(entry: StreamEntry) -> None:
        if pending_when_trimmed:
            raise RuntimeError("down")

    c.run_once(first, block=False)
    for i in range(3):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    client.xtrim(STREAMS.normal, maxlen=1, approximate=False)  # a0 (pending or handled), b0, b1 (unread)
    c.run_once(lambda e: None, block=False)
    written = dead_letters(client)[-1]
    assert (written["dead_letter.reason"], written.get("dead_letter.id"), written.get("dead_letter.count")) == (
        ("trimmed", "100-0", None) if pending_when_trimmed else ("trimmed", None, "2")
    )
    assert 100 <= client.xlen(STREAMS.dead_letter) <= 200


def test_the_default_cap(client: redis.Redis) -> None:
    assert consumer(client).dead_letter_max_length == 100_000


# --- duplicates -----------------------------------------------------------------------------------------------------


def test_event_key_is_the_bridges_identity_of_an_event() -> None:
    fields = {"instance": "i1", "aggregate_type": "user", "aggregate_id": "u1", "sequence": "7", "payload": "{}"}
    assert StreamEntry(STREAMS.high, "1-0", fields, 1).event_key == EventKey("i1", "user", "u1", "7")
    assert StreamEntry(STREAMS.high, "2-0", {**fields, "instance": ""}, 1).event_key is None
    assert StreamEntry(STREAMS.high, "3-0", {"taxonomy": "auth.failed"}, 1).event_key is None


def test_the_same_event_under_two_entry_ids_is_handled_once(client: redis.Redis, metrics: ConsumerMetrics) -> None:
    first = event(client, STREAMS.normal, "100-0", "u1", sequence=1)
    event(client, STREAMS.normal, "101-0", "u1", sequence=2)
    # After a failover the bridge writes the first again, under a new ID.
    event(client, STREAMS.normal, "200-0", "u1", sequence=1)
    calls: list[str] = []
    dedup = Deduplicator(client, group="jobs", ttl_seconds=600, metrics=metrics)
    drain(consumer(client, metrics=metrics), dedup.wrap(lambda e: calls.append(e.id)))
    assert calls == ["100-0", "101-0"]
    assert pending(client, STREAMS.normal) == 0  # the copy is acknowledged
    assert sample(metrics, "relay_consumer_duplicates_skipped_total", group="jobs") == 1.0
    key = "consumer:jobs:seen:instance-1:user:u1:1"
    assert client.get(key) == f"done {STREAMS.normal} {first}"
    assert 590 <= int(client.ttl(key)) <= 600


def test_retries_and_replays_of_a_failed_event_run_its_handler(client: redis.Redis) -> None:
    event(client, STREAMS.high, "100-0", "u1")
    calls: list[str] = []
    failures = iter([True, True])

    def flaky(entry: StreamEntry) -> None:
        calls.append(entry.id)
        if next(failures, False):
            raise RuntimeError("downstream unavailable")

    c = consumer(client, max_deliveries=2)
    handler = Deduplicator(client, group="jobs").wrap(flaky)
    drain(c, handler)
    time.sleep(0.15)
    drain(c, handler)  # the retry fails too: dead-lettered
    [replayed], _skipped = replay_dead_letter(client, STREAMS)
    drain(c, handler)  # the event again, under a new ID: it never succeeded, so it runs
    event(client, STREAMS.high, "9999999999999-0", "u1")  # a copy once it has succeeded
    drain(c, handler)
    assert calls == ["100-0", "100-0", replayed.new_id]
    assert [pending(client, s) for s in STREAMS.by_priority()] == [0, 0, 0]


def test_an_entry_handled_by_a_consumer_that_died_before_acknowledging_is_not_handled_again(
    client: redis.Redis,
) -> None:
    event(client, STREAMS.low, "100-0", "u1")
    calls: list[str] = []
    dedup = Deduplicator(client, group="jobs")
    consumer(client, name="dead")
    # It read the entry, its handler returned, and it died before its XACK.
    got = cast(list[Any], client.xreadgroup("jobs", "dead", {STREAMS.low: ">"}))
    entry_id, fields = got[0][1][0]
    dedup.wrap(lambda e: calls.append(e.id))(StreamEntry(STREAMS.low, entry_id, fields, 1))
    time.sleep(0.15)
    drain(consumer(client, name="alive"), dedup.wrap(lambda e: calls.append(e.id)))
    assert calls == ["100-0"]
    assert pending(client, STREAMS.low) == 0


def test_the_consumers_key_prefix_is_the_programs() -> None:
    assert consumer_module.KEY_PREFIX == names.CONSUMER_KEY_PREFIX


# --- as the event-consumer ACL user ---------------------------------------------------------------------------------


def test_everything_works_as_the_event_consumer_user(bed: RedisBed, client: redis.Redis, prod: StackConfig) -> None:
    """The commands above, the scripts' included (Redis checks a script's commands against the caller's ACL)."""
    user = bed.user_client(names.REDIS_CONSUMER_USER, db=prod.events.db)
    c = Consumer(
        user, group="jobs", name="c1", streams=STREAMS, max_deliveries=2, claim_idle_ms=100, batch=10, block_ms=50
    )
    c.ensure_groups()
    dedup = Deduplicator(user, group="jobs")
    calls: list[str] = []

    def handler(entry: StreamEntry) -> None:
        calls.append(entry.id)
        if entry.fields["aggregate_id"] == "fails":
            raise RuntimeError("down")

    event(client, STREAMS.normal, "100-0", "fails")
    event(client, STREAMS.normal, "101-0", "u1")
    c.run_once(dedup.wrap(handler), block=False)
    for i in range(4):
        event(client, STREAMS.normal, f"20{i}-0", f"b{i}")
    event(client, STREAMS.normal, "300-0", "u1")  # a copy of 101-0
    client.xtrim(STREAMS.normal, maxlen=2, approximate=False)  # 100-0 (pending), 101-0, b0..b2 (unread) go
    time.sleep(0.15)
    drain(c, dedup.wrap(handler))
    c.run_once(dedup.wrap(handler), block=True)  # the blocking read, with nothing to read
    assert calls == ["100-0", "101-0", "203-0"]
    assert [
        (d["dead_letter.reason"], d.get("dead_letter.id"), d.get("dead_letter.count")) for d in dead_letters(client)
    ] == [
        ("trimmed", "100-0", None),
        ("trimmed", None, "3"),
    ]
    replayed, skipped = replay_dead_letter(user, STREAMS)
    assert (replayed, len(skipped)) == ([], 2)
