"""How the program isolates its pods: Pod Security admission on its namespaces, and ZITADEL's network policies.

The ZITADEL chart renders no NetworkPolicy, so the program declares them in ZITADEL's namespace: everything is
denied, then each flow the tier needs is opened for the pods that need it. The Redis chart renders its own policy
(``components/redis.py``). Pod labels and ports below are the ZITADEL chart's (9.34.0 templates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from components import edge_pods
from components.peers import VaultEndpoint
from stacks import names
from stacks.config import ZitadelConfig

#: Pod Security admission modes: ``enforce`` rejects a violating pod, ``audit`` and ``warn`` report it.
POD_SECURITY_MODES: Final = ("enforce", "audit", "warn")
POD_SECURITY_LEVEL: Final = "restricted"
_PSA_PREFIX: Final = "pod-security.kubernetes.io/"

#: Kubernetes sets this label on every namespace; namespace selectors match on it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

# The ZITADEL chart's pod labels: the server and its jobs share ``name: zitadel`` and differ by ``component``.
_NAME: Final = "app.kubernetes.io/name"
_INSTANCE: Final = "app.kubernetes.io/instance"
_COMPONENT: Final = "app.kubernetes.io/component"
SERVER_COMPONENT: Final = "start"
#: The pods that read ZITADEL's configuration and so reach Postgres, Redis and Vault.
BACKEND_COMPONENTS: Final = ("start", "init", "setup")
#: The setup job's secret writers and the cleanup job talk to the Kubernetes API.
KUBE_API_COMPONENTS: Final = ("setup", "cleanup")
LOGIN_NAME: Final = "zitadel-login"
ZITADEL_PORT: Final = 8080
LOGIN_PORT: Final = 3000
DNS_PORT: Final = 53
#: The pods other namespaces' policies name: ZITADEL's server, its login UI, and the Redis nodes.
SERVER_LABELS: Final = {_NAME: names.ZITADEL_FULLNAME, _INSTANCE: names.ZITADEL_RELEASE, _COMPONENT: SERVER_COMPONENT}
LOGIN_LABELS: Final = {_NAME: LOGIN_NAME, _INSTANCE: names.ZITADEL_RELEASE}
REDIS_LABELS: Final = {_NAME: "redis", _INSTANCE: names.REDIS_RELEASE}


def pod_security_labels(version: str) -> dict[str, str]:
    """Enforce "restricted" at the pinned ``version``; audit and warn at the latest one."""
    labels = {f"{_PSA_PREFIX}{mode}": POD_SECURITY_LEVEL for mode in POD_SECURITY_MODES}
    labels[f"{_PSA_PREFIX}enforce-version"] = version
    labels[f"{_PSA_PREFIX}audit-version"] = "latest"
    labels[f"{_PSA_PREFIX}warn-version"] = "latest"
    return labels


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _ports(ports: Sequence[int], protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"port": port, "protocol": protocol} for port in ports]


def _ip_blocks(cidrs: Sequence[str], excluded: Sequence[str] = ()) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr, **({"except": list(excluded)} if excluded else {})}} for cidr in cidrs]


def _zitadel_pods(components: Sequence[str]) -> dict[str, Any]:
    return {
        "matchLabels": {_NAME: names.ZITADEL_FULLNAME, _INSTANCE: names.ZITADEL_RELEASE},
        "matchExpressions": [{"key": _COMPONENT, "operator": "In", "values": list(components)}],
    }


def _policy(namespace: str, name: str, pod_selector: Mapping[str, Any], **rules: Any) -> dict[str, Any]:
    types = [kind for kind, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in rules]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": dict(pod_selector), "policyTypes": types, **rules},
    }


def zitadel_network_policies(
    zitadel: ZitadelConfig, *, gateway_namespace: str, vault: VaultEndpoint, dns_namespace: str
) -> list[dict[str, Any]]:
    """ZITADEL's namespace: deny all, then open each flow for the pods that need it (policies add up).

    ``gateway_namespace`` holds the stack's gateway proxies, the only clients from outside besides
    ``zitadel.networkPolicy.ingressNamespaces``.
    """
    net = zitadel.network_policy
    namespace = zitadel.namespace
    server = {"matchLabels": dict(SERVER_LABELS)}
    login = {"matchLabels": dict(LOGIN_LABELS)}
    postgres = {"matchLabels": {_NAME: "postgresql", _INSTANCE: names.ZITADEL_RELEASE}}
    # The edge: the stack's gateway proxies, and any further namespace the stack names.
    gateways = [
        edge_pods.in_namespace(gateway_namespace, edge_pods.proxy_labels(gateway_namespace)),
        *(_namespace(namespace) for namespace in net.ingress_namespaces),
    ]
    bundled = zitadel.database.mode == "bundled"

    postgres_peers = [{"podSelector": postgres}] if bundled else _ip_blocks(net.postgres_cidrs)
    postgres_port = names.ZITADEL_POSTGRES_PORT if bundled else net.postgres_port
    redis_pods = {"matchLabels": dict(REDIS_LABELS)}
    policies = [
        # Isolates every pod of the namespace, both ways, including pods a later chart version adds.
        _policy(namespace, "zitadel-default-deny", {}, ingress=[], egress=[]),
        _policy(
            namespace,
            "zitadel-dns",
            {},
            egress=[
                {
                    "to": [_namespace(dns_namespace)],
                    "ports": _ports([DNS_PORT], "UDP") + _ports([DNS_PORT], "TCP"),
                }
            ],
        ),
        _policy(
            namespace,
            "zitadel-server",
            server,
            # The login UI calls ZITADEL's API in the namespace (and its init container waits for it).
            ingress=[{"from": [*gateways, {"podSelector": login}], "ports": _ports([ZITADEL_PORT])}],
            # Identity providers and the mail relay.
            egress=[
                {"to": _ip_blocks([target.cidr], target.except_), "ports": _ports(target.ports, target.protocol)}
                for target in net.external_egress
            ],
        ),
        _policy(
            namespace,
            "zitadel-login",
            login,
            ingress=[{"from": gateways, "ports": _ports([LOGIN_PORT])}] if gateways else [],
            egress=[{"to": [{"podSelector": server}], "ports": _ports([ZITADEL_PORT])}],
        ),
        _policy(
            namespace,
            "zitadel-backends",
            _zitadel_pods(BACKEND_COMPONENTS),
            egress=[
                {
                    "to": [{**_namespace(names.REDIS_NAMESPACE), "podSelector": redis_pods}],
                    "ports": _ports([names.REDIS_PORT, names.SENTINEL_PORT]),
                },
                # The Vault agent init container of each pod logs in and renders the secrets file.
                {"to": [_namespace(vault.namespace)], "ports": _ports([vault.port])},
                {"to": postgres_peers, "ports": _ports([postgres_port])},
            ],
        ),
        _policy(
            namespace,
            "zitadel-kube-api",
            _zitadel_pods(KUBE_API_COMPONENTS),
            egress=[{"to": _ip_blocks(net.kube_api_cidrs), "ports": _ports(net.kube_api_ports)}],
        ),
    ]
    if bundled:
        policies.append(
            _policy(
                namespace,
                "zitadel-postgresql",
                postgres,
                ingress=[
                    {
                        "from": [{"podSelector": _zitadel_pods(BACKEND_COMPONENTS)}],
                        "ports": _ports([names.ZITADEL_POSTGRES_PORT]),
                    }
                ],
            )
        )
    return policies
