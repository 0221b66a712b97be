"""Scrape targets, the network policies that let only the configured Prometheus in, the PrometheusRule and the
dashboards (components/observability.py, components/dashboards.py): declared per stack as README "Operating it"
says, every custom resource valid against the Prometheus Operator's CRD schemas, every monitor selecting what runs,
every dashboard query parsed by promtool and naming a metric some exporter of the tier emits."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from components import dashboards
from components.wiring import observability_args
from relay.consumer import ConsumerMetrics
from relay.metrics import Metrics
from stacks.loader import StackConfigError, load
from stacks.stackfile import read_stack_config
from stacktools import mocked
from stacktools.plan import describe, mask
from testbed import monitoring_crds
from testbed.required import require
from tests import rendering
from tests.conftest import PROJECT_DIR, record, recorded, stack_config
from tests.expectations import ABSENT, Row, both, mismatches
from tests.netpol import Cluster, Pod
from tests.test_network_policies import tier

COMPONENT = "blinkchamber:identity:Observability"
MONITORING = "kubernetes:monitoring.coreos.com/v1:"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
#: kube-prometheus-stack's defaults, the config's: Prometheus's selector label and its pods' label.
SELECTOR = {"release": "kube-prometheus-stack"}
PROMETHEUS_NS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
PROMETHEUS_PEER = {**PROMETHEUS_NS, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
#: What prod declares under the component (type, name, namespace); dev declares none of it.
DECLARED = [
    (CONFIG_MAP, "identity-tier-dashboards", "monitoring"),
    (MONITORING + "PodMonitor", "envoy-ratelimit", "envoy-gateway-system"),
    (MONITORING + "PodMonitor", "identity-edge-proxies", "envoy-gateway-system"),
    (MONITORING + "PrometheusRule", "identity-tier", "monitoring"),
    (MONITORING + "ServiceMonitor", "event-relay", "zitadel"),
    (MONITORING + "ServiceMonitor", "zitadel", "zitadel"),
    (NETWORK_POLICY, "prometheus-to-envoy-ratelimit", "envoy-gateway-system"),
    (NETWORK_POLICY, "prometheus-to-event-relay", "zitadel"),
    (NETWORK_POLICY, "prometheus-to-identity-edge-proxies", "envoy-gateway-system"),
    (NETWORK_POLICY, "prometheus-to-zitadel", "zitadel"),
]


def children(recording: mocked.Recording) -> list[mocked.RecordedResource]:
    return [r for r in recording.resources if r.parent.endswith(f"${COMPONENT}::observability")]


def document(resource: mocked.RecordedResource) -> dict[str, Any]:
    inputs = mask(resource.inputs)
    return {key: inputs[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in inputs}


def custom_resources(recording: mocked.Recording) -> list[dict[str, Any]]:
    return [document(r) for r in recording.resources if r.type.startswith(MONITORING)]


# --- configuration ----------------------------------------------------------------------------------------------------


def test_the_stacks_observability_settings() -> None:
    # Dev clusters need not run the Prometheus Operator; prod is watched. Both scrape as kube-prometheus-stack does.
    dev, prod = stack_config("dev").observability, stack_config("prod").observability
    assert (dev.enabled, prod.enabled) == (False, True)
    for o in (dev, prod):
        p = o.prometheus
        assert (p.namespace, p.pod_labels, p.selector_labels, p.scrape_interval) == (
            "monitoring",
            {"app.kubernetes.io/name": "prometheus"},
            SELECTOR,
            "30s",
        )
        assert (o.dashboards.namespace, o.dashboards.label) == ("monitoring", {"grafana_dashboard": "1"})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"prometheus": {"podLabels": {}}}, "observability.prometheus.podLabels"),
        ({"prometheus": {"selectorLabels": {"release": "not a label value"}}}, "observability.prometheus"),
        ({"prometheus": {"scrapeInterval": "30 seconds"}}, "observability.prometheus.scrapeInterval"),
        ({"prometheus": {"namespace": "Monitoring"}}, "observability.prometheus.namespace"),
        ({"dashboards": {"label": {"grafana dashboard": "1"}}}, "observability.dashboards.label"),
    ],
)
def test_a_malformed_observability_value_is_refused(overrides: dict[str, Any], key: str) -> None:
    config, secret_keys = read_stack_config(PROJECT_DIR / "Pulumi.dev.yaml")
    with pytest.raises(StackConfigError) as error:
        load("dev", {**config, "observability": overrides}, secret_keys)
    assert any(v.startswith(f"dev: {key}") for v in error.value.violations), error.value.violations


@pytest.mark.parametrize(
    "removed",
    [{"events": {"relay": {"metricsNamespaces": ["monitoring"]}}}, {"edge": {"networkPolicy": {}}}],
)
def test_the_former_scraper_knobs_are_gone(removed: dict[str, Any]) -> None:
    # One place says who scrapes: observability.prometheus. The old per-component namespace lists are refused.
    config, secret_keys = read_stack_config(PROJECT_DIR / "Pulumi.dev.yaml")
    with pytest.raises(StackConfigError, match="unknown key"):
        load("dev", {**config, **removed}, secret_keys)


# --- what each stack declares -----------------------------------------------------------------------------------------


def test_prod_declares_the_monitoring_objects_under_one_component() -> None:
    recording = recorded("prod")
    found = sorted((r.type, r.name, mask(r.inputs)["metadata"].get("namespace")) for r in children(recording))
    assert found == DECLARED
    (component,) = recording.by_type(COMPONENT)
    assert component.name == "observability"
    # In the cluster with the stack's provider, like every Kubernetes object of the program.
    assert {r.provider.split("::")[-2] for r in children(recording)} == {"kubernetes"}


def test_dev_declares_none_of_them() -> None:
    recording = recorded("dev")
    assert recording.by_type(COMPONENT) == []
    assert custom_resources(recording) == []
    assert [r.name for r in recording.by_type(NETWORK_POLICY) if r.name.startswith("prometheus-to-")] == []
    assert [r.name for r in recording.by_type(CONFIG_MAP) if r.name == "identity-tier-dashboards"] == []


def test_enabled_in_dev_it_declares_the_same_objects() -> None:
    recording = record("dev", {"observability": {"enabled": True}})
    found = sorted((r.type, r.name, mask(r.inputs)["metadata"].get("namespace")) for r in children(recording))
    assert found == DECLARED


def test_without_the_relay_there_is_no_relay_monitor_or_policy() -> None:
    recording = record("prod", {"events": {"relay": {"enabled": False}, "source": {"instance": "id.blinkchamber.com"}}})
    names = sorted(r.name for r in children(recording))
    assert "event-relay" not in names and "prometheus-to-event-relay" not in names
    assert len(names) == len(DECLARED) - 2


def test_the_objects_in_the_tiers_namespaces_wait_for_them() -> None:
    recording = recorded("prod")
    zitadel_namespace = recording.one("kubernetes:core/v1:Namespace", "zitadel").urn
    edge_release = recording.one("kubernetes:helm.sh/v3:Release", "eg").urn
    for resource in children(recording):
        namespace = mask(resource.inputs)["metadata"]["namespace"]
        wanted = {"zitadel": [zitadel_namespace], "envoy-gateway-system": [edge_release], "monitoring": []}[namespace]
        assert resource.dependencies == wanted, resource.name


# --- the monitors, as the Prometheus Operator reads them --------------------------------------------------------------

MONITORS: list[Row] = [
    (
        f'["{MONITORING}ServiceMonitor::zitadel"].inputs.spec',
        ABSENT,
        {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "zitadel", "app.kubernetes.io/instance": "zitadel"}},
            "namespaceSelector": {"matchNames": ["zitadel"]},
            "endpoints": [{"port": "http2-server", "path": "/debug/metrics", "interval": "30s"}],
        },
    ),
    (
        f'["{MONITORING}ServiceMonitor::event-relay"].inputs.spec',
        ABSENT,
        {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "event-relay",
                    "app.kubernetes.io/instance": "event-relay",
                    "app.kubernetes.io/component": "bridge",
                }
            },
            "namespaceSelector": {"matchNames": ["zitadel"]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    ),
    (
        f'["{MONITORING}PodMonitor::identity-edge-proxies"].inputs.spec',
        ABSENT,
        {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "envoy",
                    "app.kubernetes.io/component": "proxy",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                    "gateway.envoyproxy.io/owning-gateway-name": "identity-edge",
                    "gateway.envoyproxy.io/owning-gateway-namespace": "envoy-gateway-system",
                }
            },
            "namespaceSelector": {"matchNames": ["envoy-gateway-system"]},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/stats/prometheus", "interval": "30s"}],
        },
    ),
    (
        f'["{MONITORING}PodMonitor::envoy-ratelimit"].inputs.spec',
        ABSENT,
        {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "envoy-ratelimit",
                    "app.kubernetes.io/component": "ratelimit",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                }
            },
            "namespaceSelector": {"matchNames": ["envoy-gateway-system"]},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    ),
    *(
        (f'["{MONITORING}{kind}::{name}"].inputs.metadata.labels', ABSENT, SELECTOR)
        for kind, name in (
            ("ServiceMonitor", "zitadel"),
            ("ServiceMonitor", "event-relay"),
            ("PodMonitor", "identity-edge-proxies"),
            ("PodMonitor", "envoy-ratelimit"),
            ("PrometheusRule", "identity-tier"),
        )
    ),
    # The dashboards: the sidecar's label, in Grafana's namespace.
    (
        f'["{CONFIG_MAP}::identity-tier-dashboards"].inputs.metadata',
        ABSENT,
        {"name": "identity-tier-dashboards", "namespace": "monitoring", "labels": {"grafana_dashboard": "1"}},
    ),
    (f'["{COMPONENT}::observability"].parent', ABSENT, ""),
    (f'["{MONITORING}PrometheusRule::identity-tier"].parent', ABSENT, f"{COMPONENT}::observability"),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_monitors_and_their_labels(stack: str) -> None:
    assert mismatches(describe(recorded(stack)).resources, MONITORS, stack) == []


#: The Redis chart's own ServiceMonitor (``metrics.serviceMonitor``) and its exporter port's network policy rule.
REDIS_VALUES: list[Row] = [
    ("metrics.serviceMonitor.enabled", False, True),
    both("metrics.serviceMonitor.additionalLabels", SELECTOR),
    both("metrics.serviceMonitor.interval", "30s"),
    # Whether or not the stack declares monitors, 9121 admits only that Prometheus: the chart cannot name no one.
    both("networkPolicy.metrics.allowExternal", False),
    both("networkPolicy.metrics.ingressNSMatchLabels", {"kubernetes.io/metadata.name": "monitoring"}),
    both("networkPolicy.metrics.ingressNSPodMatchLabels", {"app.kubernetes.io/name": "prometheus"}),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_redis_chart_renders_the_exporters_monitor(stack: str) -> None:
    values = rendering.release_inputs(stack, "redis").values
    assert mismatches(values, REDIS_VALUES, stack) == []
    monitors = [m for m in rendering.rendered(stack, "redis") if m["apiVersion"].startswith("monitoring.coreos.com/")]
    if stack == "dev":
        assert monitors == []
        return
    (monitor,) = monitors
    assert (monitor["kind"], monitor["metadata"]["name"], monitor["metadata"]["namespace"]) == (
        "ServiceMonitor",
        "redis",
        "database",
    )
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http-metrics", "interval": "30s"}]
    # It selects the chart's metrics Service, whose port of that name leads to the exporter's 9121.
    selected = monitor["spec"]["selector"]["matchLabels"]
    (service,) = [
        m
        for m in rendering.rendered(stack, "redis")
        if m["kind"] == "Service" and all(m["metadata"]["labels"].get(k) == v for k, v in selected.items())
    ]
    assert service["metadata"]["name"] == "redis-metrics"
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9121, "protocol": "TCP", "targetPort": "metrics"}
    ]


def test_zitadels_monitor_is_the_one_its_chart_would_render() -> None:
    # The chart's metrics.serviceMonitor (with metrics.enabled, which also annotates the pods for annotation-based
    # scraping) renders the same target: selector, port and path; ours adds the interval.
    inputs = rendering.release_inputs("prod", "zitadel")
    values = {**inputs.values, "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}
    archive = rendering.chart_archive(inputs.chart)
    charts = archive.render(values, name=inputs.name, namespace=inputs.namespace).manifests
    (chart_monitor,) = [m for m in charts if m["kind"] == "ServiceMonitor"]
    ours = document(recorded("prod").one(MONITORING + "ServiceMonitor", "zitadel"))
    assert chart_monitor["spec"]["selector"] == ours["spec"]["selector"]
    assert chart_monitor["spec"]["namespaceSelector"] == ours["spec"]["namespaceSelector"]
    (chart_endpoint,) = chart_monitor["spec"]["endpoints"]
    (endpoint,) = ours["spec"]["endpoints"]
    assert (chart_endpoint["port"], chart_endpoint["path"]) == (endpoint["port"], endpoint["path"])
    # And the Service it selects is rendered with that port name.
    (service,) = [
        m
        for m in rendering.rendered("prod", "zitadel")
        if m["kind"] == "Service" and m["metadata"]["name"] == "zitadel"
    ]
    assert {k: service["metadata"]["labels"][k] for k in endpoint_selector(ours)} == endpoint_selector(ours)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http2-server"]


def endpoint_selector(monitor: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = monitor["spec"]["selector"]["matchLabels"]
    return labels


def test_the_relays_monitor_selects_its_metrics_service() -> None:
    recording = recorded("prod")
    service = mask(recording.one("kubernetes:core/v1:Service", "event-relay").inputs)
    monitor = document(recording.one(MONITORING + "ServiceMonitor", "event-relay"))
    assert service["metadata"]["labels"] == endpoint_selector(monitor)
    assert [p["name"] for p in service["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]


def test_envoy_gateways_telemetry_stays_on() -> None:
    # The PodMonitors rely on Envoy Gateway's defaults (the proxies' and ratelimit's Prometheus endpoints on 19001):
    # the program disables neither.
    proxy = document(recorded("prod").one("kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy", "identity-edge"))
    assert "telemetry" not in proxy["spec"]
    config = yaml.safe_load(
        rendering.find(rendering.rendered("prod", "eg"), "ConfigMap", "envoy-gateway-config")["data"][
            "envoy-gateway.yaml"
        ]
    )
    assert "telemetry" not in config["rateLimit"]


# --- valid against the Prometheus Operator's CRDs -----------------------------------------------------------------


def test_the_schemas_are_the_operators_v1_kinds() -> None:
    schemas = monitoring_crds.schemas()
    assert sorted(schemas.versions) == [
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ]
    endpoint = schemas.schema("monitoring.coreos.com/v1", "ServiceMonitor")
    assert "endpoints" in json.dumps(endpoint) and "podMetricsEndpoints" in json.dumps(
        schemas.schema("monitoring.coreos.com/v1", "PodMonitor")
    )


def test_every_custom_resource_validates_against_its_crd() -> None:
    schemas = monitoring_crds.schemas()
    resources = custom_resources(recorded("prod"))
    resources += [m for m in rendering.rendered("prod", "redis") if m["apiVersion"].startswith("monitoring.coreos.com")]
    assert sorted(f"{r['kind']}/{r['metadata']['name']}" for r in resources) == [
        "PodMonitor/envoy-ratelimit",
        "PodMonitor/identity-edge-proxies",
        "PrometheusRule/identity-tier",
        "ServiceMonitor/event-relay",
        "ServiceMonitor/redis",
        "ServiceMonitor/zitadel",
    ]
    for resource in resources:
        assert schemas.errors(resource) == [], resource["metadata"]["name"]


def test_the_rule_holds_the_alert_groups() -> None:
    rule = document(recorded("prod").one(MONITORING + "PrometheusRule", "identity-tier"))
    groups = rule["spec"]["groups"]
    assert groups, "no alert group"
    assert all(group["rules"] for group in groups)
    # The wiring's groups, unchanged: components/alerts.py with the stack's thresholds.
    assert groups == json.loads(json.dumps(list(observability_args(stack_config("prod")).rule_groups)))


def _first(kind: str) -> dict[str, Any]:
    resources = custom_resources(recorded("prod"))
    return copy.deepcopy(next(r for r in resources if r["kind"] == kind))


BROKEN: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    (
        "ServiceMonitor",
        lambda d: d["spec"]["endpoints"][0].update(pathh="/metrics"),
        "spec.endpoints.0: Additional properties are not allowed ('pathh' was unexpected)",
    ),
    (
        "ServiceMonitor",
        lambda d: d["spec"]["endpoints"][0].update(interval="30 seconds"),
        "spec.endpoints.0.interval: '30 seconds' does not match",
    ),
    (
        "ServiceMonitor",
        lambda d: d["spec"]["endpoints"][0].update(scheme="tcp"),
        "spec.endpoints.0.scheme: 'tcp' is not one of ['http', 'https']",
    ),
    (
        "PodMonitor",
        lambda d: d["spec"].update(endpoints=d["spec"].pop("podMetricsEndpoints")),
        "spec: Additional properties are not allowed ('endpoints' was unexpected)",
    ),
    ("PodMonitor", lambda d: d["spec"].pop("selector"), "spec: 'selector' is a required property"),
    (
        "PrometheusRule",
        lambda d: d["spec"]["groups"][0]["rules"][0].update(expression="up == 0"),
        "spec.groups.0.rules.0: Additional properties are not allowed ('expression' was unexpected)",
    ),
    ("PrometheusRule", lambda d: d["spec"]["groups"][0].pop("name"), "spec.groups.0: 'name' is a required property"),
    ("PrometheusRule", lambda d: d["metadata"].pop("namespace"), "metadata.namespace: required for a namespaced kind"),
]


@pytest.mark.parametrize(("kind", "change", "expected"), BROKEN, ids=[f"{k}-{e[:40]}" for k, _, e in BROKEN])
def test_crd_validation_catches_a_broken_resource(
    kind: str, change: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    broken = _first(kind)
    change(broken)
    errors = monitoring_crds.schemas().errors(broken)
    assert any(expected in error for error in errors), errors


# --- network policies: exactly the configured Prometheus, on the metrics ports -----------------------------------

#: The configured Prometheus, a stranger in its namespace, and a pod with its labels elsewhere.
PROMETHEUS = Pod("prometheus-0", "monitoring", {"app.kubernetes.io/name": "prometheus"}, "10.244.8.1")
GRAFANA = Pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"}, "10.244.8.2")
IMPOSTOR = Pod("impostor", "default", {"app.kubernetes.io/name": "prometheus"}, "10.244.8.3")
RELAY_LABELS = {
    "app.kubernetes.io/name": "event-relay",
    "app.kubernetes.io/instance": "event-relay",
    "app.kubernetes.io/component": "bridge",
}
RELAY = Pod("event-relay", "zitadel", RELAY_LABELS, "10.244.2.99")


def watched(stack: str, recording: mocked.Recording) -> Cluster:
    base = tier(stack, recording)
    pods = [*base.pods.values(), PROMETHEUS, GRAFANA, IMPOSTOR, RELAY]
    namespaces: dict[str, dict[str, str]] = {pod.namespace: {} for pod in pods}
    return Cluster(base.policies, namespaces, pods)


#: (destination, port) Prometheus scrapes: the Redis exporter, ZITADEL, the relay, the proxies, the ratelimit pods.
SCRAPED = [
    ("redis-node-0", 9121),
    ("zitadel", 8080),
    ("event-relay", 9090),
    ("envoy-proxy", 19001),
    ("envoy-ratelimit", 19001),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_the_configured_prometheus_reaches_the_metrics_ports(stack: str) -> None:
    c = watched(stack, recorded(stack))
    for destination, port in SCRAPED:
        # Prod declares the policies; dev, unwatched, admits Prometheus only where the Redis chart must name someone.
        expected = stack == "prod" or destination == "redis-node-0"
        assert c.allowed(PROMETHEUS, c.pod(destination), port) is expected, (destination, port)
        for stranger in (GRAFANA, IMPOSTOR, c.pod("curl"), c.pod("intruder")):
            assert not c.allowed(stranger, c.pod(destination), port), (stranger.name, destination)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prometheus_reaches_nothing_else(stack: str) -> None:
    c = watched(stack, recorded(stack))
    for destination, port in [
        ("redis-node-0", 6379),  # the data, not the exporter
        ("redis-node-1", 26379),
        ("zitadel-login", 3000),
        ("envoy-gateway", 19001),  # the controller's metrics: nothing scrapes them
        ("envoy-gateway", 18000),
        ("envoy-ratelimit", 8081),
        ("envoy-proxy", 8080),  # the listener is open to anyone anyway; 8080 is dev's, prod listens on 10443
        ("event-relay", 8080),
        ("zitadel-init", 8080),
    ]:
        if (destination, port) == ("envoy-proxy", 8080) and stack == "dev":
            continue
        assert not c.allowed(PROMETHEUS, c.pod(destination), port), (destination, port)


def test_the_policies_name_exactly_that_prometheus() -> None:
    policies = [document(r) for r in recorded("prod").by_type(NETWORK_POLICY) if r.name.startswith("prometheus-to-")]
    assert {p["metadata"]["name"]: p["spec"] for p in policies} == {
        "prometheus-to-zitadel": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "zitadel",
                    "app.kubernetes.io/instance": "zitadel",
                    "app.kubernetes.io/component": "start",
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [PROMETHEUS_PEER], "ports": [{"port": 8080, "protocol": "TCP"}]}],
        },
        "prometheus-to-event-relay": {
            "podSelector": {"matchLabels": dict(RELAY.labels)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [PROMETHEUS_PEER], "ports": [{"port": 9090, "protocol": "TCP"}]}],
        },
        "prometheus-to-identity-edge-proxies": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "envoy",
                    "app.kubernetes.io/component": "proxy",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                    "gateway.envoyproxy.io/owning-gateway-name": "identity-edge",
                    "gateway.envoyproxy.io/owning-gateway-namespace": "envoy-gateway-system",
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [PROMETHEUS_PEER], "ports": [{"port": 19001, "protocol": "TCP"}]}],
        },
        "prometheus-to-envoy-ratelimit": {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "envoy-ratelimit",
                    "app.kubernetes.io/component": "ratelimit",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [PROMETHEUS_PEER], "ports": [{"port": 19001, "protocol": "TCP"}]}],
        },
    }


def test_another_prometheus_is_configured_in_one_place() -> None:
    elsewhere = {"prometheus": {"namespace": "observability", "podLabels": {"app": "prom"}}}
    recording = record("prod", {"observability": {"enabled": True, **elsewhere}})
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app": "prom"}},
    }
    policies = [document(r) for r in recording.by_type(NETWORK_POLICY) if r.name.startswith("prometheus-to-")]
    assert len(policies) == 4
    assert all(p["spec"]["ingress"][0]["from"] == [peer] for p in policies)
    redis = mask(recording.one("kubernetes:helm.sh/v3:Release", "redis").inputs)["values"]["networkPolicy"]["metrics"]
    assert redis == {
        "allowExternal": False,
        "ingressNSMatchLabels": {"kubernetes.io/metadata.name": "observability"},
        "ingressNSPodMatchLabels": {"app": "prom"},
    }
    rule = document(recording.one(MONITORING + "PrometheusRule", "identity-tier"))
    assert rule["metadata"]["namespace"] == "observability"


# --- dashboards -------------------------------------------------------------------------------------------------------


def test_the_config_map_holds_the_three_dashboards_as_json() -> None:
    data = mask(recorded("prod").one(CONFIG_MAP, "identity-tier-dashboards").inputs)["data"]
    assert sorted(data) == ["identity-edge-limits.json", "identity-redis-sentinel.json", "identity-relay-streams.json"]
    parsed = {name: json.loads(text) for name, text in data.items()}
    assert {name: d["title"] for name, d in parsed.items()} == {
        "identity-relay-streams.json": "Identity tier: event relay and streams",
        "identity-redis-sentinel.json": "Identity tier: Redis and Sentinel",
        "identity-edge-limits.json": "Identity tier: edge rate limits",
    }
    assert {name: d["uid"] for name, d in parsed.items()} == {
        "identity-relay-streams.json": "bc-relay-streams",
        "identity-redis-sentinel.json": "bc-redis-sentinel",
        "identity-edge-limits.json": "bc-edge-limits",
    }


@pytest.mark.parametrize("file", sorted(dashboards.DASHBOARDS))
def test_each_dashboard_is_a_grafana_dashboard(file: str) -> None:
    board = dashboards.DASHBOARDS[file]()
    assert board["schemaVersion"] == 39
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    panels = board["panels"]
    assert len(panels) >= 8
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)  # no two panels on one spot
    for panel in panels:
        assert panel["type"] == "timeseries" and panel["title"] and panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["datasource"] == panel["datasource"] for t in panel["targets"])
        assert sorted(t["refId"] for t in panel["targets"]) == [chr(65 + n) for n in range(len(panel["targets"]))]


def test_every_query_parses(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule: a typo in PromQL fails here, not on an empty panel.
    require(shutil.which("promtool") is not None, "promtool", "apt-get install prometheus")
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, expr in enumerate(q for build in dashboards.DASHBOARDS.values() for q in dashboards.queries(build()))
    ]
    broken = {"groups": [{"name": "broken", "rules": [{"record": "dashboard:broken", "expr": "sum(rate(x[5m])"}]}]}
    for document_, passes in (({"groups": [{"name": "dashboards", "rules": rules}]}, True), (broken, False)):
        path = tmp_path / f"dashboards-{passes}.rules.yaml"
        path.write_text(yaml.safe_dump(document_))
        done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert (done.returncode == 0) is passes, done.stdout + done.stderr


def relay_sample_names() -> set[str]:
    """What the relay's and the consumers' /metrics expose, from their own registries (counters as ``_total``,
    histograms as ``_bucket``/``_sum``/``_count``)."""
    registry = CollectorRegistry()
    Metrics(registry)
    ConsumerMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {f"{family.name}{suffix}" for family in registry.collect() for suffix in suffixes[family.type]}


#: redis_exporter's names the dashboards read: from INFO (Debian's 1.45 and the chart's 1.76 alike) and from the
#: stream checks (``--check-single-streams``, components/redis.py).
REDIS_EXPORTER = {
    "redis_up", "redis_instance_info", "redis_connected_slaves", "redis_master_link_up",
    "redis_connected_slave_lag_seconds", "redis_memory_used_bytes", "redis_memory_max_bytes",
    "redis_evicted_keys_total", "redis_errors_total", "redis_db_keys", "redis_connected_clients",
    "redis_commands_processed_total", "redis_rejected_connections_total", "redis_aof_last_write_status",
    "redis_aof_last_bgrewrite_status", "redis_stream_length", "redis_stream_group_messages_pending",
    "redis_stream_last_generated_id", "redis_stream_group_last_delivered_id", "redis_stream_group_consumers",
    "redis_stream_group_consumer_idle_seconds",
}  # fmt: skip
#: envoyproxy/ratelimit's, as Envoy Gateway v1.9.0 maps its statsd names (ratelimit/statsd_conf.yaml; README "Rate
#: limits at the edge"); ``response_time`` is a histogram there.
RATE_LIMIT = {
    "ratelimit_service_rate_limit_total_hits", "ratelimit_service_rate_limit_over_limit",
    "ratelimit_service_rate_limit_near_limit", "ratelimit_service_rate_limit_within_limit",
    "ratelimit_service_rate_limit_shadow_mode", "ratelimit_service_should_rate_limit_error",
    "ratelimit_service_total_requests", "ratelimit_service_response_time_seconds_bucket",
    "ratelimit_service_config_load_success", "ratelimit_service_config_load_error",
}  # fmt: skip
#: Envoy's: the rate-limit filter's ``cluster.<target>.ratelimit.{ok,error,over_limit,failure_mode_allowed}`` and the
#: HTTP connection manager's ``http.<prefix>.downstream_rq_<class>xx``, as /stats/prometheus names them.
ENVOY = {
    "envoy_cluster_ratelimit_ok", "envoy_cluster_ratelimit_error", "envoy_cluster_ratelimit_over_limit",
    "envoy_cluster_ratelimit_failure_mode_allowed", "envoy_http_downstream_rq_xx",
}  # fmt: skip


@pytest.mark.parametrize("file", sorted(dashboards.DASHBOARDS))
def test_every_query_names_a_metric_the_tier_emits(file: str) -> None:
    emitted = relay_sample_names() | REDIS_EXPORTER | RATE_LIMIT | ENVOY
    for expr in dashboards.queries(dashboards.DASHBOARDS[file]()):
        names = dashboards.metric_names(expr)
        assert names, expr
        assert names <= emitted, (expr, names - emitted)


def test_the_relay_names_come_from_its_registries() -> None:
    names = relay_sample_names()
    assert {"relay_freshness_seconds", "relay_events_written_total", "relay_poll_duration_seconds_bucket"} <= names
    assert "relay_consumer_dead_lettered_total" in names
    assert "relay_events_written" not in names  # a counter is exposed with _total
    # The metric-name finder skips PromQL's own words.
    query = 'sum by (le, redis_l) (rate(relay_x_bucket{a="redis_y"}[5m])) - on (envoy_c) group_left redis_z'
    assert dashboards.metric_names(query) == {"relay_x_bucket", "redis_z"}
