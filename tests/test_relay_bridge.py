"""The bridge against real Redis and Sentinel (the shared test bed) and a stand-in for ZITADEL's Event API.

Every scenario ends with the same proof: each event the stand-in committed is in exactly one stream entry.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from components.event_relay import relay_document
from components.wiring import event_relay_args
from relay.bridge import OVERLAP_US, Bridge, DenseWindowError
from relay.metrics import Metrics, serve
from relay.settings import Settings
from relay.source import EventApi
from relay.store import Item, NotAcknowledged, connect, cursor_key, seen_bucket
from stacks.config import StackConfig
from testbed.redisbed import RedisBed, binaries_available, free_port, new_password, running_bed, wait_until
from testbed.required import require
from testbed.zitadel_api import EventSpec, StandInEventApi, local_relay_document, now_us
from tests.conftest import PROJECT_DIR, stack_config
from tests.test_relay_taxonomy import secret_bearing_events

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

# Cycled by ``mixed``: one high, one normal, one low (unclassified) event type.
MIXED_TYPES = (
    ("user.human.password.check.failed", "user"),
    ("user.human.added", "user"),
    ("instance.added", "instance"),
)


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return stack_config("prod")


@pytest.fixture(scope="module")
def shared_bed(prod: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    """One Sentinel group for the scenarios that do not break Redis."""
    with running_bed(prod.redis, tmp_path_factory.mktemp("relay-bed")) as bed:
        yield bed


@dataclass
class Env:
    bed: RedisBed
    api: StandInEventApi
    settings: Settings
    document: dict[str, Any]
    token: str
    tmp: Path
    bridges: list[tuple[Bridge, threading.Thread]] = field(default_factory=list)

    @property
    def client(self) -> redis.Redis:
        """The current master (as the sentinels name it), in the events DB."""
        return self.bed.client(self.bed.master_port(), db=self.settings.redis.db)

    def bridge(self, **options: Any) -> Bridge:
        s = self.settings
        api = EventApi(s.zitadel.url, s.zitadel.instance_host, lambda: self.token)
        return Bridge(s, api=api, client=connect(s.redis), metrics=Metrics(), **options)

    def start(self, bridge: Bridge) -> Bridge:
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        self.bridges.append((bridge, thread))
        return bridge

    def stop_all(self) -> None:
        for bridge, thread in self.bridges:
            bridge.stop()
            thread.join(timeout=15)
        self.bridges.clear()

    def landed(self) -> Counter[tuple[str, str, str]]:
        """(aggregate type, aggregate ID, sequence) of every entry in the four streams, counted."""
        s, client = self.settings.streams, self.client
        found: Counter[tuple[str, str, str]] = Counter()
        for stream in (*s.by_priority(), s.dead_letter):
            for _id, f in entries(client, stream):
                found[(f.get("aggregate_type", ""), f.get("aggregate_id", ""), f.get("sequence", ""))] += 1
        return found

    def committed(self) -> set[tuple[str, str, str]]:
        return {(e.spec.aggregate_type, e.spec.aggregate_id, str(e.sequence)) for e in self.api.all_events()}

    def wait_all_landed(self, timeout: float = 30) -> None:
        want = len(self.committed())

        def done() -> bool:
            s = self.settings.streams
            return sum(self.client.xlen(x) for x in (*s.by_priority(), s.dead_letter)) >= want

        wait_until(f"{want} entries", done, timeout, interval=0.1)

    def assert_exactly_once(self) -> None:
        landed = self.landed()
        assert set(landed) == self.committed(), "lost or foreign events"
        duplicated = {k: n for k, n in landed.items() if n > 1}
        assert duplicated == {}


Entries = list[tuple[str, dict[str, str]]]


def entries(client: redis.Redis, stream: str) -> Entries:
    """XRANGE of a whole stream, typed (the client decodes responses)."""
    return cast(Entries, client.xrange(stream))


#: The bridge's own ACL user (README "Redis users"): every scenario below runs within its rights.
RELAY_USER = "event-relay"


def make_env(bed: RedisBed, prod: StackConfig, tmp: Path) -> Env:
    token = secrets.token_urlsafe(32)
    token_file, password_file = tmp / "zitadel-pat", tmp / "redis-password"
    token_file.write_text(token)
    password_file.write_text(bed.user_passwords[RELAY_USER])
    api = StandInEventApi(token=token, instance_host=prod.zitadel.external_domain).start()
    doc = local_relay_document(
        relay_document(event_relay_args(prod)),
        api=api,
        instance_host=prod.zitadel.external_domain,
        sentinel_ports=[s.port for s in bed.sentinels],
        token_file=str(token_file),
        username=RELAY_USER,
        password_file=str(password_file),
        metrics_port=free_port(),
    )
    # Short timings: the scenarios are the same, only faster.
    doc["source"].update(pollInterval=0.05, clockSkew=0.3)
    doc["lease"].update(ttl=2.0, renewEvery=0.5)
    doc["publishing"].update(retryBackoff=0.05, maxRetryBackoff=0.5)
    settings = Settings.from_document(doc)
    bed.client(bed.master_port(), db=settings.redis.db).flushdb()
    return Env(bed, api, settings, doc, token, tmp)


@contextlib.contextmanager
def env_on(bed: RedisBed, prod: StackConfig, tmp: Path) -> Iterator[Env]:
    """``make_env``, with every bridge it started stopped and the stand-in closed afterwards."""
    e = make_env(bed, prod, tmp)
    try:
        yield e
    finally:
        e.stop_all()
        e.api.close()


@pytest.fixture
def env(shared_bed: RedisBed, prod: StackConfig, tmp_path: Path) -> Iterator[Env]:
    with env_on(shared_bed, prod, tmp_path) as e:
        yield e


def mixed(count: int, start: int = 0) -> list[EventSpec]:
    specs = []
    for i in range(start, start + count):
        event_type, aggregate = MIXED_TYPES[i % 3]
        specs.append(EventSpec(event_type, aggregate, f"{aggregate}-{i}", {"userName": f"user-{i}"}))
    return specs


def push_each(api: StandInEventApi, specs: list[EventSpec]) -> None:
    """One push (one transaction, one timestamp) per event."""
    for spec in specs:
        api.push(spec)


def settle(env: Env) -> None:
    """Let the newest pushes fall behind ``now - clockSkew``."""
    time.sleep(env.settings.source.clock_skew + 0.05)


# --- the stand-in keeps ZITADEL's semantics -----------------------------------------------------------------------


def post(env: Env, body: dict[str, Any], token: str | None = None, host: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        env.api.url + "/admin/v1/events/_search",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {token or env.token}",
            "x-zitadel-instance-host": host or env.settings.zitadel.instance_host,
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stamp(micros: int) -> str:
    from relay.events import format_timestamp

    return format_timestamp(micros)


def test_stand_in_mirrors_the_event_api(env: Env) -> None:
    t = 1_800_000_000_000_000
    for offset in (0, 1, 2):
        env.api.push(*[EventSpec("org.added", "org", f"org-{offset}-{i}") for i in range(700)], created_us=t + offset)
    status, body = post(env, {"asc": True, "limit": 5000, "range": {"since": stamp(t - 1), "until": stamp(t + 3)}})
    assert status == 200 and len(body["events"]) == 1000  # the cap
    first = body["events"][0]
    assert first["sequence"] == "1" and first["creationDate"] == "2027-01-15T08:00:00Z"
    assert first["aggregate"]["type"]["type"] == "org" and first["type"]["type"] == "org.added"
    # since and until are strict
    status, body = post(env, {"asc": True, "range": {"since": stamp(t), "until": stamp(t + 2)}})
    assert [e["creationDate"] for e in body["events"]] == ["2027-01-15T08:00:00.000001Z"] * 700
    # descending by default; nothing is "{}"
    status, body = post(env, {"limit": 1, "range": {"since": stamp(t - 1), "until": stamp(t + 3)}})
    assert body["events"][0]["creationDate"] == "2027-01-15T08:00:00.000002Z"
    assert post(env, {"range": {"since": stamp(t + 2), "until": stamp(t + 3)}}) == (200, {})
    assert post(env, {}, token="wrong")[0] == 401
    assert post(env, {}, host="other.example.com")[0] == 404
    assert post(env, {"aggregateTypes": [str(i) for i in range(11)]})[0] == 400


# --- catching up ---------------------------------------------------------------------------------------------------


def test_catch_up_writes_every_event_once_in_its_priority_stream(env: Env) -> None:
    push_each(env.api, mixed(3000))
    settle(env)
    bridge = env.bridge(use_lease=False)
    started = now_us()
    outcome = bridge.poll()
    assert (outcome.written, outcome.duplicates, outcome.dead_lettered) == (3000, outcome.read - 3000, 0)
    s = env.settings.streams
    assert [env.client.xlen(x) for x in (s.high, s.normal, s.low, s.dead_letter)] == [1000, 1000, 1000, 0]
    env.assert_exactly_once()
    # Every read stopped at now - clockSkew, and asked for ZITADEL's page size, ascending.
    for body, received in zip(env.api.requests, env.api.received_us, strict=True):
        until = datetime_us(body["range"]["until"])
        assert until <= received - 300_000 and until >= started - 300_000 - 1_000_000
        assert (body["asc"], body["limit"]) == (True, 1000)
    # Four full pages, then the rest: pages continue from the last creation date minus 1 ms.
    assert len(env.api.requests) == 4
    assert (
        int(str(env.client.get(cursor_key(env.settings.instance))))
        == datetime_us(env.api.requests[-1]["range"]["until"]) - OVERLAP_US
    )
    # Polling again writes nothing new.
    assert bridge.poll().written == 0


def datetime_us(text: str) -> int:
    from relay.events import parse_timestamp

    return parse_timestamp(text)


def test_a_bulk_write_at_one_instant_is_split_by_aggregate_type(env: Env) -> None:
    """2,500 events of one push share one creation date: no page can move past them, so the bridge splits."""
    push_each(env.api, mixed(30))
    aggregates = ("user", "org", "project", "instance", "session")
    bulk = [EventSpec(f"{a}.imported", a, f"bulk-{a}-{i}") for a in aggregates for i in range(500)]
    env.api.push(*bulk)
    push_each(env.api, mixed(30, start=30))
    settle(env)
    bridge = env.bridge(use_lease=False)
    bridge.poll()
    env.assert_exactly_once()
    assert len(env.landed()) == 2560
    split = [r for r in env.api.requests if r.get("aggregateTypes")]
    # All five aggregate types in one request fill a page; one type at a time does not.
    assert [r["aggregateTypes"] for r in split] == [
        ["instance", "org", "project", "session", "user"],
        ["instance"],
        ["org"],
        ["project"],
        ["session"],
        ["user"],
    ]


def test_a_window_too_dense_for_any_split_stalls_instead_of_skipping(env: Env) -> None:
    bulk = [EventSpec("user.human.added", "user", f"bulk-{i}") for i in range(1001)]
    held_at = now_us()
    env.api.push(*bulk, created_us=held_at)
    settle(env)
    bridge = env.bridge(use_lease=False)
    with pytest.raises(DenseWindowError):
        bridge.poll()
    cursor = env.client.get(cursor_key(env.settings.instance))
    assert cursor is None or int(str(cursor)) < held_at


# --- the until rule and the look-back ------------------------------------------------------------------------------


def test_an_event_committed_late_inside_the_window_is_read_by_a_later_poll(env: Env) -> None:
    """A push that took its timestamp and commits 0.2 s later (within clockSkew 0.3 s): the until bound keeps the
    cursor behind it, so the next polls read it; the look-back finds nothing to repair."""
    bridge = env.start(env.bridge(use_lease=False))
    push_each(env.api, mixed(10))
    late = env.api.push(EventSpec("user.human.added", "user", "late"), hold=True)
    push_each(env.api, mixed(10, start=10))
    time.sleep(0.2)
    late.commit()
    push_each(env.api, mixed(10, start=20))
    env.wait_all_landed()
    env.stop_all()
    assert bridge.maybe_look_back(force=True) == 0
    assert bridge.metrics.look_back_repairs._value.get() == 0
    env.assert_exactly_once()


def test_an_event_committed_after_the_skew_is_repaired_by_the_look_back(env: Env) -> None:
    """The same push committing after 1 s, longer than the configured skew: the polls have moved past its
    timestamp, and only the look-back brings it in (and counts it)."""
    bridge = env.start(env.bridge(use_lease=False))
    late = env.api.push(EventSpec("user.human.added", "user", "too-late"), hold=True)
    push_each(env.api, mixed(10))
    time.sleep(1.0)
    late.commit()
    push_each(env.api, mixed(10, start=10))
    settle(env)
    time.sleep(0.3)
    env.stop_all()
    assert ("user", "too-late", "1") not in env.landed()
    assert bridge.maybe_look_back(force=True) == 1
    assert bridge.metrics.look_back_repairs._value.get() == 1
    env.assert_exactly_once()


# --- dead letters and secrets --------------------------------------------------------------------------------------


def test_unusable_and_oversized_events_go_to_the_dead_letter_stream_once(env: Env) -> None:
    push_each(env.api, mixed(5))
    env.api.push(EventSpec("user.human.added", "user", "", {"userName": "no aggregate id"}))
    env.api.push(EventSpec("user.human.added", "user", "big", {"userName": "x" * 70_000}))
    push_each(env.api, mixed(5, start=5))
    settle(env)
    bridge = env.bridge(use_lease=False)
    bridge.poll()
    bridge.poll()
    bridge.maybe_look_back(force=True)
    dead = [f for _id, f in entries(env.client, env.settings.streams.dead_letter)]
    assert sorted(f["dead_letter.reason"] for f in dead) == ["too_large", "unparseable"]
    for f in dead:
        assert f["dead_letter.source"] == "bridge"
        assert f["type"] == "user.human.added" and f["instance"] == env.settings.instance
        assert "payload" not in f and "x" * 100 not in json.dumps(f)
    assert bridge.metrics.dead_lettered.labels("too_large")._value.get() == 1
    assert bridge.metrics.dead_lettered.labels("unparseable")._value.get() == 1
    normal = [f for _id, f in entries(env.client, env.settings.streams.normal)]
    assert len(normal) == 3 and all(f["taxonomy"] == "user.created" for f in normal)


def test_no_secret_of_any_secret_bearing_event_reaches_redis(env: Env) -> None:
    secret = secrets.token_hex(20)
    for raw in secret_bearing_events(secret):
        payload = raw.get("payload")
        env.api.push(EventSpec(raw["type"]["type"], "user", f"agg-{raw['type']['type']}", payload))
    settle(env)
    env.bridge(use_lease=False).poll()
    client = env.client
    assert len(env.landed()) == len(secret_bearing_events(secret))
    for key in client.scan_iter("*"):
        kind = client.type(key)
        if kind == "stream":
            dump = json.dumps(entries(client, key))
        elif kind == "hash":  # the dedup records
            dump = json.dumps(client.hgetall(key))
        else:
            dump = str(client.get(key))
        assert secret not in dump, key


# --- crashes, failovers, outages, two bridges ----------------------------------------------------------------------


def test_two_bridges_active_at_once_write_no_duplicate(env: Env) -> None:
    push_each(env.api, mixed(3000))
    settle(env)
    first = env.start(env.bridge(use_lease=False))
    second = env.start(env.bridge(use_lease=False))
    push_each(env.api, mixed(1000, start=3000))
    env.wait_all_landed()
    env.stop_all()
    env.assert_exactly_once()
    streams = env.settings.streams.by_priority()
    written = [b.metrics.written.labels(s)._value.get() for b in (first, second) for s in streams]
    # Each event written by exactly one of the two (whether the other skipped it as a duplicate depends on timing).
    assert sum(written) == 4000


def test_the_standby_takes_over_when_the_leader_dies(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    push_each(env.api, mixed(300))
    first = env.start(env.bridge())
    second = env.start(env.bridge())
    env.wait_all_landed()
    leaders = [b for b in (first, second) if b.metrics.leader._value.get() == 1]
    assert len(leaders) == 1
    leader = leaders[0]
    standby = second if leader is first else first
    # Dies: no release of the lease; the standby waits for it to expire.
    monkeypatch.setattr(leader, "_release", lambda: None)
    leader.stop()
    dead_at = time.monotonic()
    push_each(env.api, mixed(300, start=300))
    env.wait_all_landed(timeout=20)
    assert time.monotonic() - dead_at >= 1.0  # the lease held for most of its 2 s TTL
    assert standby.metrics.leader._value.get() == 1
    env.stop_all()
    env.assert_exactly_once()


def relay_process(config: Path) -> subprocess.Popen[bytes]:
    """``python -m relay run``; its logs go to a file next to the config (a pipe nobody reads would fill and block
    the child)."""
    with (config.parent / f"relay-{time.monotonic_ns()}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "run", "--config", str(config)],
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def stop_relay_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM and its exit code; a child that does not exit in time is killed and reaped all the same."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_bridge_killed_mid_page_and_restarted_loses_and_duplicates_nothing(env: Env) -> None:
    push_each(env.api, mixed(20_000))
    settle(env)
    config = env.tmp / "relay.json"
    config.write_text(json.dumps(env.document))
    s = env.settings.streams
    stamps = sorted(e.created_us for e in env.api.all_events())

    def beyond_cursor() -> int:
        """Entries written past the stored cursor: a page is being written and has not stored its cursor yet."""
        pipe = env.client.pipeline(transaction=False)
        pipe.get(cursor_key(env.settings.instance))
        for stream in s.by_priority():
            pipe.xlen(stream)
        cursor, *lengths = pipe.execute()
        covered = bisect.bisect_right(stamps, int(cursor or 0) + OVERLAP_US) if cursor else 0
        return int(sum(lengths)) - covered

    process = relay_process(config)
    try:
        for _attempt in range(100):
            wait_until("a page being written", lambda: beyond_cursor() > 0, 60, 0.0005)
            # Freeze it; Redis runs what it already received. Still past the cursor: it dies mid-page.
            process.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            if beyond_cursor() > 0:
                break
            process.send_signal(signal.SIGCONT)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert beyond_cursor() > 0  # killed mid-page
    process = relay_process(config)
    try:
        env.wait_all_landed(timeout=60)
    finally:
        code = stop_relay_process(process)
    assert code == 0
    env.assert_exactly_once()


def test_a_stopped_bridge_finishes_its_page_and_releases_the_lease(env: Env) -> None:
    """SIGTERM (``stop``) in the middle of a catch-up: the page in progress is written with its cursor, and the lease
    is released at once for the standby."""
    push_each(env.api, mixed(20_000))
    settle(env)
    s = env.settings.streams
    bridge = env.start(env.bridge())
    wait_until("a catch-up under way", lambda: env.client.xlen(s.normal) > 1500, 30, 0.01)
    bridge.stop()
    env.bridges[0][1].join(timeout=15)
    written = sum(env.client.xlen(x) for x in s.by_priority())
    assert 0 < written < 20_000  # it stopped before the backlog's end
    cursor = int(str(env.client.get(cursor_key(env.settings.instance))))
    stamps = sorted(e.created_us for e in env.api.all_events())
    # Everything up to the cursor (plus its overlap) is in Redis, and nothing beyond: no half-written page.
    assert written == bisect.bisect_right(stamps, cursor + OVERLAP_US)
    assert env.client.get(f"relay:{env.settings.instance}:lease") is None
    env.bridges.clear()


def test_metrics_and_probes(env: Env) -> None:
    push_each(env.api, mixed(30))
    settle(env)
    bridge = env.bridge(use_lease=False)
    bridge.poll()
    port = free_port()
    server = serve(bridge.metrics, bridge.health, port, host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'relay_events_written_total{stream="zitadel:events:high"} 10.0' in text
        assert "relay_events_read_total 30.0" in text
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_an_event_api_outage_is_retried(env: Env) -> None:
    push_each(env.api, mixed(30))
    env.api.fail_next(3)
    bridge = env.start(env.bridge(use_lease=False))
    env.wait_all_landed()
    assert bridge.metrics.errors.labels("event_api")._value.get() == 3
    env.stop_all()
    env.assert_exactly_once()


# --- destructive: each has its own Sentinel group ------------------------------------------------------------------


@pytest.fixture
def own_env(prod: StackConfig, tmp_path: Path) -> Iterator[Env]:
    with running_bed(prod.redis, tmp_path / "bed") as bed, env_on(bed, prod, tmp_path) as e:
        yield e


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    wait_until(what, check, timeout, interval=0.05)


def test_a_master_killed_mid_page_fails_over_without_loss_or_duplicate(own_env: Env) -> None:
    env = own_env
    push_each(env.api, mixed(20_000))
    settle(env)
    bridge = env.start(env.bridge())
    s = env.settings.streams
    old_master = env.bed.master_port()
    old = env.bed.client(old_master, db=env.settings.redis.db)
    wait_for("a third of the events", lambda: sum(old.xlen(x) for x in s.by_priority()) >= 7000, 30)
    env.bed.node(old_master).kill()
    push_each(env.api, mixed(500, start=20_000))
    wait_for("a new master", lambda: env.bed.master_port() != old_master, 30)
    env.wait_all_landed(timeout=60)
    env.stop_all()
    env.assert_exactly_once()
    assert bridge.metrics.errors.labels("redis")._value.get() + bridge.metrics.errors.labels("network")._value.get() > 0


#: The outage the bridge sees. Its length does not change what happens: the bridge reads nothing ahead and buffers
#: nothing (the cursor stays put, ZITADEL keeps the events), its backoff reaches its cap (0.5 s here, 10 s in the
#: stacks) within seconds and its lease (2 s here) expires; from then on every further second repeats the same
#: failed attempt. 12 s is well past all three, and keeps the suite short on a shared two-core machine.
OUTAGE_S = 12.0


def test_redis_down_then_back_loses_and_duplicates_nothing(own_env: Env) -> None:
    env = own_env
    push_each(env.api, mixed(2000))
    bridge = env.start(env.bridge())
    env.wait_all_landed()
    processes = [*env.bed.nodes, *env.bed.sentinels]
    for p in processes:
        p.signal(signal.SIGSTOP)
    try:
        push_each(env.api, mixed(1000, start=2000))
        time.sleep(OUTAGE_S)
    finally:
        for p in processes:
            p.signal(signal.SIGCONT)
    env.wait_all_landed(timeout=60)
    env.stop_all()
    env.assert_exactly_once()
    assert sum(bridge.metrics.errors.labels(k)._value.get() for k in ("redis", "network")) >= 1  # it noticed


def relay_command(config: Path, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "relay", *args, "--config", str(config)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_operator_commands_tail_and_replay_dead_letter(env: Env) -> None:
    from relay.consumer import Consumer

    push_each(env.api, mixed(3))
    settle(env)
    env.bridge(use_lease=False).poll()
    s = env.settings.streams
    failing = Consumer(env.client, group="jobs", name="c", streams=s, max_deliveries=1)
    failing.ensure_groups()
    failing.run_once(lambda e: (_ for _ in ()).throw(RuntimeError("down")), block=False)
    config = env.tmp / "relay.json"
    config.write_text(json.dumps(env.document))

    tailed = relay_command(config, "tail", "--stream", "all", "--count", "5")
    assert [(t["stream"], t["taxonomy"], t["aggregate_id"]) for t in tailed] == [
        (s.high, "auth.failed", "user-0"),
        (s.normal, "user.created", "user-1"),
        (s.low, "unclassified", "instance-2"),
        (s.dead_letter, "auth.failed", "user-0"),
    ]
    assert tailed[-1]["dead_letter.reason"] == "max_retries"

    replayed = relay_command(config, "replay-dead-letter", "--all")
    assert [(r["replayed"], r["stream"]) for r in replayed] == [(tailed[-1]["id"], s.high)]
    assert env.client.xlen(s.dead_letter) == 0
    assert [f["aggregate_id"] for _id, f in entries(env.client, s.high)] == ["user-0", "user-0"]


# --- review findings: the acknowledgement order, undated pages, password rotation, metrics address ------------------


def test_an_unacknowledged_page_leaves_the_cursor_where_it_was(
    shared_bed: RedisBed, prod: StackConfig, tmp_path: Path
) -> None:
    """Replicas frozen: ``WAIT 1`` times out, so the master holds the page's entries but not a moved cursor (a
    failover to a replica would lose those entries; the cursor must not claim them). Thawed: the page is read again,
    deduplicated, and nothing is lost."""
    env = make_env(shared_bed, prod, tmp_path)
    # The relay's own timeout (not in relay.json), shortened: the frozen replicas make every WAIT run it out.
    env.settings = replace(env.settings, publishing=replace(env.settings.publishing, replica_ack_timeout=0.2))
    try:
        push_each(env.api, mixed(30))
        settle(env)
        master = env.bed.master_port()
        replicas = [n for n in env.bed.nodes if n.port != master]
        bridge = env.bridge(use_lease=False)
        for node in replicas:
            node.signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotAcknowledged):
                bridge.poll()
            assert env.client.get(cursor_key(env.settings.instance)) is None
            assert sum(env.client.xlen(x) for x in env.settings.streams.by_priority()) == 30  # on the master only
        finally:
            for node in replicas:
                node.signal(signal.SIGCONT)
        env.bed.wait_replicas_synced(master, len(replicas))
        outcome = bridge.poll()
        assert (outcome.read, outcome.written, outcome.duplicates) == (30, 0, 30)
        assert env.client.get(cursor_key(env.settings.instance)) is not None
        env.assert_exactly_once()
    finally:
        env.api.close()


def test_a_full_page_of_unusable_but_dated_events_is_dead_lettered_and_passed(env: Env) -> None:
    """1,000 events without an aggregate ID (one page, each its own timestamp): dead-lettered, and the cursor moves
    on by their raw creation dates to the good events behind them."""
    push_each(env.api, [EventSpec("user.human.added", "user", "") for _ in range(1000)])
    push_each(env.api, mixed(10))
    settle(env)
    bridge = env.bridge(use_lease=False)
    done = threading.Event()

    def poll() -> None:
        bridge.poll()
        done.set()

    worker = threading.Thread(target=poll, daemon=True)
    worker.start()
    worker.join(timeout=20)
    bridge.stop()  # ends a looping drain, if any
    assert done.is_set(), "the poll never finished"
    s = env.settings.streams
    assert [env.client.xlen(x) for x in (s.high, s.normal, s.low, s.dead_letter)] == [4, 3, 3, 1000]
    env.assert_exactly_once()


def test_a_full_page_without_creation_dates_is_dead_lettered_and_stalls_with_backoff(env: Env) -> None:
    """A page of 1,000 events without ``creationDate`` (stand-in: ZITADEL always sends one): nothing says where the
    page ends. They are dead-lettered once, the cursor stays, and the bridge backs off instead of spinning."""
    undated = [EventSpec("user.human.added", "user", f"undated-{i}", omit=("creationDate",)) for i in range(1000)]
    push_each(env.api, undated)
    push_each(env.api, mixed(10))
    settle(env)
    bridge = env.start(env.bridge(use_lease=False))
    s = env.settings.streams
    wait_until("the dead letters", lambda: env.client.xlen(s.dead_letter) == 1000, 20)
    time.sleep(1.5)
    env.stop_all()
    reasons = Counter(f["dead_letter.reason"] for _id, f in entries(env.client, s.dead_letter))
    assert reasons == Counter({"unparseable": 1000})
    assert env.client.get(cursor_key(env.settings.instance)) is None
    assert sum(env.client.xlen(x) for x in s.by_priority()) == 0  # behind the stall, not skipped
    assert bridge.metrics.stalled._value.get() == 1
    errors = bridge.metrics.errors.labels("dense_window")._value.get()
    # Backoff 0.05 s doubling to 0.5 s: a handful of attempts in ~2 s, not a hot loop.
    assert 2 <= errors <= 10
    assert len(env.api.requests) <= 2 * errors + 2
    assert bridge.metrics.duplicates._value.get() == 1000 * (errors - 1)


def test_a_rotated_redis_password_is_read_on_reconnect(own_env: Env) -> None:
    """The bridge user's new password on every node and sentinel, the file rewritten (as the Vault agent does), every
    connection dropped: the same bridge object reconnects with the file's new content."""
    env = own_env
    push_each(env.api, mixed(30))
    settle(env)
    bridge = env.bridge(use_lease=False)
    bridge.poll()
    new = new_password()
    bed = env.bed
    for process in [*bed.nodes, *bed.sentinels]:
        bed.client(process.port).execute_command("ACL", "SETUSER", RELAY_USER, "resetpass", f">{new}")
    old = bed.user_passwords[RELAY_USER]
    bed.user_passwords[RELAY_USER] = new
    (env.tmp / "redis-password").write_text(new)
    for process in [*bed.nodes, *bed.sentinels]:
        bed.client(process.port).execute_command("CLIENT", "KILL", "USER", RELAY_USER)
    with pytest.raises(redis.AuthenticationError):
        bed.client(bed.master_port(), username=RELAY_USER, password=old).ping()
    push_each(env.api, mixed(30, start=30))
    env.start(bridge)
    env.wait_all_landed(timeout=30)
    env.stop_all()
    env.assert_exactly_once()


