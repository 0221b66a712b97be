"""The edge's Kubernetes objects as documents: the Gateway API objects, Envoy Gateway's policies, and the network
policies of the gateway's namespace.

Pure functions of the stack config, so that the tests validate exactly these documents against the CRDs of the pinned
chart. Field names are Envoy Gateway v1.9.0's (``api/v1alpha1``) and Gateway API v1's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from components import edge_pods
from components.isolation import LOGIN_LABELS, LOGIN_PORT, REDIS_LABELS, SERVER_LABELS, ZITADEL_PORT
from components.netpol import (
    NAMESPACE_NAME_LABEL,
    api_server_egress,
    dns_egress,
    in_namespace,
    pods,
    policy,
    ports,
)
from components.peers import ClusterNetwork, ZitadelEndpoint
from stacks import names
from stacks.config import EdgeConfig, EdgeListener, RateLimitRule

GATEWAY_API: Final = "gateway.networking.k8s.io"
GATEWAY_API_VERSION: Final = f"{GATEWAY_API}/v1"
ENVOY_GATEWAY_API: Final = "gateway.envoyproxy.io"
ENVOY_GATEWAY_API_VERSION: Final = f"{ENVOY_GATEWAY_API}/v1alpha1"
#: Where ZITADEL publishes the keys its JWTs are signed with (OIDC discovery's ``jwks_uri``).
ZITADEL_JWKS_PATH: Final = "/oauth/v2/keys"
JWT_PROVIDER: Final = "zitadel"
_SHUTDOWN_MANAGER: Final = "shutdown-manager"


def _document(api_version: str, kind: str, name: str, namespace: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def listener_name(listener: EdgeListener) -> str:
    return "https" if listener.tls_secret_name else "http"


@dataclass(frozen=True)
class GatewayListener:
    """The stack's Gateway as a route names it: its namespace and its one listener."""

    namespace: str
    section_name: str

    @staticmethod
    def of(edge: EdgeConfig) -> GatewayListener:
        return GatewayListener(edge.namespace, listener_name(edge.listener))


def route_parent_refs(gateway: GatewayListener) -> list[dict[str, Any]]:
    """What ZITADEL's routes attach to: the stack's Gateway, its one listener."""
    return [{"name": names.EDGE_GATEWAY, "namespace": gateway.namespace, "sectionName": gateway.section_name}]


# --- the gateway ------------------------------------------------------------------------------------------------------


def envoy_proxy(edge: EdgeConfig) -> dict[str, Any]:
    """The data plane's settings: replicas, resources (the shutdown-manager's only through a patch), the Service."""
    deployment: dict[str, Any] = {
        "replicas": edge.proxy_replicas,
        "container": {"resources": edge.resources.proxy.as_k8s()},
        "patch": {
            "type": "StrategicMerge",
            "value": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": _SHUTDOWN_MANAGER, "resources": edge.resources.shutdown_manager.as_k8s()}
                            ]
                        }
                    }
                }
            },
        },
    }
    service: dict[str, Any] = {"type": edge.service_type}
    if edge.service_type != "ClusterIP":
        # Keeps the client's address on the connection: what per-client-IP limits key on behind an L4 balancer.
        service["externalTrafficPolicy"] = "Local"
    kubernetes: dict[str, Any] = {"envoyDeployment": deployment, "envoyService": service}
    if edge.proxy_replicas > 1:
        kubernetes["envoyPDB"] = {"minAvailable": 1}
    spec = {"provider": {"type": "Kubernetes", "kubernetes": kubernetes}}
    return _document(ENVOY_GATEWAY_API_VERSION, "EnvoyProxy", names.EDGE_PROXY_CONFIG, edge.namespace, spec)


def gateway_class(edge: EdgeConfig) -> dict[str, Any]:
    spec = {
        "controllerName": names.EDGE_CONTROLLER_NAME,
        "parametersRef": {
            "group": ENVOY_GATEWAY_API,
            "kind": "EnvoyProxy",
            "name": names.EDGE_PROXY_CONFIG,
            "namespace": edge.namespace,
        },
    }
    return _document(GATEWAY_API_VERSION, "GatewayClass", names.EDGE_GATEWAY_CLASS, None, spec)


