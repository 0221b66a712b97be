"""Literal expectations for the workflows' Vault identity and the event relay's ZITADEL identity and pods: fields a
reviewer would question that the larger expectation tables do not reach."""

from __future__ import annotations

import re

import pytest

from components.ci_access import Grant, deploy_grants
from components.wiring import ci_access_args
from stacktools.plan import mask
from tests.conftest import recorded, stack_config

CI = "urn:pulumi:{stack}::blinkchamber-identity::blinkchamber:identity:CiAccess$"
RELAY = "urn:pulumi:{stack}::blinkchamber-identity::blinkchamber:identity:EventRelay$"


def test_prod_deploys_may_read_only_the_external_dsns_key_names() -> None:
    policy = recorded("prod").one("vault:index/policy:Policy", "ci-deploy").inputs["policy"]
    block = policy[policy.index('path "secret/subkeys/zitadel-database"') :].split("}", 1)[0]
    assert 'capabilities = ["read"]' in block


def grants(stack: str) -> dict[str, Grant]:
    return {grant.path: grant for grant in deploy_grants(ci_access_args(stack_config(stack)))}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_ci_writes_exactly_the_secrets_and_pod_roles_the_program_declares(stack: str) -> None:
    """Whatever secrets and roles the program gains, CI may write those and nothing else: every policy, backend and
    backend config is the operator's."""
    recording = recorded(stack)
    secrets = {f"{r.inputs['mount']}/data/{r.inputs['name']}" for r in recording.by_type("vault:kv/secretV2:SecretV2")}
    roles = {
        f"auth/{r.inputs['backend']}/role/{r.inputs['roleName']}"
        for r in recording.by_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    }
    writable = {
        path for path, grant in grants(stack).items() if {"create", "update", "delete"} & set(grant.capabilities)
    }
    # Besides its own child token, which can hold no more than its own policy.
    assert writable == secrets | roles | {"auth/token/create"}
    assert {"secret/data/redis", "secret/data/zitadel", "auth/kubernetes/role/redis-role"} <= writable
    # Each written secret's metadata is readable: the provider reads it back after a write.
    metadata = {path.replace("/data/", "/metadata/", 1) for path in secrets}
    assert {path: grants(stack)[path].capabilities for path in metadata} == {path: ("read",) for path in metadata}
    # Every policy the program declares is readable, for a refresh, and only readable.
    policies = {f"sys/policies/acl/{r.inputs['name']}" for r in recording.by_type("vault:index/policy:Policy")}
    assert {path: grants(stack)[path].capabilities for path in policies} == {path: ("read",) for path in policies}


def test_a_pod_role_may_carry_only_its_declared_fields_and_values() -> None:
    assert grants("dev")["auth/kubernetes/role/redis-role"].allowed_parameters == {
        "token_policies": [["redis-read"]],
        "bound_service_account_names": [["redis"]],
        "bound_service_account_namespaces": [["database"]],
        # Sent by the provider on every write, empty: a selector would admit other namespaces.
        "bound_service_account_namespace_selector": [""],
        # The provider's default on create.
        "token_type": ["default"],
        # A number: Vault can allow it, not pin it.
        "token_ttl": [],
        "alias_name_source": ["serviceaccount_name"],
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_field_the_program_writes_on_a_role_is_allowed_and_no_other(stack: str) -> None:
    granted = grants(stack)
    for role in recorded(stack).by_type("vault:kubernetes/authBackendRole:AuthBackendRole"):
        allowed = granted[f"auth/{role.inputs['backend']}/role/{role.inputs['roleName']}"].allowed_parameters
        sent = {re.sub(r"([A-Z])", r"_\1", key).lower(): value for key, value in role.inputs.items()}
        sent = {key: value for key, value in sent.items() if key not in ("backend", "role_name")}
        sent |= {"bound_service_account_namespace_selector": "", "token_type": "default"}
        assert "*" not in allowed and set(allowed) == set(sent), role.name
        for key, value in sent.items():
            assert allowed[key] == ([] if isinstance(value, (int, float)) else [value]), (role.name, key)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_ci_logins_get_their_policy_only(stack: str) -> None:
    recording = recorded(stack)
    for name in ("ci-deploy", "ci-preview"):
        assert recording.one("vault:jwt/authBackendRole:AuthBackendRole", name).inputs["tokenNoDefaultPolicy"] is True


@pytest.mark.parametrize(
    ("stack", "dependencies"),
    [
        # dev declares its JWT backend: the roles must wait for it.
        (
            "dev",
            [
                "vault:index/policy:Policy::ci-deploy",
                "vault:jwt/authBackend:AuthBackend::github-actions",
            ],
        ),
        # prod's backend is the operator's (vault.ci.manageBackend false).
        ("prod", ["vault:index/policy:Policy::ci-deploy"]),
    ],
)
def test_the_deploy_role_waits_for_its_policy_and_backend(stack: str, dependencies: list[str]) -> None:
    role = recorded(stack).one("vault:jwt/authBackendRole:AuthBackendRole", "ci-deploy")
    assert role.dependencies == [CI.format(stack=stack) + d for d in dependencies]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_relays_machine_user_and_its_token(stack: str) -> None:
    recording = recorded(stack)
    user = mask(recording.one("zitadel:index/machineUser:MachineUser", "event-relay").inputs)
    assert (user["userName"], user["name"], user["accessTokenType"]) == (
        "event-relay",
        "Event relay",
        "ACCESS_TOKEN_TYPE_BEARER",
    )
    token = recording.one("zitadel:index/personalAccessToken:PersonalAccessToken", "event-relay")
    assert token.dependencies == [
        RELAY.format(stack=stack) + "zitadel:index/instanceMember:InstanceMember::event-relay",
        RELAY.format(stack=stack) + "zitadel:index/machineUser:MachineUser::event-relay",
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_relay_pods_stop_gracefully_and_spread(stack: str) -> None:
    deployment = recorded(stack).one("kubernetes:apps/v1:Deployment", "event-relay")
    spec = mask(deployment.inputs)["spec"]["template"]["spec"]
    # SIGTERM lets the active bridge finish its page and release the lease within the grace period.
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {
                                "app.kubernetes.io/component": "bridge",
                                "app.kubernetes.io/instance": "event-relay",
                                "app.kubernetes.io/name": "event-relay",
                            }
                        },
                    },
                }
            ]
        }
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_the_relay_pods_mount_their_service_account_token(stack: str) -> None:
    # The Vault agent logs in with the pods' token; any other pod under this account gets none by default.
    recording = recorded(stack)
    account = mask(recording.one("kubernetes:core/v1:ServiceAccount", "event-relay").inputs)
    assert account["automountServiceAccountToken"] is False
    spec = mask(recording.one("kubernetes:apps/v1:Deployment", "event-relay").inputs)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
