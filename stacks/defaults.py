"""Environment defaults. A stack file carries only what differs from these.

Written in the stack files' own shape (camelCase keys), so that a stack's effective configuration is simply
``deep_merge(DEFAULTS[environment], stack file)``. Values here are safe for their environment: prod's are the
ones a reviewer would accept without reading further.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from stacks import names
from stacks.config import Environment

_BITNAMI_REGISTRY: Final = "docker.io"
# Bitnami moved every versioned tag to docker.io/bitnamilegacy in 2025 (see DESIGN.md, "Images").
_REDIS_IMAGES: Final = {
    "redis": {"registry": _BITNAMI_REGISTRY, "repository": "bitnamilegacy/redis", "tag": "8.2.1-debian-12-r0"},
    "sentinel": {
        "registry": _BITNAMI_REGISTRY,
        "repository": "bitnamilegacy/redis-sentinel",
        "tag": "8.2.1-debian-12-r0",
    },
    "exporter": {
        "registry": _BITNAMI_REGISTRY,
        "repository": "bitnamilegacy/redis-exporter",
        "tag": "1.76.0-debian-12-r0",
    },
    "kubectl": {"registry": _BITNAMI_REGISTRY, "repository": "bitnamilegacy/kubectl", "tag": "1.33.4-debian-12-r0"},
    "osShell": {"registry": _BITNAMI_REGISTRY, "repository": "bitnamilegacy/os-shell", "tag": "12-debian-12-r51"},
}


def _res(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    # No CPU limit: throttling a Redis or ZITADEL process hurts latency more than it protects neighbours.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


_COMMON: Final[dict[str, Any]] = {
    "kubernetes": {"clusterDomain": "cluster.local"},
    "redis": {
        "chart": {"chart": "oci://registry-1.docker.io/bitnamicharts/redis", "repository": "", "version": "23.1.1"},
        "images": _REDIS_IMAGES,
        "nodes": 3,
        "quorum": 2,
        "databases": 16,
        "parallelSyncs": 1,
        "metrics": True,
    },
    "zitadel": {
        "namespace": "zitadel",
        "chart": {"chart": "zitadel", "repository": "https://charts.zitadel.com", "version": "9.34.0"},
        "image": {"registry": "ghcr.io", "repository": "zitadel/zitadel", "tag": "v4.13.0"},
        "loginImage": {"registry": "ghcr.io", "repository": "zitadel/zitadel-login", "tag": "v4.13.0"},
    },
}

_DEV: Final[dict[str, Any]] = {
    "vault": {"address": "http://vault.vault.svc.cluster.local:8200", "manageBackends": True},
    "redis": {
        # Fast failover for a dev cluster; still well above a GC pause.
        "downAfterMilliseconds": 5000,
        "failoverTimeout": 60000,
        "minReplicasToWrite": 0,
        "persistence": {"enabled": True, "size": "1Gi"},
        "podAntiAffinity": "soft",
        "resources": {
            "redis": _res("50m", "128Mi", "256Mi"),
            "sentinel": _res("20m", "64Mi", "128Mi"),
            "metrics": _res("10m", "32Mi", "64Mi"),
            "kubectl": _res("10m", "32Mi", "64Mi"),
            "passwordCopy": _res("10m", "16Mi", "32Mi"),
        },
    },
    "zitadel": {
        "replicas": 1,
        "externalDomain": "localhost",
        "externalPort": 8080,
        "externalSecure": False,
        "database": {"mode": "bundled"},
        "protectMasterkey": False,
        "resources": {
            "zitadel": _res("100m", "256Mi", "512Mi"),
            "login": _res("50m", "128Mi", "256Mi"),
            "jobs": _res("100m", "256Mi", "512Mi"),
        },
    },
}

_PROD: Final[dict[str, Any]] = {
    "vault": {"manageBackends": False},
    "redis": {
        "downAfterMilliseconds": 5000,
        "failoverTimeout": 60000,
        # A master cut off from every replica stops taking writes instead of losing them.
        "minReplicasToWrite": 1,
        "minReplicasMaxLag": 10,
        "persistence": {"enabled": True, "size": "8Gi", "appendfsync": "everysec"},
        "podAntiAffinity": "hard",
        "resources": {
            "redis": _res("250m", "512Mi", "1Gi"),
            "sentinel": _res("50m", "64Mi", "128Mi"),
            "metrics": _res("20m", "32Mi", "64Mi"),
            "kubectl": _res("10m", "32Mi", "64Mi"),
            "passwordCopy": _res("10m", "16Mi", "32Mi"),
        },
    },
    "zitadel": {
        "replicas": 2,
        "externalPort": 443,
        "externalSecure": True,
        "ingress": {"enabled": True},
        "database": {"mode": "external", "dsnVaultSecret": names.DATABASE_SECRET_NAME},
        "protectMasterkey": True,
        "resources": {
            "zitadel": _res("500m", "512Mi", "1Gi"),
            "login": _res("100m", "256Mi", "512Mi"),
            "jobs": _res("250m", "512Mi", "1Gi"),
        },
    },
}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else (lists included) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def defaults_for(environment: Environment) -> dict[str, Any]:
    return deep_merge(_COMMON, _DEV if environment == "dev" else _PROD)
