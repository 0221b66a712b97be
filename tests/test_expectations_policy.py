"""The policy pack on hand-written inputs: each policy's verdict, at its boundaries, as literal messages.

``test_policies.py`` runs the pack on what the program declares; these cases pin what each policy accepts and what
it reports, independently of the program, so a weakened policy fails here even while the program stays compliant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy import policies as pack
from stacks.dblayout import DbLayout
from stacks.names import HELM_RELEASE_TYPE as RELEASE
from tests.policy_inputs import options

REDIS_CHART = "oci://registry-1.docker.io/bitnamicharts/redis"
#: The stack facts the policies get, written by hand: README's layout (events DB 1, offset 2, 16 databases).
LAYOUT = DbLayout(events_db=1, cache_db_offset=2, databases=16)
PROD = pack.StackFacts(is_prod=True, layout=LAYOUT)
DEV = pack.StackFacts(is_prod=False, layout=LAYOUT)


def urn(stack: str, type_: str = RELEASE, name: str = "r") -> str:
    return f"urn:pulumi:{stack}::blinkchamber-identity::{type_}::{name}"


class Reported:
    """A policy's report callback that keeps the messages (the pack's own defaults ``urn`` to None too)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.messages.append(message)


def verdict(
    policy: pack.ResourceCheck,
    props: Mapping[str, Any],
    *,
    facts: pack.StackFacts = PROD,
    type_: str = RELEASE,
    name: str = "r",
    protect: bool = False,
) -> list[str]:
    reported = Reported()
    args = ResourceValidationArgs(type_, dict(props), urn("s", type_, name), name, options(protect), None)
    policy(args, reported, facts)
    return reported.messages


def release(chart: str, values: Mapping[str, Any], version: str = "1.0.0") -> dict[str, Any]:
    return {"chart": chart, "version": version, "values": dict(values)}


# --- helpers -------------------------------------------------------------------------------------------------------


def test_stack_and_chart_names() -> None:
    # pulumi-kubernetes' type token of helm.v3.Release: the pack picks the releases out by it.
    assert RELEASE == "kubernetes:helm.sh/v3:Release"
    assert pack.stack_of(urn("prod")) == "prod"
    assert pack.stack_of(urn("prod-eu")) == "prod-eu"
    assert pack.stack_of("urn:pulumi:dev::p::t$u::n") == "dev"
    assert pack.chart_of({"chart": REDIS_CHART}) == "redis"
    assert pack.chart_of({"chart": "oci://registry.example/charts/redis/"}) == "redis"
    assert pack.chart_of({"chart": "zitadel"}) == "zitadel"
    assert pack.chart_of({}) == ""


# --- redis-auth-enabled --------------------------------------------------------------------------------------------

SENTINEL_AUTH = "Sentinel must require a password too (auth.sentinel: true)"
REDIS_AUTH = "Redis must require a password (auth.enabled: true)"


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"enabled": True, "sentinel": True}, []),
        ({"enabled": True, "sentinel": False}, [SENTINEL_AUTH]),
        ({"enabled": True}, [SENTINEL_AUTH]),
        ({"enabled": False, "sentinel": True}, [REDIS_AUTH]),
        ({"enabled": "true", "sentinel": "true"}, [REDIS_AUTH, SENTINEL_AUTH]),  # a string is not the chart's boolean
        ({}, [REDIS_AUTH, SENTINEL_AUTH]),
    ],
)
def test_redis_auth(auth: dict[str, Any], expected: list[str]) -> None:
    assert verdict(pack.redis_auth, release(REDIS_CHART, {"auth": auth})) == expected
    # Only the Redis release is Redis.
    assert verdict(pack.redis_auth, release("zitadel", {"auth": auth})) == []
    assert verdict(pack.redis_auth, release(REDIS_CHART, {"auth": auth}), type_="kubernetes:core/v1:Secret") == []


# --- redis-sentinel-ha ---------------------------------------------------------------------------------------------


def sentinel_group(nodes: int, quorum: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "architecture": "replication",
        "replica": {"replicaCount": nodes},
        "sentinel": {"enabled": True, "quorum": quorum},
    }
    values.update(changes)
    return release(REDIS_CHART, values)


