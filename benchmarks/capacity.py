"""Capacity benchmark on real redis-server processes: ``python -m benchmarks.capacity``.

(m) measure: the figures ``stacks/capacity.py`` budgets with, as ``used_memory`` differences of 30,000 each written
    the way production writes them: a stream entry (``user.human.added``, and the mix below) through the relay's
    write script, a dedup record, a consumer's dead letter, a rate-limit counter, an empty server;
(a) fill: one Redis group (master and replica, ``WAIT 1`` on) configured like the stack, at its memory limit, with
    the stream caps the program derives; consumers stopped (their groups exist, nobody reads). A week of ZITADEL
    history is backfilled through the real bridge (``startFrom: beginning``) from the stand-in until every stream is
    past its cap, while a flood of distinct clients keeps writing rate-limit counters in DB 0. Then clients go over
    the credential limit: each must be refused once past it. Memory, evictions and what the relay wrote are checked;
(b) drain: the consumers return. ``relay.consumer.Consumer`` drains the backlog (``run_once`` until nothing is left),
    against raw ``XREADGROUP`` + ``XACK`` of another group over the same entries in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from components.event_relay import relay_document
from components.wiring import event_relay_args
from relay.bridge import Bridge
from relay.consumer import Consumer, StreamEntry
from relay.events import entry_fields, parse_event
from relay.metrics import Metrics
from relay.settings import Settings, Streams
from relay.source import EventApi
from relay.store import Item, Store, seen_bucket
from stacks import capacity, names
from stacks.config import RedisConfig, ResourceList, Resources, StackConfig
from stacks.dblayout import RATE_LIMIT_DB
from stacks.loader import load
from stacks.stackfile import path_of, read_stack_config
from stacktools.mocked import PROJECT_DIR
from testbed import ratelimit
from testbed.redisbed import RedisBed, binaries_available, free_port, running_bed
from testbed.zitadel_api import EventSpec, ForkedServer, StandInEventApi, local_relay_document, now_us

MIB = 2**20
#: A user registration's profile: the largest common entry (the allow-list drops the password hash).
USER_ADDED = {
    "userName": "ada.lovelace@example.com",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "displayName": "Ada Lovelace",
    "preferredLanguage": "en",
    "email": "ada.lovelace@example.com",
    "encodedHash": "$2a$14$" + "h" * 53,
}
#: Two types per priority stream, so that the three streams fill alike: logins and tokens (high), registrations and
#: profile changes (normal), sessions and domains (low, unclassified).
MIX: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("user.human.password.check.succeeded", "user", {"userAgentID": "312000000000000001"}),
    ("user.human.added", "user", USER_ADDED),
    ("session.added", "session", {"userAgent": {"fingerprintID": "312000000000000001", "ip": "192.0.2.1"}}),
    ("oidc_session.added", "oidc_session", {"userID": "300000000000000001", "sessionID": "V2_1", "clientID": "c@p"}),
    ("user.human.profile.changed", "user", {"firstName": "Ada", "lastName": "Lovelace", "displayName": "Ada L."}),
    ("instance.domain.added", "instance", {"domain": "id.example.com"}),
)
#: The gateway rules (numbered as ``./bin/plan`` shows them) a flood of distinct IPv6 clients fills DB 0 with (the
#: per-client-IP limit) and IPv4 clients go over (the credential limit, whose size the stack says).
FLOOD_RULE_INDEX, LIMITED_RULE_INDEX, LIMITED_RULE = 1, 2, "credentials-per-client-ip"
DOMAIN = "zitadel/zitadel-rate-limits"
#: A week of history, ending an hour ago.
HISTORY_US = 7 * 86400 * 10**6


def aggregate_id(index: int) -> str:
    """A ZITADEL-like 18-digit ID."""
    return str(300_000_000_000_000_000 + index * 7919)


def specs(count: int, kinds: tuple[tuple[str, str, dict[str, Any]], ...] = MIX) -> list[EventSpec]:
    return [
        EventSpec(kinds[i % len(kinds)][0], kinds[i % len(kinds)][1], aggregate_id(i), kinds[i % len(kinds)][2])
        for i in range(count)
    ]


def stack(name: str) -> StackConfig:
    return load(name, *read_stack_config(path_of(PROJECT_DIR, name)))


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def settle(client: redis.Redis) -> int:
    """``used_memory`` once lazy frees are done."""
    time.sleep(0.2)
    return used_memory(client)


# --- (m) measure ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    entry: float
    mix_entry: float
    dedup_record: float
    dead_letter_entry: float
    bridge_dead_letter_entry: float
    counter_ipv4: float
    counter_ipv6: float
    empty_server: int


def stored_entry(instance: str, spec: EventSpec) -> dict[str, str]:
    """The fields of the entry the bridge writes for ``spec``, as the stand-in renders it."""
    api = StandInEventApi(token="-", instance_host="-", record_requests=False)
    api.push(spec)
    return entry_fields(instance, parse_event(json.loads(api.all_events()[0].json_text)))[1]


def _items(instance: str, stream: str, events: list[EventSpec]) -> list[Item]:
    api = StandInEventApi(token="-", instance_host="-", record_requests=False)
    base = now_us() - HISTORY_US
    for index, spec in enumerate(events):
        api.push(spec, created_us=base + index * 1000)
    items = []
    for stored in api.all_events():
        event = parse_event(json.loads(stored.json_text))
        _priority, fields = entry_fields(instance, event)
        dedup = f"{event.aggregate_type}:{event.aggregate_id}:{event.sequence}"
        items.append(Item.of(dedup, seen_bucket(event.created_us), stream, fields))
    return items


def measure(bed: RedisBed, instance: str, streams: Streams, count: int = 30_000) -> Measured:
    """Per item ``used_memory`` growth: entries through the relay's own write script (then their dedup records
    deleted, which is the dedup records' share), dead letters and counters as their writers send them."""
    port = bed.nodes[0].port
    events, counters = bed.client(port, db=1), bed.client(port, db=0)
    events.flushdb()
    counters.flushdb()
    empty = settle(events)
    store = Store(
        events,
        instance,
        dedup_keep_us=HISTORY_US,
        max_stream_length=10**9,
        batch_size=100,
        require_replica_ack=False,
        replica_ack_timeout_ms=0,
    )

    def entry_and_dedup(kinds: tuple[tuple[str, str, dict[str, Any]], ...]) -> tuple[float, float]:
        events.flushdb()
        before = settle(events)
        items = _items(instance, streams.normal, specs(count, kinds))
        for start in range(0, len(items), 1000):
            store.write(items[start : start + 1000])
        written = settle(events)
        events.unlink(*events.keys("relay:seen:*"))
        entries = settle(events)
        return (entries - before) / count, (written - entries) / count

    entry, dedup = entry_and_dedup((MIX[1],))
    mix_entry, _ = entry_and_dedup(MIX)

    def stream_growth(fields_of: Callable[[int], dict[str, str]]) -> float:
        events.flushdb()
        before = settle(events)
        pipe = events.pipeline(transaction=False)
        for index in range(count):
            pipe.xadd(streams.dead_letter, cast(Any, fields_of(index)))
            if index % 1000 == 999:
                pipe.execute()
        pipe.execute()
        return (settle(events) - before) / count

    consumer_fields = stored_entry(instance, specs(1, (MIX[1],))[0])

    def consumer_dead_letter(index: int) -> dict[str, str]:
        # The fields relay/consumer.py writes: the entry's, then dead_letter.* with a 100-character error.
        return {
            **consumer_fields,
            "aggregate_id": aggregate_id(index),
            "dead_letter.reason": "max_retries",
            "dead_letter.stream": streams.normal,
            "dead_letter.id": f"1785542400000-{index}",
            "dead_letter.group": "welcome-mail",
            "dead_letter.deliveries": "5",
            "dead_letter.error": "SMTPServerDisconnected: Connection unexpectedly closed by mail.example.com:587 "
            "after 30.0 s wait",
        }

    def bridge_dead_letter(index: int) -> dict[str, str]:
        return {
            "dead_letter.reason": "too_large",
            "dead_letter.detail": "entry of 70312 bytes > 65536",
            "dead_letter.source": "bridge",
            "instance": instance,
            "type": "user.human.added",
            "aggregate_type": "user",
            "aggregate_id": aggregate_id(index),
            "resource_owner": "100000000000000001",
            "sequence": "1",
            "created_at": "2026-08-01T00:00:00.123456Z",
        }

    dead_letter = stream_growth(consumer_dead_letter)
    bridge_letter = stream_growth(bridge_dead_letter)
    events.flushdb()

    def counter_growth(address: Callable[[int], str], rule: int) -> float:
        counters.flushdb()
        before = settle(counters)
        now = int(time.time())
        fill_counters(counters, [address(i) for i in range(count)], rule=rule, now=now)
        grown = (settle(counters) - before) / count
        counters.flushdb()
        return grown

    ipv4 = counter_growth(lambda i: f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0)
    ipv6 = counter_growth(lambda i: f"2001:db8:{i // 65536:x}:{i % 65536:x}:1234:5678:9abc:def0", 1)
    return Measured(entry, mix_entry, dedup, dead_letter, bridge_letter, ipv4, ipv6, empty)


