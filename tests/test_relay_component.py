"""The event relay as the program declares it (under Pulumi's mocks), and the rules of its configuration."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import pytest

from components.event_relay import network_policies, pod_annotations, relay_document
from components.wiring import event_relay_args
from relay.settings import LeaseSettings, PublishingSettings, Settings, SettingsError, SourceSettings, Streams
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


#: The instance's name and domain in each stack (``events.source.instance``, ``zitadel.externalDomain``).
INSTANCE = {"dev": "localhost", "prod": "id.blinkchamber.com"}
#: Each stream's cap and the dead letter's, derived from maxmemory (README, "Capacity: one Redis, three workloads"):
#: dev 179 MiB * 50 % / 3 / 512 B and * 5 % / 1024 B; prod 716 MiB likewise.
STREAM_CAPS = {"dev": (61098, 9164), "prod": (244394, 36659)}


def relay_json(stack: str) -> dict[str, Any]:
    """relay.json as each stack must render it (README: the event relay)."""
    return {
        "instance": INSTANCE[stack],
        "zitadel": {
            "url": "http://zitadel.zitadel.svc.cluster.local:8080",
            "instanceHost": INSTANCE[stack],
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
            # The bridge's own ACL user, on the Redis nodes and the sentinels; the file holds its password.
            "username": "event-relay",
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
            "maxStreamLength": STREAM_CAPS[stack][0],
            "deadLetterMaxLength": STREAM_CAPS[stack][1],
            # Seven days, trimmed every minute.
            "maxStreamAge": 604800.0,
            "trimInterval": 60.0,
        },
        "lease": {"ttl": 10.0, "renewEvery": 3.0},
        "metricsPort": 9090,
        "metricsHost": "0.0.0.0",
    }


def test_the_relay_document(cfg: StackConfig, stack: str) -> None:
    assert relay_document(event_relay_args(cfg)) == relay_json(stack)


def test_the_relay_reads_every_key_the_program_writes(cfg: StackConfig, stack: str) -> None:
    settings = Settings.from_document(relay_document(event_relay_args(cfg)))
    assert (settings.instance, settings.zitadel.instance_host) == (INSTANCE[stack], INSTANCE[stack])
    assert settings.source == SourceSettings(
        poll_interval=1.0,
        clock_skew=5.0,
        page_size=1000,
        look_back_window=1800.0,
        look_back_period=600.0,
        dedup_ttl=3600.0,
        max_event_bytes=65536,
        start_from="beginning",
    )
    assert settings.publishing == PublishingSettings(
        batch_size=100,
        max_retries=5,
        retry_backoff=0.2,
        max_retry_backoff=10.0,
        require_replica_ack=True,
        max_stream_length=STREAM_CAPS[stack][0],
        dead_letter_max_length=STREAM_CAPS[stack][1],
        max_stream_age=604800.0,
        trim_interval=60.0,
        replica_ack_timeout=2.0,  # the relay's own, not in relay.json
    )
    assert settings.lease == LeaseSettings(ttl=10.0, renew_every=3.0)
    assert (settings.metrics_port, settings.metrics_host) == (9090, "0.0.0.0")


def test_the_relays_stream_defaults_are_the_programs() -> None:
    """Consumers built without a relay.json (``Streams()``) drain the streams the program names by default."""
    default = Streams(
        high="zitadel:events:high",
        normal="zitadel:events:normal",
        low="zitadel:events:low",
        dead_letter="zitadel:events:dead_letter",
    )
    assert Streams() == default
    assert Settings.from_document(relay_document(event_relay_args(stack_config("dev")))).streams == default


def leaf_paths(doc: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in doc.items():
        out += leaf_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


@pytest.mark.parametrize("path", leaf_paths(relay_json("dev")))
def test_a_missing_key_is_an_error_naming_it(path: str) -> None:
    doc = copy.deepcopy(relay_json("dev"))
    *parents, key = path.split(".")
    section = doc
    for parent in parents:
        section = section[parent]
    del section[key]
    with pytest.raises(SettingsError) as error:
        Settings.from_document(doc)
    assert str(error.value) == f"relay.json: missing {path!r}"


def test_an_unknown_key_is_an_error_naming_it() -> None:
    doc = relay_json("dev")
    doc["source"]["pollIntervall"] = 2.0
    with pytest.raises(SettingsError) as error:
        Settings.from_document(doc)
    assert str(error.value) == "relay.json: unknown 'source.pollIntervall'"


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
        'path "secret/data/redis-users/event-relay" {\n  capabilities = ["read"]\n}\n'
    )


_P = "vault.hashicorp.com/"
#: The Vault Agent Injector's annotations on the bridge's pods (both stacks).
INJECTOR_ANNOTATIONS = {
    f"{_P}agent-inject": "true",
    f"{_P}role": "event-relay-role",
    f"{_P}auth-path": "auth/kubernetes",
    f"{_P}agent-pre-populate-only": "true",
    # Its own Redis user's password (README "Redis users"), never the chart's.
    f"{_P}agent-inject-secret-redis-password": "secret/data/redis-users/event-relay",
    f"{_P}agent-inject-template-redis-password": '{{- with secret "secret/data/redis-users/event-relay" -}}'
    "{{ .Data.data.password }}{{- end }}",
    f"{_P}error-on-missing-key-redis-password": "true",
    f"{_P}agent-inject-secret-zitadel-pat": "secret/data/event-relay",
    f"{_P}agent-inject-template-zitadel-pat": '{{- with secret "secret/data/event-relay" -}}'
    "{{ .Data.data.pat }}{{- end }}",
    f"{_P}error-on-missing-key-zitadel-pat": "true",
}
DIGEST = "blinkchamber.io/relay-config-sha256"


def test_injector_annotations(cfg: StackConfig) -> None:
    annotations = pod_annotations(event_relay_args(cfg))
    assert re.fullmatch("[0-9a-f]{64}", annotations.pop(DIGEST))
    assert annotations == INJECTOR_ANNOTATIONS


def config_digest(cfg: StackConfig) -> str:
    return str(pod_annotations(event_relay_args(cfg))[DIGEST])


def test_a_new_relay_config_changes_the_digest_and_the_same_config_keeps_it() -> None:
    """The digest is what rolls the pods on a new relay.json (a ConfigMap change alone would not)."""
    dev = stack_config("dev")
    assert config_digest(stack_config("dev")) == config_digest(dev)
    source = dev.events.source.model_copy(update={"poll_interval": "2s"})
    slower = dev.model_copy(update={"events": dev.events.model_copy(update={"source": source})})
    assert relay_document(event_relay_args(slower))["source"]["pollInterval"] == 2.0
    assert config_digest(slower) != config_digest(dev)


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


def test_the_deployment(recording: mocked.Recording, stack: str) -> None:
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
    assert (
        container["resources"]
        == {
            "dev": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "prod": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        }[stack]
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9090}
    # The mocked provider reads back KV version 1 of the Redis password: the version rolls the pods, never the value.
    config_text = recording.one(CONFIG_MAP, "event-relay").inputs["data"]["relay.json"]
    assert json.loads(config_text) == relay_json(stack)
    # The digest is of the ConfigMap's text, the file the pods read.
    assert spec["template"]["metadata"]["annotations"] == {
        **INJECTOR_ANNOTATIONS,
        DIGEST: hashlib.sha256(config_text.encode()).hexdigest(),
        "blinkchamber.io/redis-password-version": "1",
    }
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


def test_the_relays_own_policy_admits_no_one() -> None:
    # Prometheus reaches the metrics port through its own policy (components/observability.py, tested there).
    for stack in ("dev", "prod"):
        policy, _ = network_policies(event_relay_args(stack_config(stack)))
        assert policy["spec"]["ingress"] == []


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
