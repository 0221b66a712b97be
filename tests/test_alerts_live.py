"""The alert rules and the dashboards on a real Prometheus server (``testbed/prometheus.py``) scraping the test bed:
Debian's redis_exporter logged in as the ``exporter`` user with the chart's own flags, one per Redis node, a real
relay (``python -m relay run``) against the bed's Sentinel group and the Event API stand-in, and a worker's
``/metrics`` (``relay.consumer``). One scene per class of failure makes the program's alert fire:

- consumers stopped while events flow: the consumer-group lag alert;
- the master killed (SIGKILL): the failover counted, once, by the failover alert and the dashboard's panel;
- memory filled with what Redis may not evict: the memory alert, and the refused writes (Redis's OOM errors and the
  relay's stall).

The rules are ``alert_groups(wiring.alert_args(cfg))``, written as a rule file. Their ``for`` is minutes long (time
for a failover or a lease to settle) and is shortened to ``SHORT_FOR`` here; every expression is the program's own,
unchanged (``shortened`` checks it). Two thresholds are stack settings that a scene sets lower through the stack
config, as an operator would: the lag (seconds of stream time; the stacks' 300 s would take five minutes) and the
failovers per hour (one failover stays under the stacks' 2).
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, start_http_server

from components import alerts, dashboards
from components.event_relay import relay_document
from components.redis import redis_values
from components.wiring import alert_args, event_relay_args, redis_args
from relay.consumer import Consumer, ConsumerMetrics, StreamEntry
from relay.settings import Settings, Streams
from stacks import names
from stacks.config import StackConfig
from stacks.defaults import deep_merge
from stacks.loader import load
from stacks.stackfile import read_stack_config
from testbed import exporter
from testbed import prometheus as prom
from testbed.exporter import Exporter
from testbed.loopback import HOST, free_port
from testbed.prometheus import PrometheusServer, ScrapeJob, Target
from testbed.redisbed import RedisBed, binaries_available, running_bed, wait_until
from testbed.required import require
from testbed.zitadel_api import EventSpec, StandInEventApi, local_relay_document
from tests.conftest import PROJECT_DIR
from tests.test_capacity_redis import MAXMEMORY, small_stack
from tests.test_relay_bridge import relay_process, stop_relay_process

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")
require(exporter.available(), exporter.BINARY, "apt-get install prometheus-redis-exporter")
require(prom.available(), "prometheus and promtool", "apt-get install prometheus")

#: Every alerting rule's ``for`` here (the program's are 1 to 15 minutes): two evaluations at the 1 s interval.
SHORT_FOR = "2s"
#: The lag scene's ``observability.alerts.consumerLagSeconds``: a group this far behind its stream's newest entry.
LAG_SECONDS = 3
#: The failover scene's ``observability.alerts.failoversPerHour``: any failover at all.
FAILOVERS_PER_HOUR = 0
#: The consumer group of the product's workers in these scenes.
GROUP = "jobs"
#: How long a scene's alert may take: the failure's own time (a failover: down-after 5 s plus the election), the
#: threshold, two scrapes and ``SHORT_FOR``, on a shared two-core machine.
ALERT_TIMEOUT = 60.0

#: Metrics the dashboards read from components that cannot run here, and where each comes from. envoyproxy/ratelimit
#: (a Go binary; ``testbed/ratelimit.py`` re-implements its Redis scheme only) names its stats in
#: ``src/stats/manager_impl.go``, ``src/service/ratelimit.go`` and ``src/server/server_impl.go``; Envoy Gateway v1.9.0
#: maps them to these names (``internal/infrastructure/kubernetes/ratelimit/statsd_conf.yaml``). Envoy's are its own
#: stats through ``/stats/prometheus``: the rate-limit filter's ``cluster.<name>.ratelimit.*``
#: (``source/extensions/filters/common/ratelimit/stat_names.h``) and the HTTP connection manager's
#: ``downstream_rq_<n>xx`` (tag ``envoy_response_code_class``). ZITADEL (no binary here) has none in the dashboards.
NOT_RUNNABLE_HERE: Mapping[str, str] = {
    "ratelimit_service_rate_limit_total_hits": "envoyproxy/ratelimit rate_limit.<domain>.<key>.total_hits",
    "ratelimit_service_rate_limit_over_limit": "envoyproxy/ratelimit rate_limit.<domain>.<key>.over_limit",
    "ratelimit_service_rate_limit_near_limit": "envoyproxy/ratelimit rate_limit.<domain>.<key>.near_limit",
    "ratelimit_service_rate_limit_within_limit": "envoyproxy/ratelimit rate_limit.<domain>.<key>.within_limit",
    "ratelimit_service_rate_limit_shadow_mode": "envoyproxy/ratelimit rate_limit.<domain>.<key>.shadow_mode",
    "ratelimit_service_should_rate_limit_error": "envoyproxy/ratelimit call.should_rate_limit.<err_type>",
    "ratelimit_service_total_requests": "envoyproxy/ratelimit ratelimit_server.<method>.total_requests",
    "ratelimit_service_response_time_seconds_bucket": "envoyproxy/ratelimit ratelimit_server.<method>.response_time",
    "ratelimit_service_config_load_success": "envoyproxy/ratelimit config_load_success",
    "ratelimit_service_config_load_error": "envoyproxy/ratelimit config_load_error",
    "envoy_cluster_ratelimit_ok": "Envoy cluster.<name>.ratelimit.ok",
    "envoy_cluster_ratelimit_over_limit": "Envoy cluster.<name>.ratelimit.over_limit",
    "envoy_cluster_ratelimit_error": "Envoy cluster.<name>.ratelimit.error",
    "envoy_cluster_ratelimit_failure_mode_allowed": "Envoy cluster.<name>.ratelimit.failure_mode_allowed",
    "envoy_http_downstream_rq_xx": "Envoy http.<prefix>.downstream_rq_<n>xx",
}

# One push per priority (high, normal, low: an unclassified type) per tick of the event flow.
FLOW = (
    ("user.human.password.check.failed", "user"),
    ("user.human.added", "user"),
    ("instance.added", "instance"),
)


# --- stacks and rules ----------------------------------------------------------------------------------------------


def stack_with(stack: str, overrides: Mapping[str, Any]) -> StackConfig:
    """The stack file's config with ``overrides`` merged into its sections."""
    config, secret_keys = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    for section, value in overrides.items():
        written = config.get(section) or {}
        config[section] = deep_merge(json.loads(written) if isinstance(written, str) else written, value)
    return load(stack, config, secret_keys)