def client_entries(rule: int, address: str) -> list[ratelimit.Entry]:
    """The descriptor of a per-client-IP rule (``testbed/ratelimit.py``): the rule's key, its range, the address."""
    name = f"{DOMAIN}/rule/{rule}"
    cidr = "::/0" if ":" in address else "0.0.0.0/0"
    return [(name, name), ("masked_remote_address", cidr), ("remote_address", address)]


def fill_counters(
    client: redis.Redis, addresses: list[str], *, rule: int, now: int, unit: str = "Minute", jitter: int = 10
) -> None:
    """One request of each address, as envoyproxy/ratelimit counts it (INCRBY then EXPIRE), pipelined."""
    pipe = client.pipeline(transaction=False)
    for index, address in enumerate(addresses):
        key = ratelimit.cache_key("rl:", DOMAIN, client_entries(rule, address), unit, now)
        pipe.incrby(key, 1)
        pipe.expire(key, ratelimit.UNIT_SECONDS[unit] + index % jitter)
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


# --- (a) fill ------------------------------------------------------------------------------------------------------


def with_memory_limit(r: RedisConfig, memory_limit: str) -> RedisConfig:
    limits = ResourceList(memory=memory_limit)
    resources = r.resources.model_copy(update={"redis": Resources(requests=r.resources.redis.requests, limits=limits)})
    return r.model_copy(update={"resources": resources})


