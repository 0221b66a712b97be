"""NetworkPolicy documents as the program writes them: peers, ports, a policy, and their declaration as resources.

ZITADEL's namespace (``components/isolation.py``), the edge's (``components/edge_objects.py``), the event relay
(``components/event_relay.py``) and the Redis chart's extra rules (``components/redis.py``) are built of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import pulumi
import pulumi_kubernetes as k8s

from components.peers import ClusterNetwork

#: Kubernetes sets this label on every namespace; namespace selectors match on it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
DNS_PORT: Final = 53


def ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"port": number, "protocol": protocol} for number in numbers]


def pods(labels: Mapping[str, str]) -> dict[str, Any]:
    """A pod selector: the pods that carry ``labels``."""
    return {"matchLabels": dict(labels)}


def namespace(name: str) -> dict[str, Any]:
    """A peer: every pod of the namespace ``name``."""
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def in_namespace(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A peer: the pods with ``labels`` in the namespace ``name``."""
    return {**namespace(name), "podSelector": pods(labels)}


def ip_blocks(cidrs: Iterable[str], excluded: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Peers by address: what no selector matches (the API server, services outside the cluster)."""
    return [{"ipBlock": {"cidr": cidr, **({"except": list(excluded)} if excluded else {})}} for cidr in cidrs]


def dns_egress(dns_namespace: str) -> dict[str, Any]:
    """Name lookups at the cluster DNS, over UDP and TCP (answers too large for UDP are retried over TCP)."""
    return {"to": [namespace(dns_namespace)], "ports": ports(DNS_PORT, protocol="UDP") + ports(DNS_PORT)}


def api_server_egress(cluster: ClusterNetwork) -> dict[str, Any]:
    """The Kubernetes API server. It is no pod (its Service address is translated before the policy sees the
    connection): only its address blocks can match it."""
    return {"to": ip_blocks(cluster.api_server_cidrs), "ports": ports(*cluster.api_server_ports)}


def policy(namespace_name: str, name: str, pod_selector: Mapping[str, Any], **rules: Any) -> dict[str, Any]:
    """A NetworkPolicy; its ``policyTypes`` are the directions ``rules`` name (``ingress``, ``egress``)."""
    types = [kind for kind, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in rules]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace_name},
        "spec": {"podSelector": dict(pod_selector), "policyTypes": types, **rules},
    }


def declare(
    documents: Iterable[Mapping[str, Any]], namespace_name: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> list[k8s.networking.v1.NetworkPolicy]:
    """One resource per document, named as the policy; ``namespace_name`` may be the namespace resource's output, so
    that the policies wait for it."""
    return [
        k8s.networking.v1.NetworkPolicy(
            document["metadata"]["name"],
            metadata=k8s.meta.v1.ObjectMetaArgs(name=document["metadata"]["name"], namespace=namespace_name),
            spec=document["spec"],
            opts=opts,
        )
        for document in documents
    ]