def shortened(groups: Sequence[alerts.RuleGroup]) -> list[dict[str, Any]]:
    """The program's groups with every alerting rule's ``for`` set to ``SHORT_FOR``; nothing else changes."""
    copied: list[dict[str, Any]] = copy.deepcopy([dict(g) for g in groups])
    for group in copied:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = SHORT_FOR
    for original, short in zip(groups, copied, strict=True):
        for a, b in zip(original["rules"], short["rules"], strict=True):
            assert {k: v for k, v in a.items() if k != "for"} == {k: v for k, v in b.items() if k != "for"}
    return copied


# --- a scene: a Sentinel group, its exporters, optionally a relay and a worker, and Prometheus --------------------


@dataclass
class Scene:
    cfg: StackConfig
    bed: RedisBed
    server: PrometheusServer
    tmp: Path
    #: What stops the scene's parts, last started first.
    stack: contextlib.ExitStack
    api: StandInEventApi | None = None

    @property
    def events_db(self) -> int:
        return self.cfg.events.db

    def alert(self, name: str, timeout: float = ALERT_TIMEOUT, **labels: str) -> list[dict[str, Any]]:
        """The firing alerts named ``name`` (with ``labels``), waited for."""
        return self.server.wait_alert(name, timeout, labels=labels)

    def active(self, name: str) -> list[dict[str, Any]]:
        """The alerts named ``name``, pending or firing, now."""
        return [a for a in self.server.alerts() if a["labels"]["alertname"] == name]