@pytest.mark.parametrize(
    ("nodes", "quorum", "expected"),
    [
        (3, 2, []),
        (5, 3, []),
        (2, 2, ["prod needs at least 3 Redis nodes, has 2"]),
        (3, 1, ["prod needs a Sentinel quorum of at least 2, has 1"]),
        (1, 1, ["prod needs at least 3 Redis nodes, has 1", "prod needs a Sentinel quorum of at least 2, has 1"]),
    ],
)
def test_sentinel_group_size_in_prod(nodes: int, quorum: int, expected: list[str]) -> None:
    assert verdict(pack.redis_sentinel_ha, sentinel_group(nodes, quorum)) == expected
    assert verdict(pack.redis_sentinel_ha, sentinel_group(nodes, quorum), facts=DEV) == []


@pytest.mark.parametrize(
    "changes",
    [{"architecture": "standalone"}, {"sentinel": {"enabled": False, "quorum": 2}}, {"sentinel": {"quorum": 2}}],
)
@pytest.mark.parametrize("facts", [DEV, PROD])
def test_replication_with_sentinel_everywhere(facts: pack.StackFacts, changes: dict[str, Any]) -> None:
    # A small group is not reported on top: without Sentinel its size says nothing.
    assert verdict(pack.redis_sentinel_ha, sentinel_group(1, 1, **changes), facts=facts) == [
        "Redis must run replication with Sentinel"
    ]


def test_missing_counts_count_as_zero() -> None:
    values = {"architecture": "replication", "sentinel": {"enabled": True}}
    assert verdict(pack.redis_sentinel_ha, release(REDIS_CHART, values)) == [
        "prod needs at least 3 Redis nodes, has 0",
        "prod needs a Sentinel quorum of at least 2, has 0",
    ]


# --- no-plaintext-secrets-in-helm-values ---------------------------------------------------------------------------


def plaintext(values: Any) -> list[str]:
    return list(pack.plaintext_secrets(values))


@pytest.mark.parametrize(
    ("values", "paths"),
    [
        ({"auth": {"password": "example-only"}}, ["auth.password"]),
        ({"auth": {"Password": "example-only"}}, ["auth.Password"]),
        ({"postgresql": {"auth": {"postgresPassword": "x"}}}, ["postgresql.auth.postgresPassword"]),
        (
            {"x": {"passwd": "x", "masterkey": "x", "clientSecret": "x", "apiToken": "x"}},
            [
                "x.passwd",
                "x.masterkey",
                "x.clientSecret",
                "x.apiToken",
            ],
        ),
        # ZITADEL's DSN carries the database password whatever it looks like.
        (
            {"zitadel": {"configmapConfig": {"Database": {"Postgres": {"DSN": "host=db user=z"}}}}},
            ["zitadel.configmapConfig.Database.Postgres.DSN"],
        ),
        ({"config": {"dsn": "host=db"}}, ["config.dsn"]),
        # Credentials inside text, under any key.
        ({"env": [{"name": "DSN", "value": "postgresql://u:example-only@db/z"}]}, ["env[0].value"]),
        ({"extra": ["a", "host=db password=example-only"]}, ["extra[1]"]),
        ({"args": "--conn 'user=z password=x'"}, ["args"]),
        ({"url": "https://user:pw@host/x"}, ["url"]),
    ],
)
def test_plaintext_credentials_are_found(values: dict[str, Any], paths: list[str]) -> None:
    assert plaintext(values) == paths


@pytest.mark.parametrize(
    "name",
    [
        "REDIS_AUTH",
        "REDIS_PASSWORD",
        "SMTP_PASSWD",
        "API_TOKEN",
        "CLIENT_SECRET",
        "ZITADEL_DATABASE_POSTGRES_DSN",
        "ZITADEL_MASTERKEY",
    ],
)
def test_an_env_entry_named_for_a_credential_holds_one(name: str) -> None:
    # A value that looks like nothing (no URL userinfo, no password=): only the variable's name says it is secret.
    assert plaintext({"env": [{"name": name, "value": "host=db user=zitadel"}]}) == ["env[0].value"]


