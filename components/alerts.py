"""The alert rules of the identity tier: the PrometheusRule's ``spec.groups`` (README, "Alerts and runbooks").

Plain functions of the stack config: every threshold comes from what the stack states — the stream caps derived from
maxmemory, maxmemory itself, ``min-replicas-to-write``, the relay's clock skew and poll interval, the edge's failure
mode — or from ``observability.alerts``. ``components/observability.py`` puts the groups into a PrometheusRule; the
tests run them through ``promtool`` (``tests/test_alerts.py``) and a real Prometheus (``tests/test_alerts_live.py``).

What the rules read, and from whom:

* the relay's ``/metrics`` (``relay/metrics.py``), in ZITADEL's namespace;
* the Redis chart's exporter sidecar (redis_exporter; Debian's 1.45 in the test bed, 1.76 deployed), in the Redis
  namespace: INFO, and the four event streams through ``--check-single-streams`` (``components/redis.py``), which the
  ``exporter`` user may only ``XINFO`` (``components/redis_acl.py``);
* Envoy's own stats and envoyproxy/ratelimit's (Envoy Gateway's statsd mapping), in the edge's namespace.

Every selector names the ``namespace`` label the Prometheus Operator gives each target, so that another Redis or
Envoy in the cluster never trips these thresholds. ZITADEL v4.13 exports no metric of its Redis cache or its circuit
breaker (the connector logs its errors, gobreaker's state changes are a log line): the rules watch the causes that
open the breaker instead — no master, refused writes, ACL refusals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypedDict, TypeGuard

from stacks import names
from stacks.capacity import StreamCaps
from stacks.config import EventSource, EventStreams, ObservabilityAlerts, RedisConfig, duration_seconds

Severity = Literal["critical", "warning", "info"]


@dataclass(frozen=True)
class AlertArgs:
    """What the rules need of the stack (``components/wiring.py`` builds it): where each source runs, what it is
    configured with, and the thresholds of ``observability.alerts``."""

    relay_enabled: bool
    zitadel_namespace: str
    edge_namespace: str
    events_db: int
    streams: EventStreams
    stream_caps: StreamCaps
    source: EventSource
    redis: RedisConfig
    fail_closed: bool
    alerts: ObservabilityAlerts
    #: The README the runbook links point into (``runbook_base``).
    runbook_base: str


class Annotations(TypedDict):
    summary: str
    description: str
    runbook_url: str


# ``for`` is a Python keyword: the functional form.
AlertingRule = TypedDict(
    "AlertingRule",
    {"alert": str, "expr": str, "for": str, "labels": dict[str, str], "annotations": Annotations},
)


class RecordingRule(TypedDict):
    record: str
    expr: str


class RuleGroup(TypedDict):
    name: str
    rules: list[AlertingRule | RecordingRule]


#: Redis's ``stream-node-max-entries`` default: ``XADD``/``XTRIM MAXLEN ~`` drop whole nodes, so a stream keeps up to
#: this many entries beyond its cap (README, "Capacity").
STREAM_NODE_ENTRIES: Final = 100
#: Each node's role, 1 for a replica and 0 for the master: a promotion is a drop from 1 to 0, which ``resets``
#: counts (a master going away, or coming back as a replica, is not one).
REPLICA_ROLE_RECORD: Final = "instance:redis_role_replica:max"

# How long a condition must hold. Longer than what a healthy stack goes through on its own: a Sentinel failover
# (down-after 5 s + election, about 6.3 s measured, plus 2 s to relabel the master), the relay's lease TTL (10 s), a
# scrape interval or two (30 s).
_NO_LEADER_FOR: Final = "1m"
_STALL_FOR: Final = "2m"
_NOT_POLLING_FOR: Final = "5m"
_FRESHNESS_FOR: Final = "10m"
_LAG_FOR: Final = "5m"
_CAP_FOR: Final = "15m"
_MASTER_FOR: Final = "1m"
_REPLICATION_FOR: Final = "2m"
_REPLICAS_FOR: Final = "5m"
_MEMORY_FOR: Final = "5m"
_MAXMEMORY_FOR: Final = "10m"
_EDGE_FOR: Final = "5m"
_AT_ONCE: Final = "0s"
# Rate windows: several scrapes each (30 s), so that one missed scrape never hides a counter's increase.
_RATE_WINDOW: Final = "2m"
_INCREASE_WINDOW: Final = "5m"


def alert_groups(args: AlertArgs) -> list[RuleGroup]:
    """The PrometheusRule's ``spec.groups`` for the stack: a group per source, without those it does not run."""
    groups: list[RuleGroup] = []
    if args.relay_enabled:
        groups.append({"name": "blinkchamber.relay", "rules": [*relay_rules(args)]})
    if args.redis.metrics:
        if args.relay_enabled:
            groups.append({"name": "blinkchamber.events", "rules": [*event_stream_rules(args)]})
        groups.append({"name": "blinkchamber.redis", "rules": redis_rules(args)})
    groups.append({"name": "blinkchamber.edge", "rules": [*edge_rules(args)]})
    return groups


