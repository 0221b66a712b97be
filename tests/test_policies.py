"""The policy pack on the mocked resource graph: each policy passes on both stacks and fails on a broken input."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.deserialize import deserialize_properties

from policy import policies as pack
from stacks import mocked

RELEASE = "kubernetes:helm.sh/v3:Release"


def options(protect: bool) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def as_args(resource: mocked.RecordedResource) -> ResourceValidationArgs:
    # What the analyzer hands a policy: the inputs with secrets unwrapped.
    return ResourceValidationArgs(
        resource.type,
        deserialize_properties(resource.inputs),
        resource.urn,
        resource.name,
        options(resource.protect),
        None,
    )


def resource_violations(
    recording: mocked.Recording, policy: str, mutate: Callable[[ResourceValidationArgs], None] | None = None
) -> list[str]:
    validate, _ = pack.RESOURCE_POLICIES[policy]
    found: list[str] = []
    for resource in recording.resources:
        args = as_args(resource)
        if mutate is not None:
            mutate(args)
        name = resource.name

        def report(message: str, urn: str | None = None, name: str = name) -> None:
            found.append(f"{name}: {message}")

        validate(args, report)
    return found


def stack_violations(
    recording: mocked.Recording, mutate: Callable[[list[PolicyResource]], None] | None = None
) -> list[str]:
    resources = [
        PolicyResource(r.type, deserialize_properties(r.inputs), r.urn, r.name, options(r.protect), None, None, [], {})
        for r in recording.resources
    ]
    if mutate is not None:
        mutate(resources)
    found: list[str] = []
    validate, _ = pack.STACK_POLICIES["zitadel-caches-on-redis"]

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validate(StackValidationArgs(resources), report)
    return found


def on_release(chart: str, change: Callable[[dict[str, Any]], None]) -> Callable[[ResourceValidationArgs], None]:
    def mutate(args: ResourceValidationArgs) -> None:
        if args.resource_type == RELEASE and pack.chart_of(args.props) == chart:
            props = copy.deepcopy(dict(args.props))
            change(props)
            args.props = props

    return mutate


@pytest.mark.parametrize("policy", sorted(pack.RESOURCE_POLICIES))
def test_every_policy_passes_on_the_program(recording: mocked.Recording, policy: str) -> None:
    assert resource_violations(recording, policy) == []


def test_stack_policy_passes_on_the_program(recording: mocked.Recording) -> None:
    assert stack_violations(recording) == []


def test_pack_lists_every_policy() -> None:
    names = [p.name for p in pack.policies()]
    assert names == [*pack.RESOURCE_POLICIES, *pack.STACK_POLICIES]
    assert len(names) == 8


def test_redis_auth_off_fails(recording: mocked.Recording) -> None:
    found = resource_violations(
        recording, "redis-auth-enabled", on_release("redis", lambda p: p["values"]["auth"].update(sentinel=False))
    )
    assert found == ["redis: Sentinel must require a password too (auth.sentinel: true)"]


def test_small_sentinel_group_fails_in_prod_only(recording: mocked.Recording, stack: str) -> None:
    def shrink(props: dict[str, Any]) -> None:
        props["values"]["replica"]["replicaCount"] = 2
        props["values"]["sentinel"]["quorum"] = 1

    found = resource_violations(recording, "redis-sentinel-ha", on_release("redis", shrink))
    if stack == "prod":
        assert found == [
            "redis: prod needs at least 3 Redis nodes, has 2",
            "redis: prod needs a Sentinel quorum of at least 2, has 1",
        ]
    else:
        assert found == []
    no_sentinel = on_release("redis", lambda p: p["values"]["sentinel"].update(enabled=False))
    assert resource_violations(recording, "redis-sentinel-ha", no_sentinel) == [
        "redis: Redis must run replication with Sentinel"
    ]


@pytest.mark.parametrize(
    ("chart", "change", "path"),
    [
        ("redis", lambda p: p["values"]["auth"].update(password="example-only-value"), "auth.password"),
        (
            "zitadel",
            lambda p: p["values"]["postgresql"]["auth"].update(postgresPassword="example-only-value"),
            "postgresql.auth.postgresPassword",
        ),
        (
            "zitadel",
            lambda p: p["values"].update(env=[{"name": "DSN", "value": "postgresql://u:example-only@db/z"}]),
            "env[0].value",
        ),
    ],
)
def test_plaintext_secret_fails(
    recording: mocked.Recording, chart: str, change: Callable[[dict[str, Any]], None], path: str
) -> None:
    found = resource_violations(recording, "no-plaintext-secrets-in-helm-values", on_release(chart, change))
    assert found == [f"{chart}: plaintext credential in Helm values at {path}: deliver it through Vault"]


def test_missing_injection_fails(recording: mocked.Recording) -> None:
    drop_role = on_release("redis", lambda p: p["values"]["replica"]["podAnnotations"].pop("vault.hashicorp.com/role"))
    assert resource_violations(recording, "vault-injection-on-secret-readers", drop_role) == [
        "redis: Redis pods read their password from Vault but replica.podAnnotations lacks role"
    ]
    sidecar = on_release(
        "zitadel",
        lambda p: p["values"]["setupJob"]["podAnnotations"].pop("vault.hashicorp.com/agent-pre-populate-only"),
    )
    (message,) = resource_violations(recording, "vault-injection-on-secret-readers", sidecar)
    assert message.startswith(
        "zitadel: ZITADEL reads its config from Vault but setupJob.podAnnotations lacks agent-pre-populate-only"
    )


def test_container_without_resources_fails(recording: mocked.Recording) -> None:
    no_limit = on_release("redis", lambda p: p["values"]["sentinel"]["resources"]["limits"].clear())
    assert resource_violations(recording, "resources-on-every-container", no_limit) == [
        "redis: sentinel.resources must set limits.memory"
    ]
    no_jobs = on_release("zitadel", lambda p: p["values"]["initJob"].pop("resources"))
    assert resource_violations(recording, "resources-on-every-container", no_jobs) == [
        "zitadel: initJob.resources must set requests.cpu, requests.memory, limits.memory"
    ]


def test_unpinned_chart_fails(recording: mocked.Recording) -> None:
    found = resource_violations(
        recording, "chart-versions-pinned", on_release("zitadel", lambda p: p.update(version="9.x"))
    )
    assert found == ["zitadel: chart zitadel must be pinned to an exact version, not '9.x'"]


def test_unprotected_masterkey_fails_in_prod(recording: mocked.Recording, stack: str) -> None:
    def unprotect(args: ResourceValidationArgs) -> None:
        args.opts = options(False)

    found = resource_violations(recording, "masterkey-protected-in-prod", unprotect)
    assert len(found) == (3 if stack == "prod" else 0)


def test_cache_layout_fails(recording: mocked.Recording) -> None:
    def releases(resources: list[PolicyResource], chart: str) -> dict[str, Any]:
        (release,) = [r for r in resources if r.resource_type == RELEASE and pack.chart_of(r.props) == chart]
        release.props = copy.deepcopy(dict(release.props))
        values: dict[str, Any] = release.props["values"]
        return values

    def overlap(resources: list[PolicyResource]) -> None:
        releases(resources, "zitadel")["zitadel"]["configmapConfig"]["Caches"]["Connectors"]["Redis"]["DBOffset"] = 0

    (message,) = stack_violations(recording, overlap)
    assert message.startswith("events DB 1 lies inside ZITADEL's cache block 1..7")

    def memory_cache(resources: list[PolicyResource]) -> None:
        releases(resources, "zitadel")["zitadel"]["configmapConfig"]["Caches"]["Milestones"]["Connector"] = "memory"

    assert stack_violations(recording, memory_cache) == ["Caches.Milestones.Connector must be redis"]
