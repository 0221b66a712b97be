"""What a component knows of its neighbours, as plain values in its arguments.

Built from the stack's configuration in one place (``components/wiring.py``), so that no component reads another
one's configuration section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterNetwork:
    """The cluster's own addresses, as the in-cluster addresses and the network policies name them."""

    #: The cluster's DNS domain (``<service>.<namespace>.svc.<domain>``).
    domain: str
    #: Namespace of the cluster DNS: the network policies open port 53 (UDP and TCP) to it.
    dns_namespace: str
    #: Where the API server answers pods: no pod selector matches it, only its address blocks.
    api_server_cidrs: tuple[str, ...]
    #: The ports it answers on there.
    api_server_ports: tuple[int, ...]


@dataclass(frozen=True)
class VaultEndpoint:
    """Where the pods' Vault agents log in: the server (the network policies open egress to it) and the auth backend."""

    namespace: str
    port: int
    #: The Kubernetes auth backend's path (``auth/<path>``).
    auth_path: str


@dataclass(frozen=True)
class ZitadelEndpoint:
    """ZITADEL as its neighbours reach it: the namespace of its Services and routes, and its public name."""

    namespace: str
    external_domain: str
    external_port: int
    external_secure: bool
    #: Its public URL: the issuer of its tokens.
    issuer: str


@dataclass(frozen=True)
class PrometheusScraper:
    """The Prometheus that scrapes the tier: the only source a metrics port admits, and whether the program declares
    the Prometheus Operator's objects (monitors, rules) for it (``observability.enabled``)."""

    namespace: str
    #: Labels of its pods in ``namespace``.
    pod_labels: tuple[tuple[str, str], ...]
    #: Labels its ServiceMonitor, PodMonitor and rule selectors match.
    selector_labels: tuple[tuple[str, str], ...]
    scrape_interval: str
    monitors: bool
