"""ZITADEL's edge: Envoy Gateway as a Helm release (with the Gateway API and Envoy Gateway CRDs), the Gateway for
``zitadel.externalDomain``, and global rate limits that envoyproxy/ratelimit keeps in DB 0 of the Redis Sentinel set.

The ratelimit service reads the Redis password only from its environment and its image (distroless) has no shell, so
the Vault Agent's file cannot reach it. The program therefore writes the generated password into one Kubernetes Secret
in the gateway's namespace (a Pulumi secret end to end; no value, output or plan shows it), the pods take it through
``secretKeyRef``, and a short digest of it on their pod template rolls them when it is rotated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import custom_resources, edge_objects, netpol, ownership
from components.helm import chart_args
from components.peers import ClusterNetwork, ZitadelEndpoint
from stacks import names
from stacks.config import EdgeConfig, EdgeRateLimit

#: envoyproxy/ratelimit's Redis client mode (``src/settings/settings.go``: ``REDIS_TYPE``).
REDIS_TYPE_SENTINEL = "sentinel"


@dataclass(frozen=True)
class EdgeArgs:
    """What the edge needs: its own configuration section, and where ZITADEL and the Redis sentinels are."""

    edge: EdgeConfig
    #: The Gateway's host name, and the namespace whose routes may attach (and whose pods the proxies reach).
    zitadel: ZitadelEndpoint
    #: ``host:port`` of every Sentinel of the Redis set: the ratelimit service keeps its counters there.
    sentinels: tuple[str, ...]
    cluster: ClusterNetwork
    namespaces: ownership.NamespacePolicy


@dataclass(frozen=True)
class ZitadelRoutePoliciesArgs:
    """The edge's policies on ZITADEL's routes: the JWT claim copy and the rate limits, in ZITADEL's namespace."""

    edge: EdgeConfig
    zitadel: ZitadelEndpoint


def sentinel_url(sentinels: Sequence[str]) -> str:
    """``<master set>,<sentinel>:26379,...``: every Sentinel of the Redis release, and no ``/db`` (Sentinel mode
    cannot select a DB, and radix would send the ``SELECT`` to a Sentinel, which refuses it)."""
    return ",".join([names.SENTINEL_MASTER_SET, *sentinels])


def _from_secret(variable: str) -> dict[str, Any]:
    return {
        "name": variable,
        "valueFrom": {
            "secretKeyRef": {"name": names.RATE_LIMIT_REDIS_SECRET, "key": names.RATE_LIMIT_REDIS_SECRET_KEY}
        },
    }


def rate_limit_env(limits: EdgeRateLimit) -> list[dict[str, Any]]:
    """What Envoy Gateway does not set on the ratelimit container (it sets ``REDIS_URL``, ``REDIS_SOCKET_TYPE``)."""
    return [
        {"name": "REDIS_TYPE", "value": REDIS_TYPE_SENTINEL},
        # ``user:password`` of its own ACL user, on the master and replicas and on the sentinels (where the same user
        # may only discover the master: components/redis_acl.py).
        _from_secret("REDIS_AUTH"),
        _from_secret("REDIS_SENTINEL_AUTH"),
        {"name": "CACHE_KEY_PREFIX", "value": limits.key_prefix},
        {"name": "EXPIRATION_JITTER_MAX_SECONDS", "value": str(limits.expiration_jitter_max_seconds)},
        # A pod that lost Redis turns unready, so the proxies stop waiting on it (then failClosed decides).
        {"name": "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION", "value": "true"},
    ]


def redis_auth(password: str) -> str:
    """``REDIS_AUTH``/``REDIS_SENTINEL_AUTH`` as envoyproxy/ratelimit takes a user: ``user:password``."""
    return f"{names.REDIS_RATE_LIMIT_USER}:{password}"


def password_digest(password: str) -> str:
    """A short digest of the password for the pod template: it changes with the password and cannot reveal it."""
    return hashlib.sha256(password.encode()).hexdigest()[:16]


