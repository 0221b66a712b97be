"""The alert rules (``components/alerts.py``) on Prometheus's own rule engine: ``promtool check rules`` on each
stack's groups, and ``promtool test rules`` for every alert, firing and quiet, at the stack's thresholds.

The input series are synthesized the way the exporters name them (redis_exporter, the relay's ``/metrics``, Envoy
and envoyproxy/ratelimit), each with the ``namespace`` label the Prometheus Operator gives a target. The thresholds
are literals taken from the README, never worked out by the code under test: maxmemory and the stream caps from
"Capacity: one Redis, three workloads" (dev 179 MiB = 187,695,104 B, caps 61,098 and 9,164; prod 716 MiB =
750,780,416 B, caps 244,394 and 36,659), the rest from "Alerts and runbooks". Each quiet case sits exactly on its
threshold where one exists (the rules fire strictly above it) or lasts less than the rule's hold.

Annotations hold templates (``{{ $value }}``); ``promtool test rules`` compares them whole, so the unit tests run
on the rules without them, and one test renders a rule's annotations as Prometheus would, against literal text.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alerts import RuleGroup, alert_groups, alert_names, alerting_rules
from components.wiring import alert_args
from stacks.config import StackConfig
from testbed.required import require
from tests.conftest import PROJECT_DIR, stack_config

PROMTOOL = "promtool"
require(shutil.which(PROMTOOL) is not None, PROMTOOL, "apt-get install prometheus")

STACKS = ("dev", "prod")
README = (PROJECT_DIR / "README.md").read_text()
#: The test series' resolution: the Operator's default scrape interval, and the rules' evaluation interval.
STEP_SECONDS = 30


@dataclass(frozen=True)
class Limits:
    """One stack's thresholds, as the README states them."""

    #: maxmemory in bytes, and 90 % of it (``observability.alerts.memoryUsedPercent``) rounded to whole bytes:
    #: just above fires, just below does not.
    maxmemory: int
    memory_over: int
    memory_under: int
    #: Each priority stream's cap and the dead letter's; 90 % of each (``streamNearCapPercent``), as whole entries
    #: just over and at it; the cap plus one stream node (100 entries); half the cap (``consumerLagCapPercent``).
    stream_cap: int
    stream_near_over: int
    stream_near_at: int
    stream_over_cap: int
    dead_letter_near_over: int
    dead_letter_near_at: int
    dead_letter_over_cap: int
    lag_near_trim: int
    #: ``redis.minReplicasToWrite`` (0: no such alert).
    min_replicas: int


LIMITS = {
    # 187,695,104 * 90 % = 168,925,593.6; 61,098 * 90 % = 54,988.2; 9,164 * 90 % = 8,247.6; 61,098 / 2 = 30,549.
    "dev": Limits(
        maxmemory=187_695_104,
        memory_over=168_925_594,
        memory_under=168_925_593,
        stream_cap=61_098,
        stream_near_over=54_989,
        stream_near_at=54_988,
        stream_over_cap=61_198,
        dead_letter_near_over=8_248,
        dead_letter_near_at=8_247,
        dead_letter_over_cap=9_264,
        lag_near_trim=30_549,
        min_replicas=0,
    ),
    # 750,780,416 * 90 % = 675,702,374.4; 244,394 * 90 % = 219,954.6; 36,659 * 90 % = 32,993.1; 244,394 / 2 = 122,197.
    "prod": Limits(
        maxmemory=750_780_416,
        memory_over=675_702_375,
        memory_under=675_702_374,
        stream_cap=244_394,
        stream_near_over=219_955,
        stream_near_at=219_954,
        stream_over_cap=244_494,
        dead_letter_near_over=32_994,
        dead_letter_near_at=32_993,
        dead_letter_over_cap=36_759,
        lag_near_trim=122_197,
        min_replicas=1,
    ),
}
#: The same in both stacks ("Alerts and runbooks"): the relay's freshness goal (clock skew 5 s + poll 1 s + margin
#: 2 s), a group's lag and a consumer's idle time in seconds, min-replicas-max-lag, failovers an hour, over-limit
#: answers a second.
FRESHNESS_GOAL = 8
CONSUMER_LAG_SECONDS = 300
PENDING_IDLE_SECONDS = 300
MIN_REPLICAS_MAX_LAG = 10
FAILOVERS_PER_HOUR = 2
OVER_LIMIT_PER_SECOND = 1