def alerting_rules(groups: Sequence[RuleGroup]) -> list[AlertingRule]:
    """Every alerting rule of ``groups``, in order (the recording rules left out)."""
    return [rule for group in groups for rule in group["rules"] if _is_alert(rule)]


def alert_names(groups: Sequence[RuleGroup]) -> list[str]:
    """Every alert of ``groups``, in order."""
    return [rule["alert"] for rule in alerting_rules(groups)]


def _is_alert(rule: AlertingRule | RecordingRule) -> TypeGuard[AlertingRule]:
    return "alert" in rule


def runbook_base(explicit: str | None, repository: str) -> str:
    """The README the runbook links point into: ``observability.alerts.runbookUrl``, else GitHub's copy."""
    return explicit or f"https://github.com/{repository}/blob/main/README.md"


def runbook_anchor(alert: str) -> str:
    """The README's anchor of an alert's row in "Alerts and runbooks"."""
    return f"alert-{alert.lower()}"


def relay_freshness_goal_seconds(args: AlertArgs) -> float:
    """What a caught-up bridge delivers (each read stops ``clockSkew`` before now, polls come every ``pollInterval``)
    plus the stack's margin."""
    source = args.source
    margin = args.alerts.relay_freshness_margin
    return duration_seconds(source.clock_skew) + duration_seconds(source.poll_interval) + duration_seconds(margin)


# --- the relay ---------------------------------------------------------------------------------------------------


def relay_rules(args: AlertArgs) -> list[AlertingRule]:
    relay = _selector(namespace=args.zitadel_namespace)
    by = "namespace, instance"
    leader = f"max by ({by}) (relay_leader{relay})"
    goal = _number(relay_freshness_goal_seconds(args))
    rule = _rule_maker(args)
    return [
        rule(
            "RelayNoLeaseHolder",
            f"sum by (namespace) (relay_leader{relay}) < 1 or absent(relay_leader{relay})",
            _NO_LEADER_FOR,
            "critical",
            "No event relay holds the lease in {{ $labels.namespace }}: no ZITADEL event reaches Redis",
            "No bridge reports relay_leader 1 (or none is scraped) for over a minute; the lease's TTL is 10 s. "
            "ZITADEL's events wait in its event store; nothing is lost, the streams stop moving.",
        ),
        rule(
            "RelayNotPolling",
            f"({leader} == 1) unless on ({by}) "
            f"(sum by ({by}) (increase(relay_poll_duration_seconds_count{relay}[{_INCREASE_WINDOW}])) > 0)",
            _NOT_POLLING_FOR,
            "critical",
            "The active event relay {{ $labels.instance }} completes no poll",
            "It holds the lease but no poll succeeded in 5 minutes: ZITADEL's Event API or Redis fails it "
            "(relay_errors_total by kind). Events wait in ZITADEL, the cursor is kept.",
        ),
        rule(
            "RelayWritesRefused",
            f"(sum by (namespace, reason) (increase(relay_write_refused_total{relay}[{_INCREASE_WINDOW}])) > 0) "
            f"and on (namespace) (max by (namespace) (relay_write_stalled{relay}) == 1)",
            _STALL_FOR,
            "critical",
            "Redis refuses the event relay's writes ({{ $labels.reason }})",
            "The bridge is stalled on refused writes for over 2 minutes (oom: memory full of what Redis may not "
            "evict; readonly: it reached a replica; noreplicas: fewer replicas than min-replicas-to-write). It keeps "
            "its cursor and retries; nothing is skipped.",
        ),
        rule(
            "RelayDenseWindowStalled",
            f"max by ({by}) (relay_dense_window_stalled{relay}) == 1",
            _STALL_FOR,
            "critical",
            "The event relay {{ $labels.instance }} is stalled on a window too dense to page through",
            "More than 1000 events of one type share one instant (or a full page has no creation date): the "
            "Event API cannot page past them, and the bridge retries rather than skip them.",
        ),
        rule(
            "RelayFreshnessOverGoal",
            f"(max by ({by}) (relay_freshness_seconds{relay}) > {goal}) and on ({by}) ({leader} == 1) "
            f"and on ({by}) (sum by ({by}) (increase(relay_events_written_total{relay}[{_INCREASE_WINDOW}])) > 0)",
            _FRESHNESS_FOR,
            "warning",
            "Events reach Redis {{ $value | humanizeDuration }} after ZITADEL wrote them (goal " + goal + " s)",
            f"The active bridge writes events more than {goal} s (clockSkew + pollInterval + "
            f"{args.alerts.relay_freshness_margin}) after their creation, for 10 minutes: it is "
            "falling behind ZITADEL.",
        ),
    ]


