"""The capacity model in the configuration: the caps each stack derives from its Redis's maxmemory, what relay.json
carries of them, and the rules that refuse caps and shares that would eat the reserve of the keys Redis may evict.

Expected caps are worked out by hand from the README's table ("Capacity: one Redis, three workloads"): maxmemory is
70 % of the redis container's memory limit in whole MiB (dev 256Mi → 179 MiB = 187,695,104 B; prod 1Gi → 716 MiB =
750,780,416 B); each priority stream gets a third of 50 % at 512 B per entry, the dead letter 5 % at 1,024 B.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.event_relay import relay_document
from components.wiring import event_relay_args
from relay.settings import Settings
from relay.store import SEEN_BUCKET_US
from stacks import capacity
from stacks.loader import load
from tests.conftest import stack_config
from tests.test_config_rules import found, stack_file


@pytest.mark.parametrize(
    ("stack", "maxmemory", "max_stream_length", "dead_letter_max_length"),
    [
        # 187,695,104 * 50 % / 3 / 512 = 61,098.7; 187,695,104 * 5 % / 1,024 = 9,164.8
        ("dev", 187_695_104, 61_098, 9_164),
        # 750,780,416 * 50 % / 3 / 512 = 244,394.7; 750,780,416 * 5 % / 1,024 = 36,659.2
        ("prod", 750_780_416, 244_394, 36_659),
    ],
)
def test_each_stack_derives_its_caps_from_maxmemory(
    stack: str, maxmemory: int, max_stream_length: int, dead_letter_max_length: int
) -> None:
    cfg = stack_config(stack)
    assert cfg.redis.maxmemory_bytes == maxmemory
    assert cfg.stream_caps == capacity.StreamCaps(max_stream_length, dead_letter_max_length)
    publishing = relay_document(event_relay_args(cfg))["publishing"]
    assert {key: publishing[key] for key in ("maxStreamLength", "deadLetterMaxLength")} == {
        "maxStreamLength": max_stream_length,
        "deadLetterMaxLength": dead_letter_max_length,
    }


def test_the_default_shares_and_budgets() -> None:
    shares = stack_config("dev").events.capacity
    assert (shares.streams_percent, shares.dead_letter_percent, shares.dedup_percent, shares.reserve_percent) == (
        50,
        5,
        10,
        35,
    )
    assert (shares.entry_bytes, shares.dead_letter_entry_bytes, shares.dedup_record_bytes) == (512, 1024, 128)
    # The dedup share is sized for each environment's peak: dev up to 30 events/s, prod up to 122 (README).
    assert [stack_config(stack).events.capacity.peak_event_rate for stack in ("dev", "prod")] == [20, 100]


def test_the_relay_trims_by_age_and_interval_from_relay_json() -> None:
    settings = Settings.from_document(relay_document(event_relay_args(stack_config("prod"))))
    p = settings.publishing
    # 168h and 1m in seconds.
    assert (p.max_stream_length, p.dead_letter_max_length, p.max_stream_age, p.trim_interval) == (
        244_394,
        36_659,
        604_800.0,
        60.0,
    )


def test_a_bigger_memory_limit_raises_the_caps() -> None:
    # 512Mi * 70 % = 358.4 MiB → 358 MiB = 375,390,208 B: * 50 % / 3 / 512 = 122,197.3; * 5 % / 1,024 = 18,329.6
    cfg = load("dev", {"redis": {"resources": {"redis": {"limits": {"memory": "512Mi"}}}}})
    assert cfg.stream_caps == capacity.StreamCaps(122_197, 18_329)


def test_explicit_caps_within_their_share_are_taken_as_they_are() -> None:
    overrides = {"events": {"performance": {"maxStreamLength": 60_000, "deadLetterMaxLength": 9_000}}}
    assert found("dev", overrides) == []
    config, secrets = stack_file("dev")
    cfg = load("dev", {**config, **overrides}, secrets)
    assert cfg.stream_caps == capacity.StreamCaps(60_000, 9_000)


#: The 1,000,000 entries per stream every stack had before the capacity model.
OLD_CAP = (
    "dev: events.performance.maxStreamLength: 1,000,000 entries in each of the 3 priority streams at 512 B take "
    "1,536,000,000 B, more than their share (50 % of maxmemory 179 MiB = 93,847,552 B): at most 61,098, or unset to "
    "derive it"
)


@pytest.mark.parametrize(
    ("stack", "overrides", "expected"),
    [
        ("dev", {"events": {"performance": {"maxStreamLength": 1_000_000}}}, [OLD_CAP]),
        # The derived cap itself is the largest that fits: 61,098 * 3 * 512 = 93,843,456 B; one more does not.
        ("dev", {"events": {"performance": {"maxStreamLength": 61_098}}}, []),
        (
            "dev",
            {"events": {"performance": {"maxStreamLength": 61_099}}},
            [
                "dev: events.performance.maxStreamLength: 61,099 entries in each of the 3 priority streams at 512 B "
                "take 93,848,064 B, more than their share (50 % of maxmemory 179 MiB = 93,847,552 B): at most "
                "61,098, or unset to derive it"
            ],
        ),
        (
            "prod",
            {"events": {"performance": {"deadLetterMaxLength": 100_000}}},
            [
                "prod: events.performance.deadLetterMaxLength: 100,000 entries in the dead-letter stream at 1,024 B "
                "take 102,400,000 B, more than their share (5 % of maxmemory 716 MiB = 37,539,020 B): at most "
                "36,659, or unset to derive it"
            ],
        ),
        (
            "dev",
            {"events": {"capacity": {"streamsPercent": 55}}},
            [
                "dev: events.capacity: the shares add up to 105 % of maxmemory (streamsPercent 55 + "
                "deadLetterPercent 5 + dedupPercent 10 + reservePercent 35): at most 100"
            ],
        ),
        # A smaller reserve makes room: the shares are what they say, the caps follow.
        ("dev", {"events": {"capacity": {"streamsPercent": 55, "reservePercent": 30}}}, []),
        (
            "dev",
            {"events": {"capacity": {"reservePercent": 5}}},
            ["dev: events.capacity.reservePercent: Input should be greater than or equal to 10"],
        ),
        (
            "dev",
            {"events": {"capacity": {"entryBytes": 300}}},
            [
                "dev: events.capacity.entryBytes: 300 B is less than a user.human.added entry takes (359 B, "
                "measured: stacks/capacity.py): the caps derived from it would overrun their share"
            ],
        ),
        (
            "dev",
            {"events": {"capacity": {"deadLetterEntryBytes": 500, "dedupRecordBytes": 64}}},
            [
                "dev: events.capacity.deadLetterEntryBytes: 500 B is less than a consumer's dead letter of a "
                "user.human.added entry takes (516 B, measured: stacks/capacity.py): the caps derived from it would "
                "overrun their share",
                "dev: events.capacity.dedupRecordBytes: 64 B is less than a dedup record takes (80 B, measured: "
                "stacks/capacity.py): the caps derived from it would overrun their share",
            ],
        ),
        # 30 events/s: 30 * 4,800 s * 128 B = 18,432,000 B of the 18,769,510 B; 31 would not fit.
        ("dev", {"events": {"capacity": {"peakEventRate": 30}}}, []),
        (
            "dev",
            {"events": {"capacity": {"peakEventRate": 31}}},
            [
                "dev: events.capacity.peakEventRate: 31 events/s hold 19,046,400 B of dedup records (4800 s of "
                "them: events.source.dedupTtl and two 10-minute buckets, at 128 B), more than the dedup share (10 % "
                "of maxmemory 179 MiB = 18,769,510 B): at most 30 events/s"
            ],
        ),
        # A longer dedupTtl holds more: 2h + 20 min at prod's 100 events/s is 107,520,000 B.
        (
            "prod",
            {"events": {"source": {"dedupTtl": "2h"}}},
            [
                "prod: events.capacity.peakEventRate: 100 events/s hold 107,520,000 B of dedup records (8400 s of "
                "them: events.source.dedupTtl and two 10-minute buckets, at 128 B), more than the dedup share (10 % "
                "of maxmemory 716 MiB = 75,078,041 B): at most 69 events/s"
            ],
        ),
        (
            "dev",
            {"events": {"capacity": {"maxStreamAge": "0s", "trimInterval": "0s"}}},
            [
                "dev: events.capacity.maxStreamAge: must be positive, not 0s",
                "dev: events.capacity.trimInterval: must be positive, not 0s",
            ],
        ),
    ],
)
def test_caps_and_shares_that_could_eat_the_reserve_are_refused(
    stack: str, overrides: dict[str, Any], expected: list[str]
) -> None:
    assert found(stack, overrides) == expected


def test_a_redis_without_a_memory_limit_is_refused_once() -> None:
    # No limit, no maxmemory: nothing to derive the caps from and nothing that stops the streams short of the node's
    # memory. The memory rule names it; the capacity rule adds nothing.
    overrides = {"redis": {"resources": {"redis": {"limits": {"memory": None}}}}}
    assert found("dev", overrides) == [
        "dev: redis.resources.redis.limits.memory: maxmemory derives from the redis container's memory limit "
        "(redis.maxmemoryPercent): set one"
    ]


def test_the_dedup_bucket_is_the_relays() -> None:
    assert capacity.DEDUP_BUCKET_SECONDS * 1_000_000 == SEEN_BUCKET_US
