"""How the program isolates its pods: Pod Security admission on its namespaces, and ZITADEL's network policies.

The ZITADEL chart renders no NetworkPolicy, so the program declares them in ZITADEL's namespace: everything is
denied, then each flow the tier needs is opened for the pods that need it. The Redis chart renders its own policy
(``components/redis.py``). Pod labels and ports below are the ZITADEL chart's (9.34.0 templates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from components import edge_pods
from components.netpol import api_server_egress, dns_egress, in_namespace, ip_blocks, namespace, pods, policy, ports
from components.peers import ClusterNetwork, VaultEndpoint
from stacks import names
from stacks.config import ZitadelConfig

# The ZITADEL chart's pod labels: the server and its jobs share ``name: zitadel`` and differ by ``component``.
_NAME: Final = "app.kubernetes.io/name"
_INSTANCE: Final = "app.kubernetes.io/instance"
_COMPONENT: Final = "app.kubernetes.io/component"
SERVER_COMPONENT: Final = "start"
#: The pods that read ZITADEL's configuration and so reach Postgres, Redis and Vault.
BACKEND_COMPONENTS: Final = ("start", "init", "setup")
#: The setup job's secret writers and the cleanup job talk to the Kubernetes API.
KUBE_API_COMPONENTS: Final = ("setup", "cleanup")
ZITADEL_PORT: Final = 8080
LOGIN_PORT: Final = 3000
#: The pods other namespaces' policies name: ZITADEL's server, its login UI, and the Redis nodes.
SERVER_LABELS: Final = {_NAME: names.ZITADEL_CHART_NAME, _INSTANCE: names.ZITADEL_RELEASE, _COMPONENT: SERVER_COMPONENT}
# The login's name label is ``<chart name>-login``: its fullname, as long as the release name is the chart's.
LOGIN_LABELS: Final = {_NAME: names.ZITADEL_LOGIN_FULLNAME, _INSTANCE: names.ZITADEL_RELEASE}
REDIS_LABELS: Final = {_NAME: names.REDIS_CHART_NAME, _INSTANCE: names.REDIS_RELEASE}


def pod_security_labels(version: str) -> dict[str, str]:
    """Enforce "restricted" at the pinned ``version``; audit and warn at the latest one."""
    prefix = names.POD_SECURITY_PREFIX
    labels = {f"{prefix}{mode}": names.POD_SECURITY_LEVEL for mode in names.POD_SECURITY_MODES}
    labels[f"{prefix}enforce-version"] = version
    labels[f"{prefix}audit-version"] = "latest"
    labels[f"{prefix}warn-version"] = "latest"
    return labels


def _zitadel_pods(components: Sequence[str]) -> dict[str, Any]:
    return {
        "matchLabels": {_NAME: names.ZITADEL_CHART_NAME, _INSTANCE: names.ZITADEL_RELEASE},
        "matchExpressions": [{"key": _COMPONENT, "operator": "In", "values": list(components)}],
    }


def zitadel_network_policies(
    zitadel: ZitadelConfig, *, gateway_namespace: str, vault: VaultEndpoint, cluster: ClusterNetwork
) -> list[dict[str, Any]]:
    """ZITADEL's namespace: deny all, then open each flow for the pods that need it (policies add up).

    ``gateway_namespace`` holds the stack's gateway proxies, the only clients from outside besides
    ``zitadel.networkPolicy.ingressNamespaces``.
    """
    net = zitadel.network_policy
    own = zitadel.namespace
    server = pods(SERVER_LABELS)
    login = pods(LOGIN_LABELS)
    postgres = pods({_NAME: "postgresql", _INSTANCE: names.ZITADEL_RELEASE})
    # The edge: the stack's gateway proxies, and any further namespace the stack names.
    gateways = [
        in_namespace(gateway_namespace, edge_pods.proxy_labels(gateway_namespace)),
        *(namespace(name) for name in net.ingress_namespaces),
    ]
    bundled = zitadel.database.bundled

    postgres_peers = [{"podSelector": postgres}] if bundled else ip_blocks(net.postgres_cidrs)
    postgres_port = names.ZITADEL_POSTGRES_PORT if bundled else net.postgres_port
    policies = [
        # Isolates every pod of the namespace, both ways, including pods a later chart version adds.
        policy(own, "zitadel-default-deny", {}, ingress=[], egress=[]),
        policy(own, "zitadel-dns", {}, egress=[dns_egress(cluster.dns_namespace)]),
        policy(
            own,
            "zitadel-server",
            server,
            # The login UI calls ZITADEL's API in the namespace (and its init container waits for it).
            ingress=[{"from": [*gateways, {"podSelector": login}], "ports": ports(ZITADEL_PORT)}],
            # Identity providers and the mail relay.
            egress=[
                {
                    "to": ip_blocks([target.cidr], target.except_),
                    "ports": ports(*target.ports, protocol=target.protocol),
                }
                for target in net.external_egress
            ],
        ),
        policy(
            own,
            "zitadel-login",
            login,
            ingress=[{"from": gateways, "ports": ports(LOGIN_PORT)}] if gateways else [],
            egress=[{"to": [{"podSelector": server}], "ports": ports(ZITADEL_PORT)}],
        ),
        policy(
            own,
            "zitadel-backends",
            _zitadel_pods(BACKEND_COMPONENTS),
            egress=[
                {
                    "to": [in_namespace(names.REDIS_NAMESPACE, REDIS_LABELS)],
                    "ports": ports(names.REDIS_PORT, names.SENTINEL_PORT),
                },
                # The Vault agent init container of each pod logs in and renders the secrets file.
                {"to": [namespace(vault.namespace)], "ports": ports(vault.port)},
                {"to": postgres_peers, "ports": ports(postgres_port)},
            ],
        ),
        policy(own, "zitadel-kube-api", _zitadel_pods(KUBE_API_COMPONENTS), egress=[api_server_egress(cluster)]),
    ]
    if bundled:
        policies.append(
            policy(
                own,
                "zitadel-postgresql",
                postgres,
                ingress=[
                    {
                        "from": [{"podSelector": _zitadel_pods(BACKEND_COMPONENTS)}],
                        "ports": ports(names.ZITADEL_POSTGRES_PORT),
                    }
                ],
            )
        )
    return policies
