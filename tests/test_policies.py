"""The policy pack on the mocked resource graph: each policy passes on both stacks and fails on a broken input.

The pack runs as ``pulumi preview`` runs it: every policy through ``policies()``, given the stack's facts by
``stack_files`` (the stack's own ``Pulumi.<stack>.yaml``), found by the stack name in each resource's URN.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties

from policy import policies as pack
from stacks import dblayout, names
from stacks.defaults import deep_merge
from stacks.names import HELM_RELEASE_TYPE
from stacks.stackfile import read_stack_config
from stacktools import mocked
from tests.conftest import PROJECT_DIR
from tests.policy_inputs import as_args, options, stack_facts


def resource_violations(
    recording: mocked.Recording,
    policy: str,
    mutate: Callable[[ResourceValidationArgs], None] | None = None,
    facts_of: pack.FactsOf = stack_facts,
) -> list[str]:
    (validator,) = [p for p in pack.policies(facts_of) if p.name == policy]
    assert isinstance(validator, ResourceValidationPolicy)
    found: list[str] = []
    for resource in recording.resources:
        args = as_args(resource)
        if mutate is not None:
            mutate(args)
        name = resource.name

        def report(message: str, urn: str | None = None, name: str = name) -> None:
            found.append(f"{name}: {message}")

        validator.validate(args, report)
    return found


def stack_violations(
    recording: mocked.Recording,
    mutate: Callable[[list[PolicyResource]], None] | None = None,
    facts_of: pack.FactsOf = stack_facts,
) -> list[str]:
    resources = [
        PolicyResource(r.type, deserialize_properties(r.inputs), r.urn, r.name, options(r.protect), None, None, [], {})
        for r in recording.resources
    ]
    if mutate is not None:
        mutate(resources)
    found: list[str] = []
    (validator,) = [p for p in pack.policies(facts_of) if p.name == "zitadel-caches-on-redis"]
    assert isinstance(validator, StackValidationPolicy)

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validator.validate(StackValidationArgs(resources), report)
    return found


def on_release(chart: str, change: Callable[[dict[str, Any]], None]) -> Callable[[ResourceValidationArgs], None]:
    def mutate(args: ResourceValidationArgs) -> None:
        if args.resource_type == HELM_RELEASE_TYPE and pack.chart_of(args.props) == chart:
            props = copy.deepcopy(dict(args.props))
            change(props)
            args.props = props

    return mutate


@pytest.mark.parametrize("policy", sorted(pack.RESOURCE_POLICIES))
def test_every_policy_passes_on_the_program(recording: mocked.Recording, policy: str) -> None:
    assert resource_violations(recording, policy) == []


def test_stack_policy_passes_on_the_program(recording: mocked.Recording) -> None:
    assert stack_violations(recording) == []


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        # README's tables: events in DB 1, ZITADEL's offset 2, 16 databases; dev keeps the login state on Redis.
        (
            "dev",
            pack.StackFacts(
                is_prod=False,
                layout=dblayout.DbLayout(
                    events_db=1,
                    cache_db_offset=2,
                    databases=16,
                    redis_caches=("Instance", "Milestones", "Organization", "IdPFormCallbacks", "FederatedLogouts"),
                ),
            ),
        ),
        (
            "prod",
            pack.StackFacts(
                is_prod=True,
                layout=dblayout.DbLayout(
                    events_db=1,
                    cache_db_offset=2,
                    databases=16,
                    redis_caches=("Instance", "Milestones", "Organization"),
                ),
            ),
        ),
    ],
)
def test_the_pack_reads_each_stack_file(stack: str, expected: pack.StackFacts) -> None:
    assert stack_facts(stack) == expected


def shrink(props: dict[str, Any]) -> None:
    props["values"]["replica"]["replicaCount"] = 2
    props["values"]["sentinel"]["quorum"] = 1


def unprotect(args: ResourceValidationArgs) -> None:
    args.opts = options(False)


SMALL_GROUP = [
    "redis: prod needs at least 3 Redis nodes, has 2",
    "redis: prod needs a Sentinel quorum of at least 2, has 1",
]
_MASTERKEY = "the ZITADEL masterkey must be protected in prod: losing it loses every encrypted record"
#: The random value and its Vault copy (ZITADEL reads it from there: no Kubernetes Secret holds it).
UNPROTECTED_MASTERKEY = [f"zitadel-masterkey: {_MASTERKEY}", f"zitadel: {_MASTERKEY}"]


def other_stack(
    tmp_path: Path, stack: str, source: str, changes: dict[str, Any]
) -> tuple[mocked.Recording, pack.FactsOf]:
    """``source``'s stack file with ``changes`` as the stack ``stack`` of a project in ``tmp_path``: the program's run
    under that name, and the pack reading that project."""
    config, secret_keys = read_stack_config(PROJECT_DIR / f"Pulumi.{source}.yaml")
    config = deep_merge(config, changes)
    document = {"config": {f"{names.PROJECT}:{key}": value for key, value in config.items()}}
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    return mocked.run_program(stack, config, secret_keys), pack.stack_files(tmp_path)


def test_a_prod_stack_of_another_name_gets_the_prod_policies(tmp_path: Path) -> None:
    # A second prod stack, with Vault names of its own (the program refuses two stacks writing the same ones).
    recording, facts_of = other_stack(
        tmp_path, "prod-eu", "prod", {"environment": "prod", "vault": {"namePrefix": "eu"}}
    )
    assert facts_of("prod-eu").is_prod is True
    assert {pack.stack_of(resource.urn) for resource in recording.resources} == {"prod-eu"}
    for policy in pack.RESOURCE_POLICIES:
        assert resource_violations(recording, policy, facts_of=facts_of) == [], policy
    assert stack_violations(recording, facts_of=facts_of) == []
    assert resource_violations(recording, "redis-sentinel-ha", on_release("redis", shrink), facts_of) == SMALL_GROUP
    found = resource_violations(recording, "masterkey-protected-in-prod", unprotect, facts_of)
    assert sorted(found) == UNPROTECTED_MASTERKEY


def test_a_stack_named_prod_in_the_dev_environment_gets_the_dev_policies(tmp_path: Path) -> None:
    # The configuration's environment decides which defaults and rules a stack gets, whatever its name; the pack
    # follows it. Dev's stack file, as a stack named prod.
    recording, facts_of = other_stack(tmp_path, "prod", "dev", {"environment": "dev", "vault": {"namePrefix": "other"}})
    assert facts_of("prod").is_prod is False
    assert {pack.stack_of(resource.urn) for resource in recording.resources} == {"prod"}
    assert resource_violations(recording, "redis-sentinel-ha", on_release("redis", shrink), facts_of) == []
    assert resource_violations(recording, "masterkey-protected-in-prod", unprotect, facts_of) == []
    # Dev's rules still hold: a Sentinel group without Sentinel is refused in any environment.
    no_sentinel = on_release("redis", lambda p: p["values"]["sentinel"].update(enabled=False))
    assert resource_violations(recording, "redis-sentinel-ha", no_sentinel, facts_of) == [
        "redis: Redis must run replication with Sentinel"
    ]


def test_a_stack_without_a_stack_file_stops_the_pack(tmp_path: Path, recording: mocked.Recording) -> None:
    # The pack has no facts to guess: a stack it cannot read is an error, never a stack without prod's policies.
    with pytest.raises(FileNotFoundError, match=r"no stack file Pulumi\.(dev|prod)\.yaml in "):
        resource_violations(recording, "redis-auth-enabled", facts_of=pack.stack_files(tmp_path))


def test_redis_auth_off_fails(recording: mocked.Recording) -> None:
    found = resource_violations(
        recording, "redis-auth-enabled", on_release("redis", lambda p: p["values"]["auth"].update(sentinel=False))
    )
    assert found == ["redis: Sentinel must require a password too (auth.sentinel: true)"]


def test_small_sentinel_group_fails_in_prod_only(recording: mocked.Recording, stack: str) -> None:
    found = resource_violations(recording, "redis-sentinel-ha", on_release("redis", shrink))
    assert found == (SMALL_GROUP if stack == "prod" else [])
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
        # The ratelimit container's password as a plain env value instead of a Secret reference.
        (
            "gateway-helm",
            lambda p: p["values"]["config"]["envoyGateway"]["provider"]["kubernetes"]["rateLimitDeployment"][
                "container"
            ]["env"].append({"name": "REDIS_AUTH", "value": "example-only-value"}),
            "config.envoyGateway.provider.kubernetes.rateLimitDeployment.container.env[6].value",
        ),
    ],
)
def test_plaintext_secret_fails(
    recording: mocked.Recording, chart: str, change: Callable[[dict[str, Any]], None], path: str
) -> None:
    found = resource_violations(recording, "no-plaintext-secrets-in-helm-values", on_release(chart, change))
    release = {"gateway-helm": "eg"}.get(chart, chart)
    assert found == [f"{release}: plaintext credential in Helm values at {path}: deliver it through Vault"]


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


def test_container_of_a_chart_section_without_resources_fails(recording: mocked.Recording, stack: str) -> None:
    no_wait = on_release("zitadel", lambda p: p["values"]["tools"]["wait4x"].pop("resources"))
    assert resource_violations(recording, "resources-on-every-container", no_wait) == [
        "zitadel: tools.wait4x.resources must set requests.cpu, requests.memory, limits.memory"
    ]
    no_cleanup = on_release("zitadel", lambda p: p["values"]["cleanupJob"]["resources"]["requests"].clear())
    assert resource_violations(recording, "resources-on-every-container", no_cleanup) == [
        "zitadel: cleanupJob.resources must set requests.cpu, requests.memory"
    ]
    no_postgres = on_release("zitadel", lambda p: p["values"]["postgresql"]["primary"].pop("resources", None))
    expected = ["zitadel: postgresql.primary.resources must set requests.cpu, requests.memory, limits.memory"]
    assert resource_violations(recording, "resources-on-every-container", no_postgres) == (
        expected if stack == "dev" else []  # prod runs no bundled Postgres
    )


def test_namespace_without_restricted_pod_security_fails(recording: mocked.Recording) -> None:
    def relax(args: ResourceValidationArgs) -> None:
        if args.resource_type == "kubernetes:core/v1:Namespace" and args.name == "database":
            props = copy.deepcopy(dict(args.props))
            props["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
            del props["metadata"]["labels"]["pod-security.kubernetes.io/warn"]
            args.props = props

    assert resource_violations(recording, "namespaces-pod-security-restricted", relax) == [
        "database: namespace must label pod-security.kubernetes.io/enforce: restricted",
        "database: namespace must label pod-security.kubernetes.io/warn: restricted",
    ]


def test_unpinned_chart_fails(recording: mocked.Recording) -> None:
    found = resource_violations(
        recording, "chart-versions-pinned", on_release("zitadel", lambda p: p.update(version="9.x"))
    )
    assert found == ["zitadel: chart zitadel must be pinned to an exact version, not '9.x'"]


def test_unprotected_masterkey_fails_in_prod(recording: mocked.Recording, stack: str) -> None:
    found = resource_violations(recording, "masterkey-protected-in-prod", unprotect)
    # Dev may lose its masterkey.
    assert sorted(found) == (UNPROTECTED_MASTERKEY if stack == "prod" else [])


def test_cache_layout_fails(recording: mocked.Recording, stack: str) -> None:
    def releases(resources: list[PolicyResource], chart: str) -> dict[str, Any]:
        (release,) = [r for r in resources if r.resource_type == HELM_RELEASE_TYPE and pack.chart_of(r.props) == chart]
        release.props = copy.deepcopy(dict(release.props))
        values: dict[str, Any] = release.props["values"]
        return values

    def overlap(resources: list[PolicyResource]) -> None:
        releases(resources, "zitadel")["zitadel"]["configmapConfig"]["Caches"]["Connectors"]["Redis"]["DBOffset"] = 0

    assert stack_violations(recording, overlap) == [
        "Caches.Connectors.Redis.DBOffset 0 puts ZITADEL's caches, and its FLUSHDB, in DBs 1..7, not in the "
        "stack's 3..9 (zitadel.cache.dbOffset 2)"
    ]

    def memory_cache(resources: list[PolicyResource]) -> None:
        releases(resources, "zitadel")["zitadel"]["configmapConfig"]["Caches"]["Milestones"]["Connector"] = "memory"

    assert stack_violations(recording, memory_cache) == ["Caches.Milestones.Connector must be redis"]

    def login_state_on_postgres(resources: list[PolicyResource]) -> None:
        caches = releases(resources, "zitadel")["zitadel"]["configmapConfig"]["Caches"]
        caches["IdPFormCallbacks"] = {"Connector": "postgres"}

    # Dev's layout puts the login-state caches on Redis; prod's keeps them on Postgres.
    expected = ["Caches.IdPFormCallbacks.Connector must be redis"] if stack == "dev" else []
    assert stack_violations(recording, login_state_on_postgres) == expected

    def fewer_databases(resources: list[PolicyResource]) -> None:
        redis = releases(resources, "redis")
        redis["commonConfiguration"] = redis["commonConfiguration"].replace("databases 16\n", "databases 8\n")

    assert stack_violations(recording, fewer_databases) == [
        "Redis runs 8 databases, not the stack's redis.databases (16)"
    ]


# --- the edge and Redis memory ----------------------------------------------------------------------------------------

RATE_LIMIT = ("config", "envoyGateway", "provider", "kubernetes", "rateLimitDeployment")


def _rate_limit_env(props: dict[str, Any]) -> list[dict[str, Any]]:
    node: Any = props["values"]
    for part in RATE_LIMIT:
        node = node[part]
    env: list[dict[str, Any]] = node["container"]["env"]
    return env


def test_gateway_container_without_resources_fails(recording: mocked.Recording) -> None:
    def drop(props: dict[str, Any]) -> None:
        props["values"]["certgen"]["job"].pop("resources")
        node: Any = props["values"]
        for part in RATE_LIMIT:
            node = node[part]
        node["container"]["resources"]["limits"].clear()

    assert resource_violations(recording, "resources-on-every-container", on_release("gateway-helm", drop)) == [
        "eg: certgen.job.resources must set requests.cpu, requests.memory, limits.memory",
        "eg: config.envoyGateway.provider.kubernetes.rateLimitDeployment.container.resources must set limits.memory",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: p["values"]["config"]["envoyGateway"]["rateLimit"]["backend"]["redis"].update(
                url="mymaster,redis-node-0.redis-headless.database.svc.cluster.local:26379/0"
            ),
            ["no /db on a Sentinel address: radix would send SELECT to a Sentinel (counters live in DB 0)"],
        ),
        (
            lambda p: p["values"]["config"]["envoyGateway"]["rateLimit"]["backend"]["redis"].update(
                url="redis-master.database.svc.cluster.local:6379"
            ),
            [
                "the rate-limit Redis URL must be <master set>,<sentinel>,...: "
                "'redis-master.database.svc.cluster.local:6379'"
            ],
        ),
        (
            lambda p: _rate_limit_env(p).pop(0),
            ["the ratelimit container needs REDIS_TYPE=sentinel for a Sentinel URL"],
        ),
        (
            lambda p: _rate_limit_env(p)[2].pop("valueFrom"),
            ["REDIS_SENTINEL_AUTH must come from a Secret (valueFrom.secretKeyRef)"],
        ),
    ],
)
def test_gateway_rate_limit_off_the_sentinel_set_fails(
    recording: mocked.Recording, change: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    found = resource_violations(recording, "gateway-rate-limit-on-sentinel", on_release("gateway-helm", change))
    assert found == [f"eg: {message}" for message in expected]


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        (
            "databases 16\nmaxmemory 179mb\nmaxmemory-policy allkeys-lru\n",
            ["maxmemory-policy must spare keys without a TTL (volatile-*), not allkeys-lru: the event streams"],
        ),
        (
            "databases 16\n",
            [
                "Redis needs maxmemory below its container's limit: without it the kernel kills it instead",
                "maxmemory-policy must spare keys without a TTL (volatile-*), not noeviction's default, unset: "
                "the event streams",
            ],
        ),
    ],
)
def test_redis_memory_that_could_evict_a_stream_fails(
    recording: mocked.Recording, configuration: str, expected: list[str]
) -> None:
    change = on_release("redis", lambda p: p["values"].update(commonConfiguration=configuration))
    assert resource_violations(recording, "redis-memory-bounded", change) == [f"redis: {m}" for m in expected]
