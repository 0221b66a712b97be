"""The Pulumi program under mocks: what it declares is what the literal tables expect, protection, ordering.

The per-field expectations live in ``test_expectations_*.py``; here they are checked against the Helm values the
program actually hands to Pulumi (numbers travel as doubles over the RPC layer, ``mask`` restores them).
"""

from __future__ import annotations

import pytest

from stacktools import mocked
from stacktools.plan import mask
from tests import test_expectations_redis, test_expectations_zitadel
from tests.conftest import recorded
from tests.expectations import mismatches

RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_releases_carry_the_expected_values(stack: str) -> None:
    recording = recorded(stack)
    redis = mask(recording.one(RELEASE, "redis").inputs["values"])
    zitadel = mask(recording.one(RELEASE, "zitadel").inputs["values"])
    assert mismatches(redis, test_expectations_redis.VALUES, stack) == []
    assert mismatches(zitadel, test_expectations_zitadel.VALUES, stack) == []


@pytest.mark.parametrize(
    ("stack", "protected"),
    [
        ("dev", []),
        (
            "prod",
            [
                "kubernetes:core/v1:Namespace::database",
                "kubernetes:core/v1:Namespace::envoy-gateway-system",
                "kubernetes:core/v1:Namespace::zitadel",
                "kubernetes:helm.sh/v3:Release::redis",
                "random:index/randomPassword:RandomPassword::zitadel-masterkey",
                "vault:kv/secretV2:SecretV2::zitadel",
            ],
        ),
    ],
)
def test_only_the_masterkey_and_the_stateful_objects_are_protected(stack: str, protected: list[str]) -> None:
    # A protected Redis password would block its own rotation; an unprotected masterkey can be deleted by an `up`,
    # and an unprotected namespace or Redis release takes the volumes with it.
    recording = recorded(stack)
    assert sorted(f"{r.type}::{r.name}" for r in recording.resources if r.protect) == protected


def depends_on(recording: mocked.Recording, type_: str, name: str) -> set[str]:
    by_urn = {r.urn: f"{r.type}::{r.name}" for r in recording.resources}
    return {by_urn[urn] for urn in recording.one(type_, name).dependencies if urn in by_urn}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_secrets_are_written_after_their_values_exist(stack: str) -> None:
    recording = recorded(stack)
    secret = "vault:kv/secretV2:SecretV2"
    assert "random:index/randomPassword:RandomPassword::redis-password" in depends_on(recording, secret, "redis")
    assert "random:index/randomPassword:RandomPassword::zitadel-masterkey" in depends_on(recording, secret, "zitadel")
    # The masterkey is written nowhere else: no Kubernetes Secret waits for its value.
    assert not [
        r.name
        for r in recording.by_type("kubernetes:core/v1:Secret")
        if "random:index/randomPassword:RandomPassword::zitadel-masterkey" in depends_on(recording, r.type, r.name)
    ]


def test_dev_roles_wait_for_the_auth_backend_they_live_in() -> None:
    recording = recorded("dev")
    backend = {
        "vault:index/authBackend:AuthBackend::kubernetes",
        "vault:kubernetes/authBackendConfig:AuthBackendConfig::kubernetes",
    }
    role = "vault:kubernetes/authBackendRole:AuthBackendRole"
    assert backend <= depends_on(recording, role, "redis-role")
    assert backend <= depends_on(recording, role, "zitadel-role")