@pytest.mark.parametrize(
    "values",
    [
        {"auth": {"password": ""}},  # the chart's "no password here"
        {"auth": {"password": None, "usePasswordFiles": True, "passwordFile": "/secrets/p"}},
        {"auth": {"existingSecret": "redis-auth", "existingSecretPasswordKey": "password"}},
        {"zitadel": {"masterkeySecretName": "zitadel-masterkey", "configSecretName": "c", "configSecretKey": "k"}},
        {"ingress": {"tls": [{"secretName": "id-tls"}]}, "login": {"loginServiceKeySecretName": "login-key"}},
        {"podAnnotations": {"vault.hashicorp.com/agent-inject-secret-redis-password": "secret/data/redis"}},
        {"url": "postgresql://zitadel@db:5432/zitadel?sslmode=require", "token": 3},
        {"passwordPolicy": {"minLength": 8}},
    ],
)
def test_references_and_templates_are_not_credentials(values: dict[str, Any]) -> None:
    assert plaintext(values) == []


def test_no_plaintext_secrets_reports_each_path_of_a_release() -> None:
    props = release("zitadel", {"auth": {"password": "example-only"}, "env": [{"value": "https://u:p@h"}]})
    assert verdict(pack.no_plaintext_secrets, props) == [
        "plaintext credential in Helm values at auth.password: deliver it through Vault",
        "plaintext credential in Helm values at env[0].value: deliver it through Vault",
    ]
    assert verdict(pack.no_plaintext_secrets, {"data": {"password": "x"}}, type_="kubernetes:core/v1:Secret") == []
    assert verdict(pack.no_plaintext_secrets, {"chart": "zitadel"}) == []


# --- vault-injection-on-secret-readers -----------------------------------------------------------------------------

INJECT = "vault.hashicorp.com/"
COMPLETE = {
    INJECT + "agent-inject": "true",
    INJECT + "role": "r",
    INJECT + "agent-inject-secret-f": "secret/data/f",
    INJECT + "agent-pre-populate-only": "true",
}


@pytest.mark.parametrize(
    ("drop", "change", "gap"),
    [
        ("agent-inject", {}, "agent-inject"),
        (None, {"agent-inject": "false"}, "agent-inject"),
        ("role", {}, "role"),
        (None, {"role": ""}, "role"),
        ("agent-inject-secret-f", {}, "agent-inject-secret-*"),
    ],
)
def test_redis_pods_need_every_injector_annotation(drop: str | None, change: dict[str, str], gap: str) -> None:
    annotations = {k: v for k, v in COMPLETE.items() if k != INJECT + str(drop)}
    annotations.update({INJECT + k: v for k, v in change.items()})
    values = {"auth": {"usePasswordFileFromSecret": False}, "replica": {"podAnnotations": annotations}}
    assert verdict(pack.vault_injection, release(REDIS_CHART, values)) == [
        f"Redis pods read their password from Vault but replica.podAnnotations lacks {gap}"
    ]
    # With the chart's own password Secret the pods do not read Vault, so the annotations are not needed.
    values["auth"] = {"usePasswordFileFromSecret": True}
    assert verdict(pack.vault_injection, release(REDIS_CHART, values)) == []


def test_redis_pods_without_annotations_lack_all_three() -> None:
    values: dict[str, Any] = {"auth": {"usePasswordFileFromSecret": False}, "replica": {}}
    assert verdict(pack.vault_injection, release(REDIS_CHART, values)) == [
        "Redis pods read their password from Vault but replica.podAnnotations lacks agent-inject",
        "Redis pods read their password from Vault but replica.podAnnotations lacks role",
        "Redis pods read their password from Vault but replica.podAnnotations lacks agent-inject-secret-*",
    ]
    # The sidecar-free mode is a requirement of Jobs only.
    pods = {k: v for k, v in COMPLETE.items() if not k.endswith("agent-pre-populate-only")}
    values["replica"] = {"podAnnotations": pods}
    assert verdict(pack.vault_injection, release(REDIS_CHART, values)) == []


def zitadel_reading_vault(pods: dict[str, str], setup: dict[str, str], init: dict[str, str]) -> dict[str, Any]:
    return release(
        "zitadel",
        {
            "zitadel": {"configSecretKey": "../vault/secrets/zitadel-secrets.yaml"},
            "podAnnotations": pods,
            "setupJob": {"podAnnotations": setup},
            "initJob": {"podAnnotations": init},
        },
    )


