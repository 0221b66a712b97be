"""The tier as Prometheus and Grafana see it: scrape targets, the network policies that let exactly the configured
Prometheus in, the alert rules and the dashboards.

Declared only with ``observability.enabled``: the ServiceMonitors, PodMonitors and the PrometheusRule are the
Prometheus Operator's custom resources (``monitoring.coreos.com/v1``), so its CRDs must be in the cluster. The Redis
exporter's ServiceMonitor is the Bitnami chart's own (``metrics.serviceMonitor``, set in ``components/redis.py``), as
is its port's network policy rule; this component declares the others:

- the event relay: a ServiceMonitor on its metrics Service (9090, ``/metrics``);
- ZITADEL: a ServiceMonitor on its Service (``http2-server``, ``/debug/metrics``), the one the chart's
  ``metrics.serviceMonitor`` would render;
- the Envoy proxies and the ratelimit pods: PodMonitors on Envoy Gateway's telemetry port (19001, named ``metrics``;
  ``/stats/prometheus`` and ``/metrics``), which no Service of Envoy Gateway exposes.

Field names are the Prometheus Operator's ``monitoring.coreos.com/v1`` API; the tests validate every document against
its CRD schemas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from components import custom_resources, dashboards, edge_pods, netpol
from components.event_relay import LABELS as RELAY_LABELS
from components.isolation import SERVER_LABELS, ZITADEL_PORT
from components.peers import PrometheusScraper
from stacks import names

MONITORING_API_VERSION: Final = "monitoring.coreos.com/v1"
#: The ZITADEL chart's Service selector labels (``zitadel.service.selectorLabels``): its API Service.
ZITADEL_SERVICE_LABELS: Final = {
    "app.kubernetes.io/name": names.ZITADEL_CHART_NAME,
    "app.kubernetes.io/instance": names.ZITADEL_RELEASE,
}
_METRICS_PATH: Final = "/metrics"
#: The relay's metrics Service port (``components/event_relay.py``).
_RELAY_PORT_NAME: Final = "metrics"


@dataclass(frozen=True)
class ObservabilityArgs:
    """What the scrape targets, rules and dashboards need: the Prometheus that scrapes, where each target runs, the
    rule groups and where Grafana picks the dashboards up."""

    prometheus: PrometheusScraper
    zitadel_namespace: str
    edge_namespace: str
    #: The event relay runs (``events.relay.enabled``): its monitor and policy.
    relay: bool
    #: ``spec.groups`` of the PrometheusRule (``components/alerts.py``).
    rule_groups: tuple[Mapping[str, object], ...]
    dashboards_namespace: str
    dashboards_label: tuple[tuple[str, str], ...]


def _document(kind: str, name: str, namespace: str, labels: Mapping[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "labels": dict(labels)}
    return {"apiVersion": MONITORING_API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _endpoint(args: ObservabilityArgs, port: str, path: str) -> dict[str, Any]:
    return {"port": port, "path": path, "interval": args.prometheus.scrape_interval}


def service_monitors(args: ObservabilityArgs) -> list[dict[str, Any]]:
    """ZITADEL's and the event relay's ServiceMonitors, in their namespace, selecting their Service there."""
    labels = dict(args.prometheus.selector_labels)
    namespace = {"matchNames": [args.zitadel_namespace]}
    found = [
        _document(
            "ServiceMonitor",
            names.ZITADEL_FULLNAME,
            args.zitadel_namespace,
            labels,
            {
                "selector": {"matchLabels": dict(ZITADEL_SERVICE_LABELS)},
                "namespaceSelector": namespace,
                "endpoints": [_endpoint(args, names.ZITADEL_SERVICE_PORT_NAME, names.ZITADEL_METRICS_PATH)],
            },
        )
    ]
    if args.relay:
        found.append(
            _document(
                "ServiceMonitor",
                names.RELAY_NAME,
                args.zitadel_namespace,
                labels,
                {
                    "selector": {"matchLabels": dict(RELAY_LABELS)},
                    "namespaceSelector": namespace,
                    "endpoints": [_endpoint(args, _RELAY_PORT_NAME, _METRICS_PATH)],
                },
            )
        )
    return found


def pod_monitors(args: ObservabilityArgs) -> list[dict[str, Any]]:
    """The Envoy proxies' and the ratelimit pods' PodMonitors, on Envoy Gateway's telemetry port."""
    labels = dict(args.prometheus.selector_labels)
    namespace = {"matchNames": [args.edge_namespace]}
    targets = (
        (names.EDGE_PROXY_MONITOR, edge_pods.proxy_labels(args.edge_namespace), edge_pods.PROXY_METRICS_PATH),
        (names.EDGE_RATE_LIMIT_DEPLOYMENT, edge_pods.RATE_LIMIT_LABELS, edge_pods.RATE_LIMIT_METRICS_PATH),
    )
    return [
        _document(
            "PodMonitor",
            name,
            args.edge_namespace,
            labels,
            {
                "selector": {"matchLabels": dict(selected)},
                "namespaceSelector": namespace,
                "podMetricsEndpoints": [_endpoint(args, edge_pods.METRICS_PORT_NAME, path)],
            },
        )
        for name, selected, path in targets
    ]