#: Every alert each stack declares: dev has no minimum of replicas to write.
ALERTS = [
    "RelayNoLeaseHolder",
    "RelayNotPolling",
    "RelayWritesRefused",
    "RelayDenseWindowStalled",
    "RelayFreshnessOverGoal",
    "EventConsumerGroupBehind",
    "EventConsumerGroupNearTrim",
    "EventConsumerPendingStuck",
    "EventDeadLettersGrowing",
    "EventStreamNearCap",
    "EventDeadLetterStreamNearCap",
    "EventStreamOverCap",
    "RedisMasterMissing",
    "RedisTwoMasters",
    "RedisReplicasBelowMinimum",
    "RedisReplicasMissing",
    "RedisReplicationLinkDown",
    "RedisFailoversFrequent",
    "RedisMemoryNearMaxmemory",
    "RedisMaxmemoryNotTheStacks",
    "RedisEvictingKeys",
    "RedisRefusingWritesOOM",
    "RedisClientsRefusedByAcl",
    "EdgeRateLimitFailingOpen",
    "EdgeRateLimitErrors",
    "EdgeRateLimitOverLimit",
]
EXPECTED_ALERTS = {"dev": [a for a in ALERTS if a != "RedisReplicasBelowMinimum"], "prod": ALERTS}

# --- the series ------------------------------------------------------------------------------------------------------

RELAY = {"namespace": "zitadel"}
REDIS = {"namespace": "database"}
EDGE = {"namespace": "envoy-gateway-system"}
#: The Redis pods as the exporter sidecars' targets: the master and a replica.
MASTER = {**REDIS, "instance": "10.0.0.11:9121"}
REPLICA = {**REDIS, "instance": "10.0.0.12:9121"}
LOW = {**REDIS, "db": "db1", "stream": "zitadel:events:low"}
HIGH = {**REDIS, "db": "db1", "stream": "zitadel:events:high"}
DEAD = {**REDIS, "db": "db1", "stream": "zitadel:events:dead_letter"}
GROUP = {**LOW, "group": "welcome-mail"}
ACTIVE = {**RELAY, "instance": "10.0.1.21:9090"}
STANDBY = {**RELAY, "instance": "10.0.1.22:9090"}