def redis_job(cfg: StackConfig, ports: Sequence[int]) -> ScrapeJob:
    """The chart's metrics Service as the Prometheus Operator labels its targets: one pod per node."""
    return ScrapeJob(
        f"{names.REDIS_FULLNAME}-metrics",
        tuple(
            Target(f"{HOST}:{port}", {"namespace": names.REDIS_NAMESPACE, "pod": f"{names.REDIS_NODE_STATEFULSET}-{i}"})
            for i, port in enumerate(ports)
        ),
    )


def exporter_flags(cfg: StackConfig, password_file: Path) -> dict[str, str]:
    """The chart's ``metrics.extraArgs`` for the stack, the password file the bed's."""
    flags: dict[str, str] = dict(redis_values(redis_args(cfg))["metrics"]["extraArgs"])
    return {**flags, "redis.password-file": str(password_file)}


def relay_config(scene: Scene, metrics_port: int, api: StandInEventApi, token: str) -> Path:
    """relay.json of the stack pointed at the bed and the stand-in, as its own Redis user, with short timings."""
    token_file, password_file = scene.tmp / "zitadel-pat", scene.tmp / "relay-redis-password"
    token_file.write_text(token)
    password_file.write_text(scene.bed.user_passwords[names.REDIS_RELAY_USER])
    doc = local_relay_document(
        relay_document(event_relay_args(scene.cfg)),
        api=api,
        instance_host=scene.cfg.zitadel.external_domain,
        sentinel_ports=[s.port for s in scene.bed.sentinels],
        token_file=str(token_file),
        username=names.REDIS_RELAY_USER,
        password_file=str(password_file),
        metrics_port=metrics_port,
    )
    doc["source"].update(pollInterval=0.1, clockSkew=0.3)
    doc["lease"].update(ttl=2.0, renewEvery=0.5)
    doc["publishing"].update(retryBackoff=0.05, maxRetryBackoff=0.5)
    Settings.from_document(doc)  # the relay would refuse it otherwise
    config = scene.tmp / "relay.json"
    config.write_text(json.dumps(doc))
    return config


@contextlib.contextmanager
def scene(cfg: StackConfig, tmp: Path, *, relay: bool, worker_port: int | None = None) -> Iterator[Scene]:
    """Prometheus first (its target discovery takes 5 s; it overlaps the bed's start), then the bed, an exporter per
    node, and the relay; every target up before the scene is handed over. Everything stops afterwards."""
    exporter_ports = [free_port() for _ in range(cfg.redis.nodes)]
    jobs = [redis_job(cfg, exporter_ports)]
    relay_port = free_port()
    if relay:
        labels = {"namespace": cfg.zitadel.namespace, "pod": names.RELAY_NAME}
        jobs.append(ScrapeJob(names.RELAY_NAME, (Target(f"{HOST}:{relay_port}", labels),)))
    if worker_port is not None:
        jobs.append(ScrapeJob("event-consumer", (Target(f"{HOST}:{worker_port}"),)))
    rules = prom.write_rules(tmp / "rules.yml", shortened(alerts.alert_groups(alert_args(cfg))))
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(PrometheusServer(tmp / "prometheus", jobs, [rules]))
        bed = stack.enter_context(running_bed(cfg.redis, tmp / "bed"))
        s = Scene(cfg, bed, server, tmp, stack)
        password_file = tmp / "redis-exporter.json"
        addresses = [f"redis://{HOST}:{node.port}" for node in bed.nodes]
        # The exporter's password file: its password per address, as the Vault agent renders it.
        password_file.write_text(json.dumps(dict.fromkeys(addresses, bed.user_passwords[names.REDIS_EXPORTER_USER])))
        password_file.chmod(0o600)
        for address, port in zip(addresses, exporter_ports, strict=True):
            stack.enter_context(Exporter(address, exporter_flags(cfg, password_file), port))
        if relay:
            token = secrets.token_urlsafe(32)
            s.api = stack.enter_context(StandInEventApi(token=token, instance_host=cfg.zitadel.external_domain))
            process = relay_process(relay_config(s, relay_port, s.api, token))
            stack.callback(stop_relay_process, process)
        yield s