def prometheus_rule(args: ObservabilityArgs) -> dict[str, Any]:
    """The tier's alert rules, beside Prometheus (its ``ruleSelector`` matches the selector labels)."""
    spec = {"groups": [dict(group) for group in args.rule_groups]}
    labels = dict(args.prometheus.selector_labels)
    return _document("PrometheusRule", names.PROMETHEUS_RULE, args.prometheus.namespace, labels, spec)


def _scraped(namespace: str, name: str, pods: Mapping[str, str], port: int, args: ObservabilityArgs) -> dict[str, Any]:
    """A policy admitting the configured Prometheus's pods, and nothing else, to ``port`` of ``pods``."""
    prometheus = netpol.in_namespace(args.prometheus.namespace, dict(args.prometheus.pod_labels))
    return netpol.policy(
        namespace,
        f"{names.PROMETHEUS_POLICY_PREFIX}{name}",
        netpol.pods(pods),
        ingress=[{"from": [prometheus], "ports": netpol.ports(port)}],
    )


def zitadel_namespace_policies(args: ObservabilityArgs) -> list[dict[str, Any]]:
    """In ZITADEL's namespace: Prometheus to ZITADEL's server (its metrics share the API port) and to the relay."""
    policies = [_scraped(args.zitadel_namespace, names.ZITADEL_FULLNAME, SERVER_LABELS, ZITADEL_PORT, args)]
    if args.relay:
        policies.append(
            _scraped(args.zitadel_namespace, names.RELAY_NAME, RELAY_LABELS, names.RELAY_METRICS_PORT, args)
        )
    return policies


def edge_namespace_policies(args: ObservabilityArgs) -> list[dict[str, Any]]:
    """In the edge's namespace: Prometheus to the proxies' and the ratelimit pods' telemetry port (not the
    controller's, which nothing scrapes)."""
    edge = args.edge_namespace
    return [
        _scraped(edge, names.EDGE_PROXY_MONITOR, edge_pods.proxy_labels(edge), edge_pods.METRICS_PORT, args),
        _scraped(edge, names.EDGE_RATE_LIMIT_DEPLOYMENT, edge_pods.RATE_LIMIT_LABELS, edge_pods.METRICS_PORT, args),
    ]


def dashboards_config_map(args: ObservabilityArgs) -> dict[str, Any]:
    """The dashboards as one ConfigMap with the sidecar's label: one JSON file per dashboard."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.DASHBOARDS_CONFIG_MAP,
            "namespace": args.dashboards_namespace,
            "labels": dict(args.dashboards_label),
        },
        "data": {
            file: json.dumps(build(), indent=2, sort_keys=True) + "\n" for file, build in dashboards.DASHBOARDS.items()
        },
    }


class Observability(pulumi.ComponentResource):
    """ServiceMonitors, PodMonitors, the network policies that admit Prometheus, the PrometheusRule and the
    dashboards' ConfigMap."""

    def __init__(
        self,
        name: str,
        args: ObservabilityArgs,
        *,
        zitadel_ready: Sequence[pulumi.Resource],
        edge_ready: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``zitadel_ready``: ZITADEL's namespace; ``edge_ready``: the edge's release (after its namespace). A monitor
        may precede the Service or pods it selects."""
        super().__init__(names.component_type("Observability"), name, None, opts)
        in_zitadel = pulumi.ResourceOptions(parent=self, depends_on=list(zitadel_ready))
        in_edge = pulumi.ResourceOptions(parent=self, depends_on=list(edge_ready))
        child = pulumi.ResourceOptions(parent=self)

        zitadel_monitors, edge_monitors = service_monitors(args), pod_monitors(args)
        self.monitors = [custom_resources.declare(document, in_zitadel) for document in zitadel_monitors]
        self.monitors += [custom_resources.declare(document, in_edge) for document in edge_monitors]
        self.network_policies = netpol.declare(zitadel_namespace_policies(args), args.zitadel_namespace, in_zitadel)
        self.network_policies += netpol.declare(edge_namespace_policies(args), args.edge_namespace, in_edge)
        rule = prometheus_rule(args)
        self.rule = custom_resources.declare(rule, child)
        config_map = dashboards_config_map(args)
        self.dashboards = k8s.core.v1.ConfigMap(
            names.DASHBOARDS_CONFIG_MAP,
            metadata=k8s.meta.v1.ObjectMetaArgs(**config_map["metadata"]),
            data=config_map["data"],
            opts=child,
        )
        self.register_outputs(
            {
                "monitors": [
                    f"{m['kind']}/{m['metadata']['namespace']}/{m['metadata']['name']}"
                    for m in (*zitadel_monitors, *edge_monitors)
                ],
                "prometheusRule": f"{rule['metadata']['namespace']}/{rule['metadata']['name']}",
                "dashboards": f"{args.dashboards_namespace}/{names.DASHBOARDS_CONFIG_MAP}",
            }
        )