def gateway(edge: EdgeConfig, zitadel: ZitadelEndpoint) -> dict[str, Any]:
    """One listener for ``zitadel.externalDomain``; only routes in ZITADEL's namespace may attach."""
    listener: dict[str, Any] = {
        "name": listener_name(edge.listener),
        "protocol": "HTTPS" if edge.listener.tls_secret_name else "HTTP",
        "port": edge.listener.port,
        "hostname": zitadel.external_domain,
        "allowedRoutes": {
            "namespaces": {
                "from": "Selector",
                "selector": {"matchLabels": {NAMESPACE_NAME_LABEL: zitadel.namespace}},
            },
            "kinds": [{"group": GATEWAY_API, "kind": "HTTPRoute"}, {"group": GATEWAY_API, "kind": "GRPCRoute"}],
        },
    }
    if edge.listener.tls_secret_name:
        listener["tls"] = {
            "mode": "Terminate",
            "certificateRefs": [{"group": "", "kind": "Secret", "name": edge.listener.tls_secret_name}],
        }
    spec = {"gatewayClassName": names.EDGE_GATEWAY_CLASS, "listeners": [listener]}
    return _document(GATEWAY_API_VERSION, "Gateway", names.EDGE_GATEWAY, edge.namespace, spec)


def client_traffic_policy(edge: EdgeConfig) -> dict[str, Any]:
    """On the Gateway: who the client is, and no client-sent claim headers (removed before the JWT filter runs)."""
    spec: dict[str, Any] = {
        "targetRefs": [{"group": GATEWAY_API, "kind": "Gateway", "name": names.EDGE_GATEWAY}],
        "clientIPDetection": {"xForwardedFor": {"numTrustedHops": edge.client_ip_detection.xff_num_trusted_hops}},
    }
    claim_headers = [claim.header for claim in edge.jwt.claim_headers]
    if claim_headers:
        spec["headers"] = {"earlyRequestHeaders": {"remove": claim_headers}}
    return _document(
        ENVOY_GATEWAY_API_VERSION, "ClientTrafficPolicy", names.EDGE_CLIENT_TRAFFIC_POLICY, edge.namespace, spec
    )


# --- ZITADEL's routes -------------------------------------------------------------------------------------------------


def _route_refs(*routes: tuple[str, str]) -> list[dict[str, str]]:
    return [{"group": GATEWAY_API, "kind": kind, "name": name} for kind, name in routes]


#: The routes the chart renders: the API over HTTP, the API over gRPC, the login UI.
API_ROUTES: Final = (("HTTPRoute", names.ZITADEL_HTTP_ROUTE), ("GRPCRoute", names.ZITADEL_GRPC_ROUTE))
ALL_ROUTES: Final = (*API_ROUTES, ("HTTPRoute", names.ZITADEL_LOGIN_ROUTE))


def jwks_uri(zitadel: ZitadelEndpoint) -> str:
    """The JWKS address the proxies fetch through the ZITADEL Service: plain HTTP inside the cluster, and the public
    host name in the Host header, which is how ZITADEL finds its instance."""
    return f"http://{zitadel.external_domain}{ZITADEL_JWKS_PATH}"


def security_policy(edge: EdgeConfig, zitadel: ZitadelEndpoint) -> dict[str, Any]:
    """Copies claims of valid ZITADEL JWTs into headers. ``failOpen``: a request without a JWT, with an opaque token
    or a PAT, or with an invalid JWT passes unchanged (``optional`` alone would reject opaque bearer tokens)."""
    spec = {
        "targetRefs": _route_refs(*API_ROUTES),
        "jwt": {
            "failOpen": True,
            "providers": [
                {
                    "name": JWT_PROVIDER,
                    "issuer": zitadel.issuer,
                    "remoteJWKS": {
                        "uri": jwks_uri(zitadel),
                        "backendRefs": [
                            {
                                "group": "",
                                "kind": "Service",
                                "name": names.ZITADEL_SERVICE,
                                "port": names.ZITADEL_SERVICE_PORT,
                            }
                        ],
                    },
                    "claimToHeaders": [
                        {"claim": claim.claim, "header": claim.header} for claim in edge.jwt.claim_headers
                    ],
                }
            ],
        },
    }
    return _document(ENVOY_GATEWAY_API_VERSION, "SecurityPolicy", names.EDGE_JWT_POLICY, zitadel.namespace, spec)