class Flow(threading.Thread):
    """Events into the stand-in, one of each priority every ``tick`` seconds, until stopped (at most ``limit`` s)."""

    def __init__(self, api: StandInEventApi, tick: float = 0.1, limit: float = 300) -> None:
        super().__init__(daemon=True)
        self.api, self.tick, self.limit = api, tick, limit
        self._stop_event = threading.Event()
        self.pushed = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            for event_type, aggregate in FLOW:
                self.api.push(EventSpec(event_type, aggregate, f"{aggregate}-{self.pushed}", {"n": self.pushed}))
                self.pushed += 1
            self._stop_event.wait(self.tick)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class Workers:
    """The product's workers: ``relay.consumer`` in one group, as the ``event-consumer`` user, each turn
    acknowledging what it got; their counters served on ``/metrics`` as a worker serves them."""

    def __init__(self, scene: Scene, port: int, count: int = 2) -> None:
        self.scene, self.port, self.count = scene, port, count
        self.registry = CollectorRegistry()
        self.metrics = ConsumerMetrics(self.registry)
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server, _ = start_http_server(port, addr=HOST, registry=self.registry)

    def consumer(self, name: str) -> Consumer:
        client = self.scene.bed.user_client(names.REDIS_CONSUMER_USER, db=self.scene.events_db)
        s = self.scene.cfg.events.streams
        return Consumer(
            client,
            group=GROUP,
            name=name,
            streams=Streams(s.high, s.normal, s.low, s.dead_letter),
            max_deliveries=self.scene.cfg.events.publishing.max_retries,
            dead_letter_max_length=self.scene.cfg.stream_caps.dead_letter_max_length,
            block_ms=100,
            metrics=self.metrics,
        )

    def start(self) -> Workers:
        first = self.consumer("worker-0")
        first.ensure_groups()
        self._stop_event.clear()
        for index in range(self.count):
            c = first if index == 0 else self.consumer(f"worker-{index}")
            thread = threading.Thread(target=c.run, args=(self._handle, self._stop_event), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @staticmethod
    def _handle(entry: StreamEntry) -> None:
        """The job itself: done at once."""

    def stop(self) -> None:
        self._stop_event.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def close(self) -> None:
        self.stop()
        self._server.shutdown()
        self._server.server_close()


# --- the events scene: consumers, lag, and the dashboards' metrics -------------------------------------------------


@dataclass
class EventsScene:
    scene: Scene
    flow: Flow
    workers: Workers


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventsScene]:
    """prod with its three nodes and sentinels, the relay writing a steady flow of events and two workers reading
    them: a healthy tier."""
    cfg = stack_with("prod", {"observability": {"alerts": {"consumerLagSeconds": LAG_SECONDS}}})
    assert cfg.observability.alerts.consumer_lag_seconds == LAG_SECONDS
    tmp = tmp_path_factory.mktemp("events-scene")
    worker_port = free_port()
    with scene(cfg, tmp, relay=True, worker_port=worker_port) as s:
        assert s.api is not None
        workers = Workers(s, worker_port)
        s.stack.callback(workers.close)
        flow = Flow(s.api)
        flow.start()
        s.stack.callback(flow.stop)
        workers.start()
        s.server.wait_targets_up(timeout=30)
        yield EventsScene(s, flow, workers)