def test_zitadel_jobs_need_the_agent_without_sidecar() -> None:
    assert verdict(pack.vault_injection, zitadel_reading_vault(COMPLETE, COMPLETE, COMPLETE)) == []
    sidecar = {k: v for k, v in COMPLETE.items() if not k.endswith("agent-pre-populate-only")}
    assert verdict(
        pack.vault_injection,
        zitadel_reading_vault(sidecar, sidecar, {**sidecar, INJECT + "agent-pre-populate-only": "false"}),
    ) == [
        "ZITADEL reads its config from Vault but setupJob.podAnnotations lacks agent-pre-populate-only "
        "(a Job with the agent sidecar never completes)",
        "ZITADEL reads its config from Vault but initJob.podAnnotations lacks agent-pre-populate-only "
        "(a Job with the agent sidecar never completes)",
    ]
    missing = verdict(pack.vault_injection, zitadel_reading_vault(COMPLETE, {}, COMPLETE))
    assert missing == [
        f"ZITADEL reads its config from Vault but setupJob.podAnnotations lacks {gap}"
        for gap in (
            "agent-inject",
            "role",
            "agent-inject-secret-*",
            "agent-pre-populate-only (a Job with the agent sidecar never completes)",
        )
    ]
    no_role = {k: v for k, v in COMPLETE.items() if not k.endswith("role")}
    assert verdict(pack.vault_injection, zitadel_reading_vault(no_role, COMPLETE, COMPLETE)) == [
        "ZITADEL reads its config from Vault but podAnnotations lacks role"
    ]


def test_zitadel_without_the_vault_file_needs_no_agent() -> None:
    props = zitadel_reading_vault({}, {}, {})
    props["values"]["zitadel"]["configSecretKey"] = "config.yaml"
    assert verdict(pack.vault_injection, props) == []
    del props["values"]["zitadel"]
    assert verdict(pack.vault_injection, props) == []


# --- resources-on-every-container ----------------------------------------------------------------------------------

SIZED = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}


def redis_with_resources(**blocks: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "replica": {"resources": SIZED, "initContainers": [{"name": "copy", "resources": SIZED}]},
        "sentinel": {"resources": SIZED},
        "kubectl": {"resources": SIZED},
        "metrics": {"enabled": True, "resources": SIZED},
    }
    for path, resources in blocks.items():
        section, _, index = path.partition("_")
        if index:
            values[section]["initContainers"][int(index)]["resources"] = resources
        else:
            values[section]["resources"] = resources
    return release(REDIS_CHART, values)


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ({}, []),
        (
            {"replica": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}},
            ["replica.resources must set requests.cpu"],
        ),
        (
            {"sentinel": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}},
            ["sentinel.resources must set requests.memory"],
        ),
        (
            {"kubectl": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
            ["kubectl.resources must set limits.memory"],
        ),
        ({"metrics": None}, ["metrics.resources must set requests.cpu, requests.memory, limits.memory"]),
        (
            {"replica_0": {}},
            ["replica.initContainers[0].resources must set requests.cpu, requests.memory, limits.memory"],
        ),
    ],
)
def test_redis_containers_need_requests_and_a_memory_limit(blocks: dict[str, Any], expected: list[str]) -> None:
    found = verdict(pack.container_resources, redis_with_resources(**blocks))
    assert found == [f"{message}" for message in expected]


def test_a_disabled_exporter_needs_no_resources() -> None:
    props = redis_with_resources(metrics=None)
    props["values"]["metrics"]["enabled"] = False
    assert verdict(pack.container_resources, props) == []


def zitadel_sized(**sections: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "resources": SIZED,
        "login": {"resources": SIZED},
        "setupJob": {"resources": SIZED},
        "initJob": {"resources": SIZED},
        "tools": {"wait4x": {"resources": SIZED}},
        "cleanupJob": {"resources": SIZED},
    }
    values.update(sections)
    return release("zitadel", values)