def path_pattern(prefixes: Sequence[str]) -> str:
    """An RE2 pattern for Envoy's full match on ``:path`` (query included): any prefix, ending there, at ``/`` or
    at ``?``. The config allows only ``[A-Za-z0-9/._~-]``, of which ``.`` alone is special."""
    alternatives = "|".join(prefix.rstrip("/").replace(".", r"\.") for prefix in prefixes)
    return f"(?:{alternatives})(?:[/?].*)?"


def gateway_rule(rule: RateLimitRule, client_cidr: str | None) -> dict[str, Any]:
    """One global rule. ``shared``: one bucket across every route the policy targets, so a client's HTTP, gRPC and
    login requests count together."""
    selector: dict[str, Any] = {}
    if rule.per_headers:
        selector["headers"] = [{"name": header, "type": "Distinct"} for header in rule.per_headers]
    if rule.paths:
        selector["path"] = {"type": "RegularExpression", "value": path_pattern(rule.paths)}
    if client_cidr is not None:
        selector["sourceCIDR"] = {"type": "Distinct", "value": client_cidr}
    document: dict[str, Any] = {
        "limit": {"requests": rule.requests, "unit": rule.unit},
        "shared": True,
        "shadowMode": rule.shadow_mode,
    }
    if selector:
        document["clientSelectors"] = [selector]
    return document


#: Envoy's address formatter with a mask (Envoy >= 1.38, ``*_WITHOUT_PORT(MASK_PREFIX_LEN)``): ``2001:db8:1:2::/64``.
#: Envoy Gateway v1.9.0 pins Envoy v1.39.0 (``api/v1alpha1/shared_types.go``).
_MASKED_CLIENT_ADDRESS: Final = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT({})%"
#: The address family of a ``sourceCIDR`` rule, as its action's range prefix reads (``ir.CIDRMatch.AddressPrefix``).
_FAMILY_PATTERNS: Final = {4: "^[0-9.]+$", 6: ":"}
_FULL_LENGTH: Final = {4: 32, 6: 128}


def client_network_prefixes(edge: EdgeConfig) -> dict[int, int]:
    """The address families whose per-client-IP buckets name a network rather than an address, with its length."""
    lengths = {4: edge.rate_limit.ipv4_prefix_length, 6: edge.rate_limit.ipv6_prefix_length}
    return {family: length for family, length in lengths.items() if length < _FULL_LENGTH[family]}


def route_configuration_name(edge: EdgeConfig) -> str:
    """The xDS RouteConfiguration of the Gateway's listener: ``<namespace>/<gateway>/<listener>`` while Envoy Gateway's
    ``XDSNameSchemeV2`` runtime flag is off, its v1.9.0 default (``internal/xds/translator/listener.go``
    ``routeConfigName``, ``internal/gatewayapi/helpers.go`` ``irListenerName``)."""
    return f"{edge.namespace}/{names.EDGE_GATEWAY}/{listener_name(edge.listener)}"


def client_network_patch(edge: EdgeConfig) -> dict[str, Any] | None:
    """Per-client-IP buckets per network (IPv6 /64 by default), or ``None`` when every bucket is one address.

    Envoy Gateway v1.9.0 cannot say this in a BackendTrafficPolicy: a ``Distinct`` ``sourceCIDR`` always sends the
    whole address, ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``, as the ``remote_address`` descriptor
    (``internal/xds/translator/ratelimit.go``). This patch replaces that one value, in the Distinct actions of the
    family's rules only, with the masked formatter; the ratelimit service's descriptor (``remote_address``, any value)
    is unchanged. If the patch cannot apply, the policy reports it in its status and buckets stay per address."""
    prefixes = client_network_prefixes(edge)
    if not prefixes:
        return None
    patches = [
        {
            "type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": route_configuration_name(edge),
            "operation": {
                "op": "replace",
                "jsonPath": (
                    "$..actions[?(@.remote_address_match.descriptor_key == 'remote_address' && "
                    f"@.remote_address_match.address_matcher.ranges[0].address_prefix =~ '{_FAMILY_PATTERNS[family]}')]"
                    ".remote_address_match.descriptor_value"
                ),
                "value": _MASKED_CLIENT_ADDRESS.format(length),
            },
        }
        for family, length in sorted(prefixes.items())
    ]
    spec = {
        "type": "JSONPatch",
        "targetRef": {"group": GATEWAY_API, "kind": "Gateway", "name": names.EDGE_GATEWAY},
        "jsonPatches": patches,
    }
    return _document(
        ENVOY_GATEWAY_API_VERSION, "EnvoyPatchPolicy", names.EDGE_CLIENT_NETWORK_PATCH, edge.namespace, spec
    )


