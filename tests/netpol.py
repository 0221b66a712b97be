"""A small evaluator of Kubernetes NetworkPolicies: is a flow allowed?

Semantics (kubernetes.io/docs/concepts/services-networking/network-policies):

- a pod is isolated for ingress (egress) when any policy in its namespace selects it and lists that policy type;
  ``policyTypes`` defaults to Ingress, plus Egress when the policy has an ``egress`` section;
- a non-isolated pod allows everything in that direction; an isolated pod allows a connection when at least one
  rule of one selecting policy admits it (policies add up, none subtracts);
- a rule admits a peer when its ``from``/``to`` is absent or empty (everyone) or one peer matches, and the port
  when its ``ports`` is absent or empty (every port) or one entry matches (number or named port, ``endPort``
  ranges, protocol TCP unless stated);
- a peer with only ``podSelector`` matches pods of the policy's own namespace; with only ``namespaceSelector``,
  every pod of the matching namespaces; with both, the matching pods of the matching namespaces; ``ipBlock``
  matches addresses in ``cidr`` and not in ``except``;
- a flow between two pods needs egress allowed at the source AND ingress allowed at the destination; a flow from
  or to an address outside the cluster is judged on the pod's side only.

``ipBlock`` is also matched against pod addresses: the API leaves that to the network plugin, and assuming it
matches is the more permissive reading, the right one for proving a flow is denied. Namespaces always carry
``kubernetes.io/metadata.name`` (the API server sets it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    #: Named container ports, for policies that name a port (``{"redis": 6379}``).
    ports: Mapping[str, int] = field(default_factory=dict)


Endpoint = Pod | str  # a pod, or an address outside the cluster


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector (``matchLabels`` and ``matchExpressions``) against ``labels``; ``{}`` matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator!r}")
    return True


def _in_block(address: str, block: Mapping[str, Any]) -> bool:
    ip = ipaddress.ip_address(address)
    if ip not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(ip in ipaddress.ip_network(excluded) for excluded in block.get("except") or [])


class Cluster:
    """Policies, namespaces (name → labels) and pods: the state a network plugin enforces."""

    def __init__(
        self,
        policies: Sequence[Mapping[str, Any]],
        namespaces: Mapping[str, Mapping[str, str]],
        pods: Sequence[Pod],
    ) -> None:
        self.policies = list(policies)
        self.namespaces = {name: {**labels, NAMESPACE_NAME_LABEL: name} for name, labels in namespaces.items()}
        self.pods = {pod.name: pod for pod in pods}
        for pod in pods:
            if pod.namespace not in self.namespaces:
                raise ValueError(f"pod {pod.name} is in an unknown namespace {pod.namespace}")
        for policy in self.policies:
            if policy["metadata"]["namespace"] not in self.namespaces:
                raise ValueError(f"policy {policy['metadata']['name']} is in an unknown namespace")

    def pod(self, name: str) -> Pod:
        return self.pods[name]

    # --- the decision ---------------------------------------------------------------------------------------------

    def allowed(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Whether a connection from ``source`` to ``destination`` on ``port``/``protocol`` gets through."""
        if isinstance(source, str) and isinstance(destination, str):
            raise ValueError("at least one end of a flow must be a pod")
        egress = not isinstance(source, Pod) or self._admits(source, "Egress", destination, destination, port, protocol)
        ingress = not isinstance(destination, Pod) or self._admits(
            destination, "Ingress", source, destination, port, protocol
        )
        return egress and ingress

    def _admits(self, pod: Pod, direction: str, peer: Endpoint, target: Endpoint, port: int, protocol: str) -> bool:
        selecting = [p for p in self._in_namespace(pod.namespace) if matches(p["spec"].get("podSelector"), pod.labels)]
        relevant = [p for p in selecting if direction in _policy_types(p)]
        if not relevant:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in relevant:
            for rule in policy["spec"].get(key) or []:
                if self._peer_matches(rule.get(peers_key), peer, policy["metadata"]["namespace"]) and _port_matches(
                    rule.get("ports"), target, port, protocol
                ):
                    return True
        return False

    def _in_namespace(self, namespace: str) -> list[Mapping[str, Any]]:
        return [p for p in self.policies if p["metadata"]["namespace"] == namespace]

    def _peer_matches(self, peers: Sequence[Mapping[str, Any]] | None, peer: Endpoint, namespace: str) -> bool:
        if not peers:
            return True
        for entry in peers:
            if "ipBlock" in entry:
                if _in_block(peer.ip if isinstance(peer, Pod) else peer, entry["ipBlock"]):
                    return True
                continue
            if not isinstance(peer, Pod):
                continue  # pod and namespace selectors never match an address outside the cluster
            namespace_selector = entry.get("namespaceSelector")
            if namespace_selector is None:
                namespace_ok = peer.namespace == namespace
            else:
                namespace_ok = matches(namespace_selector, self.namespaces[peer.namespace])
            pod_selector = entry.get("podSelector")
            pod_ok = pod_selector is None or matches(pod_selector, peer.labels)
            if namespace_ok and pod_ok:
                return True
        return False


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, target: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True  # every port of that protocol
        if isinstance(wanted, str):
            named = target.ports.get(wanted) if isinstance(target, Pod) else None
            if named == port:
                return True
            continue
        if int(wanted) <= port <= int(entry.get("endPort", wanted)):
            return True
    return False