# --- the event streams and their consumer groups ------------------------------------------------------------------


def event_stream_rules(args: AlertArgs) -> list[AlertingRule]:
    streams, caps, alerts = args.streams, args.stream_caps, args.alerts
    priority = (streams.high, streams.normal, streams.low)
    in_db = {"namespace": names.REDIS_NAMESPACE, "db": f"db{args.events_db}"}
    prio = _selector(**in_db, stream=priority)
    dead = _selector(**in_db, stream=streams.dead_letter)
    group = "namespace, stream, group"
    consumer = f"{group}, consumer"
    cap, dl_cap = caps.max_stream_length, caps.dead_letter_max_length
    near = f"{alerts.stream_near_cap_percent} / 100"
    rule = _rule_maker(args)
    return [
        rule(
            "EventConsumerGroupBehind",
            # Stream IDs are Redis's clock in ms: how far behind the stream's newest entry the group's last delivered
            # one was written. Both gauges come from every node (replicas hold the same streams): the freshest wins.
            f"(max by (namespace, stream) (redis_stream_last_generated_id{prio}) - on (namespace, stream) "
            f"group_right max by ({group}) (redis_stream_group_last_delivered_id{prio})) / 1000 "
            f"> {alerts.consumer_lag_seconds}",
            _LAG_FOR,
            "warning",
            "Consumer group {{ $labels.group }} is {{ $value | humanizeDuration }} behind {{ $labels.stream }}",
            f"Its last delivered entry is more than {alerts.consumer_lag_seconds} s older than the stream's newest "
            "for 5 minutes: its workers are stopped or too slow.",
        ),
        rule(
            "EventConsumerGroupNearTrim",
            f"max by ({group}) (redis_stream_group_lag{prio}) > {cap} * {alerts.consumer_lag_cap_percent} / 100",
            _LAG_FOR,
            "warning",
            "Consumer group {{ $labels.group }} has {{ $value }} undelivered entries on {{ $labels.stream }}",
            f"More than {alerts.consumer_lag_cap_percent} % of the stream's cap ({cap}) waits for the group: the "
            "trim drops the oldest before it reads them (each gap becomes a trimmed dead letter).",
        ),
        rule(
            "EventConsumerPendingStuck",
            f"(max by ({consumer}) (redis_stream_group_consumer_idle_seconds{prio}) "
            f"> {alerts.consumer_pending_idle_seconds}) and on ({consumer}) "
            f"(max by ({consumer}) (redis_stream_group_consumer_messages_pending{prio}) > 0)",
            _LAG_FOR,
            "warning",
            "Consumer {{ $labels.consumer }} of {{ $labels.group }} holds pending entries, idle for "
            "{{ $value | humanizeDuration }}",
            f"It has not read for more than {alerts.consumer_pending_idle_seconds} s and no consumer of its group "
            "claims what it holds: the group's workers are gone, or one is stuck in a handler.",
        ),
        rule(
            "EventDeadLettersGrowing",
            f"max by (namespace, stream) (delta(redis_stream_length{dead}[1h])) > {alerts.dead_letters_per_hour}",
            _AT_ONCE,
            "warning",
            "{{ $value | humanize }} dead letters in the last hour on {{ $labels.stream }}",
            f"More than {alerts.dead_letters_per_hour} events went to the dead-letter stream within an hour: events "
            "the bridge could not use, jobs that failed maxRetries times, or entries a group lost to the trim.",
        ),
        rule(
            "EventStreamNearCap",
            f"max by (namespace, stream) (redis_stream_length{prio}) > {cap} * {near}",
            _CAP_FOR,
            "info",
            "{{ $labels.stream }} holds {{ $value }} entries, near its cap of " + str(cap),
            "The stream is a full buffer, as designed: each new entry trims the oldest. A group further behind "
            "than the stream holds loses entries.",
        ),
        rule(
            "EventDeadLetterStreamNearCap",
            f"max by (namespace, stream) (redis_stream_length{dead}) > {dl_cap} * {near}",
            _CAP_FOR,
            "warning",
            "The dead-letter stream holds {{ $value }} entries, near its cap of " + str(dl_cap),
            "Each further dead letter trims the oldest, unreplayed.",
        ),
        rule(
            "EventStreamOverCap",
            f"(max by (namespace, stream) (redis_stream_length{prio}) > {cap + STREAM_NODE_ENTRIES}) "
            f"or (max by (namespace, stream) (redis_stream_length{dead}) > {dl_cap + STREAM_NODE_ENTRIES})",
            _CAP_FOR,
            "warning",
            "{{ $labels.stream }} holds {{ $value }} entries, beyond its cap",
            f"Over the cap (priority streams {cap}, dead letter {dl_cap}) by more than one stream node "
            f"({STREAM_NODE_ENTRIES} entries) for 15 minutes: nothing trims it, and its memory eats the reserve.",
        ),
    ]