def test_the_metrics_listen_on_loopback_outside_the_cluster(env: Env) -> None:
    assert env.settings.metrics_host == "127.0.0.1"
    assert relay_document(event_relay_args(stack_config("prod")))["metricsHost"] == "0.0.0.0"


def test_old_dedup_buckets_are_deleted_and_a_lagging_bridge_writes_nothing_behind_them(env: Env) -> None:
    """Dedup records have no TTL (``volatile-lru`` never evicts them): the bridge deletes the buckets ``dedupTtl``
    (1 h) behind the cursor, and an event of a deleted bucket, replayed by a bridge lagging that far, is skipped."""
    store = env.bridge(use_lease=False).store
    normal = env.settings.streams.normal
    base = 1785542400000000  # 2026-08-01T00:00:00Z, the start of a 10-minute bucket
    old = Item.of("user:a:1", seen_bucket(base), normal, {"n": "old"})
    new = Item.of("user:b:1", seen_bucket(base + 7_200_000_000), normal, {"n": "new"})
    assert store.write([old, new], cursor=base + 7_200_000_000).written == [True, True]
    # Another key of DB 1 whose name, cut at the bucket prefix's length, reads as an old bucket: not the bridge's.
    foreign = "x" * len("relay:seen:id.blinkchamber.com:") + "1"
    env.client.set(foreign, "kept")
    assert store.prune_seen() == 1
    assert env.client.get(foreign) == "kept"
    assert sorted(env.client.scan_iter("relay:seen:*")) == ["relay:seen:id.blinkchamber.com:2975916"]
    assert env.client.get("relay:id.blinkchamber.com:seen-horizon") == "2975910"
    assert env.client.ttl("relay:seen:id.blinkchamber.com:2975916") == -1
    assert store.write([old, new]).written == [False, False]
    assert env.client.xlen(normal) == 2
