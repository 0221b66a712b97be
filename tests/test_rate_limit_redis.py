"""The rate-limit counters on the real Sentinel set: envoyproxy/ratelimit's key scheme, driven by the rules the
program declares, against real redis-server and redis-sentinel processes with auth, in DB 0.

What this checks is the key scheme and our Redis, not the ratelimit binary (no Go toolchain or image here): the
commands and key names are re-implemented in ``testbed/ratelimit.py`` from the upstream lines it cites, and the
expected keys below are written out by hand from the same lines.
"""

from __future__ import annotations

import re
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
EPP = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyPatchPolicy"
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
def prefix_lengths() -> dict[int, int]:
    """IP version → mask of the per-client-IP bucket, read off the EnvoyPatchPolicy dev's program declares: the
    family from the JSONPath's range filter, the length from the formatter it writes."""
    policy = mask(record("dev").one(EPP, "identity-edge-client-networks").inputs)
    found: dict[int, int] = {}
    for patch in policy["spec"]["jsonPatches"]:
        family = 6 if "address_prefix =~ ':'" in patch["operation"]["jsonPath"] else 4
        length = re.fullmatch(r"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT\((\d+)\)%", patch["operation"]["value"])
        assert length is not None, patch
        found[family] = int(length.group(1))
    return found


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    with running_bed(stack_config("dev").redis, tmp_path_factory.mktemp("rate-limit")) as started:
        yield started


def master(bed: RedisBed) -> redis.Redis:
    """What ratelimit's radix Sentinel client ends up with: the master the sentinels name, both authenticated, and
    no SELECT (so DB 0)."""
    # As envoyproxy/ratelimit logs in: its own user on the sentinels and on the master (README "Redis users").
    sentinel = bed.user_sentinel("ratelimit")
    client: redis.Redis = sentinel.master_for("mymaster", db=RATE_LIMIT_DB, socket_timeout=2)  # type: ignore[no-untyped-call]
    return client


@pytest.fixture
def counters(bed: RedisBed) -> Iterator[FixedWindow]:
    # The chart's own user clears DB 0 between tests: the ratelimit user may not (FLUSHDB is not its job).
    bed.client(bed.master_port(), db=RATE_LIMIT_DB).flushdb()
    yield FixedWindow(master(bed), PREFIX, jitter_max_seconds=10)


@pytest.fixture
def db0(bed: RedisBed) -> redis.Redis:
    """DB 0 as an operator reads it (the chart's own user): what the counters left behind."""
    return bed.client(bed.master_port(), db=RATE_LIMIT_DB)


def hit(
    counters: FixedWindow,
    rules: list[dict[str, Any]],
    index: int,
    request: Request,
    times: int = 1,
    prefix_lengths: dict[int, int] | None = None,
) -> list[bool]:
    entries = descriptor("zitadel", "zitadel-rate-limits", index, rules[index], request, prefix_lengths)
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


def test_the_per_client_ip_limit_counts_each_address_alone(
    db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    # Rule 0: per-client-ip over 0.0.0.0/0, 1200 a minute.
    request = Request(path="/management/v1/users", client=CLIENT)
    assert hit(counters, rules, 0, request, 1200) == [True] * 1200
    assert hit(counters, rules, 0, request) == [False]
    assert hit(counters, rules, 0, Request(path="/", client="203.0.113.8")) == [True]
    key = (
        "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/0_zitadel/zitadel-rate-limits/rule/0_"
        f"masked_remote_address_0.0.0.0/0_remote_address_{CLIENT}_{WINDOW}"
    )
    assert db0.get(key) == "1201"
    # An IPv6 client falls under rule 1 (::/0), never rule 0.
    v6 = Request(path="/", client="2001:db8::7")
    assert descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], v6) is None
    assert hit(counters, rules, 1, v6) == [True]