# --- Redis ----------------------------------------------------------------------------------------------------------


def redis_rules(args: AlertArgs) -> list[AlertingRule | RecordingRule]:
    r, alerts = args.redis, args.alerts
    node = _selector(namespace=names.REDIS_NAMESPACE)
    master = _selector(namespace=names.REDIS_NAMESPACE, role="master")
    by = "namespace, instance"
    rule = _rule_maker(args)
    rules: list[AlertingRule | RecordingRule] = [
        {
            "record": REPLICA_ROLE_RECORD,
            "expr": f"max by ({by}) (redis_instance_info{_selector(namespace=names.REDIS_NAMESPACE, role='slave')}) "
            f"or max by ({by}) (redis_instance_info{node} * 0)",
        },
        rule(
            "RedisMasterMissing",
            f"absent(redis_instance_info{master})",
            _MASTER_FOR,
            "critical",
            "No Redis node is master: ZITADEL's cache breaker is open, the relay and the edge's limits are stalled",
            "No node reports role master for over a minute (a failover takes about 8 s). ZITADEL fails every "
            "cache call and answers from Postgres, the relay stops writing, ratelimit fails (the edge fails open).",
        ),
        rule(
            "RedisTwoMasters",
            f"count by (namespace) (redis_instance_info{master}) > 1",
            _REPLICATION_FOR,
            "critical",
            "{{ $value }} Redis nodes report role master",
            "A partitioned old master still takes writes beside the new one: what clients write there is lost "
            "when Sentinel demotes it.",
        ),
    ]
    if r.min_replicas_to_write:
        online = _selector(namespace=names.REDIS_NAMESPACE, slave_state="online")
        rules.append(
            rule(
                "RedisReplicasBelowMinimum",
                # Replicas the master counts for min-replicas-to-write: online, and acknowledged within the max lag.
                f"(count by ({by}) (redis_connected_slave_lag_seconds{online} <= {r.min_replicas_max_lag}) "
                f"or max by ({by}) (redis_instance_info{master} * 0)) < {r.min_replicas_to_write}",
                _MASTER_FOR,
                "critical",
                "The Redis master {{ $labels.instance }} has {{ $value }} good replicas: it refuses writes",
                f"Fewer than min-replicas-to-write ({r.min_replicas_to_write}) replicas within "
                f"{r.min_replicas_max_lag} s: the master answers NOREPLICAS to every write (the relay stalls, the "
                "edge fails open, ZITADEL's cache writes fail).",
            )
        )
    replicas = r.nodes - 1
    if replicas:
        rules.append(
            rule(
                "RedisReplicasMissing",
                f"max by ({by}) (redis_connected_slaves{node} and on ({by}) redis_instance_info{master}) < {replicas}",
                _REPLICAS_FOR,
                "warning",
                "The Redis master {{ $labels.instance }} has {{ $value }} of its " + str(replicas) + " replicas",
                f"Fewer than redis.nodes - 1 ({replicas}) replicas connected for 5 minutes: a failover has fewer "
                "candidates, and acknowledged writes fewer copies.",
            )
        )
    rules += [
        rule(
            "RedisReplicationLinkDown",
            f"max by ({by}) (redis_master_link_up{node}) == 0",
            _REPLICATION_FOR,
            "warning",
            "The Redis replica {{ $labels.instance }} has lost its master",
            "Its replication link has been down for over 2 minutes: it holds stale data and cannot be promoted safely.",
        ),
        rule(
            "RedisFailoversFrequent",
            f"sum by (namespace) (resets({REPLICA_ROLE_RECORD}{node}[1h])) > {alerts.failovers_per_hour}",
            _AT_ONCE,
            "warning",
            "{{ $value }} Redis failovers in the last hour",
            f"More than {alerts.failovers_per_hour} replicas were promoted within an hour: each costs about 8 s of "
            "writes and ZITADEL's cache.",
        ),
        rule(
            "RedisMemoryNearMaxmemory",
            f"redis_memory_used_bytes{node} / (redis_memory_max_bytes{node} > 0) * 100 > {alerts.memory_used_percent}",
            _MEMORY_FOR,
            "warning",
            "Redis {{ $labels.instance }} uses {{ $value | humanize }} % of maxmemory",
            f"Over {alerts.memory_used_percent} % of maxmemory for 5 minutes: the reserve of what Redis may evict "
            "(rate-limit counters, ZITADEL's cache objects) is nearly used up; next it evicts them, then refuses "
            "writes.",
        ),
    ]
    maxmemory = r.maxmemory_bytes
    if maxmemory is not None:
        rules.append(
            rule(
                "RedisMaxmemoryNotTheStacks",
                f"redis_memory_max_bytes{node} != {maxmemory}",
                _MAXMEMORY_FOR,
                "warning",
                "Redis {{ $labels.instance }} runs with maxmemory {{ $value | humanize1024 }}B, not the stack's",
                f"The stack sets {maxmemory} bytes ({r.maxmemory_percent} % of the memory limit): the stream caps "
                "derive from it, and 0 means no limit at all (the container is killed instead of evicting).",
            )
        )
    rules += [
        rule(
            "RedisEvictingKeys",
            f"increase(redis_evicted_keys_total{node}[10m]) > 0",
            _AT_ONCE,
            "warning",
            "Redis {{ $labels.instance }} evicted {{ $value | humanize }} keys in 10 minutes",
            "Under volatile-lru only keys with a TTL go: rate-limit counters (their counts restart), ZITADEL's cache "
            "objects, the relay's lease. The capacity model keeps them all in the reserve: any eviction means it is "
            "full.",
        ),
        rule(
            "RedisRefusingWritesOOM",
            f"increase(redis_errors_total{_selector(namespace=names.REDIS_NAMESPACE, err='OOM')}"
            f"[{_INCREASE_WINDOW}]) > 0",
            _AT_ONCE,
            "critical",
            "Redis {{ $labels.instance }} refuses writes: OOM",
            "Memory is full of what Redis may not evict (streams, dedup records, cache index keys): the relay "
            "stalls, ratelimit's INCRBY fails (the edge fails open), ZITADEL's cache writes fail and trip its breaker.",
        ),
        rule(
            "RedisClientsRefusedByAcl",
            f"increase(redis_errors_total{_selector(namespace=names.REDIS_NAMESPACE, err=('NOPERM', 'WRONGPASS'))}"
            f"[{_INCREASE_WINDOW}]) > 0",
            _AT_ONCE,
            "warning",
            "Redis {{ $labels.instance }} refused a client: {{ $labels.err }}",
            "A client sent a command its ACL user lacks (NOPERM) or a wrong password (WRONGPASS): for ZITADEL each "
            "refusal is a failed cache call, and more than 5 in a row open its breaker.",
        ),
    ]
    return rules


