"""The capacity model on a real redis-server: with the caps the program derives, the events' data stays inside its
shares while the streams sit at their caps and nobody consumes, so the rate-limit counters keep their reserve; the
relay trims by age and cap with no new event; and when Redis refuses writes the relay stalls without losing or
skipping anything.

dev's Redis is scaled down to a 32Mi container so that the streams reach their caps in seconds; its caps come from the
loader, by the same rule as the stacks' (README, "Capacity: one Redis, three workloads").
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from benchmarks.capacity import DOMAIN, MIX, client_entries, fill_counters, specs, stored_entry
from components.event_relay import relay_document
from components.wiring import event_relay_args
from relay.bridge import Bridge
from relay.metrics import Metrics
from relay.settings import Settings
from relay.source import EventApi
from relay.store import write_refusal
from stacks import names
from stacks.capacity import StreamCaps
from stacks.config import StackConfig
from stacks.loader import load
from testbed import ratelimit
from testbed.redisbed import RedisBed, binaries_available, free_port, running_bed
from testbed.required import require
from testbed.zitadel_api import ForkedServer, StandInEventApi, local_relay_document, now_us

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

#: dev's Redis in a 32Mi container: maxmemory 70 % of it in whole MiB, 22 MiB.
MAXMEMORY = 23_068_672
#: 23,068,672 B * 50 % / 3 / 512 B = 7,509.3 entries per stream; * 5 % / 1,024 B = 1,126.4 for the dead letter.
CAPS = StreamCaps(max_stream_length=7_509, dead_letter_max_length=1_126)
#: What the events' data may take: everything but the 35 % reserve, 65 % of 23,068,672 B.
EVENTS_AT_MOST = 14_994_636
#: ``MAXLEN ~`` and ``MINID ~`` drop whole stream nodes: at most one node (100 entries) beyond a bound stays.
NODE = 100
EVENTS_DB, RATE_LIMIT_DB, CACHE_DB = 1, 0, 3
WEEK_MS = 7 * 86400 * 1000
STREAMS = ("zitadel:events:high", "zitadel:events:normal", "zitadel:events:low")
DEAD_LETTER = "zitadel:events:dead_letter"


def small_stack(**events: Any) -> StackConfig:
    """dev with one Redis node (no replica: no WAIT) in a 32Mi container; the dedup share of 22 MiB holds 3 events/s."""
    overrides: dict[str, Any] = {
        "redis": {"nodes": 1, "quorum": 1, "resources": {"redis": {"limits": {"memory": "32Mi"}}}},
        "events": {"publishing": {"requireReplicaAck": False}, "capacity": {"peakEventRate": 3}, **events},
    }
    return load("dev", overrides)


@dataclass
class Relay:
    """A bridge of the stack, logged in as its own Redis user, reading the stand-in."""

    cfg: StackConfig
    bed: RedisBed
    tmp: Path
    api: StandInEventApi
    token: str = "stand-in-token-for-the-relay"

    def settings(self, server: StandInEventApi | ForkedServer) -> Settings:
        (self.tmp / "pat").write_text(self.token)
        (self.tmp / "pw").write_text(self.bed.user_passwords[names.REDIS_RELAY_USER])
        doc = local_relay_document(
            relay_document(event_relay_args(self.cfg)),
            api=server,
            instance_host=self.cfg.zitadel.external_domain,
            sentinel_ports=[],
            token_file=str(self.tmp / "pat"),
            username=names.REDIS_RELAY_USER,
            password_file=str(self.tmp / "pw"),
            metrics_port=free_port(),
        )
        return Settings.from_document(doc)

    def bridge(self, settings: Settings, *, use_lease: bool) -> Bridge:
        z = settings.zitadel
        return Bridge(
            settings,
            api=EventApi(z.url, z.instance_host, lambda: self.token),
            client=self.bed.user_client(names.REDIS_RELAY_USER, db=EVENTS_DB),
            metrics=Metrics(),
            use_lease=use_lease,
        )


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    cfg = small_stack()
    api = StandInEventApi(token=Relay.token, instance_host=cfg.zitadel.external_domain, record_requests=False)
    with running_bed(cfg.redis, tmp_path / "bed", with_sentinels=False) as bed:
        yield Relay(cfg, bed, tmp_path, api)


def admin(bed: RedisBed, db: int) -> redis.Redis:
    return bed.client(bed.nodes[0].port, db=db, socket_timeout=30)


def fast(settings: Settings, **publishing: Any) -> Settings:
    """Short pauses for a test: polls, backoff and trims come round within a second."""
    source = replace(settings.source, poll_interval=0.1, clock_skew=0.05)
    published = replace(settings.publishing, retry_backoff=0.05, max_retry_backoff=0.2, **publishing)
    return replace(settings, source=source, publishing=published)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def entries(client: redis.Redis, stream: str, first: str, last: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], client.xrange(stream, min=first, max=last))


def landed(client: redis.Redis) -> Counter[tuple[str, str, str]]:
    found: Counter[tuple[str, str, str]] = Counter()
    for stream in (*STREAMS, DEAD_LETTER):
        for _id, fields in entries(client, stream, "-", "+"):
            found[(fields["aggregate_type"], fields["aggregate_id"], fields["sequence"])] += 1
    return found


def test_the_small_stack_derives_its_caps_by_the_stacks_rule() -> None:
    cfg = small_stack()
    assert (cfg.redis.maxmemory_bytes, cfg.stream_caps) == (MAXMEMORY, CAPS)


# --- (a) at the caps, consumers stopped --------------------------------------------------------------------------


def test_rate_limits_are_still_enforced_while_the_streams_are_at_their_cap_and_consumers_are_stopped(
    relay: Relay,
) -> None:
    bed = relay.bed
    events, counters_admin = admin(bed, EVENTS_DB), admin(bed, RATE_LIMIT_DB)
    counters = bed.user_client(names.REDIS_RATE_LIMIT_USER, db=RATE_LIMIT_DB)
    # Consumers stopped: their group exists on every stream and reads nothing.
    for stream in STREAMS:
        events.xgroup_create(stream, "workers", id="0", mkstream=True)
    # 17,000 distinct clients counted in DB 0 (about 5 MB: most of the reserve beyond an empty server), with an
    # hour's TTL so that none expires during the test.
    now = int(time.time())
    fill_counters(counters, [f"2001:db8::{i:x}" for i in range(17_000)], rule=1, now=now, unit="Hour")
    before = int(events.info("memory")["used_memory"])
    # A week of ZITADEL history backfilled (startFrom: beginning): 20,000 events per stream, 2.7 times its cap.
    # Stored in full these entries would take some 12 MB of the 15 MB the events may hold, their dedup records
    # another 5 MB.
    total = 60_000
    start = now_us() - WEEK_MS * 1000
    for index, spec in enumerate(specs(total, MIX)):
        relay.api.push(spec, created_us=start + index * (WEEK_MS * 1000 // total))
    server = ForkedServer(relay.api)
    try:
        outcome = relay.bridge(relay.settings(server), use_lease=False).poll()
    finally:
        server.close()

    # The relay wrote every event once (what it read twice is the pages' 1 ms overlap); the streams hold the newest,
    # each at its cap (one node at most beyond).
    assert (outcome.written, outcome.dead_lettered, outcome.read - outcome.duplicates) == (60_000, 0, 60_000)
    lengths = [int(events.xlen(stream)) for stream in STREAMS]
    assert all(7_509 <= length < 7_509 + NODE for length in lengths), lengths
    # The events' data (streams, dedup records, cursor) stays inside its shares: what the backfill added, and all of
    # the events DB as Redis counts it.
    after = int(events.info("memory")["used_memory"])
    assert after - before <= EVENTS_AT_MOST
    in_events_db = sum(int(events.memory_usage(key, samples=0) or 0) for key in events.scan_iter(count=1000))
    assert in_events_db <= EVENTS_AT_MOST
    assert after < MAXMEMORY
    # Nothing was evicted: every counter is still there.
    assert int(events.info("stats")["evicted_keys"]) == 0
    assert counters_admin.dbsize() == 17_000
    # And a client over the credential limit (60 a minute) is refused at its 61st request.
    window = ratelimit.FixedWindow(counters, "rl:", jitter_max_seconds=10)
    limit = {"unit": "Minute", "requests": 60}
    for client in ("203.0.113.7", "203.0.113.8", "2001:db8:1::9"):
        verdicts = [window.allowed(DOMAIN, client_entries(2, client), limit, now) for _ in range(61)]
        assert verdicts == [True] * 60 + [False], client


# --- (b) trimming without a new event ----------------------------------------------------------------------------


def fill_stream(client: redis.Redis, stream: str, first_ms: int, count: int, fields: dict[str, str]) -> None:
    """Entries as the relay wrote them ``first_ms`` ago and after (their IDs are Redis's clock then)."""
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.xadd(stream, cast(Any, fields), id=f"{first_ms + index}-0")
    pipe.execute()


def run(bridge: Bridge) -> threading.Thread:
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    return thread


def test_the_relay_trims_entries_older_than_max_stream_age_with_no_new_event(relay: Relay) -> None:
    events = admin(relay.bed, EVENTS_DB)
    entry = stored_entry(relay.cfg.events.source.instance or "localhost", specs(1, (MIX[1],))[0])
    now_ms = int(time.time() * 1000)
    # The stack's maxStreamAge is seven days: 500 entries written eight days ago go, 300 of six days ago stay.
    eight_days, six_days = now_ms - WEEK_MS - 86_400_000, now_ms - WEEK_MS + 86_400_000
    for stream in (*STREAMS, DEAD_LETTER):
        fill_stream(events, stream, eight_days, 500, entry)
        fill_stream(events, stream, six_days, 300, entry)
    relay.api.start()
    try:
        settings = fast(relay.settings(relay.api), trim_interval=0.2)
        assert settings.publishing.max_stream_age == 604_800.0
        bridge = relay.bridge(settings, use_lease=True)
        thread = run(bridge)

        def trimmed(stream: str) -> float:
            return sample(bridge.metrics, "relay_trimmed_entries_total", stream=stream, reason="age")

        wait_for("every stream trimmed by age", lambda: all(trimmed(s) > 0 for s in (*STREAMS, DEAD_LETTER)))
        bridge.stop()
        thread.join(timeout=10)
    finally:
        relay.api.close()
    for stream in (*STREAMS, DEAD_LETTER):
        old_left = len(entries(events, stream, "-", f"{eight_days + 499}-0"))
        assert old_left < NODE, stream
        assert len(entries(events, stream, f"{six_days}-0", "+")) == 300, stream
        assert trimmed(stream) == 500 - old_left
        # No event arrived: nothing was written, the trim alone ran.
        assert events.xlen(stream) == 300 + old_left


def test_a_lowered_cap_reaches_every_stream_with_no_new_event(relay: Relay) -> None:
    # A stack lowers its caps (explicitly, within the shares): the streams follow within trimInterval.
    relay.cfg = small_stack(performance={"maxStreamLength": 200, "deadLetterMaxLength": 100})
    events = admin(relay.bed, EVENTS_DB)
    entry = stored_entry(relay.cfg.events.source.instance or "localhost", specs(1, (MIX[1],))[0])
    recent = int(time.time() * 1000) - 60_000
    for stream in (*STREAMS, DEAD_LETTER):
        fill_stream(events, stream, recent, 1_000, entry)
    relay.api.start()
    try:
        settings = fast(relay.settings(relay.api), trim_interval=0.2)
        assert (settings.publishing.max_stream_length, settings.publishing.dead_letter_max_length) == (200, 100)
        bridge = relay.bridge(settings, use_lease=True)
        thread = run(bridge)
        wait_for(
            "every stream trimmed to its cap",
            lambda: all(
                sample(bridge.metrics, "relay_trimmed_entries_total", stream=s, reason="length") > 0
                for s in (*STREAMS, DEAD_LETTER)
            ),
        )
        bridge.stop()
        thread.join(timeout=10)
    finally:
        relay.api.close()
    for stream in STREAMS:
        assert 200 <= events.xlen(stream) < 200 + NODE
    assert 100 <= events.xlen(DEAD_LETTER) < 100 + NODE
    # The newest entries stay.
    for stream in (*STREAMS, DEAD_LETTER):
        assert entries(events, stream, "-", "+")[-1][0] == f"{recent + 999}-0"


def test_a_dead_letter_the_relay_writes_is_capped_by_the_dead_letter_cap(relay: Relay) -> None:
    relay.cfg = small_stack(performance={"deadLetterMaxLength": 100})
    # Events without a usable type: the relay dead-letters each (unclassifiable).
    broken = [replace(spec, omit=("type",)) for spec in specs(1_000, (MIX[0],))]
    for spec in broken:
        relay.api.push(spec)
    time.sleep(0.2)  # past the clock skew of the read
    relay.api.start()
    try:
        settings = fast(relay.settings(relay.api))
        outcome = relay.bridge(settings, use_lease=False).poll()
    finally:
        relay.api.close()
    assert outcome.dead_lettered == 1_000
    assert 100 <= admin(relay.bed, EVENTS_DB).xlen(DEAD_LETTER) < 100 + NODE


# --- (c) Redis refuses writes --------------------------------------------------------------------------------------


def test_a_relay_refused_for_memory_stalls_and_resumes_losing_nothing(relay: Relay) -> None:
    events, caches = admin(relay.bed, EVENTS_DB), admin(relay.bed, CACHE_DB)
    for spec in specs(100, MIX):
        relay.api.push(spec)
    relay.api.start()
    try:
        bridge = relay.bridge(fast(relay.settings(relay.api), trim_interval=0.2), use_lease=True)
        thread = run(bridge)
        try:
            wait_for("the first events", lambda: sum(landed(events).values()) == 100)
            # Memory full of what Redis may not evict (ZITADEL's cache index keys carry no TTL), 2 MiB past maxmemory:
            # filled while the limit is higher, which then returns to the derived 22 MiB. (Filled up to maxmemory
            # itself, freed client buffers let a write through now and then.)
            events.config_set("maxmemory", MAXMEMORY + 2 * 2**20)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for batch in range(10_000):
                    pipe = caches.pipeline(transaction=False)
                    for index in range(100):
                        pipe.set(f"instance:id:{batch}:{index}", "i" * 1000)
                    pipe.execute()
            events.config_set("maxmemory", MAXMEMORY)
            cursor = bridge.store.cursor()

            def refused() -> float:
                return sample(bridge.metrics, "relay_write_refused_total", reason="oom")

            for spec in specs(200, MIX)[::-1]:  # other aggregate IDs than the first 100: reversed
                relay.api.push(replace(spec, aggregate_id=f"late-{spec.aggregate_id}"))
            seen = refused()
            wait_for("the relay to try the new events and be refused", lambda: refused() >= seen + 3)
            # Stalled: nothing written, nothing skipped, the cursor where it was; still the leader (its lease is the
            # one write allowed), so its trims keep running.
            assert sample(bridge.metrics, "relay_write_stalled") == 1
            assert bridge.store.cursor() == cursor
            assert sum(landed(events).values()) == 100
            assert sample(bridge.metrics, "relay_leader") == 1
            # Memory frees: the relay resumes on its own and writes every event once.
            caches.flushdb()
            wait_for("every event", lambda: sum(landed(events).values()) == 300)
            wait_for("the stall to end", lambda: sample(bridge.metrics, "relay_write_stalled") == 0)
        finally:
            bridge.stop()
            thread.join(timeout=10)
    finally:
        relay.api.close()
    counts = landed(events)
    committed = {(e.spec.aggregate_type, e.spec.aggregate_id, str(e.sequence)) for e in relay.api.all_events()}
    assert set(counts) == committed
    assert max(counts.values()) == 1
    assert cast(int, bridge.store.cursor()) > cast(int, cursor)


@pytest.mark.parametrize(
    ("breaks", "reason"),
    [
        # Too few replicas for min-replicas-to-write: this node has none.
        (lambda client: client.config_set("min-replicas-to-write", 1), "noreplicas"),
        # A replica (of a master that is not there) takes no write.
        (lambda client: client.execute_command("REPLICAOF", "127.0.0.1", str(free_port())), "readonly"),
    ],
    ids=["noreplicas", "readonly"],
)
def test_refused_writes_are_told_from_other_failures(
    relay: Relay, breaks: Callable[[redis.Redis], object], reason: str
) -> None:
    for spec in specs(10, MIX):
        relay.api.push(spec)
    breaks(admin(relay.bed, EVENTS_DB))
    relay.api.start()
    try:
        bridge = relay.bridge(fast(relay.settings(relay.api)), use_lease=False)
        with pytest.raises(redis.ResponseError) as refusal:
            bridge.poll()
    finally:
        relay.api.close()
    assert write_refusal(refusal.value) == reason


def test_a_failed_disk_write_and_other_errors_are_told_apart() -> None:
    # MISCONF cannot be provoked here (the data folder is a protected setting); its reply's shape is Redis's.
    misconf = redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device")
    assert [write_refusal(e) for e in (misconf, redis.ResponseError("ERR unknown"), redis.ConnectionError("gone"))] == [
        "misconf",
        None,
        None,
    ]
