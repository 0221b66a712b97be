"""Environment defaults. A stack file carries only what differs from these.

Written in the stack files' own shape (camelCase keys), so that a stack's effective configuration is simply
``deep_merge(DEFAULTS[environment], stack file)``. Values here are safe for their environment: prod's are the
ones a reviewer would accept without reading further.

These tables hold what differs between the environments, and what has no default a model could own (the release
train, the repository's identity, the rate-limit rules). A key they set, they set for every environment, and its
model field has no default of its own; every other default is the field's, in ``stacks/config.py``
(``tests/test_defaults.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from stacks import images, names
from stacks.config import Environment, KubernetesConfig, VaultConfig
from stacks.names import BITNAMI_REGISTRY

# Redis and Sentinel: the project's own Bitnami-compatible build of the newest 8.2 patch (stacks/images.py); Bitnami's
# last, bitnamilegacy 8.2.1, has remote-code-execution advisories (stacks/advisories.py). No digest until the release
# pipeline pushes one into dev's train, and no stack deploys them without it (stacks/rules.py).
# The chart's other images stay Bitnami's: every versioned tag moved to docker.io/bitnamilegacy in August 2025.
_OWN_REDIS_TAG: Final = f"{images.REDIS_VERSION}-debian-12-r0"
_REDIS_IMAGES: Final = {
    "redis": {"registry": images.REGISTRY, "repository": images.REDIS.repository, "tag": _OWN_REDIS_TAG},
    "sentinel": {"registry": images.REGISTRY, "repository": images.REDIS_SENTINEL.repository, "tag": _OWN_REDIS_TAG},
    "exporter": {
        "registry": BITNAMI_REGISTRY,
        "repository": "bitnamilegacy/redis-exporter",
        "tag": "1.76.0-debian-12-r0",
    },
    "kubectl": {"registry": BITNAMI_REGISTRY, "repository": "bitnamilegacy/kubectl", "tag": "1.33.4-debian-12-r0"},
    "osShell": {"registry": BITNAMI_REGISTRY, "repository": "bitnamilegacy/os-shell", "tag": "12-debian-12-r51"},
}


def _res(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    # No CPU limit: throttling a Redis or ZITADEL process hurts latency more than it protects neighbours.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


#: ZITADEL's credential endpoints: the token endpoint, OIDC userinfo and end-session, the session API (REST and gRPC,
#: where passwords and OTPs are checked) and the password and second-factor steps of both login UIs.
CREDENTIAL_PATHS: Final = (
    "/oauth/v2/token",
    "/oidc/v1",
    "/v2/sessions",
    "/zitadel.session.v2.SessionService",
    "/ui/v2/login/password",
    "/ui/v2/login/otp",
    "/ui/login/password",
    "/ui/login/mfa/verify",
)

#: The rate-limit rules both environments start from (a stack may replace the list). Tune them in shadow mode first.
_RATE_LIMIT_RULES: Final = [
    {"name": "per-client-ip", "requests": 1200, "unit": "Minute", "perClientIp": True},
    {
        "name": "credentials-per-client-ip",
        "requests": 60,
        "unit": "Minute",
        "perClientIp": True,
        "paths": list(CREDENTIAL_PATHS),
    },
    # Per user and per organization only from verified JWT claims: a client-sent org ID (x-zitadel-orgid) would let
    # anyone burn another organization's bucket.
    {"name": "per-user", "requests": 1200, "unit": "Minute", "perHeaders": [names.RATE_LIMIT_SUB_HEADER]},
    {"name": "per-organization", "requests": 6000, "unit": "Minute", "perHeaders": [names.RATE_LIMIT_ORG_HEADER]},
]

_COMMON: Final[dict[str, Any]] = {
    # The repository whose workflows deploy (GitHub's OIDC "repository" claim); the stack's Vault trusts only it.
    # Its numeric IDs and its owner's: the role requires them too, since a name can be taken again after a rename or
    # a deletion. Set them to the repository's own before the first deploy (`gh api repos/OWNER/NAME --jq '.id,
    # .owner.id'`); a wrong ID refuses every login, it admits nobody else.
    "vault": {
        "ci": {
            "repository": "blinkchamber/blinkchamber-identity",
            "repositoryId": "2000002",
            "repositoryOwnerId": "1000001",
        }
    },
    "redis": {
        "chart": {"chart": "oci://registry-1.docker.io/bitnamicharts/redis", "repository": "", "version": "23.1.1"},
        "images": _REDIS_IMAGES,
    },
    "zitadel": {
        "chart": {"chart": "zitadel", "repository": "https://charts.zitadel.com", "version": "9.34.0"},
        "image": {"registry": "ghcr.io", "repository": "zitadel/zitadel", "tag": "v4.13.0"},
        "loginImage": {"registry": "ghcr.io", "repository": "zitadel/zitadel-login", "tag": "v4.13.0"},
        # The bundled Postgres (dev). Its subchart (postgresql 18.5.5 in zitadel 9.34.0) defaults to ":latest";
        # bitnamilegacy froze in August 2025, before PostgreSQL 18: 17.6.0 is the newest tag it holds.
        "postgresImage": {"registry": BITNAMI_REGISTRY, "repository": "bitnamilegacy/postgresql", "tag": "17.6.0"},
    },
    "edge": {
        "chart": {"chart": "oci://docker.io/envoyproxy/gateway-helm", "repository": "", "version": "v1.9.0"},
        "rateLimit": {"rules": _RATE_LIMIT_RULES},
    },
    "events": {
        # Built from relay/Dockerfile by the release pipeline (stacks/images.py), which writes the pushed tag and
        # digest into dev's release train; no release of it exists yet, so no digest (no stack can deploy it).
        "relay": {"image": {"registry": images.REGISTRY, "repository": images.RELAY.repository, "tag": "0.1.0"}},
    },
}

#: Dev's Vault in the cluster: the Vault chart's Service where the models' defaults of ``vault.namespace``,
#: ``vault.port`` and ``kubernetes.clusterDomain`` say it runs.
_DEV_VAULT_ADDRESS: Final = "http://{host}:{port}".format(
    host=names.service_host(
        "vault",
        VaultConfig.model_fields["namespace"].default,
        KubernetesConfig.model_fields["cluster_domain"].default,
    ),
    port=VaultConfig.model_fields["port"].default,
)

_DEV: Final[dict[str, Any]] = {
    "kubernetes": {"protectNamespaces": False},
    "vault": {
        "address": _DEV_VAULT_ADDRESS,
        "manageBackends": True,
        # Deploys from main only; pull-request previews (any branch's code) get the read-only role, from an
        # environment of their own.
        "ci": {
            "environment": "dev",
            "refs": ["refs/heads/main"],
            "manageBackend": True,
            # Any ref: a pull request's branch.
            "preview": {"environment": "dev-preview", "eventNames": ["pull_request"], "refs": []},
        },
    },
    "redis": {
        "protect": False,
        # Fast failover for a dev cluster; still well above a GC pause.
        "downAfterMilliseconds": 5000,
        "failoverTimeout": 60000,
        "minReplicasToWrite": 0,
        "persistence": {"size": "1Gi"},
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
        # Login state on Redis: dev exercises that path (DBs dbOffset+4, +5); an in-flight login lost to a
        # failover costs nothing here. README, "What Redis does for ZITADEL".
        "cache": {"sessionCacheConnector": "redis"},
        "protectMasterkey": False,
        "resources": {
            "zitadel": _res("100m", "256Mi", "512Mi"),
            "login": _res("50m", "128Mi", "256Mi"),
            "jobs": _res("100m", "256Mi", "512Mi"),
            "waitForZitadel": _res("10m", "16Mi", "32Mi"),
            "cleanup": _res("10m", "64Mi", "128Mi"),
            "postgres": _res("100m", "256Mi", "512Mi"),
        },
    },
    "events": {
        "relay": {"resources": _res("20m", "64Mi", "128Mi")},
        # The dedup share of dev's 179 MiB holds up to 30 events/s over an hour and twenty minutes.
        "capacity": {"peakEventRate": 20},
    },
    "edge": {
        # Plain HTTP on the port clients use in dev (zitadel.externalPort).
        "listener": {"port": 8080},
        "proxyReplicas": 1,
        "rateLimitReplicas": 1,
        "resources": {
            "controller": _res("50m", "128Mi", "512Mi"),
            "certgen": _res("10m", "32Mi", "64Mi"),
            "proxy": _res("50m", "128Mi", "256Mi"),
            "shutdownManager": _res("10m", "32Mi", "64Mi"),
            "rateLimit": _res("20m", "64Mi", "128Mi"),
        },
    },
    # A dev cluster need not run the Prometheus Operator: without its CRDs the monitors could not be created.
    "observability": {"enabled": False},
}

_PROD: Final[dict[str, Any]] = {
    # No address here: a prod stack names its Vault (and its kubeconfig context) explicitly.
    "vault": {
        "manageBackends": False,
        "ci": {
            "environment": "production",
            "manageBackend": False,
            "refs": ["refs/heads/main"],
            # The plan the reviewers approve: main's code, before the "production" job, with the read-only role.
            "preview": {"environment": "production-preview", "eventNames": ["push"], "refs": ["refs/heads/main"]},
        },
    },
    "kubernetes": {"protectNamespaces": True},
    "redis": {
        # The release and its volumes hold the event streams: nothing deletes them without unprotecting first.
        "protect": True,
        "downAfterMilliseconds": 5000,
        "failoverTimeout": 60000,
        # A master cut off from every replica stops taking writes instead of losing them.
        "minReplicasToWrite": 1,
        "persistence": {"size": "8Gi"},
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
        "database": {"mode": "external", "dsnVaultSecret": names.DATABASE_SECRET_NAME},
        # Login state stays durable on Postgres: a failover must not fail a federated login in flight.
        "cache": {"sessionCacheConnector": "postgres"},
        "protectMasterkey": True,
        "resources": {
            "zitadel": _res("500m", "512Mi", "1Gi"),
            "login": _res("100m", "256Mi", "512Mi"),
            "jobs": _res("250m", "512Mi", "1Gi"),
            "waitForZitadel": _res("10m", "16Mi", "32Mi"),
            "cleanup": _res("10m", "64Mi", "128Mi"),
        },
    },
    "events": {
        "relay": {"resources": _res("100m", "128Mi", "256Mi")},
        # About 25 logins a second (each writes several events); prod's dedup share holds up to 122 events/s.
        "capacity": {"peakEventRate": 100},
    },
    "edge": {
        # HTTPS; the stack file names the certificate's Secret (edge.listener.tlsSecretName).
        "listener": {"port": 443},
        "proxyReplicas": 2,
        "rateLimitReplicas": 2,
        "resources": {
            "controller": _res("100m", "256Mi", "1Gi"),
            "certgen": _res("10m", "32Mi", "64Mi"),
            "proxy": _res("250m", "256Mi", "1Gi"),
            "shutdownManager": _res("10m", "32Mi", "64Mi"),
            "rateLimit": _res("100m", "128Mi", "256Mi"),
        },
    },
    # Prod is watched: scrape targets, alert rules and dashboards (its cluster runs the Prometheus Operator).
    "observability": {"enabled": True},
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


#: Each environment's own table, on top of ``_COMMON``.
_BY_ENVIRONMENT: Final[dict[Environment, dict[str, Any]]] = {"dev": _DEV, "prod": _PROD}


def defaults_for(environment: Environment) -> dict[str, Any]:
    return deep_merge(_COMMON, _BY_ENVIRONMENT[environment])
