"""Literal expectations for the workflows' Vault identity and the event relay's ZITADEL identity and pods: fields a
reviewer would question that the larger expectation tables do not reach."""

from __future__ import annotations

import pytest

from stacktools.plan import mask
from tests.conftest import recorded

CI = "urn:pulumi:{stack}::blinkchamber-identity::blinkchamber:identity:CiAccess$"
RELAY = "urn:pulumi:{stack}::blinkchamber-identity::blinkchamber:identity:EventRelay$"


def test_prod_deploys_may_read_only_the_external_dsns_key_names() -> None:
    policy = recorded("prod").one("vault:index/policy:Policy", "ci-deploy").inputs["policy"]
    block = policy[policy.index('path "secret/subkeys/zitadel-database"') :].split("}", 1)[0]
    assert 'capabilities = ["read"]' in block


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
