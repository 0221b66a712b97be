"""What a stack owns in the cluster, and how it lets go of it: the Kubernetes providers and the namespaces.

Since pulumi-kubernetes#4278, creating an object that exists fails with ``AlreadyExists``; the old upsert is the
provider flag ``upsertExistingObjects``. The stack keeps that default for everything it creates, and takes over
an existing namespace only when ``kubernetes.adoptNamespaces`` names it: then through a provider of its own with the
flag on, and with ``retainOnDelete``, so that ``pulumi destroy`` leaves the namespace (and the volumes in it) to
whoever made it. Prod protects its namespaces (``kubernetes.protectNamespaces``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.isolation import pod_security_labels


@dataclass(frozen=True)
class ClusterTarget:
    """The Kubernetes providers' target: the stack's context, and an identity that outlives kubeconfig changes.

    Without ``clusterIdentifier`` the provider is replaced, and with it every object it manages, whenever the active
    cluster entry of the kubeconfig differs (a workstation's public endpoint, the runner's in-cluster address).
    """

    #: kubeconfig context; ``None`` uses the current one.
    context: str | None
    cluster_identifier: str

    def provider_args(self) -> dict[str, Any]:
        return {"context": self.context, "cluster_identifier": self.cluster_identifier}


@dataclass(frozen=True)
class NamespacePolicy:
    """How the stack declares each of its namespaces."""

    cluster: ClusterTarget
    #: Namespaces that exist already: adopted (upsert, for them alone) and retained on delete.
    adopted: tuple[str, ...]
    #: Pulumi ``protect`` on every namespace the stack declares.
    protect: bool
    #: The Pod Security Standard version the namespaces enforce.
    pod_security_version: str


def namespace(name: str, policy: NamespacePolicy, *, parent: pulumi.Resource) -> k8s.core.v1.Namespace:
    """A namespace the stack declares (Pod Security "restricted"): created (fails if it exists), or adopted."""
    adopted = name in policy.adopted
    opts = pulumi.ResourceOptions(parent=parent, protect=policy.protect, retain_on_delete=adopted)
    if adopted:
        # Upsert for this object alone: everything else the stack creates still fails on an existing object.
        opts.provider = k8s.Provider(
            f"adopt-{name}",
            **policy.cluster.provider_args(),
            upsert_existing_objects=True,
            opts=pulumi.ResourceOptions(parent=parent),
        )
    labels = pod_security_labels(policy.pod_security_version)
    return k8s.core.v1.Namespace(name, metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=labels), opts=opts)