def without(props: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = props["values"]
    for part in parents:
        node = node[part]
    del node[last]
    return props


@pytest.mark.parametrize(
    "path",
    [
        "resources",
        "login.resources",
        "setupJob.resources",
        "initJob.resources",
        "tools.wait4x.resources",
        "cleanupJob.resources",
    ],
)
def test_each_zitadel_container_needs_requests_and_a_memory_limit(path: str) -> None:
    assert verdict(pack.container_resources, zitadel_sized()) == []
    assert verdict(pack.container_resources, without(zitadel_sized(), path)) == [
        f"{path} must set requests.cpu, requests.memory, limits.memory"
    ]


def test_zitadel_sections_turned_off_need_no_resources() -> None:
    login_off = without(
        without(zitadel_sized(login={"enabled": False, "resources": SIZED}), "login.resources"), "tools"
    )
    assert verdict(pack.container_resources, login_off) == []
    cleanup_off = without(zitadel_sized(cleanupJob={"enabled": False}), "cleanupJob.enabled")
    assert verdict(pack.container_resources, cleanup_off) == [
        "cleanupJob.resources must set requests.cpu, requests.memory, limits.memory"
    ]
    assert verdict(pack.container_resources, zitadel_sized(cleanupJob={"enabled": False})) == []
    bundled = zitadel_sized(postgresql={"enabled": True, "primary": {}})
    assert verdict(pack.container_resources, bundled) == [
        "postgresql.primary.resources must set requests.cpu, requests.memory, limits.memory"
    ]
    assert verdict(pack.container_resources, zitadel_sized(postgresql={"enabled": False})) == []
    assert verdict(pack.container_resources, {"chart": "other", "values": {}}) == []


# --- chart-versions-pinned -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["23.1.1", "9.34.0", "v1.9.0", "8.2.1-debian-12-r0"])
def test_exact_chart_versions_pass(version: str) -> None:
    assert verdict(pack.pinned_charts, release(REDIS_CHART, {}, version=version)) == []


@pytest.mark.parametrize("version", ["23.x", "~23.1.0", "latest", "", "23.1"])
def test_loose_chart_versions_fail(version: str) -> None:
    assert verdict(pack.pinned_charts, release(REDIS_CHART, {}, version=version)) == [
        f"chart redis must be pinned to an exact version, not {version!r}"
    ]
    assert verdict(pack.pinned_charts, {"chart": "zitadel"}) == [
        "chart zitadel must be pinned to an exact version, not None"
    ]
    assert verdict(pack.pinned_charts, {"version": "latest"}, type_="kubernetes:core/v1:Secret") == []


# --- masterkey-protected-in-prod -----------------------------------------------------------------------------------

#: ZITADEL reads its masterkey from Vault as a file: no Kubernetes Secret holds it.
MASTERKEY_HOLDERS = [
    ("random:index/randomPassword:RandomPassword", "zitadel-masterkey"),
    ("vault:kv/secretV2:SecretV2", "zitadel"),
]


@pytest.mark.parametrize(("type_", "name"), MASTERKEY_HOLDERS)
def test_every_masterkey_holder_is_protected_in_prod(type_: str, name: str) -> None:
    unprotected = verdict(pack.masterkey_protected, {}, type_=type_, name=name)
    assert unprotected == ["the ZITADEL masterkey must be protected in prod: losing it loses every encrypted record"]
    assert verdict(pack.masterkey_protected, {}, type_=type_, name=name, protect=True) == []
    assert verdict(pack.masterkey_protected, {}, type_=type_, name=name, facts=DEV) == []


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        ("random:index/randomPassword:RandomPassword", "redis-password"),
        ("vault:kv/secretV2:SecretV2", "redis"),
        ("kubernetes:core/v1:Secret", "zitadel"),
        # The chart's masterkeySecretName now names a Secret with no masterkey in it (the anchor).
        ("kubernetes:core/v1:Secret", "zitadel-vault-config-anchor"),
    ],
)
def test_other_secrets_may_rotate(type_: str, name: str) -> None:
    assert verdict(pack.masterkey_protected, {}, type_=type_, name=name) == []


# --- zitadel-caches-on-redis (stack policy) -------------------------------------------------------------------------


