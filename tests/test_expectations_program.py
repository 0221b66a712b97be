"""The program's wiring per stack: which provider each resource uses, its parent, what it waits for, the Helm
release options and the stack outputs, as literals.

Rows address the offline plan's resources (``type::name``) and outputs; the values come from README's architecture
section and its list of stack outputs.
"""

from __future__ import annotations

from typing import Any

import pytest

from stacktools import mocked
from stacktools.plan import describe
from tests.conftest import record, recorded
from tests.expectations import ABSENT, Contains, Lacks, Row, both, mismatches

RELEASE = "kubernetes:helm.sh/v3:Release"
REDIS = f'["{RELEASE}::redis"]'
ZITADEL = f'["{RELEASE}::zitadel"]'


def provider_of(resource: mocked.RecordedResource) -> str:
    """The name of the explicit provider a resource uses, or ``default``."""
    return resource.provider.split("::")[-2] if resource.provider else "default"


#: (type prefix, provider): every resource of that kind in both stacks uses that provider.
PROVIDERS = (
    ("kubernetes:", "kubernetes"),  # the stack's kubeconfig context, never the ambient one
    ("vault:", "vault"),  # the stack's Vault address and token
    ("random:", "default"),
)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_resource_uses_the_stacks_provider(stack: str) -> None:
    recording = recorded(stack)
    wrong = [
        f"{r.type}::{r.name} uses {provider_of(r)}"
        for r in recording.resources
        for prefix, provider in PROVIDERS
        if r.type.startswith(prefix) and provider_of(r) != provider
    ]
    assert wrong == []
    assert len([r for r in recording.resources if r.type.startswith("kubernetes:")]) >= 3
    assert len([r for r in recording.resources if r.type.startswith("vault:")]) >= 5
    kubernetes = recording.one("pulumi:providers:kubernetes", "kubernetes")
    # dev deploys to the current context; prod names its cluster's (README, "Deploying for real"). The identity that
    # keeps a kubeconfig change from replacing every object is the stack's name.
    assert (
        kubernetes.inputs
        == {"dev": {"clusterIdentifier": "dev"}, "prod": {"context": "blinkchamber-prod", "clusterIdentifier": "prod"}}[
            stack
        ]
    )


def test_the_kubernetes_context_reaches_its_provider() -> None:
    recording = record("prod", {"kubernetes": {"context": "prod-cluster", "apiServerCidrs": ["10.0.0.1/32"]}})
    assert recording.one("pulumi:providers:kubernetes", "kubernetes").inputs["context"] == "prod-cluster"


