"""Declaring a custom resource from its document (apiVersion, kind, metadata, spec), as the plain functions build it."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s


def declare(document: dict[str, Any], opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
    """The document as a Pulumi resource named after the object."""
    return k8s.apiextensions.CustomResource(
        document["metadata"]["name"],
        api_version=document["apiVersion"],
        kind=document["kind"],
        metadata=document["metadata"],
        spec=document["spec"],
        opts=opts,
    )
