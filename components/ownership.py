"""What a stack owns in the cluster, and how it lets go of it: the Kubernetes providers and the namespaces.

Since pulumi-kubernetes#4278, creating an object that exists fails with ``AlreadyExists``; the old upsert is the
provider flag ``upsertExistingObjects``. The stack keeps that default for everything it creates, and takes over
an existing namespace only when ``kubernetes.adoptNamespaces`` names it: then through a provider of its own with the
flag on, and with ``retainOnDelete``, so that ``pulumi destroy`` leaves the namespace (and the volumes in it) to
whoever made it. Prod protects its namespaces (``kubernetes.protectNamespaces``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.config import StackConfig


def provider_args(cfg: StackConfig) -> dict[str, Any]:
    """The Kubernetes provider's target: the stack's context, and an identity that outlives kubeconfig changes.

    Without ``clusterIdentifier`` the provider is replaced, and with it every object it manages, whenever the active
    cluster entry of the kubeconfig differs (a workstation's public endpoint, the runner's in-cluster address).
    """
    return {
        "context": cfg.kubernetes.context,
        "cluster_identifier": cfg.kubernetes.cluster_identifier or cfg.stack,
    }


def namespace(
    name: str, cfg: StackConfig, *, labels: Mapping[str, str], parent: pulumi.Resource
) -> k8s.core.v1.Namespace:
    """A namespace the stack declares: created (fails if it exists), or adopted when the config says so."""
    adopted = name in cfg.kubernetes.adopt_namespaces
    opts = pulumi.ResourceOptions(parent=parent, protect=cfg.kubernetes.protect_namespaces, retain_on_delete=adopted)
    if adopted:
        # Upsert for this object alone: everything else the stack creates still fails on an existing object.
        opts.provider = k8s.Provider(
            f"adopt-{name}",
            **provider_args(cfg),
            upsert_existing_objects=True,
            opts=pulumi.ResourceOptions(parent=parent),
        )
    return k8s.core.v1.Namespace(name, metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=dict(labels)), opts=opts)