class Flood(threading.Thread):
    """Distinct clients, ``rate`` new ones per second, each counted once in DB 0: the reserve's steady load."""

    def __init__(self, client: redis.Redis, rate: int) -> None:
        super().__init__(daemon=True)
        self.client, self.rate = client, rate
        self.clients = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set():
            due = int((time.monotonic() - started) * self.rate)
            if due <= self.clients:
                time.sleep(0.05)
                continue
            batch = min(due - self.clients, 2000)
            addresses = [
                f"2001:db8:{(self.clients + i) // 65536:x}:{(self.clients + i) % 65536:x}::1" for i in range(batch)
            ]
            try:
                fill_counters(self.client, addresses, rule=FLOOD_RULE_INDEX, now=int(time.time()))
            except redis.RedisError as exc:
                self.errors.append(str(exc))
            self.clients += batch

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


@dataclass(frozen=True)
class Filled:
    pushed: int
    written: int
    lengths: dict[str, int]
    caps: tuple[int, int]
    maxmemory: int
    used: int
    streams_bytes: int
    non_evictable: int
    evicted: int
    counters: int
    flood_clients: int
    reserve: int
    enforced: int
    clients_over: int
    seconds: float


def enforced_clients(client: redis.Redis, requests: int, clients: int) -> int:
    """Clients whose first ``requests`` requests to the credential paths pass and whose next one is refused."""
    window = ratelimit.FixedWindow(client, "rl:", jitter_max_seconds=10)
    limit = {"unit": "Minute", "requests": requests}
    enforced = 0
    now = int(time.time())
    for index in range(clients):
        entries = client_entries(LIMITED_RULE_INDEX, f"203.0.{index // 256}.{index % 256}")
        verdicts = [window.allowed(DOMAIN, entries, limit, now) for _ in range(requests + 1)]
        enforced += verdicts == [True] * requests + [False]
    return enforced