def series(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{metric}{{{inner}}}"


def flat(value: float, minutes: float) -> list[str]:
    """One sample per step for ``minutes``."""
    return [_num(value)] * int(minutes * 60 / STEP_SECONDS)


def ramp(per_step: float, minutes: float, start: float = 0) -> list[str]:
    """A counter rising by ``per_step`` each step."""
    return [_num(start + per_step * i) for i in range(int(minutes * 60 / STEP_SECONDS))]


def gap(minutes: float) -> list[str]:
    """No sample (a series not scraped, or not there yet)."""
    return ["_"] * int(minutes * 60 / STEP_SECONDS)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class Case:
    """Series, an evaluation time, and the alerts that must be firing then (their labels, ``alertname`` aside)."""

    what: str
    input: dict[str, list[str]]
    at: str
    fires: list[dict[str, str]] = field(default_factory=list)


def cases(stack: str) -> dict[str, list[Case]]:
    """For each alert, the cases that make it fire and those that must not, at ``stack``'s thresholds."""
    lim = LIMITS[stack]
    crit, warn, info = {"severity": "critical"}, {"severity": "warning"}, {"severity": "info"}
    leader = "relay_leader"
    table: dict[str, list[Case]] = {
        "RelayNoLeaseHolder": [
            Case(
                "both bridges standing by",
                {series(leader, ACTIVE): flat(0, 3), series(leader, STANDBY): flat(0, 3)},
                "2m",
                [{**crit, **RELAY}],
            ),
            Case("no bridge scraped at all", {series("up", {"job": "other"}): flat(1, 3)}, "2m", [{**crit, **RELAY}]),
            Case("one leader", {series(leader, ACTIVE): flat(1, 3), series(leader, STANDBY): flat(0, 3)}, "2m"),
            Case(
                "a handover shorter than the hold",
                {
                    series(leader, ACTIVE): [*flat(1, 1), *flat(0, 2.5)],
                    series(leader, STANDBY): [*flat(0, 1.5), *flat(1, 2)],
                },
                "3m",
            ),
        ],
        "RelayNotPolling": [
            Case(
                "the leader's polls all fail",
                {
                    series(leader, ACTIVE): flat(1, 8),
                    series(leader, STANDBY): flat(0, 8),
                    series("relay_poll_duration_seconds_count", ACTIVE): flat(120, 8),
                },
                "6m",
                [{**crit, **ACTIVE}],
            ),
            Case(
                "the leader polls; the standby never does",
                {
                    series(leader, ACTIVE): flat(1, 8),
                    series(leader, STANDBY): flat(0, 8),
                    series("relay_poll_duration_seconds_count", ACTIVE): ramp(30, 8),
                    series("relay_poll_duration_seconds_count", STANDBY): flat(0, 8),
                },
                "6m",
            ),
        ],
        "RelayWritesRefused": [
            Case(
                "Redis out of memory",
                {
                    series("relay_write_refused_total", {**ACTIVE, "reason": "oom"}): ramp(2, 6),
                    series("relay_write_stalled", ACTIVE): flat(1, 6),
                },
                "5m",
                [{**crit, **RELAY, "reason": "oom"}],
            ),
            Case(
                "a failover's few refusals",
                {
                    series("relay_write_refused_total", {**ACTIVE, "reason": "readonly"}): [
                        *ramp(1, 1.5),
                        *flat(2, 4.5),
                    ],
                    series("relay_write_stalled", ACTIVE): [*flat(1, 1.5), *flat(0, 4.5)],
                },
                "5m",
            ),
        ],
        "RelayDenseWindowStalled": [
            Case("stalled", {series("relay_dense_window_stalled", ACTIVE): flat(1, 4)}, "3m", [{**crit, **ACTIVE}]),
            Case(
                "stalled for a minute, then through",
                {series("relay_dense_window_stalled", ACTIVE): [*flat(1, 1), *flat(0, 3)]},
                "3m",
            ),
        ],
        "RelayFreshnessOverGoal": [
            Case(
                "writing, just over the goal",
                _freshness(FRESHNESS_GOAL + 0.5, writing=True),
                "11m",
                [{**warn, **ACTIVE}],
            ),
            Case("writing, at the goal", _freshness(FRESHNESS_GOAL, writing=True), "11m"),
            Case("idle after an old event (nothing written)", _freshness(600, writing=False), "11m"),
        ],
        "EventConsumerGroupBehind": [
            # Stream IDs are milliseconds: the group's last delivered entry 300.1 s before the stream's newest. The
            # replica's gauges lag a little behind the master's: the freshest counts.
            Case(
                "a group 300.1 s behind",
                _group_lag(CONSUMER_LAG_SECONDS * 1000 + 100),
                "6m",
                [{**warn, **GROUP_GROUPED}],
            ),
            Case("a group exactly 300 s behind", _group_lag(CONSUMER_LAG_SECONDS * 1000), "6m"),
        ],
        "EventConsumerGroupNearTrim": [
            Case(
                "undelivered entries over half the cap",
                {
                    series("redis_stream_group_lag", {**GROUP, "instance": MASTER["instance"]}): flat(
                        lim.lag_near_trim + 1, 7
                    )
                },
                "6m",
                [{**warn, **GROUP_GROUPED}],
            ),
            Case(
                "exactly half the cap",
                {
                    series("redis_stream_group_lag", {**GROUP, "instance": MASTER["instance"]}): flat(
                        lim.lag_near_trim, 7
                    )
                },
                "6m",
            ),
        ],
        "EventConsumerPendingStuck": [
            Case(
                "a consumer holding entries, idle 301 s",
                _pending(PENDING_IDLE_SECONDS + 1, pending=1),
                "6m",
                [{**warn, **GROUP_GROUPED, "consumer": "worker-7"}],
            ),
            Case("idle exactly 300 s", _pending(PENDING_IDLE_SECONDS, pending=3), "6m"),
            Case("idle long, holding nothing", _pending(3600, pending=0), "6m"),
        ],
        "EventDeadLettersGrowing": [
            Case(
                "one dead letter in the last hour",
                {
                    series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): [
                        *flat(40, 50),
                        *flat(41, 11),
                    ]
                },
                "60m",
                [{**warn, **DEAD_GROUPED}],
            ),
            Case(
                "none in the last hour",
                {series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): flat(41, 61)},
                "60m",
            ),
        ],
        "EventStreamNearCap": [
            Case(
                "just over 90 % of the cap",
                {
                    series("redis_stream_length", {**HIGH, "instance": MASTER["instance"]}): flat(
                        lim.stream_near_over, 17
                    )
                },
                "16m",
                [{**info, **HIGH_GROUPED}],
            ),
            Case(
                "at 90 %",
                {series("redis_stream_length", {**HIGH, "instance": MASTER["instance"]}): flat(lim.stream_near_at, 17)},
                "16m",
            ),
        ],
        "EventDeadLetterStreamNearCap": [
            Case(
                "just over 90 % of its cap",
                {
                    series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): flat(
                        lim.dead_letter_near_over, 17
                    )
                },
                "16m",
                [{**warn, **DEAD_GROUPED}],
            ),
            Case(
                "at 90 %",
                {
                    series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): flat(
                        lim.dead_letter_near_at, 17
                    )
                },
                "16m",
            ),
        ],
        "EventStreamOverCap": [
            Case(
                "a priority stream and the dead letter beyond cap and one node",
                {
                    series("redis_stream_length", {**HIGH, "instance": MASTER["instance"]}): flat(
                        lim.stream_over_cap + 1, 17
                    ),
                    series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): flat(
                        lim.dead_letter_over_cap + 1, 17
                    ),
                },
                "16m",
                [{**warn, **HIGH_GROUPED}, {**warn, **DEAD_GROUPED}],
            ),
            Case(
                "within one node of the caps",
                {
                    series("redis_stream_length", {**HIGH, "instance": MASTER["instance"]}): flat(
                        lim.stream_over_cap, 17
                    ),
                    series("redis_stream_length", {**DEAD, "instance": MASTER["instance"]}): flat(
                        lim.dead_letter_over_cap, 17
                    ),
                },
                "16m",
            ),
        ],
        "RedisMasterMissing": [
            Case(
                "only replicas",
                {_info(MASTER, "slave"): flat(1, 3), _info(REPLICA, "slave"): flat(1, 3)},
                "2m",
                [{**crit, **REDIS, "role": "master"}],
            ),
            Case("a master", {_info(MASTER, "master"): flat(1, 3), _info(REPLICA, "slave"): flat(1, 3)}, "2m"),
            Case(
                "a failover: 30 s without a master",
                {
                    _info(MASTER, "master"): [*flat(1, 1.5), "stale", *gap(2.5)],
                    _info(REPLICA, "slave"): [*flat(1, 2), "stale", *gap(2)],
                    _info(REPLICA, "master"): [*gap(2), *flat(1, 2.5)],
                },
                "4m",
            ),
        ],
        "RedisTwoMasters": [
            Case(
                "two masters",
                {_info(MASTER, "master"): flat(1, 4), _info(REPLICA, "master"): flat(1, 4)},
                "3m",
                [{**crit, **REDIS}],
            ),
            Case("one master", {_info(MASTER, "master"): flat(1, 4), _info(REPLICA, "slave"): flat(1, 4)}, "3m"),
        ],
        "RedisReplicasBelowMinimum": [
            Case(
                "the only replica 11 s behind",
                {_info(MASTER, "master"): flat(1, 3), _replica_lag("online"): flat(MIN_REPLICAS_MAX_LAG + 1, 3)},
                "2m",
                [{**crit, **MASTER}],
            ),
            Case(
                "the only replica still syncing",
                {_info(MASTER, "master"): flat(1, 3), _replica_lag("wait_bgsave"): flat(0, 3)},
                "2m",
                [{**crit, **MASTER}],
            ),
            Case("no replica connected", {_info(MASTER, "master"): flat(1, 3)}, "2m", [{**crit, **MASTER}]),
            Case(
                "a replica 10 s behind",
                {_info(MASTER, "master"): flat(1, 3), _replica_lag("online"): flat(MIN_REPLICAS_MAX_LAG, 3)},
                "2m",
            ),
        ],
        "RedisReplicasMissing": [
            Case(
                "one of two replicas",
                {
                    _info(MASTER, "master"): flat(1, 7),
                    series("redis_connected_slaves", MASTER): flat(1, 7),
                    _info(REPLICA, "slave"): flat(1, 7),
                    series("redis_connected_slaves", REPLICA): flat(0, 7),
                },
                "6m",
                [{**warn, **MASTER}],
            ),
            Case(
                "both replicas",
                {
                    _info(MASTER, "master"): flat(1, 7),
                    series("redis_connected_slaves", MASTER): flat(2, 7),
                    _info(REPLICA, "slave"): flat(1, 7),
                    series("redis_connected_slaves", REPLICA): flat(0, 7),
                },
                "6m",
            ),
        ],
        "RedisReplicationLinkDown": [
            Case("the link down", {_link(REPLICA): flat(0, 4)}, "3m", [{**warn, **REPLICA}]),
            Case("down for 90 s, then back", {_link(REPLICA): [*flat(0, 1.5), *flat(1, 2.5)]}, "3m"),
        ],
        "RedisFailoversFrequent": [
            Case("three promotions in 20 minutes", _failovers(3), "20m", [{**warn, **REDIS}]),
            Case("two promotions", _failovers(2), "20m"),
        ],
        "RedisMemoryNearMaxmemory": [
            Case("just over 90 % of maxmemory", _memory(lim.memory_over, lim.maxmemory), "6m", [{**warn, **MASTER}]),
            Case("at 90 %", _memory(lim.memory_under, lim.maxmemory), "6m"),
            Case("no maxmemory", _memory(lim.memory_over, 0), "6m"),
        ],
        "RedisMaxmemoryNotTheStacks": [
            Case("maxmemory 0", {series("redis_memory_max_bytes", MASTER): flat(0, 12)}, "11m", [{**warn, **MASTER}]),
            Case("the stack's", {series("redis_memory_max_bytes", MASTER): flat(lim.maxmemory, 12)}, "11m"),
        ],
        "RedisEvictingKeys": [
            # Evaluated where the samples cover the whole window: the increase is exactly the one eviction.
            Case(
                "one eviction",
                {series("redis_evicted_keys_total", MASTER): [*flat(7, 5), *flat(8, 8)]},
                "11m",
                [{**warn, **MASTER}],
            ),
            Case("none for 10 minutes", {series("redis_evicted_keys_total", MASTER): flat(8, 12)}, "11m"),
        ],
        "RedisRefusingWritesOOM": [
            Case(
                "one OOM refusal",
                {_errors(MASTER, "OOM"): [*flat(0, 3), *flat(1, 4)]},
                "6m",
                [{**crit, **MASTER, "err": "OOM"}],
            ),
            Case("other errors only", {_errors(MASTER, "OOM"): flat(1, 7), _errors(MASTER, "ERR"): ramp(5, 7)}, "6m"),
        ],
        "RedisClientsRefusedByAcl": [
            Case(
                "a NOPERM and a WRONGPASS",
                {
                    _errors(MASTER, "NOPERM"): [*flat(0, 3), *flat(1, 4)],
                    _errors(REPLICA, "WRONGPASS"): [*flat(3, 3), *flat(4, 4)],
                },
                "6m",
                [{**warn, **MASTER, "err": "NOPERM"}, {**warn, **REPLICA, "err": "WRONGPASS"}],
            ),
            Case(
                "other errors only", {_errors(MASTER, "NOPERM"): flat(2, 7), _errors(MASTER, "ERR"): ramp(5, 7)}, "6m"
            ),
        ],
        "EdgeRateLimitFailingOpen": [
            Case(
                "requests passing unchecked",
                {series("envoy_cluster_ratelimit_failure_mode_allowed", _proxy()): ramp(10, 9)},
                "8m",
                [{**crit, **EDGE}],
            ),
            Case(
                "a failover's few seconds",
                {series("envoy_cluster_ratelimit_failure_mode_allowed", _proxy()): [*flat(0, 1.5), *flat(40, 7.5)]},
                "8m",
            ),
        ],
        "EdgeRateLimitErrors": [
            Case(
                "Redis unreachable from ratelimit",
                {_should_rate_limit_error("redis_error"): ramp(20, 9)},
                "8m",
                [{**warn, **EDGE, "err_type": "redis_error"}],
            ),
            Case("no new error", {_should_rate_limit_error("redis_error"): flat(20, 9)}, "8m"),
        ],
        "EdgeRateLimitOverLimit": [
            # 36 and 30 over-limit answers a step of 30 s: 1.2/s fires, exactly 1/s does not.
            Case("1.2 refusals a second", {_over_limit(): ramp(36, 12)}, "11m", [{**warn, **EDGE, **RULE}]),
            Case("1 a second", {_over_limit(): ramp(30 * OVER_LIMIT_PER_SECOND, 12)}, "11m"),
        ],
    }
    return {alert: table[alert] for alert in EXPECTED_ALERTS[stack]}


