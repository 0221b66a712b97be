"""The rate-limit counters on the real Sentinel set: envoyproxy/ratelimit's key scheme, driven by the rules the
program declares, against real redis-server and redis-sentinel processes with auth, in DB 0.

What this checks is the key scheme and our Redis, not the ratelimit binary (no Go toolchain or image here): the
commands and key names are re-implemented in ``testbed/ratelimit.py`` from the upstream lines it cites, and the
expected keys below are written out by hand from the same lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stacktools.plan import mask
from testbed.ratelimit import FixedWindow, Request, cache_key, descriptor, domain_of
from testbed.redisbed import RedisBed, binaries_available, running_bed, wait_until
from testbed.required import require
from tests.conftest import record, stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

BTP = "kubernetes:gateway.envoyproxy.io/v1alpha1:BackendTrafficPolicy"
#: The README's layout: counters in DB 0 (Sentinel mode selects none), events in DB 1, ZITADEL's caches in 3..9.
RATE_LIMIT_DB = 0
OTHER_DBS = range(1, 16)
PREFIX = "rl:"
DOMAIN = "zitadel/zitadel-rate-limits"
#: A fixed clock for the key names: the window of a minute unit starts at 1899999960.
NOW = 1_900_000_000
WINDOW = "1899999960"
CLIENT = "203.0.113.7"


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    """The global rules dev's program declares (prod's differ only in nothing the counters see)."""
    policy = mask(record("dev").one(BTP, "zitadel-rate-limits").inputs)
    assert (policy["metadata"]["namespace"], policy["metadata"]["name"]) == ("zitadel", "zitadel-rate-limits")
    found: list[dict[str, Any]] = policy["spec"]["rateLimit"]["global"]["rules"]
    return found


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(stack_config("dev").redis, tmp_path_factory.mktemp("rate-limit")) as started:
        yield started


def master(bed: RedisBed) -> redis.Redis:
    """What ratelimit's radix Sentinel client ends up with: the master the sentinels name, both authenticated, and
    no SELECT (so DB 0)."""
    client: redis.Redis = bed.sentinel_client().master_for("mymaster", db=RATE_LIMIT_DB, socket_timeout=2)  # type: ignore[no-untyped-call]
    return client


@pytest.fixture
def counters(bed: RedisBed) -> Iterator[FixedWindow]:
    client = master(bed)
    client.flushdb()
    yield FixedWindow(client, PREFIX, jitter_max_seconds=10)


def hit(counters: FixedWindow, rules: list[dict[str, Any]], index: int, request: Request, times: int = 1) -> list[bool]:
    entries = descriptor("zitadel", "zitadel-rate-limits", index, rules[index], request)
    assert entries is not None, f"rule {index} does not apply"
    return [counters.allowed(DOMAIN, entries, rules[index]["limit"], NOW) for _ in range(times)]


# --- the connection --------------------------------------------------------------------------------------------------


def test_sentinel_needs_its_password_and_selects_no_db(bed: RedisBed) -> None:
    sentinel = bed.sentinels[0].port
    with pytest.raises(redis.AuthenticationError):
        bed.client(sentinel, password=None).ping()
    # A "/1" on a Sentinel address would make radix send SELECT there: Sentinel has no such command.
    with pytest.raises(redis.ResponseError, match="unknown command 'SELECT'"):
        bed.client(sentinel).execute_command("SELECT", 1)  # type: ignore[no-untyped-call]
    assert master(bed).connection_pool.connection_kwargs["db"] == RATE_LIMIT_DB


# --- the limits, per client IP and per organization ----------------------------------------------------------------


def test_the_per_client_ip_limit_counts_each_address_alone(counters: FixedWindow, rules: list[dict[str, Any]]) -> None:
    # Rule 0: per-client-ip over 0.0.0.0/0, 1200 a minute.
    request = Request(path="/management/v1/users", client=CLIENT)
    assert hit(counters, rules, 0, request, 1200) == [True] * 1200
    assert hit(counters, rules, 0, request) == [False]
    assert hit(counters, rules, 0, Request(path="/", client="203.0.113.8")) == [True]
    key = (
        "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/0_zitadel/zitadel-rate-limits/rule/0_"
        f"masked_remote_address_0.0.0.0/0_remote_address_{CLIENT}_{WINDOW}"
    )
    assert counters.client.get(key) == "1201"
    # An IPv6 client falls under rule 1 (::/0), never rule 0.
    v6 = Request(path="/", client="2001:db8::7")
    assert descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], v6) is None
    assert hit(counters, rules, 1, v6) == [True]


def test_credential_endpoints_have_their_own_tighter_bucket(counters: FixedWindow, rules: list[dict[str, Any]]) -> None:
    # Rule 2: credentials-per-client-ip, 60 a minute, across every credential path together.
    token, session = Request("/oauth/v2/token", CLIENT), Request("/v2/sessions/312?x=1", CLIENT)
    assert hit(counters, rules, 2, token, 30) + hit(counters, rules, 2, session, 30) == [True] * 60
    assert hit(counters, rules, 2, Request("/zitadel.session.v2.SessionService/SetSession", CLIENT)) == [False]
    assert descriptor("zitadel", "zitadel-rate-limits", 2, rules[2], Request("/oauth/v2/authorize", CLIENT)) is None
    key = (
        "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/2_zitadel/zitadel-rate-limits/rule/2_"
        f"rule-2-path_rule-2-path_masked_remote_address_0.0.0.0/0_remote_address_{CLIENT}_{WINDOW}"
    )
    assert counters.client.get(key) == "61"


def test_the_per_organization_limit_counts_each_organization_alone(
    counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    # Rule 4: per-organization on x-zitadel-orgid, 6000 a minute; 5999 earlier requests counted in one INCRBY.
    org_a = Request("/management/v1/users", CLIENT, {"x-zitadel-orgid": "312909075211944344"})
    entries = descriptor("zitadel", "zitadel-rate-limits", 4, rules[4], org_a)
    assert entries == [
        ("zitadel/zitadel-rate-limits/rule/4", "zitadel/zitadel-rate-limits/rule/4"),
        ("rule-4-match-0", "312909075211944344"),
    ]
    counters.hit(DOMAIN, entries, rules[4]["limit"], NOW, hits=5999)
    assert hit(counters, rules, 4, org_a, 2) == [True, False]
    org_b = Request("/management/v1/users", "198.51.100.9", {"x-zitadel-orgid": "312909075211944345"})
    assert hit(counters, rules, 4, org_b) == [True]
    # Without the header the rule does not apply (Envoy drops the descriptor).
    assert descriptor("zitadel", "zitadel-rate-limits", 4, rules[4], Request("/", CLIENT)) is None
    assert (
        counters.client.get(
            "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/4_zitadel/zitadel-rate-limits/rule/4_"
            f"rule-4-match-0_312909075211944344_{WINDOW}"
        )
        == "6001"
    )


# --- expiry, failover, the DB layout ---------------------------------------------------------------------------------


def test_counters_expire(counters: FixedWindow, rules: list[dict[str, Any]]) -> None:
    request = Request("/", CLIENT)
    hit(counters, rules, 0, request)
    entries = descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], request)
    assert entries is not None
    ttl = counters.client.ttl(cache_key(PREFIX, DOMAIN, entries, "Minute", NOW))
    assert 60 <= ttl <= 60 + 9  # the unit, plus 0..9 s of jitter (EXPIRATION_JITTER_MAX_SECONDS 10)
    # A one-second window with no jitter: gone once its second has passed.
    second = FixedWindow(counters.client, PREFIX, jitter_max_seconds=0)
    second.hit(DOMAIN, entries, {"requests": 5, "unit": "Second"}, NOW)
    key = cache_key(PREFIX, DOMAIN, entries, "Second", NOW)
    assert counters.client.exists(key) == 1
    wait_until("the one-second counter to expire", lambda: counters.client.exists(key) == 0, timeout=5)


def test_counters_survive_a_sentinel_failover(
    bed: RedisBed, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    request = Request("/", CLIENT)
    assert hit(counters, rules, 0, request, 7) == [True] * 7
    old = bed.master_port()
    # Asynchronous replication: what a replica has not received is lost in a failover. Here it has.
    assert int(counters.client.execute_command("WAIT", 1, 2000)) >= 1  # type: ignore[no-untyped-call]
    bed.client(bed.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", "mymaster")  # type: ignore[no-untyped-call]
    new = wait_until("a new master", lambda: bed.master_port() if bed.master_port() != old else None, timeout=20)
    promoted = bed.client(new)
    wait_until("the new master to take writes", lambda: promoted.info("replication")["role"] == "master", timeout=20)
    after = FixedWindow(master(bed), PREFIX, jitter_max_seconds=10)
    entries = descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], request)
    assert entries is not None
    assert after.client.get(cache_key(PREFIX, DOMAIN, entries, "Minute", NOW)) == "7"
    assert after.hit(DOMAIN, entries, rules[0]["limit"], NOW) == 8


def test_counters_never_land_outside_db_0(bed: RedisBed, counters: FixedWindow, rules: list[dict[str, Any]]) -> None:
    for index, rule in enumerate(rules):
        request = Request("/oauth/v2/token", CLIENT, {"x-zitadel-orgid": "1", "x-rl-sub": "2", "x-rl-org": "3"})
        if descriptor("zitadel", "zitadel-rate-limits", index, rule, request) is not None:
            hit(counters, rules, index, request)
    assert len(counters.client.keys(f"{PREFIX}*")) == 5  # every rule but the IPv6 ones
    port = bed.master_port()
    for db in OTHER_DBS:
        assert bed.client(port, db=db).keys(f"{PREFIX}*") == [], db


def test_counters_keep_their_window() -> None:
    # The key names the window's start: the same minute shares a key, the next minute starts from zero.
    entries = [("d", "d")]
    assert cache_key(PREFIX, DOMAIN, entries, "Minute", NOW) == cache_key(PREFIX, DOMAIN, entries, "Minute", NOW + 19)
    assert cache_key(PREFIX, DOMAIN, entries, "Minute", NOW + 20).endswith("_1900000020")
    assert cache_key(PREFIX, DOMAIN, entries, "Hour", NOW).endswith("_1899997200")
    assert cache_key(PREFIX, DOMAIN, entries, "Second", NOW) == f"rl:{DOMAIN}_d_d_1900000000"
    assert domain_of("zitadel", "zitadel-rate-limits") == DOMAIN


def test_recording_declares_the_rules_this_module_reads(rules: list[dict[str, Any]]) -> None:
    # The indices above, as the README's rules table lists them (per-client-IP rules once per address family).
    assert [(r["limit"]["requests"], r["limit"]["unit"]) for r in rules] == [
        (1200, "Minute"),
        (1200, "Minute"),
        (60, "Minute"),
        (60, "Minute"),
        (6000, "Minute"),
        (1200, "Minute"),
        (6000, "Minute"),
    ]
    assert all(r["shared"] is True and r["shadowMode"] is False for r in rules)