def test_consumers_stopped_while_events_flow_fire_the_lag_alert(events: EventsScene) -> None:
    s = events.scene
    streams = s.cfg.events.streams
    priority = {streams.high, streams.normal, streams.low}
    # Healthy first: the group reads every priority stream as the events come, and the alert is quiet.
    s.server.wait_query(
        "the workers' group delivering on every priority stream",
        f'redis_stream_group_last_delivered_id{{group="{GROUP}"}} > 0',
        lambda result: {r.labels["stream"] for r in result} == priority,
        ALERT_TIMEOUT,
    )
    assert s.active("EventConsumerGroupBehind") == []
    events.workers.stop()
    stopped_at = time.monotonic()
    try:
        fired = s.alert("EventConsumerGroupBehind", group=GROUP, stream=streams.high)
        took = time.monotonic() - stopped_at
        for stream in priority:
            s.alert("EventConsumerGroupBehind", group=GROUP, stream=stream)
    finally:
        events.workers.start()
    assert fired[0]["labels"]["namespace"] == names.REDIS_NAMESPACE
    # Its value is the lag in seconds of stream time: past the threshold, and no more than the time since the stop
    # (plus a scrape) — it measures the stop, not something older.
    assert LAG_SECONDS < float(fired[0]["value"]) < took + 2
    assert took >= LAG_SECONDS