def backend_traffic_policy(edge: EdgeConfig, zitadel: ZitadelEndpoint) -> dict[str, Any]:
    spec = {
        "targetRefs": _route_refs(*ALL_ROUTES),
        "rateLimit": {"global": {"rules": [gateway_rule(rule, cidr) for rule, cidr in edge.rate_limit.expanded()]}},
    }
    return _document(
        ENVOY_GATEWAY_API_VERSION, "BackendTrafficPolicy", names.EDGE_RATE_LIMIT_POLICY, zitadel.namespace, spec
    )


# --- network policies of the gateway's namespace ----------------------------------------------------------------------


def edge_network_policies(edge: EdgeConfig, *, zitadel_namespace: str, cluster: ClusterNetwork) -> list[dict[str, Any]]:
    """The gateway's namespace: deny all, then the flows of the controller, the proxies and the ratelimit pods. The
    configured Prometheus reaches the proxies' and ratelimit pods' metrics through ``components/observability.py``."""
    own = edge.namespace
    proxies = pods(edge_pods.proxy_labels(edge.namespace))
    controller = pods(edge_pods.CONTROLLER_LABELS)
    rate_limit = pods(edge_pods.RATE_LIMIT_LABELS)
    kube_api = [api_server_egress(cluster)]
    return [
        policy(own, "edge-default-deny", {}, ingress=[], egress=[]),
        policy(own, "edge-dns", {}, egress=[dns_egress(cluster.dns_namespace)]),
        policy(
            own,
            "edge-proxies",
            proxies,
            # Clients, from anywhere (through the load balancer), on the listener's container port.
            ingress=[{"ports": ports(edge_pods.proxy_container_port(edge.listener.port))}],
            egress=[
                # ZITADEL's API (and its JWKS) and the login UI.
                {"to": [in_namespace(zitadel_namespace, SERVER_LABELS)], "ports": ports(ZITADEL_PORT)},
                {"to": [in_namespace(zitadel_namespace, LOGIN_LABELS)], "ports": ports(LOGIN_PORT)},
                {"to": [{"podSelector": controller}], "ports": ports(edge_pods.XDS_PORT, edge_pods.WASM_PORT)},
                {"to": [{"podSelector": rate_limit}], "ports": ports(edge_pods.RATE_LIMIT_GRPC_PORT)},
            ],
        ),
        policy(
            own,
            "edge-rate-limit",
            rate_limit,
            ingress=[{"from": [{"podSelector": proxies}], "ports": ports(edge_pods.RATE_LIMIT_GRPC_PORT)}],
            egress=[
                # Redis and Sentinel: the counters live in DB 0 of the Sentinel set.
                {
                    "to": [in_namespace(names.REDIS_NAMESPACE, REDIS_LABELS)],
                    "ports": ports(names.REDIS_PORT, names.SENTINEL_PORT),
                },
                {"to": [{"podSelector": controller}], "ports": ports(edge_pods.RATE_LIMIT_CONFIG_PORT)},
            ],
        ),
        policy(
            own,
            "edge-controller",
            controller,
            ingress=[
                {"from": [{"podSelector": proxies}], "ports": ports(edge_pods.XDS_PORT, edge_pods.WASM_PORT)},
                {"from": [{"podSelector": rate_limit}], "ports": ports(edge_pods.RATE_LIMIT_CONFIG_PORT)},
            ],
            egress=kube_api,
        ),
        policy(own, "edge-certgen", pods(edge_pods.CERTGEN_LABELS), egress=kube_api),
    ]