WIRING: list[Row] = [
    # Each Helm release: its chart, pinned; atomic Redis upgrades, ZITADEL's not (its migrations run forward only);
    # a deadline that covers ZITADEL's migrations.
    both(f"{REDIS}.inputs.name", "redis"),
    both(f"{REDIS}.inputs.namespace", "database"),
    both(f"{REDIS}.inputs.chart", "oci://registry-1.docker.io/bitnamicharts/redis"),
    both(f"{REDIS}.inputs.version", "23.1.1"),
    both(f"{REDIS}.inputs.repositoryOpts", ABSENT),
    both(f"{REDIS}.inputs.atomic", True),
    both(f"{REDIS}.inputs.timeout", 600),
    both(f"{ZITADEL}.inputs.name", "zitadel"),
    both(f"{ZITADEL}.inputs.namespace", "zitadel"),
    both(f"{ZITADEL}.inputs.chart", "zitadel"),
    both(f"{ZITADEL}.inputs.version", "9.34.0"),
    both(f"{ZITADEL}.inputs.repositoryOpts", {"repo": "https://charts.zitadel.com"}),
    both(f"{ZITADEL}.inputs.atomic", False),
    both(f"{ZITADEL}.inputs.timeout", 900),
    # The edge holds no state: a failed upgrade is rolled back at once.
    both('["kubernetes:helm.sh/v3:Release::eg"].inputs.name', "eg"),
    both('["kubernetes:helm.sh/v3:Release::eg"].inputs.namespace', "envoy-gateway-system"),
    both('["kubernetes:helm.sh/v3:Release::eg"].inputs.atomic', True),
    both('["kubernetes:helm.sh/v3:Release::eg"].inputs.timeout', 600),
    # Parents: each resource under its component.
    both(f"{REDIS}.parent", "blinkchamber:identity:RedisSentinel::redis"),
    both(f"{ZITADEL}.parent", "blinkchamber:identity:Zitadel::zitadel"),
    both('["kubernetes:core/v1:Namespace::database"].parent', "blinkchamber:identity:RedisSentinel::redis"),
    both('["kubernetes:core/v1:Namespace::zitadel"].parent', "blinkchamber:identity:Zitadel::zitadel"),
    both('["kubernetes:core/v1:Secret::zitadel-vault-config-anchor"].parent', "blinkchamber:identity:Zitadel::zitadel"),
    both('["vault:kv/secretV2:SecretV2::redis"].parent', "blinkchamber:identity:VaultAccess::vault"),
    both(
        '["random:index/randomPassword:RandomPassword::zitadel-masterkey"].parent',
        "blinkchamber:identity:VaultAccess::vault",
    ),
    both(
        '["vault:kubernetes/authBackendRole:AuthBackendRole::redis-role"].parent',
        "blinkchamber:identity:VaultAccess::vault",
    ),
    # Each component's type token is part of every child's URN: a changed token replaces them all.
    both('["vault:index/policy:Policy::ci-deploy"].parent', "blinkchamber:identity:CiAccess::ci"),
    both('["kubernetes:core/v1:Namespace::envoy-gateway-system"].parent', "blinkchamber:identity:Edge::edge"),
    # The per-/64 bucket patch is the gateway's own, beside the Gateway it targets.
    both(
        '["kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyPatchPolicy::identity-edge-client-networks"].parent',
        "blinkchamber:identity:Edge::edge",
    ),
    both('["kubernetes:apps/v1:Deployment::event-relay"].parent', "blinkchamber:identity:EventRelay::event-relay"),
    both(
        '["kubernetes:gateway.envoyproxy.io/v1alpha1:SecurityPolicy::zitadel-jwt-claims"].parent',
        "blinkchamber:identity:ZitadelRoutePolicies::zitadel-route-policies",
    ),
    *(
        both(f'["blinkchamber:identity:{component}"].parent', "")
        for component in (
            "CiAccess::ci",
            "Edge::edge",
            "EventRelay::event-relay",
            "RedisSentinel::redis",
            "VaultAccess::vault",
            "Zitadel::zitadel",
            "ZitadelRoutePolicies::zitadel-route-policies",
        )
    ),
    # The Redis pods' Vault agent needs its namespace, role, policy and secret before the first pod starts.
    *(
        both(f"{REDIS}.dependsOn", Contains(dependency))
        for dependency in (
            "kubernetes:core/v1:Namespace::database",
            "vault:index/policy:Policy::redis-read",
            "vault:kubernetes/authBackendRole:AuthBackendRole::redis-role",
            "vault:kv/secretV2:SecretV2::redis",
            "vault:kv/secretV2:SecretV2::redis-acl",
            "vault:kv/secretV2:SecretV2::redis-user-exporter",
        )
    ),
    # ZITADEL's hook jobs log in to Vault at pre-install and its setup job connects to Redis.
    *(
        both(f"{ZITADEL}.dependsOn", Contains(dependency))
        for dependency in (
            "kubernetes:core/v1:Namespace::zitadel",
            "kubernetes:core/v1:Secret::zitadel-vault-config-anchor",
            "vault:index/policy:Policy::zitadel-read",
            "vault:kubernetes/authBackendRole:AuthBackendRole::zitadel-role",
            "vault:kv/secretV2:SecretV2::redis-user-zitadel",
            "vault:kv/secretV2:SecretV2::zitadel",
            f"{RELEASE}::redis",
        )
    ),
    (
        f"{ZITADEL}.dependsOn",
        Contains("kubernetes:core/v1:Secret::zitadel-postgresql-auth"),
        Lacks("kubernetes:core/v1:Secret::zitadel-postgresql-auth"),
    ),
    (
        f"{ZITADEL}.dependsOn",
        Contains("vault:kv/secretV2:SecretV2::zitadel-database"),
        Lacks("vault:kv/secretV2:SecretV2::zitadel-database"),
    ),
    # The Kubernetes Secrets ZITADEL's chart reads, in its namespace. No masterkey among them: ZITADEL reads it from
    # Vault (the Vault secret and its random value are what prod protects).
    both('["kubernetes:core/v1:Secret::zitadel-masterkey"]', ABSENT),
    (
        '["kubernetes:core/v1:Secret::zitadel-postgresql-auth"].inputs.metadata',
        {"name": "zitadel-postgresql-auth", "namespace": "zitadel"},
        ABSENT,
    ),
    ('["kubernetes:core/v1:Secret::zitadel-postgresql-auth"].inputs.stringData', "[secret]", ABSENT),
    both(
        '["kubernetes:core/v1:Secret::zitadel-vault-config-anchor"].inputs.metadata',
        {"name": "zitadel-vault-config-anchor", "namespace": "zitadel"},
    ),
    both('["kubernetes:core/v1:Namespace::database"].inputs.metadata.name', "database"),
    both('["kubernetes:core/v1:Namespace::zitadel"].inputs.metadata.name', "zitadel"),
    # Prod protects its namespaces and the Redis release (their volumes hold the event streams).
    ('["kubernetes:core/v1:Namespace::database"].protect', False, True),
    ('["kubernetes:core/v1:Namespace::zitadel"].protect', False, True),
    (f"{REDIS}.protect", False, True),
    both(f"{ZITADEL}.protect", False),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_wiring(stack: str) -> None:
    assert mismatches(describe(recorded(stack)).resources, WIRING, stack) == []


OUTPUTS: list[Row] = [
    both("redisMasterAddress", "redis-master.database.svc.cluster.local:6379"),
    both("redisSentinelAddress", "redis.database.svc.cluster.local:26379"),
    both("redisSentinelMasterSet", "mymaster"),
    ("zitadelUrl", "http://localhost:8080", "https://id.blinkchamber.com"),
    both(
        "vaultPaths",
        {
            "redisPassword": "secret/data/redis",
            "zitadelMasterkey": "secret/data/zitadel",
            "zitadelDatabase": "secret/data/zitadel-database",
        },
    ),
    both("vaultRoles", {"redis": "redis-role", "zitadel": "zitadel-role"}),
    (
        "redisDbLayout",
        {
            "databases": 16,
            "rateLimitDb": 0,
            "eventsDb": 1,
            "cacheDbOffset": 2,
            "cacheBlock": [3, 9],
            "cacheDbs": {
                "Instance": 3,
                "Milestones": 4,
                "Organization": 5,
                "IdPFormCallbacks": 6,
                "FederatedLogouts": 7,
            },
        },
        {
            "databases": 16,
            "rateLimitDb": 0,
            "eventsDb": 1,
            "cacheDbOffset": 2,
            "cacheBlock": [3, 9],
            "cacheDbs": {"Instance": 3, "Milestones": 4, "Organization": 5},
        },
    ),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_outputs(stack: str) -> None:
    recording = recorded(stack)
    assert mismatches(describe(recording).outputs, OUTPUTS, stack) == []
    assert [name for name, output in recording.outputs.items() if output.secret] == []


@pytest.mark.parametrize(
    ("zitadel", "url"),
    [
        ({"externalSecure": True, "externalPort": 443, "externalDomain": "id.example"}, "https://id.example"),
        ({"externalSecure": True, "externalPort": 8443, "externalDomain": "id.example"}, "https://id.example:8443"),
        ({"externalSecure": False, "externalPort": 80, "externalDomain": "localhost"}, "http://localhost"),
        ({"externalSecure": False, "externalPort": 443, "externalDomain": "localhost"}, "http://localhost:443"),
    ],
)
def test_the_url_leaves_out_the_schemes_default_port(zitadel: dict[str, Any], url: str) -> None:
    recording = record("dev", {"zitadel": zitadel})
    assert recording.outputs["zitadelUrl"].value == url