def caches(
    offset: Any = 2,
    *,
    enabled: Any = True,
    connectors: Mapping[str, str] | None = None,
    names: tuple[str, ...] = ("Instance", "Milestones", "Organization"),
) -> dict[str, Any]:
    found: dict[str, Any] = {"Connectors": {"Redis": {"Enabled": enabled}}}
    if offset is not None:
        found["Connectors"]["Redis"]["DBOffset"] = offset
    for cache in names:
        found[cache] = {"Connector": (connectors or {}).get(cache, "redis")}
    return found


def stack(
    caches_config: Mapping[str, Any] | None,
    *,
    layout: DbLayout = LAYOUT,
    databases: int | None = 16,
    with_redis: bool = True,
) -> list[str]:
    """The stack policy's messages on ZITADEL's caches and a Redis running ``databases`` (None: no such line),
    in a stack whose configuration asks for ``layout``."""
    resources = []
    if caches_config is not None:
        zitadel = release("zitadel", {"zitadel": {"configmapConfig": {"Caches": caches_config}}})
        resources.append(PolicyResource(RELEASE, zitadel, urn("prod"), "zitadel", options(), None, None, [], {}))
    if with_redis:
        conf = "appendonly yes\n" + ("" if databases is None else f"databases {databases}\n") + 'save ""\n'
        redis = release(REDIS_CHART, {"commonConfiguration": conf})
        resources.append(PolicyResource(RELEASE, redis, urn("prod"), "redis", options(), None, None, [], {}))
    reported = Reported()
    pack.zitadel_caches_on_redis(StackValidationArgs(resources), reported, pack.StackFacts(is_prod=True, layout=layout))
    return reported.messages


def offset_message(offset: int, used: str, planned: str, configured: int) -> str:
    return (
        f"Caches.Connectors.Redis.DBOffset {offset} puts ZITADEL's caches, and its FLUSHDB, in DBs {used}, "
        f"not in the stack's {planned} (zitadel.cache.dbOffset {configured})"
    )


@pytest.mark.parametrize(
    ("offset", "layout", "expected"),
    [
        (2, LAYOUT, []),
        (2.0, LAYOUT, []),  # numbers reach the pack as doubles
        (0, LAYOUT, [offset_message(0, "1..7", "3..9", 2)]),
        (3, LAYOUT, [offset_message(3, "4..10", "3..9", 2)]),
        (1, LAYOUT, [offset_message(1, "2..8", "3..9", 2)]),
        (8, DbLayout(events_db=1, cache_db_offset=8, databases=16), []),
        (2, DbLayout(events_db=1, cache_db_offset=8, databases=16), [offset_message(2, "3..9", "9..15", 8)]),
    ],
)
def test_zitadel_uses_the_stacks_cache_offset(offset: Any, layout: DbLayout, expected: list[str]) -> None:
    assert stack(caches(offset), layout=layout, databases=layout.databases) == expected


@pytest.mark.parametrize(
    ("databases", "layout", "expected"),
    [
        (16, LAYOUT, []),
        (None, LAYOUT, []),  # no databases line: Redis's own 16
        (8, LAYOUT, ["Redis runs 8 databases, not the stack's redis.databases (16)"]),
        (17, LAYOUT, ["Redis runs 17 databases, not the stack's redis.databases (16)"]),
        (32, DbLayout(events_db=1, cache_db_offset=2, databases=32), []),
        (
            None,
            DbLayout(events_db=1, cache_db_offset=2, databases=32),
            ["Redis runs 16 databases, not the stack's redis.databases (32)"],
        ),
    ],
)
def test_redis_runs_the_stacks_databases(databases: int | None, layout: DbLayout, expected: list[str]) -> None:
    assert stack(caches(layout.cache_db_offset), layout=layout, databases=databases) == expected


def test_only_the_databases_line_counts() -> None:
    # A longer key or an indented line is not redis.conf's databases directive.
    zitadel = release("zitadel", {"zitadel": {"configmapConfig": {"Caches": caches()}}})
    for text in ("databases-count 8\n", "  databases 8\n", "# databases 8\n"):
        redis = release(REDIS_CHART, {"commonConfiguration": text})
        resources = [
            PolicyResource(RELEASE, zitadel, urn("prod"), "zitadel", options(), None, None, [], {}),
            PolicyResource(RELEASE, redis, urn("prod"), "redis", options(), None, None, [], {}),
        ]
        reported = Reported()
        pack.zitadel_caches_on_redis(StackValidationArgs(resources), reported, PROD)
        assert reported.messages == [], text


