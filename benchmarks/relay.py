"""Event relay benchmark on real redis-server/redis-sentinel processes: ``python -m benchmarks.relay``.

In one run, on one Sentinel group configured like prod, against the stand-in for ZITADEL's Event API:

(a) catch-up: the bridge reads a backlog from the stand-in (served from its own process) and writes it, through
    Sentinel, with the replica acknowledgement (``WAIT 1``) on: events/s;
(b) the ceiling: the same entries, already built, as raw pipelined ``XADD`` (no read, no dedup, no ``WAIT``);
(c) a naive bridge: the same pages, one ``XADD`` + one dedup ``HSETNX`` + one cursor write per event, no pipeline;
(d) freshness at a steady 200 events/s with the stack's poll interval and clock skew: p50/p99 of
    (stream entry time - event creation date).

Every event written in (a) and (d) is checked against what the stand-in committed: lost and duplicated counts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import redis

from components.event_relay import relay_document
from components.wiring import event_relay_args
from relay.bridge import Bridge
from relay.events import entry_fields, parse_event, parse_timestamp
from relay.metrics import Metrics
from relay.settings import Settings
from relay.source import EventApi
from relay.store import connect, cursor_key, seen_bucket, seen_key
from stacks.config import StackConfig, duration_seconds
from stacks.loader import load
from stacks.stackfile import path_of, read_stack_config
from stacktools.mocked import PROJECT_DIR
from testbed.redisbed import RedisBed, binaries_available, free_port, running_bed
from testbed.zitadel_api import EventSpec, ForkedServer, StandInEventApi, local_relay_document, now_us

#: A realistic mix: logins and failures (high), user and org changes (normal), the rest (low).
_MIX = (
    ("user.human.password.check.succeeded", "user", {"userAgentID": "ua-1"}),
    ("user.human.password.check.failed", "user", {"userAgentID": "ua-1"}),
    ("user.human.profile.changed", "user", {"firstName": "Ada", "lastName": "Lovelace", "displayName": "Ada L."}),
    ("user.human.added", "user", {"userName": "ada@example.com", "email": "ada@example.com", "encodedHash": "x"}),
    ("org.changed", "org", {"name": "Example Org"}),
    ("session.added", "session", {"userAgent": {"fingerprintID": "f", "ip": "192.0.2.1"}}),
    ("oidc_session.added", "oidc_session", {"userID": "u", "sessionID": "s", "clientID": "c"}),
    ("instance.domain.added", "instance", {"domain": "id.example.com"}),
)


def specs(count: int, start: int = 0) -> list[EventSpec]:
    out = []
    for i in range(start, start + count):
        event_type, aggregate, payload = _MIX[i % len(_MIX)]
        out.append(EventSpec(event_type, aggregate, f"{aggregate}-{i // len(_MIX)}", payload))
    return out


def stack(name: str) -> StackConfig:
    return load(name, *read_stack_config(path_of(PROJECT_DIR, name)))


class Run:
    def __init__(self, cfg: StackConfig, bed: RedisBed, tmp: Path) -> None:
        self.cfg, self.bed, self.tmp = cfg, bed, tmp
        self.token = secrets.token_urlsafe(32)
        (tmp / "pat").write_text(self.token)
        (tmp / "pw").write_text(bed.password)

    def settings(self, api: StandInEventApi | ForkedServer, **source: Any) -> Settings:
        doc = local_relay_document(
            relay_document(event_relay_args(self.cfg)),
            api=api,
            instance_host=self.cfg.zitadel.external_domain,
            sentinel_ports=[s.port for s in self.bed.sentinels],
            token_file=str(self.tmp / "pat"),
            username="default",  # the test bed's user, whose password is the bed's
            password_file=str(self.tmp / "pw"),
            metrics_port=free_port(),
        )
        settings = Settings.from_document(doc)
        return replace(settings, source=replace(settings.source, **source))

    def client(self) -> redis.Redis:
        return self.bed.client(self.bed.master_port(), db=self.cfg.events.db, socket_timeout=30)

    def bridge(self, settings: Settings) -> Bridge:
        z = settings.zitadel
        api = EventApi(z.url, z.instance_host, lambda: self.token)
        return Bridge(settings, api=api, client=connect(settings.redis), metrics=Metrics(), use_lease=False)

    def check(self, api: StandInEventApi, settings: Settings) -> tuple[int, int]:
        """(lost, duplicated) of the streams against what the stand-in committed."""
        client = self.client()
        landed: Counter[tuple[str, str, str]] = Counter()
        for stream in (*settings.streams.by_priority(), settings.streams.dead_letter):
            for _id, f in cast(list[tuple[str, dict[str, str]]], client.xrange(stream)):
                landed[(f["aggregate_type"], f["aggregate_id"], f["sequence"])] += 1
        committed = {(e.spec.aggregate_type, e.spec.aggregate_id, str(e.sequence)) for e in api.all_events()}
        lost = len(committed - set(landed))
        duplicated = sum(n - 1 for n in landed.values() if n > 1) + len(set(landed) - committed)
        return lost, duplicated


def catch_up(run: Run, count: int) -> tuple[float, int, int, StandInEventApi, Settings]:
    api = StandInEventApi(token=run.token, instance_host=run.cfg.zitadel.external_domain, record_requests=False)
    for spec in specs(count):
        api.push(spec)
    time.sleep(0.01)
    server = ForkedServer(api)
    try:
        # The backlog is all in the past: no skew needed to read it complete.
        settings = run.settings(server, clock_skew=1e-3)
        run.client().flushdb()
        bridge = run.bridge(settings)
        started = time.perf_counter()
        outcome = bridge.poll()
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    assert outcome.written == count, outcome
    lost, duplicated = run.check(api, settings)
    return count / elapsed, lost, duplicated, api, settings


def raw_xadd(run: Run, api: StandInEventApi, settings: Settings) -> float:
    """The same entries, built beforehand, written with pipelined XADD and nothing else."""
    instance = settings.instance
    items = []
    for event in api.all_events():
        priority, fields = entry_fields(instance, parse_event(json.loads(event.json_text)))
        items.append((settings.streams.of(priority), fields))
    client = run.client()
    client.flushdb()
    page = settings.source.page_size
    started = time.perf_counter()
    for i in range(0, len(items), page):
        pipe = client.pipeline(transaction=False)
        for stream, fields in items[i : i + page]:
            pipe.xadd(stream, cast(Any, fields), maxlen=settings.publishing.max_stream_length, approximate=True)
        pipe.execute()
    return len(items) / (time.perf_counter() - started)


def naive(run: Run, count: int) -> float:
    """Read pages like the bridge; per event, three round trips: XADD, the dedup HSETNX, the cursor."""
    api = StandInEventApi(token=run.token, instance_host=run.cfg.zitadel.external_domain, record_requests=False)
    for spec in specs(count):
        api.push(spec)
    server = ForkedServer(api)
    try:
        settings = run.settings(server)
        client = run.client()
        client.flushdb()
        source = EventApi(server.url, settings.zitadel.instance_host, lambda: run.token)
        instance, cursor, done = settings.instance, 0, 0
        until = now_us()
        started = time.perf_counter()
        while True:
            page = source.list_events(since_us=cursor, until_us=until, limit=settings.source.page_size)
            for raw in page:
                event = parse_event(raw)
                priority, fields = entry_fields(instance, event)
                key = seen_key(instance, seen_bucket(event.created_us))
                if client.hsetnx(key, f"{event.aggregate_type}:{event.aggregate_id}:{event.sequence}", "1"):
                    client.xadd(settings.streams.of(priority), cast(Any, fields))
                client.set(cursor_key(instance), event.created_us)
                cursor = event.created_us
                done += 1
            if len(page) < settings.source.page_size:
                break
        elapsed = time.perf_counter() - started
    finally:
        server.close()
    assert done >= count
    return count / elapsed


def freshness(run: Run, rate: int, seconds: float) -> tuple[float, float, int, int]:
    """The bridge with the stack's poll interval and clock skew, ZITADEL writing ``rate`` events/s."""
    api = StandInEventApi(token=run.token, instance_host=run.cfg.zitadel.external_domain, record_requests=False)
    api.start()
    try:
        settings = run.settings(api)
        run.client().flushdb()
        bridge = run.bridge(settings)
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        total = int(rate * seconds)
        started = time.monotonic()
        for i, spec in enumerate(specs(total)):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            api.push(spec)
        drain = settings.source.clock_skew + settings.source.poll_interval + 2
        deadline = time.monotonic() + drain + 10
        client = run.client()
        streams = (*settings.streams.by_priority(), settings.streams.dead_letter)
        while sum(client.xlen(s) for s in streams) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        bridge.stop()
        thread.join(timeout=30)
        lags = []
        for stream in settings.streams.by_priority():
            for entry_id, f in cast(list[tuple[str, dict[str, str]]], client.xrange(stream)):
                written_ms = int(entry_id.split("-")[0])
                lags.append(written_ms / 1000 - parse_timestamp(f["created_at"]) / 1e6)
        lost, duplicated = run.check(api, settings)
    finally:
        api.close()
    lags.sort()
    return statistics.median(lags), lags[int(0.99 * (len(lags) - 1))], lost, duplicated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="backlog for (a) and (b)")
    parser.add_argument("--naive-events", type=int, default=10_000, help="backlog for (c)")
    parser.add_argument("--rate", type=int, default=200, help="events/s for (d)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of (d)")
    args = parser.parse_args()
    if not binaries_available():
        print("redis-server and redis-sentinel are required")
        return 2
    cfg = stack("prod")
    with tempfile.TemporaryDirectory() as tmp, running_bed(cfg.redis, Path(tmp) / "bed") as bed:
        run = Run(cfg, bed, Path(tmp))
        print(
            f"prod stack: requireReplicaAck={cfg.events.publishing.require_replica_ack}, "
            f"batchSize={cfg.events.publishing.batch_size}, pageSize={cfg.events.source.page_size}"
        )
        rate_a, lost_a, dup_a, api, settings = catch_up(run, args.events)
        print(
            f"(a) catch-up, {args.events} events, WAIT 1 on: {rate_a:,.0f} events/s (lost {lost_a}, duplicated {dup_a})"
        )
        rate_b = raw_xadd(run, api, settings)
        print(f"(b) raw pipelined XADD of the same entries: {rate_b:,.0f} events/s")
        rate_c = naive(run, args.naive_events)
        print(
            f"(c) naive bridge (XADD + SET + cursor per event, no pipeline), {args.naive_events} events: "
            f"{rate_c:,.0f} events/s"
        )
        p50, p99, lost_d, dup_d = freshness(run, args.rate, args.seconds)
        poll = duration_seconds(cfg.events.source.poll_interval)
        skew = duration_seconds(cfg.events.source.clock_skew)
        print(
            f"(d) freshness at {args.rate} events/s for {args.seconds:.0f} s (poll {poll:g} s, skew {skew:g} s): "
            f"p50 {p50:.2f} s, p99 {p99:.2f} s; goal p99 <= {poll + skew + 0.5:g} s "
            f"(lost {lost_d}, duplicated {dup_d})"
        )
        print(f"a/b = {rate_a / rate_b:.2f} (goal >= 0.3), a/c = {rate_a / rate_c:.1f}x, a goal >= 10,000 events/s")
        lost, duplicated = lost_a + lost_d, dup_a + dup_d
        print(
            f"relay: {rate_a:,.0f} events/s ({rate_a / rate_b:.2f} of raw XADD, {rate_a / rate_c:.1f}× naive), "  # noqa: RUF001
            f"freshness p99 {p99:.1f} s, lost {lost}, duplicated {duplicated}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