@pytest.mark.parametrize(
    ("expr", "metrics"),
    [
        (
            'sum by (stream) (rate(relay_events_written_total{stream=~"$stream"}[$__rate_interval]))',
            {"relay_events_written_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(relay_poll_duration_seconds_bucket[5m])))",
            {"relay_poll_duration_seconds_bucket"},
        ),
        (
            "redis_memory_used_bytes / on (instance) group_left (role) redis_memory_max_bytes > 0.9e2",
            {"redis_memory_used_bytes", "redis_memory_max_bytes"},
        ),
        (
            'changes(redis_instance_info{role="master"}[1h:10s]) > bool 1 or {__name__="up"} offset 5m',
            {"redis_instance_info", "up"},
        ),
        ("absent(relay_leader) unless count without (pod) (redis_up == 1)", {"relay_leader", "redis_up"}),
        ("time() - 3600", set()),
    ],
)
def test_the_metric_names_of_an_expression(expr: str, metrics: set[str]) -> None:
    """What the dashboards check reads out of a query: metric names only, never functions, keywords, label names,
    strings, numbers, durations or Grafana variables."""
    assert prom.metric_names_in(expr) == metrics


def test_every_dashboard_query_names_a_metric_the_live_scrape_has(events: EventsScene) -> None:
    s = events.scene
    # The consumers have registered in the group (XINFO CONSUMERS) and the relay has written: every stream gauge the
    # dashboards read exists.
    s.server.wait_query(
        "the group's consumers on the priority streams",
        f'redis_stream_group_consumer_idle_seconds{{group="{GROUP}"}}',
        lambda result: len(result) > 0,
        ALERT_TIMEOUT,
    )
    scraped = s.server.scraped_metric_names()
    named: set[str] = set()
    for file_name, build in dashboards.DASHBOARDS.items():
        document = json.loads(json.dumps(build()))  # valid JSON, as the ConfigMap carries it
        for expr in dashboards.queries(document):
            s.server.query(expr)  # parses and evaluates on the real server
            found = prom.metric_names_in(expr)
            assert dashboards.metric_names(expr) <= found, expr
            assert found, f"{file_name}: {expr} names no metric"
            named |= found
            missing = {name for name in found - scraped if name not in NOT_RUNNABLE_HERE}
            assert missing == set(), f"{file_name}: {expr}"
    # Every exception is a metric the dashboards read and nothing here emits: none is stale or hides a real gap.
    assert set(NOT_RUNNABLE_HERE) <= named
    assert set(NOT_RUNNABLE_HERE) & scraped == set()


# --- the failover scene --------------------------------------------------------------------------------------------


def test_a_killed_master_is_counted_as_one_failover(tmp_path: Path) -> None:
    cfg = stack_with("prod", {"observability": {"alerts": {"failoversPerHour": FAILOVERS_PER_HOUR}}})
    assert cfg.observability.alerts.failovers_per_hour == FAILOVERS_PER_HOUR
    record = alerts.REPLICA_ROLE_RECORD
    with scene(cfg, tmp_path, relay=False) as s:
        s.server.wait_targets_up(timeout=30)
        # Both replicas recorded as replicas, more than once: the promotion is then a drop Prometheus has seen.
        for _ in range(2):
            s.server.wait_query(
                "two nodes recorded as replicas",
                f'{record}{{namespace="{names.REDIS_NAMESPACE}"}} == 1',
                lambda result: len(result) == cfg.redis.nodes - 1,
                ALERT_TIMEOUT,
            )
            time.sleep(s.server.interval_s)
        assert s.active("RedisFailoversFrequent") == []
        old = s.bed.master_port()
        s.bed.node(old).kill()
        wait_until("the sentinels to name a new master", lambda: s.bed.master_port() != old, ALERT_TIMEOUT, 0.2)
        fired = s.alert("RedisFailoversFrequent", namespace=names.REDIS_NAMESPACE)
        # One failover, counted once: the alert's value is the count.
        assert float(fired[0]["value"]) == 1
        panel = next(
            p
            for p in dashboards.redis_and_sentinel()["panels"]
            if p["title"] == "Failovers in the last hour"  # the dashboard shows the same count
        )
        shown = s.server.wait_query(
            "the dashboard's failover count", panel["targets"][0]["expr"], lambda r: len(r) == 1, 10
        )
        assert shown[0].value == 1


# --- the memory scene ----------------------------------------------------------------------------------------------


#: What memory is filled past maxmemory with: enough that evicting every key with a TTL (the relay's lease and dedup
#: records, counters) never makes room again.
OVERFILL = 2 * 2**20


def fill(operator: redis.Redis, maxmemory: int) -> None:
    """Memory full of what Redis may not evict: ZITADEL's cache index keys carry no TTL. Filled ``OVERFILL`` past
    maxmemory while the limit is that much higher, then the limit back to the stack's (filled only up to maxmemory,
    evictions and freed client buffers would let a write through now and then). Bounded: twice maxmemory."""
    operator.config_set("maxmemory", maxmemory + OVERFILL)
    try:
        for batch in range(2 * maxmemory // 100_000):
            pipe = operator.pipeline(transaction=False)
            for index in range(100):
                pipe.set(f"instance:id:{batch}:{index}", "i" * 1000)
            pipe.execute()
        raise AssertionError("Redis took twice its maxmemory without refusing a write")
    except redis.exceptions.OutOfMemoryError:
        pass
    finally:
        operator.config_set("maxmemory", maxmemory)


def test_memory_full_of_unevictable_data_fires_the_memory_and_refused_write_alerts(tmp_path: Path) -> None:
    cfg = small_stack()
    assert cfg.redis.maxmemory_bytes == MAXMEMORY
    with scene(cfg, tmp_path, relay=True) as s:
        assert s.api is not None
        flow = Flow(s.api, tick=0.2)
        flow.start()
        s.stack.callback(flow.stop)
        s.server.wait_targets_up(timeout=30)
        s.server.wait_query(
            "the relay writing", "sum(relay_events_written_total)", lambda r: bool(r) and r[0].value > 0, 30
        )
        assert s.active("RedisMemoryNearMaxmemory") == []
        fill(s.bed.client(s.bed.nodes[0].port, db=cfg.db_layout.cache_dbs["Instance"]), MAXMEMORY)
        memory = s.alert("RedisMemoryNearMaxmemory", namespace=names.REDIS_NAMESPACE)
        # Percent of maxmemory: past it, by what the limit was raised for the fill.
        assert float(memory[0]["value"]) > 100
        # The relay keeps trying its page: Redis counts each refusal, the relay stalls and counts them too.
        s.alert("RedisRefusingWritesOOM", namespace=names.REDIS_NAMESPACE, err="OOM")
        s.alert("RelayWritesRefused", namespace=cfg.zitadel.namespace, reason="oom")