#: What the stream alerts keep of a series' labels (they aggregate away the instance and the DB).
GROUP_GROUPED = {"namespace": "database", "stream": "zitadel:events:low", "group": "welcome-mail"}
HIGH_GROUPED = {"namespace": "database", "stream": "zitadel:events:high"}
DEAD_GROUPED = {"namespace": "database", "stream": "zitadel:events:dead_letter"}
#: The credential rule's descriptor as envoyproxy/ratelimit names it (Envoy Gateway's statsd mapping).
RULE = {"domain": "zitadel/zitadel-rate-limits", "key1": "zitadel/zitadel-rate-limits/rule/1"}


def _freshness(seconds: float, *, writing: bool) -> dict[str, list[str]]:
    written = ramp(20, 12) if writing else flat(500, 12)
    return {
        series("relay_freshness_seconds", ACTIVE): flat(seconds, 12),
        series("relay_leader", ACTIVE): flat(1, 12),
        series("relay_events_written_total", {**ACTIVE, "stream": "zitadel:events:high"}): written,
        # The standby's gauge is stale from its own turn as leader: never its alert.
        series("relay_freshness_seconds", STANDBY): flat(900, 12),
        series("relay_leader", STANDBY): flat(0, 12),
    }


def _group_lag(milliseconds: int) -> dict[str, list[str]]:
    newest = 1_767_225_600_000
    delivered = newest - milliseconds
    return {
        series("redis_stream_last_generated_id", {**LOW, "instance": MASTER["instance"]}): flat(newest, 7),
        series("redis_stream_last_generated_id", {**LOW, "instance": REPLICA["instance"]}): flat(newest - 5, 7),
        series("redis_stream_group_last_delivered_id", {**GROUP, "instance": MASTER["instance"]}): flat(delivered, 7),
        series("redis_stream_group_last_delivered_id", {**GROUP, "instance": REPLICA["instance"]}): flat(
            delivered - 5, 7
        ),
    }