def test_caches_must_use_the_redis_connector() -> None:
    assert stack(caches(enabled=False)) == ["ZITADEL's Redis cache connector must be enabled"]
    assert stack(caches(enabled="true")) == ["ZITADEL's Redis cache connector must be enabled"]
    assert stack(caches(connectors={"Instance": "memory", "Organization": "postgres"})) == [
        "Caches.Instance.Connector must be redis",
        "Caches.Organization.Connector must be redis",
    ]
    assert stack({}) == [
        "ZITADEL's Redis cache connector must be enabled",
        "Caches.Instance.Connector must be redis",
        "Caches.Milestones.Connector must be redis",
        "Caches.Organization.Connector must be redis",
        "Caches.Connectors.Redis.DBOffset must be set: ZITADEL's default of 10 needs 18 databases",
    ]


def test_the_caches_the_layout_puts_on_redis_must_be_there() -> None:
    # A stack whose layout has the login-state caches on Redis (dev's): they must use the Redis connector too.
    login_state = ("Instance", "Milestones", "Organization", "IdPFormCallbacks", "FederatedLogouts")
    layout = DbLayout(events_db=1, cache_db_offset=2, databases=16, redis_caches=login_state)
    assert stack(caches(names=login_state), layout=layout) == []
    assert stack(caches(), layout=layout) == [
        "Caches.IdPFormCallbacks.Connector must be redis",
        "Caches.FederatedLogouts.Connector must be redis",
    ]
    # Where the layout keeps them on Postgres, their connector is ZITADEL's business.
    assert stack(caches(names=login_state, connectors={"IdPFormCallbacks": "postgres"})) == []


def test_offset_must_be_set_and_redis_present() -> None:
    assert stack(caches(None)) == [
        "Caches.Connectors.Redis.DBOffset must be set: ZITADEL's default of 10 needs 18 databases"
    ]
    assert stack(caches("2")) == [
        "Caches.Connectors.Redis.DBOffset must be set: ZITADEL's default of 10 needs 18 databases"
    ]
    assert stack(caches(), with_redis=False) == ["ZITADEL's caches need the Redis release in the same stack"]
    assert stack(None) == []  # a stack without ZITADEL has nothing to check


def test_the_layout_comes_from_the_stack_not_from_redis_annotations() -> None:
    # The program's layout annotations are for operators: one saying otherwise changes nothing.
    zitadel = release("zitadel", {"zitadel": {"configmapConfig": {"Caches": caches(0)}}})
    redis = release(REDIS_CHART, {"commonAnnotations": {"blinkchamber.io/events-db": "12"}})
    resources = [
        PolicyResource(RELEASE, zitadel, urn("prod"), "zitadel", options(), None, None, [], {}),
        PolicyResource(RELEASE, redis, urn("prod"), "redis", options(), None, None, [], {}),
    ]
    reported = Reported()
    pack.zitadel_caches_on_redis(StackValidationArgs(resources), reported, PROD)
    assert reported.messages == [offset_message(0, "1..7", "3..9", 2)]


# --- the pack ------------------------------------------------------------------------------------------------------


def facts_of(stack_name: str) -> pack.StackFacts:
    """The facts of the stacks named ``dev`` and ``prod`` as their own configurations give them."""
    return {"dev": DEV, "prod": PROD}[stack_name]


#: Each policy of the pack by name, with an input it must refuse and the first thing it reports.
PACK: dict[str, tuple[dict[str, Any], str, str]] = {
    "redis-auth-enabled": (release(REDIS_CHART, {"auth": {"enabled": True}}), "prod", SENTINEL_AUTH),
    "redis-sentinel-ha": (sentinel_group(2, 2), "prod", "prod needs at least 3 Redis nodes, has 2"),
    "no-plaintext-secrets-in-helm-values": (
        release("zitadel", {"auth": {"password": "x"}}),
        "dev",
        "plaintext credential in Helm values at auth.password: deliver it through Vault",
    ),
    "vault-injection-on-secret-readers": (
        release(REDIS_CHART, {"auth": {"usePasswordFileFromSecret": False}}),
        "dev",
        "Redis pods read their password from Vault but replica.podAnnotations lacks agent-inject",
    ),
    "resources-on-every-container": (
        release("zitadel", {}),
        "dev",
        "resources must set requests.cpu, requests.memory, limits.memory",
    ),
    "chart-versions-pinned": (
        release("zitadel", {}, version="9.x"),
        "dev",
        "chart zitadel must be pinned to an exact version, not '9.x'",
    ),
}


