"""The relay against what goes wrong around it: answers of the Event API that ZITADEL never gives, malformed
sequences, a sentinel that stops answering during a failover, log lines, and its own Redis user.

Real ``redis-server``/``redis-sentinel`` processes (the test bed) and the stand-in for ZITADEL's Event API.
"""

from __future__ import annotations

import copy
import json
import signal
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from relay.events import UnusableEventError, parse_event
from relay.logs import error_text
from relay.source import EventApi, MalformedAnswerError
from stacks import names
from stacks.config import StackConfig
from testbed.loopback import HOST, LoopbackServer, QuietHandler
from testbed.redisbed import Process, RedisBed, free_port, new_password, running_bed, wait_until
from testbed.zitadel_api import EventSpec, StandInEventApi
from tests.conftest import stack_config
from tests.test_relay_bridge import (
    Env,
    entries,
    env_on,
    mixed,
    push_each,
    relay_process,
    settle,
    stop_relay_process,
)


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return stack_config("prod")


@pytest.fixture(scope="module")
def shared_bed(prod: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(prod.redis, tmp_path_factory.mktemp("relay-resilience-bed")) as bed:
        yield bed


@pytest.fixture
def env(shared_bed: RedisBed, prod: StackConfig, tmp_path: Path) -> Iterator[Env]:
    with env_on(shared_bed, prod, tmp_path) as e:
        yield e


@pytest.fixture
def own_env(prod: StackConfig, tmp_path: Path) -> Iterator[Env]:
    """A Sentinel group of its own, for the scenarios that break Redis or change its users."""
    with running_bed(prod.redis, tmp_path / "bed") as bed, env_on(bed, prod, tmp_path) as e:
        yield e


# --- answers ZITADEL never gives -----------------------------------------------------------------------------------

TOKEN = "stand-in-token"  # the stand-in's bearer token; nothing secret behind it
INSTANCE_HOST = "id.example.com"


@pytest.fixture
def stand_in() -> Iterator[StandInEventApi]:
    with StandInEventApi(token=TOKEN, instance_host=INSTANCE_HOST) as api:
        api.push(EventSpec("user.human.added", "user", "user-1"))
        yield api


def list_events(api: EventApi) -> list[Any]:
    return api.list_events(since_us=None, until_us=4_000_000_000_000_000, limit=1000)


@pytest.mark.parametrize(
    ("call", "body", "error"),
    [
        # A proxy's sign-in page, served with 200.
        (list_events, "<html><body>Sign in</body></html>", "body is not JSON (33 bytes of application/json)"),
        (list_events, "", "body is not JSON (0 bytes of application/json)"),  # "{}" is the empty answer
        (list_events, "[]", "body is not a JSON object (2 bytes of application/json)"),
        (list_events, '{"events": {"sequence": "1"}}', "events is not a list"),
        # Taken for "no events", it would move the cursor past events never read.
        (list_events, '{"code": 14, "message": "unavailable"}', "an object without events"),
        (
            EventApi.aggregate_types,
            '{"aggregateTypes": [{"localized": {"key": "x"}}]}',
            "aggregateTypes: an entry without a type name",
        ),
        (EventApi.aggregate_types, '{"aggregateTypes": ["user"]}', "aggregateTypes: an entry without a type name"),
        (EventApi.event_types, '{"eventTypes": "user.human.added"}', "eventTypes is not a list"),
        (EventApi.event_types, '{"types": []}', "an object without eventTypes"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_malformed_answer_error(
    stand_in: StandInEventApi, call: Any, body: str, error: str
) -> None:
    api = EventApi(stand_in.url, INSTANCE_HOST, lambda: TOKEN)
    stand_in.answer_next(body)
    with pytest.raises(MalformedAnswerError) as caught:
        call(api)
    assert str(caught.value) == f"Event API answered 200: {error}"
    # The next answer is ZITADEL's again, and the same client reads it.
    assert [e["aggregate"]["id"] for e in list_events(api)] == ["user-1"]
    assert api.aggregate_types() == ["user"]
    assert api.event_types() == ["user.human.added"]


class CutShort(QuietHandler):
    """Announces 100 bytes, sends 11 and closes: an answer cut off by a proxy or a dying pod."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b'{"events":[')
        self.close_connection = True


def test_an_answer_cut_short_is_a_malformed_answer_error() -> None:
    with LoopbackServer(CutShort) as server:
        api = EventApi(server.address, INSTANCE_HOST, lambda: TOKEN)
        with pytest.raises(MalformedAnswerError) as caught:
            list_events(api)
    assert str(caught.value) == "Event API: HTTP answer unreadable (IncompleteRead)"


#: One poll each; the stand-in answers them before any answer of its own.
MALFORMED_ANSWERS = (
    "<html><body>Sign in</body></html>",
    "[]",
    '{"events": {"sequence": "1"}}',
    '{"code": 14, "message": "unavailable"}',
    "",
)


def test_malformed_answers_are_retried_with_backoff_and_counted_and_lose_nothing(env: Env) -> None:
    push_each(env.api, mixed(30))
    settle(env)  # the window of the first poll holds every event: an answer taken for "none" would skip them all
    env.api.answer_next(*MALFORMED_ANSWERS)
    bridge = env.start(env.bridge(use_lease=False))
    started = time.monotonic()
    env.wait_all_landed(timeout=20)
    took = time.monotonic() - started
    assert env.bridges[0][1].is_alive()
    assert bridge.metrics.errors.labels("event_api_answer")._value.get() == len(MALFORMED_ANSWERS)
    assert bridge.metrics.errors.labels("event_api")._value.get() == 0
    # Backoff 0.05 s doubling to 0.5 s between the five: 0.05 + 0.1 + 0.2 + 0.4 + 0.5 s at least.
    assert took >= 1.25
    env.stop_all()
    env.assert_exactly_once()


# --- sequences -----------------------------------------------------------------------------------------------------


def event_with_sequence(**sequence: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "aggregate": {"id": "user-1", "type": {"type": "user"}, "resourceOwner": "org-1"},
        "creationDate": "2026-03-23T10:00:00.123456Z",
        "type": {"type": "user.human.added"},
    }
    event.update(sequence)
    return event


@pytest.mark.parametrize(
    ("sequence", "detail"),
    [
        (1.5, "sequence not a positive integer: 1.5"),
        (2.0, "sequence not a positive integer: 2.0"),
        ("-5", 'sequence not a positive integer: "-5"'),
        (-5, "sequence not a positive integer: -5"),
        ("0", 'sequence not a positive integer: "0"'),
        (0, "sequence not a positive integer: 0"),
        ("1.5", 'sequence not a positive integer: "1.5"'),
        ("+7", 'sequence not a positive integer: "+7"'),
        (" 7", 'sequence not a positive integer: " 7"'),
        ("٣", 'sequence not a positive integer: "\\u0663"'),  # a digit, but not an ASCII one
        (True, "sequence not a positive integer: true"),
        (None, "sequence not a positive integer: null"),
        (["1"], 'sequence not a positive integer: ["1"]'),
        ("18446744073709551616", 'sequence not a positive integer: "18446744073709551616"'),  # 2^64: not a uint64
    ],
)
def test_a_sequence_that_is_not_a_positive_integer_is_unparseable(sequence: Any, detail: str) -> None:
    with pytest.raises(UnusableEventError) as caught:
        parse_event(event_with_sequence(sequence=sequence))
    assert (caught.value.reason, caught.value.detail) == ("unparseable", detail)


def test_a_missing_sequence_says_so() -> None:
    with pytest.raises(UnusableEventError) as caught:
        parse_event(event_with_sequence())
    assert (caught.value.reason, caught.value.detail) == ("unparseable", "sequence missing")


@pytest.mark.parametrize(("sequence", "parsed"), [("3", 3), (3, 3), ("18446744073709551615", 2**64 - 1)])
def test_a_uint64_sequence_is_read(sequence: Any, parsed: int) -> None:
    assert parse_event(event_with_sequence(sequence=sequence)).sequence == parsed


def test_a_malformed_sequence_is_dead_lettered_not_taken_for_another_event(env: Env) -> None:
    """``1.5`` once became 1, the key of the aggregate's first event, and was skipped as its duplicate."""
    env.api.push(EventSpec("user.human.added", "user", "user-1"))
    env.api.push(EventSpec("user.human.changed", "user", "user-1", overrides={"sequence": 1.5}))
    env.api.push(EventSpec("user.human.changed", "user", "user-1", overrides={"sequence": "-5"}))
    settle(env)
    bridge = env.bridge(use_lease=False)
    outcome = bridge.poll()
    assert (outcome.read, outcome.written, outcome.duplicates, outcome.dead_lettered) == (3, 1, 0, 2)
    s = env.settings.streams
    assert [(f["type"], f["sequence"]) for _id, f in entries(env.client, s.normal)] == [("user.human.added", "1")]
    dead = [f for _id, f in entries(env.client, s.dead_letter)]
    assert [(f["dead_letter.reason"], f["dead_letter.detail"], f["sequence"]) for f in dead] == [
        ("unparseable", "sequence not a positive integer: 1.5", "1.5"),
        ("unparseable", 'sequence not a positive integer: "-5"', "-5"),
    ]
    assert bridge.metrics.dead_lettered.labels("unparseable")._value.get() == 2
    # Read again (the look-back): nothing new, nothing twice.
    assert bridge.maybe_look_back(force=True) == 0
    assert env.client.xlen(s.dead_letter) == 2


# --- a sentinel that stops answering -------------------------------------------------------------------------------

#: How soon after the failover the bridge must write again, with one of the three sentinels not answering.
RECOVERY_BOUND_S = 12.0


def role(bed: RedisBed, port: int) -> str | None:
    """``master`` or ``slave``; None when the node did not answer (the promotion kills client connections)."""
    try:
        return str(bed.client(port, socket_timeout=0.3).role()[0])
    except (redis.RedisError, OSError):
        return None


def named_master(bed: RedisBed, sentinel: Process) -> int | None:
    """The master's port as one sentinel names it (asked alone: the test bed's Sentinel client would wait on the
    frozen one)."""
    try:
        client = bed.client(sentinel.port, socket_timeout=0.3)
        reply = client.sentinel_get_master_addr_by_name(names.SENTINEL_MASTER_SET)
        return int(reply[1]) if isinstance(reply, tuple) else None
    except (redis.RedisError, OSError):
        return None


def stream_entries(bed: RedisBed, port: int, db: int, streams: tuple[str, ...]) -> int | None:
    try:
        client = bed.client(port, db=db, socket_timeout=0.3)
        return sum(int(client.xlen(x)) for x in streams)
    except (redis.RedisError, OSError):
        return None


def test_a_frozen_sentinel_does_not_hold_up_the_bridge_after_a_failover(own_env: Env) -> None:
    """The master and the sentinel the bridge asks first freeze (SIGSTOP: connections open, no answer). The other
    two sentinels fail over; the bridge, asking each sentinel once per try with a socket timeout, writes to the new
    master within ``RECOVERY_BOUND_S`` of the promotion (redis-py's default retries would ask the frozen sentinel
    about 11 times, 2 s each, before the next)."""
    env, bed = own_env, own_env.bed
    push_each(env.api, mixed(300))
    bridge = env.start(env.bridge())
    env.wait_all_landed()
    old_master = bed.master_port()
    replicas = [n.port for n in bed.nodes if n.port != old_master]
    first_asked = next(s for s in bed.sentinels if s.port == env.settings.redis.sentinels[0][1])
    others = [s for s in bed.sentinels if s is not first_asked]
    db, streams = env.settings.redis.db, env.settings.streams.by_priority()
    frozen = [bed.node(old_master), first_asked]
    promoted: tuple[int, float] | None = None  # (port, when its role became master)
    switched_at: float | None = None  # when a sentinel first named another master
    written_at: float | None = None
    for process in frozen:
        process.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        push_each(env.api, mixed(100, start=300))
        while written_at is None and time.monotonic() - frozen_at < 60:
            now = time.monotonic()
            if promoted is None:
                promoted = next(((p, now) for p in replicas if role(bed, p) == "master"), None)
            if switched_at is None and any(named_master(bed, s) not in (None, old_master) for s in others):
                switched_at = now
            if promoted is not None and (stream_entries(bed, promoted[0], db, streams) or 0) > 300:
                written_at = now
            time.sleep(0.02)
    finally:
        for process in frozen:
            process.signal(signal.SIGCONT)
    assert promoted is not None and switched_at is not None, "no failover within 60 s"
    assert written_at is not None, "the bridge did not write within 60 s of the freeze"
    promoted_at = promoted[1]
    recovery = written_at - promoted_at
    print(
        f"\nfailover: promoted {promoted_at - frozen_at:.2f} s after the freeze, sentinels switched "
        f"{switched_at - promoted_at:+.2f} s later; first write {recovery:.2f} s after the promotion "
        f"({written_at - switched_at:.2f} s after the switch)"
    )
    assert recovery <= RECOVERY_BOUND_S
    env.wait_all_landed(timeout=60)
    env.stop_all()
    env.assert_exactly_once()
    assert bridge.metrics.errors.labels("redis")._value.get() >= 1  # it noticed


# --- logs ----------------------------------------------------------------------------------------------------------

#: The longest log line accepted: a record with identifiers, counts and a short error.
MAX_LINE_CHARS = 400


def test_an_error_in_a_log_line_is_its_class_and_first_line_at_most_300_characters() -> None:
    assert error_text(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert error_text(RuntimeError("x" * 1000)) == "RuntimeError: " + "x" * 285 + "…"
    assert error_text(KeyError()) == "KeyError"


def reset_connection(port: int) -> None:
    """A scrape that leaves at once: sends its request and resets the connection before the answer."""
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_the_log_is_one_short_json_object_per_line(env: Env) -> None:
    """No sentinel reachable (three closed ports): the bridge warns with a short error, not redis-py's kilobytes of
    client reprs; scrapes that hang up make no traceback. Every line of stderr is a JSON object, and short."""
    doc = copy.deepcopy(env.document)
    doc["redis"]["sentinels"] = [[HOST, free_port()] for _ in range(3)]  # nothing listens there
    config = env.tmp / "relay.json"
    config.write_text(json.dumps(doc))
    process = relay_process(config)
    log_file = next(env.tmp.glob("relay-*.log"))

    def lines() -> list[str]:
        return log_file.read_text().splitlines()

    try:
        wait_until("two failed polls", lambda: sum("poll failed" in line for line in lines()) >= 2, 30, 0.1)
        metrics = f"http://{HOST}:{env.settings.metrics_port}/metrics"
        assert b"relay_errors_total" in urllib.request.urlopen(metrics, timeout=5).read()
        for _ in range(20):
            reset_connection(env.settings.metrics_port)
        assert b"relay_errors_total" in urllib.request.urlopen(metrics, timeout=5).read()  # still serving
    finally:
        code = stop_relay_process(process)
    assert code == 0
    records = [json.loads(line) for line in lines()]  # each line one JSON object: no traceback, no stray text
    assert all(isinstance(r, dict) for r in records)
    assert max(len(line) for line in lines()) <= MAX_LINE_CHARS
    warnings = [r for r in records if r["msg"] == "poll failed; retrying"]
    assert {(r["kind"], r["error"]) for r in warnings} == {
        ("redis", "MasterNotFoundError: no sentinel names a usable master of 'mymaster'")
    }
    assert records[0]["msg"] == "bridge starting" and records[-1]["msg"] == "bridge stopped"


# --- the bridge's own Redis user -----------------------------------------------------------------------------------


def test_the_bridge_signs_in_with_its_username_on_redis_and_on_the_sentinels(own_env: Env) -> None:
    """A user of its own on every node and sentinel, and only that user's password in the file: finding the master
    and writing both need ``AUTH username password`` (the password alone would be the default user's, and wrong)."""
    env, bed = own_env, own_env.bed
    user, password = "relay-under-test", new_password()
    for node in bed.nodes:
        bed.client(node.port).acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all"]
        )
    for sentinel in bed.sentinels:
        bed.client(sentinel.port).acl_setuser(user, enabled=True, passwords=[f"+{password}"], commands=["+@all"])
    (env.tmp / "redis-password").write_text(password)
    env.settings = replace(env.settings, redis=replace(env.settings.redis, username=user))
    push_each(env.api, mixed(30))
    settle(env)
    bridge = env.bridge(use_lease=False)
    assert bridge.poll().written == 30
    env.assert_exactly_once()

    def users(port: int) -> set[str]:
        return {str(c["user"]) for c in bed.client(port).client_list()}

    assert user in users(bed.master_port())
    assert any(user in users(s.port) for s in bed.sentinels)