def _pending(idle: int, *, pending: int) -> dict[str, list[str]]:
    consumer = {**GROUP, "consumer": "worker-7", "instance": MASTER["instance"]}
    return {
        series("redis_stream_group_consumer_idle_seconds", consumer): flat(idle, 7),
        series("redis_stream_group_consumer_messages_pending", consumer): flat(pending, 7),
    }


def _info(node: dict[str, str], role: str) -> str:
    return series("redis_instance_info", {**node, "role": role, "redis_version": "8.2.1"})


def _replica_lag(state: str) -> str:
    labels = {**MASTER, "slave_ip": "10.0.0.12", "slave_port": "6379", "slave_state": state}
    return series("redis_connected_slave_lag_seconds", labels)


def _link(node: dict[str, str]) -> str:
    return series("redis_master_link_up", {**node, "master_host": "redis-node-0.redis-headless", "master_port": "6379"})


def _errors(node: dict[str, str], err: str) -> str:
    return series("redis_errors_total", {**node, "err": err})


def _memory(used: int, maxmemory: int) -> dict[str, list[str]]:
    return {
        series("redis_memory_used_bytes", MASTER): flat(used, 7),
        series("redis_memory_max_bytes", MASTER): flat(maxmemory, 7),
    }


def _failovers(promotions: int) -> dict[str, list[str]]:
    """Three nodes; the master moves every 5 minutes, ``promotions`` times (a node leaves one role's series, marked
    stale as the exporter's next scrape drops it, and appears in the other's)."""
    nodes = [{**REDIS, "instance": f"10.0.0.{11 + n}:9121"} for n in range(3)]
    steps = 40
    turn = 10
    master_at = [min(step // turn, promotions) % 3 for step in range(steps)]
    out: dict[str, list[str]] = {}
    for n, node in enumerate(nodes):
        for role, wanted in (("master", True), ("slave", False)):
            values = []
            for step in range(steps):
                now = (master_at[step] == n) == wanted
                before = step > 0 and (master_at[step - 1] == n) == wanted
                values.append("1" if now else "stale" if before else "_")
            out[_info(node, role)] = values
    return out


def _proxy() -> dict[str, str]:
    return {**EDGE, "instance": "10.0.2.31:19001", "envoy_cluster_name": "httproute/zitadel/zitadel/rule/0"}


def _should_rate_limit_error(err_type: str) -> str:
    return series(
        "ratelimit_service_should_rate_limit_error", {**EDGE, "instance": "10.0.2.41:19001", "err_type": err_type}
    )


def _over_limit() -> str:
    return series("ratelimit_service_rate_limit_over_limit", {**EDGE, "instance": "10.0.2.41:19001", **RULE})


# --- running promtool -------------------------------------------------------------------------------------------------


def without_annotations(groups: Sequence[RuleGroup]) -> list[dict[str, Any]]:
    stripped: list[dict[str, Any]] = copy.deepcopy([dict(group) for group in groups])
    for group in stripped:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return stripped


def unit_test_file(alert: str, case_list: Iterable[Case]) -> dict[str, Any]:
    tests = []
    for case in case_list:
        input_series = []
        for name, values in case.input.items():
            input_series.append({"series": name, "values": " ".join(values)})
        tests.append(
            {
                "name": f"{alert}: {case.what}",
                "interval": f"{STEP_SECONDS}s",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": alert, "exp_alerts": [{"exp_labels": f} for f in case.fires]}
                ],
            }
        )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": f"{STEP_SECONDS}s", "tests": tests}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def run_unit_tests(groups: Sequence[RuleGroup] | list[dict[str, Any]], test: dict[str, Any], tmp_path: Path) -> str:
    """``promtool test rules``; its output, and whether it passed, as one string (``SUCCESS`` or ``FAILED``)."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": list(groups)}, sort_keys=False))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


# --- the tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "rules"), [("dev", 26), ("prod", 27)])
def test_promtool_accepts_each_stacks_rules(stack: str, rules: int, tmp_path: Path) -> None:
    """Every expression parses, every template compiles, no rule is duplicated: the file the Operator would load.
    One recording rule (each node's role) beside the alerts."""
    groups = alert_groups(alert_args(stack_config(stack)))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {rules} rules found" in result.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_every_alert_has_its_cases(stack: str) -> None:
    assert alert_names(alert_groups(alert_args(stack_config(stack)))) == EXPECTED_ALERTS[stack]
    assert list(cases(stack)) == EXPECTED_ALERTS[stack]
    for alert, case_list in cases(stack).items():
        assert any(c.fires for c in case_list) and any(not c.fires for c in case_list), alert


@pytest.mark.parametrize(
    ("stack", "alert"), [(stack, alert) for stack in STACKS for alert in EXPECTED_ALERTS[stack]], ids=str
)
def test_each_alert_fires_and_stays_quiet_at_the_stacks_thresholds(stack: str, alert: str, tmp_path: Path) -> None:
    groups = without_annotations(alert_groups(alert_args(stack_config(stack))))
    output = run_unit_tests(groups, unit_test_file(alert, cases(stack)[alert]), tmp_path)
    assert output.startswith("rc=0") and "SUCCESS" in output, output


def test_a_wrong_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The same cases against a rule whose freshness goal is 9 s instead of 8: promtool reports the alert that did
    not fire, so a threshold drifting from the stack's intent cannot pass."""
    groups = without_annotations(alert_groups(alert_args(stack_config("dev"))))
    rule = _rule(groups, "RelayFreshnessOverGoal")
    assert f"> {FRESHNESS_GOAL})" in rule["expr"]
    rule["expr"] = rule["expr"].replace(f"> {FRESHNESS_GOAL})", f"> {FRESHNESS_GOAL + 1})")
    output = run_unit_tests(
        groups, unit_test_file("RelayFreshnessOverGoal", cases("dev")["RelayFreshnessOverGoal"]), tmp_path
    )
    assert output.startswith("rc=1") and "FAILED" in output, output
    assert "RelayFreshnessOverGoal: writing, just over the goal" in output
    assert "alertname: RelayFreshnessOverGoal" in output and "got:[]" in output.replace(" ", ""), output


def test_annotations_render_as_written(tmp_path: Path) -> None:
    """Prometheus's templates fill in the value and the labels; the runbook link points at the alert's row."""
    groups = alert_groups(alert_args(stack_config("prod")))
    test = unit_test_file("RelayFreshnessOverGoal", cases("prod")["RelayFreshnessOverGoal"][:1])
    test["tests"][0]["alert_rule_test"][0]["exp_alerts"][0]["exp_annotations"] = {
        "summary": "Events reach Redis 8.5s after ZITADEL wrote them (goal 8 s)",
        "description": "The active bridge writes events more than 8 s (clockSkew + pollInterval + 2s) after their "
        "creation, for 10 minutes: it is falling behind ZITADEL.",
        "runbook_url": "https://github.com/blinkchamber/blinkchamber-identity/blob/main/README.md"
        "#alert-relayfreshnessovergoal",
    }
    output = run_unit_tests(groups, test, tmp_path)
    assert output.startswith("rc=0"), output


@pytest.mark.parametrize("stack", STACKS)
def test_every_alert_has_a_summary_a_description_and_a_runbook_row(stack: str) -> None:
    section = README.split("### Alerts and runbooks", 1)[1].split("\n## ", 1)[0]
    for alert in alerting_rules(alert_groups(alert_args(stack_config(stack)))):
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        anchor = notes["runbook_url"].split("#", 1)[1]
        assert notes["runbook_url"].startswith("https://github.com/blinkchamber/blinkchamber-identity/blob/main/")
        assert re.search(rf'<a id="{anchor}"></a>`{alert["alert"]}`', section), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}


def test_a_fail_closed_edge_alerts_on_refused_requests(tmp_path: Path) -> None:
    """With ``edge.rateLimit.failClosed`` the proxies refuse what they cannot check: the alert says so, from Envoy's
    error counter (failure_mode_allowed stays 0)."""
    cfg = stack_config("prod")
    closed = _with_fail_closed(cfg)
    names = alert_names(alert_groups(alert_args(closed)))
    assert "EdgeRateLimitFailingClosed" in names and "EdgeRateLimitFailingOpen" not in names
    error = series("envoy_cluster_ratelimit_error", _proxy())
    test = unit_test_file(
        "EdgeRateLimitFailingClosed",
        [
            Case("requests refused", {error: ramp(10, 9)}, "8m", [{"severity": "critical", **EDGE}]),
            Case("a failover's few seconds", {error: [*flat(0, 1.5), *flat(40, 7.5)]}, "8m"),
        ],
    )
    output = run_unit_tests(without_annotations(alert_groups(alert_args(closed))), test, tmp_path)
    assert output.startswith("rc=0"), output
    section = README.split("### Alerts and runbooks", 1)[1]
    assert '<a id="alert-edgeratelimitfailingclosed"></a>`EdgeRateLimitFailingClosed`' in section


def test_groups_follow_what_the_stack_runs() -> None:
    cfg = stack_config("dev")
    assert [g["name"] for g in alert_groups(alert_args(cfg))] == [
        "blinkchamber.relay",
        "blinkchamber.events",
        "blinkchamber.redis",
        "blinkchamber.edge",
    ]
    no_relay = cfg.model_copy(
        update={
            "events": cfg.events.model_copy(update={"relay": cfg.events.relay.model_copy(update={"enabled": False})})
        }
    )
    assert [g["name"] for g in alert_groups(alert_args(no_relay))] == ["blinkchamber.redis", "blinkchamber.edge"]
    no_exporter = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"metrics": False})})
    assert [g["name"] for g in alert_groups(alert_args(no_exporter))] == ["blinkchamber.relay", "blinkchamber.edge"]


def _rule(groups: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    return next(rule for group in groups for rule in group["rules"] if rule.get("alert") == alert)


def _with_fail_closed(cfg: StackConfig) -> StackConfig:
    rate_limit = cfg.edge.rate_limit.model_copy(update={"fail_closed": True})
    return cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"rate_limit": rate_limit})})