def edge_values(args: EdgeArgs, password_digest: pulumi.Input[str]) -> dict[str, Any]:
    """The Envoy Gateway chart values; ``password_digest`` is ``password_digest(<the Redis password>)``."""
    edge = args.edge
    limits = edge.rate_limit
    envoy_gateway: dict[str, Any] = {}
    if edge_objects.client_network_patch(edge) is not None:
        # For the per-network buckets' EnvoyPatchPolicy. Such a policy may rewrite any xDS of the Gateway it targets,
        # and only from the Gateway's namespace (edge.namespace): whoever may write there may rewrite the proxies.
        envoy_gateway["extensionApis"] = {"enableEnvoyPatchPolicy": True}
    return {
        "kubernetesClusterDomain": args.cluster.domain,
        "deployment": {"envoyGateway": {"resources": edge.resources.controller.as_k8s()}},
        "certgen": {"job": {"resources": edge.resources.certgen.as_k8s()}},
        # Zone labels on proxy pods, through a webhook the API server would call: unused here, and one flow less.
        "topologyInjector": {"enabled": False},
        "config": {
            "envoyGateway": {
                **envoy_gateway,
                "rateLimit": {
                    "backend": {"type": "Redis", "redis": {"url": sentinel_url(args.sentinels)}},
                    "failClosed": limits.fail_closed,
                    "timeout": limits.timeout,
                },
                "provider": {
                    "type": "Kubernetes",
                    "kubernetes": {
                        "rateLimitDeployment": {
                            "replicas": edge.rate_limit_replicas,
                            "container": {
                                "env": rate_limit_env(limits),
                                "resources": edge.resources.rate_limit.as_k8s(),
                            },
                            "pod": {"annotations": {names.RATE_LIMIT_PASSWORD_DIGEST_ANNOTATION: password_digest}},
                        }
                    },
                },
            }
        },
    }


class Edge(pulumi.ComponentResource):
    """The gateway's namespace, the ratelimit pods' Redis Secret, the Envoy Gateway release, the Gateway."""

    def __init__(
        self,
        name: str,
        args: EdgeArgs,
        *,
        redis_password: pulumi.Output[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``redis_password``: the password of the ratelimit pods' Redis user (a Pulumi secret)."""
        super().__init__(names.component_type("Edge"), name, None, opts)
        edge = args.edge
        child = pulumi.ResourceOptions(parent=self)
        namespace = ownership.namespace(edge.namespace, args.namespaces, parent=self)
        network_policies = netpol.declare(
            edge_objects.edge_network_policies(edge, zitadel_namespace=args.zitadel.namespace, cluster=args.cluster),
            namespace.metadata.name,
            child,
        )
        secret = k8s.core.v1.Secret(
            names.RATE_LIMIT_REDIS_SECRET,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=names.RATE_LIMIT_REDIS_SECRET, namespace=namespace.metadata.name),
            type="Opaque",
            string_data={names.RATE_LIMIT_REDIS_SECRET_KEY: pulumi.Output.from_input(redis_password).apply(redis_auth)},
            opts=child,
        )
        # Plain on purpose: a secret anywhere in the values would hide the whole document from plans and reviews,
        # and 64 bits of a SHA-256 say nothing about a 48-character random password.
        digest = pulumi.Output.unsecret(pulumi.Output.from_input(redis_password).apply(password_digest))
        self.release = k8s.helm.v3.Release(
            names.EDGE_RELEASE,
            name=names.EDGE_RELEASE,
            namespace=namespace.metadata.name,
            values=edge_values(args, digest),
            # Atomic: the edge holds no state and migrates nothing, so a failed upgrade is best undone at once.
            atomic=True,
            timeout=edge.release_timeout_seconds,
            **chart_args(edge.chart),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, secret, *network_policies]),
        )
        # The CRDs come with the release.
        after_release = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        proxy_config = custom_resources.declare(edge_objects.envoy_proxy(edge), after_release)
        gateway_class = custom_resources.declare(
            edge_objects.gateway_class(edge),
            pulumi.ResourceOptions(parent=self, depends_on=[self.release, proxy_config]),
        )
        self.gateway = custom_resources.declare(
            edge_objects.gateway(edge, args.zitadel),
            pulumi.ResourceOptions(parent=self, depends_on=[self.release, gateway_class]),
        )
        self.client_traffic_policy = custom_resources.declare(
            edge_objects.client_traffic_policy(edge),
            pulumi.ResourceOptions(parent=self, depends_on=[self.release, self.gateway]),
        )
        patch = edge_objects.client_network_patch(edge)
        if patch is not None:
            after_gateway = pulumi.ResourceOptions(parent=self, depends_on=[self.release, self.gateway])
            custom_resources.declare(patch, after_gateway)
        self.register_outputs({"gateway": f"{edge.namespace}/{names.EDGE_GATEWAY}"})


class ZitadelRoutePolicies(pulumi.ComponentResource):
    """The policies on ZITADEL's routes, in ZITADEL's namespace: the JWT claim copy and the rate limits."""

    def __init__(
        self,
        name: str,
        args: ZitadelRoutePoliciesArgs,
        *,
        crds_ready: Sequence[pulumi.Resource],
        namespace_ready: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(names.component_type("ZitadelRoutePolicies"), name, None, opts)
        # After the CRDs (the gateway release) and ZITADEL's namespace; a policy may precede the routes it targets.
        options = pulumi.ResourceOptions(parent=self, depends_on=[*crds_ready, *namespace_ready])
        documents = [edge_objects.backend_traffic_policy(args.edge, args.zitadel)]
        if args.edge.jwt.enabled:
            documents.insert(0, edge_objects.security_policy(args.edge, args.zitadel))
        self.policies = [custom_resources.declare(document, options) for document in documents]
        self.register_outputs({})