def test_credential_endpoints_have_their_own_tighter_bucket(
    db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    # Rule 2: credentials-per-client-ip, 60 a minute, across every credential path together.
    token, session = Request("/oauth/v2/token", CLIENT), Request("/v2/sessions/312?x=1", CLIENT)
    assert hit(counters, rules, 2, token, 30) + hit(counters, rules, 2, session, 30) == [True] * 60
    assert hit(counters, rules, 2, Request("/zitadel.session.v2.SessionService/SetSession", CLIENT)) == [False]
    assert descriptor("zitadel", "zitadel-rate-limits", 2, rules[2], Request("/oauth/v2/authorize", CLIENT)) is None
    key = (
        "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/2_zitadel/zitadel-rate-limits/rule/2_"
        f"rule-2-path_rule-2-path_masked_remote_address_0.0.0.0/0_remote_address_{CLIENT}_{WINDOW}"
    )
    assert db0.get(key) == "61"


def test_the_per_organization_limit_counts_each_organization_alone(
    db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    # Rule 5: per-organization on x-rl-org (the verified JWT's resource owner), 6000 a minute; 5999 earlier requests
    # counted in one INCRBY.
    org_a = Request("/management/v1/users", CLIENT, {"x-rl-org": "312909075211944344"})
    entries = descriptor("zitadel", "zitadel-rate-limits", 5, rules[5], org_a)
    assert entries == [
        ("zitadel/zitadel-rate-limits/rule/5", "zitadel/zitadel-rate-limits/rule/5"),
        ("rule-5-match-0", "312909075211944344"),
    ]
    counters.hit(DOMAIN, entries, rules[5]["limit"], NOW, hits=5999)
    assert hit(counters, rules, 5, org_a, 2) == [True, False]
    org_b = Request("/management/v1/users", "198.51.100.9", {"x-rl-org": "312909075211944345"})
    assert hit(counters, rules, 5, org_b) == [True]
    # Without the header (no JWT, an opaque token, a PAT) the rule does not apply (Envoy drops the descriptor).
    assert descriptor("zitadel", "zitadel-rate-limits", 5, rules[5], Request("/", CLIENT)) is None
    assert (
        db0.get(
            "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/5_zitadel/zitadel-rate-limits/rule/5_"
            f"rule-5-match-0_312909075211944344_{WINDOW}"
        )
        == "6001"
    )


def test_no_rule_keys_on_the_client_sent_organization_header(rules: list[dict[str, Any]]) -> None:
    # x-zitadel-orgid is the client's: a victim's org ID in it must not reach any bucket.
    spoofed = Request("/management/v1/users", CLIENT, {"x-zitadel-orgid": "312909075211944344"})
    keyed = [descriptor("zitadel", "zitadel-rate-limits", i, rule, spoofed) for i, rule in enumerate(rules)]
    assert all("312909075211944344" not in str(entries) for entries in keyed)
    assert [entries is not None for entries in keyed] == [True, False, False, False, False, False]


# --- IPv6 clients: one bucket per /64 --------------------------------------------------------------------------------


def test_the_program_masks_ipv6_buckets_to_a_64_and_keeps_ipv4_per_address(prefix_lengths: dict[int, int]) -> None:
    assert prefix_lengths == {6: 64}


def test_addresses_in_one_ipv6_64_share_a_bucket(
    db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]], prefix_lengths: dict[int, int]
) -> None:
    # Rule 1: per-client-ip over ::/0, 1200 a minute. A client rotating through its own /64 stays in one bucket.
    first, other = Request("/", "2001:db8:1:2::7"), Request("/", "2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert hit(counters, rules, 1, first, 600, prefix_lengths) == [True] * 600
    assert hit(counters, rules, 1, other, 600, prefix_lengths) == [True] * 600
    assert hit(counters, rules, 1, Request("/", "2001:db8:1:2:abcd::1"), 1, prefix_lengths) == [False]
    key = (
        "rl:zitadel/zitadel-rate-limits_zitadel/zitadel-rate-limits/rule/1_zitadel/zitadel-rate-limits/rule/1_"
        f"masked_remote_address_::/0_remote_address_2001:db8:1:2::/64_{WINDOW}"
    )
    assert db0.get(key) == "1201"
    # The neighbouring /64 has its own bucket.
    assert hit(counters, rules, 1, Request("/", "2001:db8:1:3::7"), 1, prefix_lengths) == [True]
    assert db0.keys("*remote_address_2001:db8:1:3::/64_*") != []
    # Envoy Gateway's own Distinct value, unpatched, would have given each address its own bucket.
    unpatched = descriptor("zitadel", "zitadel-rate-limits", 1, rules[1], first)
    assert unpatched is not None and unpatched[-1] == ("remote_address", "2001:db8:1:2::7")


def test_the_credential_limit_holds_across_an_ipv6_64(
    counters: FixedWindow, rules: list[dict[str, Any]], prefix_lengths: dict[int, int]
) -> None:
    # Rule 3: credentials-per-client-ip over ::/0, 60 a minute: 60 guesses from 60 addresses of one /64, then none.
    guesses = [Request("/oauth/v2/token", f"2001:db8:7:9::{n:x}") for n in range(1, 62)]
    answers = [hit(counters, rules, 3, guess, 1, prefix_lengths)[0] for guess in guesses]
    assert answers == [True] * 60 + [False]
    assert hit(counters, rules, 3, Request("/oauth/v2/token", "2001:db8:7:a::1"), 1, prefix_lengths) == [True]


def test_ipv4_buckets_stay_per_address(
    db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]], prefix_lengths: dict[int, int]
) -> None:
    # Rule 0: per-client-ip over 0.0.0.0/0; neighbours in one /24 do not share.
    assert hit(counters, rules, 0, Request("/", "203.0.113.7"), 1200, prefix_lengths) == [True] * 1200
    assert hit(counters, rules, 0, Request("/", "203.0.113.7"), 1, prefix_lengths) == [False]
    assert hit(counters, rules, 0, Request("/", "203.0.113.8"), 1, prefix_lengths) == [True]
    assert db0.keys("*remote_address_203.0.113.7_*") != []