def fill(cfg: StackConfig, bed: RedisBed, tmp: Path, *, flood_rate: int, over_limit: int) -> Filled:
    caps = cfg.stream_caps
    maxmemory = cast(int, cfg.redis.maxmemory_bytes)
    port = bed.nodes[0].port
    admin = bed.client(port, db=cfg.events.db, socket_timeout=60)
    token = secrets.token_urlsafe(32)
    (tmp / "pat").write_text(token)
    (tmp / "pw").write_text(bed.user_passwords[names.REDIS_RELAY_USER])
    per_stream = math.ceil(caps.max_stream_length * 1.1)
    pushed = per_stream * capacity.PRIORITY_STREAMS
    api = StandInEventApi(token=token, instance_host=cfg.zitadel.external_domain, record_requests=False)
    start = now_us() - HISTORY_US - 3600 * 10**6
    step = HISTORY_US // pushed
    for index, spec in enumerate(specs(pushed)):
        api.push(spec, created_us=start + index * step)
    server = ForkedServer(api)
    try:
        doc = local_relay_document(
            relay_document(event_relay_args(cfg)),
            api=server,
            instance_host=cfg.zitadel.external_domain,
            sentinel_ports=[],
            token_file=str(tmp / "pat"),
            username=names.REDIS_RELAY_USER,
            password_file=str(tmp / "pw"),
            metrics_port=free_port(),
        )
        settings = Settings.from_document(doc)
        # Consumers stopped: their groups exist from the start and nobody reads.
        for stream in settings.streams.by_priority():
            for group in ("consumers", "raw"):
                admin.xgroup_create(stream, group, id="0", mkstream=True)
        z = settings.zitadel
        bridge = Bridge(
            settings,
            api=EventApi(z.url, z.instance_host, lambda: token),
            client=bed.user_client(names.REDIS_RELAY_USER, port, db=cfg.events.db, socket_timeout=60),
            metrics=Metrics(),
            use_lease=False,
        )
        flood = Flood(bed.user_client(names.REDIS_RATE_LIMIT_USER, port, db=RATE_LIMIT_DB), flood_rate)
        flood.start()
        started = time.perf_counter()
        try:
            outcome = bridge.poll()
            bridge.maybe_trim(force=True)
        finally:
            flood.stop()
        seconds = time.perf_counter() - started
    finally:
        server.close()
    if flood.errors:
        raise RuntimeError(f"the counter flood failed: {flood.errors[0]}")
    counters_db = bed.client(port, db=RATE_LIMIT_DB)
    # Then as many clients again as fill 80 % of the reserve beyond an empty server's memory: what it is for.
    reserve = capacity.share_bytes(maxmemory, cfg.events.capacity.reserve_percent)
    target = int(0.8 * (reserve - capacity.MEASURED_EMPTY_SERVER_BYTES) / capacity.MEASURED_COUNTER_BYTES)
    more = [f"2001:db8:ffff:{i // 65536:x}:{i % 65536:x}::1" for i in range(max(0, target - flood.clients))]
    fill_counters(
        bed.user_client(names.REDIS_RATE_LIMIT_USER, port, db=RATE_LIMIT_DB),
        more,
        rule=FLOOD_RULE_INDEX,
        now=int(time.time()),
    )
    limit = next(rule.requests for rule in cfg.edge.rate_limit.rules if rule.name == LIMITED_RULE)
    enforced = enforced_clients(bed.user_client(names.REDIS_RATE_LIMIT_USER, port, db=RATE_LIMIT_DB), limit, over_limit)
    streams = (*settings.streams.by_priority(), settings.streams.dead_letter)
    lengths = {stream: int(admin.xlen(stream)) for stream in streams}
    streams_bytes = sum(int(admin.memory_usage(s, samples=0) or 0) for s in settings.streams.by_priority())
    non_evictable = sum(int(admin.memory_usage(k, samples=0) or 0) for k in admin.scan_iter(count=1000))
    return Filled(
        pushed=pushed,
        written=outcome.written,
        lengths=lengths,
        caps=(caps.max_stream_length, caps.dead_letter_max_length),
        maxmemory=maxmemory,
        used=used_memory(admin),
        streams_bytes=streams_bytes,
        non_evictable=non_evictable,
        evicted=int(admin.info("stats")["evicted_keys"]),
        counters=int(counters_db.dbsize()),
        flood_clients=flood.clients + len(more),
        reserve=reserve,
        enforced=enforced,
        clients_over=over_limit,
        seconds=seconds,
    )


