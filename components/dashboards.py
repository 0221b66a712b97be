"""Grafana dashboards of the tier, as plain functions returning Grafana's dashboard JSON.

Three dashboards: the event relay and its streams, Redis and its Sentinel failovers, the edge's rate limits. Every
query names metrics the tier's exporters emit: ``relay_*`` (``relay/metrics.py``, ``relay/consumer.py``),
``redis_*`` (redis_exporter, the Redis pods' sidecar, with its stream checks on the events DB), ``ratelimit_*``
(envoyproxy/ratelimit through the statsd mapping Envoy Gateway v1.9.0 gives it,
``internal/infrastructure/kubernetes/ratelimit/statsd_conf.yaml``) and ``envoy_*`` (Envoy's ``/stats/prometheus``).
The ConfigMap that provisions them is ``components/observability.py``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

#: Grafana's dashboard JSON model version these documents follow (Grafana 10/11).
SCHEMA_VERSION: Final = 39
#: The data source variable every panel queries: the operator picks the Prometheus in Grafana.
_DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
#: Metric name prefixes of the tier's exporters: how a query's metric names are told from PromQL's own words.
METRIC_PREFIXES: Final = ("relay_", "redis_", "ratelimit_", "envoy_")
_METRIC: Final = re.compile(r"\b(?:relay|redis|ratelimit|envoy)_[A-Za-z0-9_]*[A-Za-z0-9]")
#: What names labels, never a metric: strings, label matchers, and the label lists of grouping and vector matching.
_NOT_METRICS: Final = (
    re.compile(r'"(?:[^"\\]|\\.)*"'),
    re.compile(r"\{[^}]*\}"),
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
)
_WIDTH: Final = 12
_HEIGHT: Final = 8


@dataclass(frozen=True)
class Query:
    expr: str
    #: Grafana's legend template (``{{stream}}``).
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    #: Grafana's unit (``s``, ``bytes``, ``percentunit``, ``short``, ``ops``).
    unit: str = "short"


def _panel_json(panel: Panel, index: int) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(_DATASOURCE),
        "gridPos": {"x": (index % 2) * _WIDTH, "y": (index // 2) * _HEIGHT, "w": _WIDTH, "h": _HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": dict(_DATASOURCE), "expr": q.expr, "legendFormat": q.legend}
            for n, q in enumerate(panel.queries)
        ],
    }


def dashboard(uid: str, title: str, description: str, panels: Sequence[Panel]) -> dict[str, Any]:
    """A dashboard: one Prometheus data source variable, the panels two to a row."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["blinkchamber", "identity"],
        "editable": False,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": [_panel_json(panel, index) for index, panel in enumerate(panels)],
    }


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def relay_and_streams() -> dict[str, Any]:
    """The bridge (freshness, throughput, errors and stalls, dead letters) and the streams it writes (length, the
    consumer groups' backlog and lag, idle consumers)."""
    panels = [
        Panel(
            "Freshness",
            "Now minus the creation date of the newest event written (the goal: clock skew plus a poll interval).",
            (_q("max(relay_freshness_seconds)", "freshness"),),
            "s",
        ),
        Panel(
            "Bridges holding the lease",
            "1 in steady state: 0 means nobody writes, 2 for longer than a lease means two writers (harmless: dedup).",
            (_q("sum(relay_leader)", "leaders"),),
        ),
        Panel(
            "Events read and written",
            "Events per second from ZITADEL's Event API, and entries written per stream.",
            (
                _q("sum(rate(relay_events_read_total[5m]))", "read"),
                _q("sum by (stream) (rate(relay_events_written_total[5m]))", "written {{stream}}"),
            ),
            "ops",
        ),
        Panel(
            "Duplicates and look-back repairs",
            "Events already in Redis (re-reads), and events only the look-back found (clockSkew too small).",
            (
                _q("sum(rate(relay_duplicates_skipped_total[5m]))", "duplicates"),
                _q("sum(increase(relay_look_back_repairs_total[1h]))", "repairs per hour"),
            ),
        ),
        Panel(
            "Failed polls",
            "Per kind: event_api, event_api_answer, redis, network, not_acknowledged, dense_window.",
            (_q("sum by (kind) (rate(relay_errors_total[5m]))", "{{kind}}"),),
            "ops",
        ),
        Panel(
            "Stalls and refused writes",
            "A window too dense to page (cursor held), a write Redis refused (oom, readonly, noreplicas, misconf).",
            (
                _q("max(relay_dense_window_stalled)", "dense window"),
                _q("max(relay_write_stalled)", "write stalled"),
                _q("sum by (reason) (increase(relay_write_refused_total[1h]))", "refused {{reason}} per hour"),
            ),
        ),
        Panel(
            "Poll duration",
            "One poll: read and write until caught up.",
            (
                _q("histogram_quantile(0.5, sum by (le) (rate(relay_poll_duration_seconds_bucket[5m])))", "p50"),
                _q("histogram_quantile(0.99, sum by (le) (rate(relay_poll_duration_seconds_bucket[5m])))", "p99"),
            ),
            "s",
        ),
        Panel(
            "Dead letters",
            "Per hour: the bridge's (unparseable, unclassifiable, too_large) and the consumer groups' (max_retries, "
            "max_deliveries, trimmed; from the workers' own /metrics when Prometheus scrapes them).",
            (
                _q("sum by (reason) (increase(relay_dead_lettered_total[1h]))", "bridge {{reason}}"),
                _q(
                    "sum by (group, reason) (increase(relay_consumer_dead_lettered_total[1h]))",
                    "{{group}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Trimmed entries",
            "Per hour: what the bridge's trim dropped (age, length), and what a group lost to it before reading.",
            (
                _q("sum by (stream, reason) (increase(relay_trimmed_entries_total[1h]))", "{{stream}} {{reason}}"),
                _q(
                    "sum by (group, stream) (increase(relay_consumer_trimmed_entries_total[1h]))",
                    "{{group}} lost on {{stream}}",
                ),
            ),
        ),
        Panel(
            "Stream length",
            "Entries per stream (capped at events.performance.maxStreamLength, the dead letter at its own cap).",
            (_q("max by (stream) (redis_stream_length)", "{{stream}}"),),
        ),
        Panel(
            "Pending per consumer group",
            "Entries delivered to a group and not yet acknowledged.",
            (_q("max by (stream, group) (redis_stream_group_messages_pending)", "{{stream}} {{group}}"),),
        ),
        Panel(
            "Consumer group lag",
            "How far behind the newest entry a group's last delivered entry is, in time (entry IDs are milliseconds).",
            (
                _q(
                    "(max by (stream) (redis_stream_last_generated_id) - on (stream) group_right "
                    "max by (stream, group) (redis_stream_group_last_delivered_id)) / 1000",
                    "{{stream}} {{group}}",
                ),
            ),
            "s",
        ),
        Panel(
            "Consumers and their idle time",
            "Consumers per group, and how long each has been idle (a stopped worker keeps growing).",
            (
                _q("max by (stream, group) (redis_stream_group_consumers)", "{{stream}} {{group}} consumers"),
                _q(
                    "max by (stream, group, consumer) (redis_stream_group_consumer_idle_seconds)",
                    "{{group}}/{{consumer}} idle s",
                ),
            ),
        ),
    ]
    return dashboard(
        "bc-relay-streams",
        "Identity tier: event relay and streams",
        "ZITADEL's events into Redis DB 1 (README: Events) and the consumer groups reading them.",
        panels,
    )


def redis_and_sentinel() -> dict[str, Any]:
    """The Redis nodes (role, memory against maxmemory, evictions, refused writes, replication) and Sentinel's
    failovers, read off the nodes' roles."""
    panels = [
        Panel(
            "Nodes up and masters",
            "Each node's exporter reaching its Redis, and how many nodes say they are master (1, or a split).",
            (
                _q("min by (pod) (redis_up)", "{{pod}} up"),
                _q('count(redis_instance_info{role="master"})', "masters"),
            ),
        ),
        Panel(
            "Failovers in the last hour",
            "Nodes that were master during the last hour, minus one: the master changes Sentinel made.",
            (_q('count(count by (pod) (max_over_time(redis_instance_info{role="master"}[1h]))) - 1', "failovers"),),
        ),
        Panel(
            "Replication",
            "Replicas connected to the master (min-replicas-to-write refuses writes below it), each replica's link.",
            (
                _q("max(redis_connected_slaves)", "replicas of the master"),
                _q("min by (pod) (redis_master_link_up)", "{{pod}} link up"),
            ),
        ),
        Panel(
            "Replica lag",
            "Seconds since each replica last acknowledged (min-replicas-max-lag counts only those below it).",
            (_q("max by (slave_ip) (redis_connected_slave_lag_seconds)", "{{slave_ip}}"),),
            "s",
        ),
        Panel(
            "Memory against maxmemory",
            "Used memory over maxmemory: at 1, volatile-lru evicts what has a TTL, then writes are refused.",
            (_q("max by (pod) (redis_memory_used_bytes / redis_memory_max_bytes)", "{{pod}}"),),
            "percentunit",
        ),
        Panel(
            "Memory",
            "Used memory and maxmemory per node.",
            (
                _q("max by (pod) (redis_memory_used_bytes)", "{{pod}} used"),
                _q("max by (pod) (redis_memory_max_bytes)", "{{pod}} maxmemory"),
            ),
            "bytes",
        ),
        Panel(
            "Evicted keys",
            "Per hour: rate-limit counters and ZITADEL's cache objects (the only keys with a TTL).",
            (_q("sum by (pod) (increase(redis_evicted_keys_total[1h]))", "{{pod}}"),),
        ),
        Panel(
            "Refused writes",
            "Per hour, by error: OOM (nothing evictable left), READONLY, NOREPLICAS (min-replicas-to-write), MISCONF.",
            (
                _q(
                    'sum by (pod, err) (increase(redis_errors_total{err=~"OOM|READONLY|NOREPLICAS|MISCONF"}[1h]))',
                    "{{pod}} {{err}}",
                ),
            ),
        ),
        Panel(
            "Keys per DB",
            "DB 0 the edge's counters, DB 1 the events, ZITADEL's cache block after it.",
            (_q("max by (db) (redis_db_keys)", "{{db}}"),),
        ),
        Panel(
            "Clients and commands",
            "Connected clients and commands per second per node; refused connections per hour.",
            (
                _q("max by (pod) (redis_connected_clients)", "{{pod}} clients"),
                _q("sum by (pod) (rate(redis_commands_processed_total[5m]))", "{{pod}} commands/s"),
                _q("sum by (pod) (increase(redis_rejected_connections_total[1h]))", "{{pod}} refused/h"),
            ),
        ),
        Panel(
            "Persistence",
            "The AOF's last write and rewrite (1: ok): a failing disk refuses writes (MISCONF).",
            (
                _q("min by (pod) (redis_aof_last_write_status)", "{{pod}} write"),
                _q("min by (pod) (redis_aof_last_bgrewrite_status)", "{{pod}} rewrite"),
            ),
        ),
    ]
    return dashboard(
        "bc-redis-sentinel",
        "Identity tier: Redis and Sentinel",
        "The one Redis set of three workloads (README: Capacity) and its failovers.",
        panels,
    )


def edge_limits() -> dict[str, Any]:
    """The edge's rate limits: decisions per rule at the ratelimit service, and at the proxies the outcome, failing
    open included."""
    panels = [
        Panel(
            "Checks per rule",
            "Requests counted per descriptor key (the rule's position, as ./bin/plan numbers them).",
            (_q("sum by (key1) (rate(ratelimit_service_rate_limit_total_hits[5m]))", "{{key1}}"),),
            "ops",
        ),
        Panel(
            "Over limit per rule",
            "Requests refused (429) per rule; a spike on one rule is a flood or a limit set too low.",
            (_q("sum by (key1) (rate(ratelimit_service_rate_limit_over_limit[5m]))", "{{key1}}"),),
            "ops",
        ),
        Panel(
            "Near limit and shadow mode",
            "Requests above 80 % of a limit, and those a shadow-mode rule would have refused.",
            (
                _q("sum by (key1) (rate(ratelimit_service_rate_limit_near_limit[5m]))", "near {{key1}}"),
                _q("sum by (key1) (rate(ratelimit_service_rate_limit_shadow_mode[5m]))", "shadow {{key1}}"),
            ),
            "ops",
        ),
        Panel(
            "Within limit",
            "Requests that passed, per rule.",
            (_q("sum by (key1) (rate(ratelimit_service_rate_limit_within_limit[5m]))", "{{key1}}"),),
            "ops",
        ),
        Panel(
            "Rate-limit service errors",
            "Decisions the service could not make, by error type (redis_error: Redis unreachable).",
            (_q("sum by (err_type) (rate(ratelimit_service_should_rate_limit_error[5m]))", "{{err_type}}"),),
            "ops",
        ),
        Panel(
            "Rate-limit service answers",
            "Its gRPC calls per second and their p99 (the proxies wait edge.rateLimit.timeout at most).",
            (
                _q("sum(rate(ratelimit_service_total_requests[5m]))", "calls"),
                _q(
                    "histogram_quantile(0.99, sum by (le) (rate(ratelimit_service_response_time_seconds_bucket[5m])))",
                    "p99 s",
                ),
            ),
        ),
        Panel(
            "Failing open",
            "At the proxies: checks that failed and let the request through (failClosed off): limits are off.",
            (
                _q("sum(rate(envoy_cluster_ratelimit_failure_mode_allowed[5m]))", "let through"),
                _q("sum(rate(envoy_cluster_ratelimit_error[5m]))", "errors"),
            ),
            "ops",
        ),
        Panel(
            "Proxy decisions",
            "At the proxies: requests the service allowed and refused.",
            (
                _q("sum(rate(envoy_cluster_ratelimit_ok[5m]))", "ok"),
                _q("sum(rate(envoy_cluster_ratelimit_over_limit[5m]))", "over limit"),
            ),
            "ops",
        ),
        Panel(
            "Requests at the edge",
            "Downstream requests per second by response class (429 among the 4xx).",
            (
                _q(
                    "sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx[5m]))",
                    "{{envoy_response_code_class}}xx",
                ),
            ),
            "ops",
        ),
        Panel(
            "Rule configuration loads",
            "Per hour: the service's rule loads from the controller, and the failed ones.",
            (
                _q("sum(increase(ratelimit_service_config_load_success[1h]))", "loaded"),
                _q("sum(increase(ratelimit_service_config_load_error[1h]))", "failed"),
            ),
        ),
    ]
    return dashboard(
        "bc-edge-limits",
        "Identity tier: edge rate limits",
        "Envoy Gateway's global rate limits on ZITADEL's routes (README: Rate limits at the edge).",
        panels,
    )


#: Every dashboard, by the file name the ConfigMap gives it.
DASHBOARDS: Final[Mapping[str, Callable[[], dict[str, Any]]]] = {
    "identity-relay-streams.json": relay_and_streams,
    "identity-redis-sentinel.json": redis_and_sentinel,
    "identity-edge-limits.json": edge_limits,
}


def queries(document: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads: words with the tier's prefixes (PromQL's functions and keywords have none of
    them) outside label matchers and label lists."""
    for pattern in _NOT_METRICS:
        expr = pattern.sub(" ", expr)
    return set(_METRIC.findall(expr))