def policy_named(name: str, facts: pack.FactsOf = facts_of) -> Any:
    (found,) = [p for p in pack.policies(facts) if p.name == name]
    return found


@pytest.mark.parametrize("name", sorted(PACK))
def test_the_pack_enforces_each_resource_policy(name: str) -> None:
    policy = policy_named(name)
    assert isinstance(policy, ResourceValidationPolicy)
    assert policy.enforcement_level == EnforcementLevel.MANDATORY
    props, stack_name, first = PACK[name]
    reported = Reported()
    policy.validate(ResourceValidationArgs(RELEASE, props, urn(stack_name), "r", options(), None), reported)
    assert reported.messages[0] == first


#: Two stacks whose names mislead: a second prod environment, and a stack named prod configured as dev.
MISLEADING = {"prod-eu": PROD, "prod": DEV}


@pytest.mark.parametrize(("stack_name", "refused"), [("prod-eu", True), ("prod", False)])
def test_the_environment_decides_what_is_prod_not_the_name(stack_name: str, refused: bool) -> None:
    small_group = ResourceValidationArgs(RELEASE, sentinel_group(2, 2), urn(stack_name), "r", options(), None)
    reported = Reported()
    policy_named("redis-sentinel-ha", MISLEADING.__getitem__).validate(small_group, reported)
    assert reported.messages == (["prod needs at least 3 Redis nodes, has 2"] if refused else [])
    secret = "vault:kv/secretV2:SecretV2"
    unprotected = ResourceValidationArgs(secret, {}, urn(stack_name, secret, "zitadel"), "zitadel", options(), None)
    reported = Reported()
    policy_named("masterkey-protected-in-prod", MISLEADING.__getitem__).validate(unprotected, reported)
    message = "the ZITADEL masterkey must be protected in prod: losing it loses every encrypted record"
    assert reported.messages == ([message] if refused else [])


def test_the_pack_enforces_the_masterkey_and_cache_policies() -> None:
    masterkey = policy_named("masterkey-protected-in-prod")
    assert isinstance(masterkey, ResourceValidationPolicy)
    assert masterkey.enforcement_level == EnforcementLevel.MANDATORY
    reported = Reported()
    secret = "random:index/randomPassword:RandomPassword"
    args = ResourceValidationArgs(
        secret, {}, urn("prod", secret, "zitadel-masterkey"), "zitadel-masterkey", options(), None
    )
    masterkey.validate(args, reported)
    assert reported.messages == [
        "the ZITADEL masterkey must be protected in prod: losing it loses every encrypted record"
    ]
    layout = policy_named("zitadel-caches-on-redis")
    assert isinstance(layout, StackValidationPolicy)
    assert layout.enforcement_level == EnforcementLevel.MANDATORY
    zitadel = release("zitadel", {"zitadel": {"configmapConfig": {"Caches": caches(2)}}})
    resources = [PolicyResource(RELEASE, zitadel, urn("prod"), "zitadel", options(), None, None, [], {})]
    reported = Reported()
    layout.validate(StackValidationArgs(resources), reported)
    assert reported.messages == ["ZITADEL's caches need the Redis release in the same stack"]
    # A stack without resources names no stack: nothing to look up, nothing to report.
    empty = policy_named(layout.name, lambda name: pytest.fail(f"looked up {name}"))
    reported = Reported()
    empty.validate(StackValidationArgs([]), reported)
    assert reported.messages == []


def test_every_policy_of_the_pack_is_mandatory_and_described() -> None:
    for policy in pack.policies(facts_of):
        assert policy.enforcement_level == EnforcementLevel.MANDATORY, policy.name
        assert policy.description.endswith("."), policy.name