# --- the edge ------------------------------------------------------------------------------------------------------


def edge_rules(args: AlertArgs) -> list[AlertingRule]:
    edge = _selector(namespace=args.edge_namespace)
    per_second = _number(args.alerts.rate_limit_over_limit_per_second)
    rule = _rule_maker(args)
    if args.fail_closed:
        unavailable = rule(
            "EdgeRateLimitFailingClosed",
            f"sum by (namespace) (rate(envoy_cluster_ratelimit_error{edge}[{_RATE_WINDOW}])) > 0",
            _EDGE_FOR,
            "critical",
            "The edge refuses requests: the rate-limit service does not answer",
            "Envoy cannot reach envoy-ratelimit (edge.rateLimit.failClosed: true): every request it should check "
            "gets 500.",
        )
    else:
        unavailable = rule(
            "EdgeRateLimitFailingOpen",
            f"sum by (namespace) (rate(envoy_cluster_ratelimit_failure_mode_allowed{edge}[{_RATE_WINDOW}])) > 0",
            _EDGE_FOR,
            "critical",
            "The edge is failing open: requests pass without rate limits",
            "Envoy passes requests unchecked because envoy-ratelimit does not answer (a failover's few seconds "
            "never last 5 minutes): no limit holds, the credential limits included.",
        )
    return [
        unavailable,
        rule(
            "EdgeRateLimitErrors",
            f"sum by (namespace, err_type) (rate(ratelimit_service_should_rate_limit_error{edge}[{_RATE_WINDOW}])) > 0",
            _EDGE_FOR,
            "warning",
            "envoy-ratelimit fails its checks: {{ $labels.err_type }}",
            "redis_error: it cannot reach Redis DB 0 through Sentinel, or Redis refuses it; every failed check is "
            "a request the edge lets through unchecked (or refuses, with failClosed).",
        ),
        rule(
            "EdgeRateLimitOverLimit",
            f"sum by (namespace, domain, key1) (rate(ratelimit_service_rate_limit_over_limit{edge}[5m])) "
            f"> {per_second}",
            _EDGE_FOR,
            "warning",
            "Rate-limit rule {{ $labels.key1 }} refuses {{ $value | humanize }} requests/s",
            f"More than {per_second} over-limit answers per second for 5 minutes on one rule: an attack (the "
            "credential rule: password guessing) or a limit too tight for real users behind one address.",
        ),
    ]


