"""The pods of the edge as Envoy Gateway v1.9.0 labels and numbers them, for selectors and network policies.

The chart renders the controller; the controller creates the Envoy proxies and the ratelimit Deployment at run time
(``internal/infrastructure/kubernetes/proxy`` and ``.../ratelimit`` in envoyproxy/gateway), so their labels and ports
are facts of that source, written down here once.
"""

from __future__ import annotations

from typing import Final

from stacks import names

#: The controller (``templates/envoy-gateway-deployment.yaml``: ``control-plane`` plus the chart's selector labels).
CONTROLLER_LABELS: Final = {
    "control-plane": names.EDGE_CONTROLLER,
    "app.kubernetes.io/name": names.EDGE_CHART_NAME,
    "app.kubernetes.io/instance": names.EDGE_RELEASE,
}
#: The chart's certgen job (``templates/certgen.yaml``).
CERTGEN_LABELS: Final = {"app": "certgen"}
#: The ratelimit pods (``ratelimit/resource.go``, ``rateLimitLabels``).
RATE_LIMIT_LABELS: Final = {
    "app.kubernetes.io/name": names.EDGE_RATE_LIMIT_DEPLOYMENT,
    "app.kubernetes.io/component": "ratelimit",
    "app.kubernetes.io/managed-by": "envoy-gateway",
}
#: The controller's ports: xDS for the proxies, the ratelimit service's configuration, Wasm modules, metrics.
XDS_PORT: Final = 18000
RATE_LIMIT_CONFIG_PORT: Final = 18001
WASM_PORT: Final = 18002
#: The ratelimit service's gRPC port, which the proxies call (``InfraGRPCPort``).
RATE_LIMIT_GRPC_PORT: Final = 8081
#: Prometheus metrics of the proxies and the ratelimit pods (``PrometheusPort``; the proxies' stats listener), on the
#: container port named ``metrics``: the proxies' at Envoy's ``/stats/prometheus``, the ratelimit pods' at ``/metrics``
#: (``proxy/resource.go``, ``ratelimit/resource.go``; their ``prometheus.io/path`` annotations say the same).
METRICS_PORT: Final = 19001
METRICS_PORT_NAME: Final = "metrics"
PROXY_METRICS_PATH: Final = "/stats/prometheus"
RATE_LIMIT_METRICS_PATH: Final = "/metrics"
#: The proxies listen on the Gateway listener's port, or on it + 10000 below 1024 (``gatewayapi/listener.go``,
#: ``wellKnownPortShift``): so they need no privilege to bind.
_WELL_KNOWN_PORT_SHIFT: Final = 10000
_MIN_EPHEMERAL_PORT: Final = 1024


def proxy_labels(gateway_namespace: str) -> dict[str, str]:
    """The Envoy proxies of the stack's Gateway (``proxy/resource.go``, the owning-gateway labels)."""
    return {
        "app.kubernetes.io/name": "envoy",
        "app.kubernetes.io/component": "proxy",
        "app.kubernetes.io/managed-by": "envoy-gateway",
        "gateway.envoyproxy.io/owning-gateway-name": names.EDGE_GATEWAY,
        "gateway.envoyproxy.io/owning-gateway-namespace": gateway_namespace,
    }


def proxy_container_port(listener_port: int) -> int:
    """The port the proxies' Envoy container listens on for a Gateway listener port."""
    return listener_port + _WELL_KNOWN_PORT_SHIFT if listener_port < _MIN_EPHEMERAL_PORT else listener_port