# --- expiry, failover, the DB layout ---------------------------------------------------------------------------------


def test_counters_expire(db0: redis.Redis, counters: FixedWindow, rules: list[dict[str, Any]]) -> None:
    request = Request("/", CLIENT)
    hit(counters, rules, 0, request)
    entries = descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], request)
    assert entries is not None
    ttl = db0.ttl(cache_key(PREFIX, DOMAIN, entries, "Minute", NOW))
    assert 60 <= ttl <= 60 + 9  # the unit, plus 0..9 s of jitter (EXPIRATION_JITTER_MAX_SECONDS 10)
    # A one-second window with no jitter: gone once its second has passed.
    second = FixedWindow(counters.client, PREFIX, jitter_max_seconds=0)
    second.hit(DOMAIN, entries, {"requests": 5, "unit": "Second"}, NOW)
    key = cache_key(PREFIX, DOMAIN, entries, "Second", NOW)
    assert db0.exists(key) == 1
    wait_until("the one-second counter to expire", lambda: db0.exists(key) == 0, timeout=5)


def test_counters_survive_a_sentinel_failover(
    db0: redis.Redis, bed: RedisBed, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    request = Request("/", CLIENT)
    assert hit(counters, rules, 0, request, 7) == [True] * 7
    old = bed.master_port()
    # Asynchronous replication: what a replica has not received is lost in a failover. Here it has.
    # Replication is in order: once a later write of the operator's connection is on a replica, so are the counts.
    db0.set("fence", 1)
    assert int(db0.execute_command("WAIT", 1, 2000)) >= 1  # type: ignore[no-untyped-call]
    bed.client(bed.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", "mymaster")  # type: ignore[no-untyped-call]
    new = wait_until("a new master", lambda: bed.master_port() if bed.master_port() != old else None, timeout=20)
    promoted = bed.client(new)
    wait_until("the new master to take writes", lambda: promoted.info("replication")["role"] == "master", timeout=20)
    after = FixedWindow(master(bed), PREFIX, jitter_max_seconds=10)
    entries = descriptor("zitadel", "zitadel-rate-limits", 0, rules[0], request)
    assert entries is not None
    assert bed.client(new, db=RATE_LIMIT_DB).get(cache_key(PREFIX, DOMAIN, entries, "Minute", NOW)) == "7"
    assert after.hit(DOMAIN, entries, rules[0]["limit"], NOW) == 8


def test_counters_never_land_outside_db_0(
    db0: redis.Redis, bed: RedisBed, counters: FixedWindow, rules: list[dict[str, Any]]
) -> None:
    for index, rule in enumerate(rules):
        request = Request("/oauth/v2/token", CLIENT, {"x-rl-sub": "2", "x-rl-org": "3"})
        if descriptor("zitadel", "zitadel-rate-limits", index, rule, request) is not None:
            hit(counters, rules, index, request)
    assert len(db0.keys(f"{PREFIX}*")) == 4  # every rule but the IPv6 ones
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
        (1200, "Minute"),
        (6000, "Minute"),
    ]
    assert all(r["shared"] is True and r["shadowMode"] is False for r in rules)