# --- building blocks -----------------------------------------------------------------------------------------------


def _rule_maker(args: AlertArgs) -> _RuleMaker:
    return _RuleMaker(args.runbook_base)


class _RuleMaker:
    def __init__(self, runbook: str) -> None:
        self.runbook = runbook

    def __call__(
        self, alert: str, expr: str, hold: str, severity: Severity, summary: str, description: str
    ) -> AlertingRule:
        return {
            "alert": alert,
            "expr": expr,
            "for": hold,
            "labels": {"severity": severity},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": f"{self.runbook}#{runbook_anchor(alert)}",
            },
        }


def _selector(**matchers: str | Sequence[str]) -> str:
    """A PromQL label selector: a string is an equality, a sequence of strings a regex matching exactly those."""
    parts = []
    for label, value in matchers.items():
        if isinstance(value, str):
            parts.append(f"{label}={_quoted(value)}")
        else:
            parts.append(f"{label}=~{_quoted('|'.join(re.escape(v) for v in value))}")
    return "{" + ", ".join(parts) + "}"


def _quoted(value: str) -> str:
    """A PromQL string literal (its escapes are Go's, which JSON's ASCII form follows)."""
    return json.dumps(value)


def _number(value: float) -> str:
    """A threshold as PromQL reads it: ``8`` rather than ``8.0``."""
    return str(int(value)) if float(value).is_integer() else repr(value)
