"""The event relay as the program declares it (under Pulumi's mocks), and the rules of its configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.event_relay import network_policies, pod_annotations, relay_document
from components.wiring import event_relay_args
from stacks.config import StackConfig
from stacktools import mocked
from stacktools.plan import mask
from tests.conftest import record, stack_config
from tests.test_config_rules import found

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET_V2 = "vault:kv/secretV2:SecretV2"
ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
POLICY = "vault:index/policy:Policy"
RELEASE = "kubernetes:helm.sh/v3:Release"
MACHINE_USER = "zitadel:index/machineUser:MachineUser"
MEMBER = "zitadel:index/instanceMember:InstanceMember"
PAT = "zitadel:index/personalAccessToken:PersonalAccessToken"
ZITADEL_PROVIDER = "pulumi:providers:zitadel"


def test_the_relay_document(cfg: StackConfig, stack: str) -> None:
    doc = relay_document(event_relay_args(cfg))
    assert doc == {
        "instance": {"dev": "localhost", "prod": "id.blinkchamber.com"}[stack],
        "zitadel": {
            "url": "http://zitadel.zitadel.svc.cluster.local:8080",
            "instanceHost": {"dev": "localhost", "prod": "id.blinkchamber.com"}[stack],
            "tokenFile": "/vault/secrets/zitadel-pat",
        },
        "redis": {
            # Every Sentinel (one per node, 3 in both stacks), as the edge's ratelimit lists them.
            "sentinels": [
                ["redis-node-0.redis-headless.database.svc.cluster.local", 26379],
                ["redis-node-1.redis-headless.database.svc.cluster.local", 26379],
                ["redis-node-2.redis-headless.database.svc.cluster.local", 26379],
            ],
            "masterSet": "mymaster",
            "db": 1,
            "passwordFile": "/vault/secrets/redis-password",
        },
        "streams": {
            "high": "zitadel:events:high",
            "normal": "zitadel:events:normal",
            "low": "zitadel:events:low",
            "deadLetter": "zitadel:events:dead_letter",
        },
        "source": {
            "pollInterval": 1.0,
            "clockSkew": 5.0,
            "pageSize": 1000,
            "lookBackWindow": 1800.0,
            "lookBackPeriod": 600.0,
            "dedupTtl": 3600.0,
            "maxEventBytes": 65536,
            "startFrom": "beginning",
        },
        "publishing": {
            "batchSize": 100,
            "maxRetries": 5,
            "retryBackoff": 0.2,
            "maxRetryBackoff": 10.0,
            "requireReplicaAck": True,
            "maxStreamLength": 1000000,
        },
        "lease": {"ttl": 10.0, "renewEvery": 3.0},
        "metricsPort": 9090,
        "metricsHost": "0.0.0.0",
    }


def test_vault_role_and_policy(recording: mocked.Recording) -> None:
    role = recording.one(ROLE, "event-relay-role").inputs
    assert (role["roleName"], role["boundServiceAccountNames"], role["boundServiceAccountNamespaces"]) == (
        "event-relay-role",
        ["event-relay"],
        ["zitadel"],
    )
    assert role["tokenPolicies"] == ["event-relay-read"]
    policy = recording.one(POLICY, "event-relay-read").inputs["policy"]
    assert policy == (
        'path "secret/data/event-relay" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/redis" {\n  capabilities = ["read"]\n}\n'
    )


def test_injector_annotations(cfg: StackConfig) -> None:
    annotations = pod_annotations(event_relay_args(cfg))
    digest = annotations.pop("blinkchamber.io/relay-config-sha256")
    assert len(digest) == 64
    p = "vault.hashicorp.com/"
    assert annotations == {
        f"{p}agent-inject": "true",
        f"{p}role": "event-relay-role",
        f"{p}auth-path": "auth/kubernetes",
        f"{p}agent-pre-populate-only": "true",
        f"{p}agent-inject-secret-redis-password": "secret/data/redis",
        f"{p}agent-inject-template-redis-password": '{{- with secret "secret/data/redis" -}}'
        "{{ .Data.data.password }}{{- end }}",
        f"{p}error-on-missing-key-redis-password": "true",
        f"{p}agent-inject-secret-zitadel-pat": "secret/data/event-relay",
        f"{p}agent-inject-template-zitadel-pat": '{{- with secret "secret/data/event-relay" -}}'
        "{{ .Data.data.pat }}{{- end }}",
        f"{p}error-on-missing-key-zitadel-pat": "true",
    }


def test_zitadel_identity_and_its_dependencies(recording: mocked.Recording) -> None:
    user = recording.one(MACHINE_USER, "event-relay")
    assert (user.inputs["userName"], user.inputs["accessTokenType"]) == ("event-relay", "ACCESS_TOKEN_TYPE_BEARER")
    member = recording.one(MEMBER, "event-relay")
    assert member.inputs == {"roles": ["IAM_OWNER_VIEWER"], "userId": "event-relay-id"}
    assert user.urn in member.dependencies
    token = recording.one(PAT, "event-relay")
    assert member.urn in token.dependencies and user.urn in token.dependencies
    secret = recording.one(SECRET_V2, "event-relay")
    assert token.urn in secret.dependencies
    assert (secret.inputs["name"], mask(secret.inputs["dataJson"])) == ("event-relay", "[secret]")
    provider = recording.by_type(ZITADEL_PROVIDER)
    assert len(provider) == 1
    for resource in (user, member, token):
        assert resource.provider.startswith(provider[0].urn)
    # The provider logs in with the chart's admin key, read after the release: a secret, never plain.
    assert mask(provider[0].inputs["jwtProfileJson"]) == "[secret]"
    assert recording.one(RELEASE, "zitadel").urn in provider[0].dependencies


def test_the_deployment_waits_for_everything_it_reads(recording: mocked.Recording) -> None:
    deployment = recording.one(DEPLOYMENT, "event-relay")
    for type_, name in (
        (SECRET_V2, "event-relay"),
        (ROLE, "event-relay-role"),
        (POLICY, "event-relay-read"),
        (CONFIG_MAP, "event-relay"),
        (RELEASE, "zitadel"),
        (RELEASE, "redis"),
        ("kubernetes:core/v1:ServiceAccount", "event-relay"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "event-relay"),
    ):
        assert recording.one(type_, name).urn in deployment.dependencies, name


def test_the_deployment(recording: mocked.Recording, cfg: StackConfig, stack: str) -> None:
    d = recording.one(DEPLOYMENT, "event-relay").inputs
    assert d["metadata"]["namespace"] == "zitadel"
    spec = d["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("event-relay", True)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/blinkchamber/event-relay:0.1.0"
    assert container["args"] == ["run"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == {
        "dev": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "prod": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    }[stack]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9090}
    # The mocked provider reads back KV version 1 of the Redis password: the version rolls the pods, never the value.
    assert spec["template"]["metadata"]["annotations"] == {
        **pod_annotations(event_relay_args(cfg)),
        "blinkchamber.io/redis-password-version": "1",
    }
    config = json.loads(recording.one(CONFIG_MAP, "event-relay").inputs["data"]["relay.json"])
    assert config == relay_document(event_relay_args(cfg))
    pdb = recording.one("kubernetes:policy/v1:PodDisruptionBudget", "event-relay").inputs
    assert pdb["spec"]["minAvailable"] == 1


def peers(rule: dict[str, Any]) -> list[Any]:
    return [(peer, sorted((p["port"], p["protocol"]) for p in rule["ports"])) for peer in rule["to"]]


def test_network_policies(cfg: StackConfig) -> None:
    relay, zitadel = network_policies(event_relay_args(cfg))
    assert relay["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "event-relay"
    assert relay["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert relay["spec"]["ingress"] == []  # no metrics namespace configured: nothing may connect
    egress = [p for rule in relay["spec"]["egress"] for p in peers(rule)]
    ns = "kubernetes.io/metadata.name"
    assert egress == [
        (
            {
                "podSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "zitadel",
                        "app.kubernetes.io/instance": "zitadel",
                        "app.kubernetes.io/component": "start",
                    }
                }
            },
            [(8080, "TCP")],
        ),
        (
            {
                "namespaceSelector": {"matchLabels": {ns: "database"}},
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}
                },
            },
            [(6379, "TCP"), (26379, "TCP")],
        ),
        ({"namespaceSelector": {"matchLabels": {ns: "vault"}}}, [(8200, "TCP")]),
        ({"namespaceSelector": {"matchLabels": {ns: "kube-system"}}}, [(53, "TCP"), (53, "UDP")]),
    ]
    assert zitadel["metadata"] == {"name": "zitadel-from-event-relay", "namespace": "zitadel"}
    assert zitadel["spec"]["ingress"] == [
        {"from": [{"podSelector": relay["spec"]["podSelector"]}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    ]


def test_metrics_namespaces_open_the_metrics_port_only() -> None:
    base = stack_config("dev")
    relay_cfg = base.events.relay.model_copy(update={"metrics_namespaces": ("monitoring",)})
    cfg = base.model_copy(update={"events": base.events.model_copy(update={"relay": relay_cfg})})
    policy, _ = network_policies(event_relay_args(cfg))
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9090, "protocol": "TCP"}],
        }
    ]


def test_a_disabled_relay_declares_nothing() -> None:
    recording = record("dev", {"events": {"relay": {"enabled": False}}})
    assert [r.name for r in recording.resources if "event-relay" in r.name] == []
    assert recording.by_type(ZITADEL_PROVIDER) == []


# --- configuration rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "overrides", "expected"),
    [
        ("dev", {}, []),
        (
            "dev",
            {"events": {"source": {"lookBackPeriod": "31m"}}},
            [
                "dev: events.source.lookBackPeriod: 31m exceeds events.source.lookBackWindow (30m): events between "
                "two re-scans would never be re-read",
                "dev: events.source.dedupTtl: 1h must outlive the look-back (30m + 31m): a re-scan would write events "
                "again whose dedup key has expired",
            ],
        ),
        ("dev", {"events": {"source": {"lookBackPeriod": "30m", "dedupTtl": "61m"}}}, []),
        (
            "dev",
            {"events": {"source": {"dedupTtl": "40m"}}},
            [
                "dev: events.source.dedupTtl: 40m must outlive the look-back (30m + 10m): a re-scan would write events "
                "again whose dedup key has expired"
            ],
        ),
        ("dev", {"events": {"source": {"dedupTtl": "41m"}}}, []),
        (
            "dev",
            {"events": {"source": {"clockSkew": "0s"}}},
            ["dev: events.source.clockSkew: must be positive, not 0s"],
        ),
        (
            "dev",
            {"events": {"source": {"pollInterval": "-1s"}}},
            ["dev: events.source.pollInterval: must be positive, not -1s"],
        ),
        (
            "dev",
            {"events": {"source": {"lookBackWindow": "5s", "lookBackPeriod": "5s", "dedupTtl": "1h"}}},
            ["dev: events.source.lookBackWindow: must be longer than events.source.clockSkew (5s)"],
        ),
        (
            "dev",
            {"events": {"source": {"pageSize": 1001}}},
            ["dev: events.source.pageSize: Input should be less than or equal to 1000"],
        ),
        ("dev", {"events": {"publishing": {"requireReplicaAck": False}, "relay": {"replicas": 1}}}, []),
        (
            "prod",
            {"events": {"publishing": {"requireReplicaAck": False}}},
            [
                "prod: events.publishing.requireReplicaAck: prod requires replica acknowledgement: a failover would "
                "otherwise lose events the cursor moved past"
            ],
        ),
        (
            "prod",
            {"events": {"relay": {"replicas": 1}}},
            ["prod: events.relay.replicas: prod requires a standby bridge: at least 2 replicas (has 1)"],
        ),
        (
            "prod",
            {"events": {"relay": {"image": {"tag": "latest"}}}},
            ["prod: events.relay.image.tag: prod requires a pinned image tag, not 'latest'"],
        ),
        (
            "prod",
            {"events": {"relay": {"resources": {"requests": {"cpu": None}}}}},
            ["prod: events.relay.resources: prod requires explicit resources: requests.cpu not set"],
        ),
        ("prod", {"events": {"relay": {"enabled": False, "replicas": 1}}}, []),
        (
            "prod",
            {"events": {"source": {"instance": None}}},
            [
                "prod: events.source.instance: prod requires an explicit instance name: derived from "
                "zitadel.externalDomain, a new domain would name new cursor and dedup keys and replay every event"
            ],
        ),
        ("dev", {"events": {"source": {"instance": None}}}, []),
    ],
)
def test_event_rules(stack: str, overrides: dict[str, Any], expected: list[str]) -> None:
    assert found(stack, overrides) == expected


def test_the_bridge_pod_passes_pod_security_restricted_with_the_vault_agent(cfg: StackConfig) -> None:
    from components.event_relay import deployment_spec
    from tests import pss
    from tests.test_pod_security import inject_vault_agent

    template = deployment_spec(event_relay_args(cfg))["template"]
    injected = inject_vault_agent(template)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["vault-agent-init"]
    assert pss.violations("event-relay", injected) == []
    # The check can fail: a container that may escalate is reported.
    broken = inject_vault_agent(template)
    broken["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert [(v.check, v.container) for v in pss.violations("event-relay", broken)] == [
        ("allowPrivilegeEscalation", "event-relay")
    ]