# --- (b) drain -----------------------------------------------------------------------------------------------------


def drain_consumer(client: redis.Redis, streams: Streams) -> tuple[int, float]:
    consumer = Consumer(client, group="consumers", name="worker-1", streams=streams, max_deliveries=5, batch=50)
    handled = 0

    def handle(entry: StreamEntry) -> None:
        nonlocal handled
        handled += 1

    started = time.perf_counter()
    while consumer.run_once(handle, block=False):
        pass
    return handled, time.perf_counter() - started


def drain_raw(client: redis.Redis, streams: Streams) -> tuple[int, float]:
    """The floor: read 50, acknowledge the 50 in one command, most urgent stream first."""
    handled = 0
    started = time.perf_counter()
    for stream in streams.by_priority():
        while True:
            got = cast(
                list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
                client.xreadgroup("raw", "worker-1", {stream: ">"}, count=50),
            )
            if not got:
                break
            ids = [entry_id for entry_id, _fields in got[0][1]]
            client.xack(stream, "raw", *ids)
            handled += len(ids)
    return handled, time.perf_counter() - started


@contextmanager
def prepared(args: argparse.Namespace) -> Iterator[tuple[StackConfig, RedisBed, Path]]:
    """The stack (at another memory limit if asked: its caps derive from it) and its Redis as a master and one
    replica (``WAIT 1`` needs one; no sentinels: the bridge writes to the master directly)."""
    cfg = stack(args.stack)
    if args.memory_limit:
        cfg = cfg.model_copy(update={"redis": with_memory_limit(cfg.redis, args.memory_limit)})
    pair = cfg.redis.model_copy(update={"nodes": 2, "quorum": 1})
    with tempfile.TemporaryDirectory() as tmp, running_bed(pair, Path(tmp) / "bed", with_sentinels=False) as bed:
        yield cfg, bed, Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", default="dev", help="the stack whose memory limit and caps to use")
    parser.add_argument("--memory-limit", help="another redis container memory limit (e.g. 64Mi), caps derived")
    parser.add_argument("--flood-rate", type=int, default=2000, help="new distinct clients per second in DB 0")
    parser.add_argument("--clients-over", type=int, default=200, help="clients that go over the credential limit")
    args = parser.parse_args()
    if not binaries_available():
        print("redis-server and redis-sentinel are required")
        return 2
    with prepared(args) as (cfg, bed, tmp):
        port = bed.nodes[0].port
        streams = Streams(
            cfg.events.streams.high, cfg.events.streams.normal, cfg.events.streams.low, cfg.events.streams.dead_letter
        )
        m = measure(bed, cfg.events.source.instance or cfg.zitadel.external_domain, streams)
        print(
            f"(m) measured, bytes of used_memory each (stacks/capacity.py): user.human.added entry {m.entry:.0f} "
            f"({capacity.MEASURED_ENTRY_BYTES}), the mix's entry {m.mix_entry:.0f} "
            f"({capacity.MEASURED_MIX_ENTRY_BYTES}), dedup record {m.dedup_record:.0f} "
            f"({capacity.MEASURED_DEDUP_RECORD_BYTES}), consumer dead letter "
            f"{m.dead_letter_entry:.0f} ({capacity.MEASURED_DEAD_LETTER_ENTRY_BYTES}), bridge dead letter "
            f"{m.bridge_dead_letter_entry:.0f}, counter IPv4 {m.counter_ipv4:.0f} / IPv6 {m.counter_ipv6:.0f} "
            f"({capacity.MEASURED_COUNTER_BYTES}), empty server {m.empty_server:,} "
            f"({capacity.MEASURED_EMPTY_SERVER_BYTES:,})"
        )
        f = fill(cfg, bed, tmp, flood_rate=args.flood_rate, over_limit=args.clients_over)
        mib = f.maxmemory // MIB
        lengths = ", ".join(f"{stream.rsplit(':', 1)[-1]} {n:,}" for stream, n in f.lengths.items())
        shares = cfg.events.capacity
        print(
            f"(a) {args.stack} at maxmemory {mib} MiB, caps {f.caps[0]:,} per stream / {f.caps[1]:,} dead letter: "
            f"backfilled {f.pushed:,} events in {f.seconds:.1f} s ({f.pushed / f.seconds:,.0f}/s), written "
            f"{f.written:,}; lengths {lengths}"
        )
        print(
            f"    streams {f.streams_bytes / MIB:.1f} MiB ({100 * f.streams_bytes / f.maxmemory:.1f} % of maxmemory, "
            f"share {shares.streams_percent} %), events DB {f.non_evictable / MIB:.1f} MiB "
            f"({100 * f.non_evictable / f.maxmemory:.1f} %, at most {100 - shares.reserve_percent} %), "
            f"used_memory {f.used / MIB:.1f} MiB ({100 * f.used / f.maxmemory:.1f} %); the rest, {f.counters:,} "
            f"counters of {f.flood_clients:,} distinct clients and Redis's own, {(f.used - f.non_evictable) / MIB:.1f} "
            f"MiB of the reserve's {f.reserve / MIB:.1f} MiB; evicted keys {f.evicted}"
        )

        def consumer_client() -> redis.Redis:
            return bed.user_client(names.REDIS_CONSUMER_USER, port, db=cfg.events.db, socket_timeout=60)

        drained, consumer_s = drain_consumer(consumer_client(), streams)
        raw, raw_s = drain_raw(consumer_client(), streams)
        print(
            f"(b) drain {drained:,} entries: relay.consumer.Consumer {consumer_s:.1f} s ({drained / consumer_s:,.0f}/s)"
            f", raw XREADGROUP + XACK {raw_s:.1f} s ({raw / raw_s:,.0f}/s): {consumer_s / raw_s:.1f}x the raw time"
        )
        lost = f.pushed - f.written
        print(
            f"capacity: streams at cap use {100 * f.streams_bytes / f.maxmemory:.0f}% of maxmemory, rate limits "
            f"enforced {f.enforced} of {f.clients_over}, relay lost {lost}, evicted counters {f.evicted}; "
            f"consumers drain the backlog in {consumer_s:.1f} s ({consumer_s / raw_s:.1f}x raw XREADGROUP+XACK)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
