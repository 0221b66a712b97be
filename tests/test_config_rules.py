"""Every rule of the stack configuration, at its boundaries: an invalid config names the stack, the key and the rule.

Each case states the complete list of violations it expects (empty: the stack loads), written from the rule's
intent, so a weakened, stricter or silent rule fails here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from stacks import rules
from stacks.config import SecretPresence
from stacks.dblayout import DbLayout
from stacks.defaults import deep_merge
from stacks.loader import SECRET_KEYS, SECTIONS, StackConfigError, load
from stacks.stackfile import SECRET, read_stack_config
from stacktools import mocked
from tests.conftest import PROJECT_DIR


def stack_file(stack: str) -> tuple[dict[str, Any], set[str]]:
    return read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")


def found(stack: str, overrides: dict[str, Any], secret_keys: set[str] | None = None) -> list[str]:
    """Every violation of the committed stack file with ``overrides`` merged in; empty when it loads."""
    config, secrets = stack_file(stack)
    try:
        load(stack, deep_merge(config, overrides), secrets if secret_keys is None else secret_keys)
    except StackConfigError as exc:
        assert exc.stack == stack
        return exc.violations
    return []


def test_committed_stacks_are_valid() -> None:
    for stack in ("dev", "prod"):
        assert load(stack, *stack_file(stack)).environment == stack


# --- Sentinel ------------------------------------------------------------------------------------------------------


def majority(nodes: int, quorum: int, least: int) -> str:
    return f"dev: redis.quorum: quorum {quorum} must be a majority of redis.nodes ({nodes}): at least {least}"


@pytest.mark.parametrize(
    ("nodes", "quorum", "expected"),
    [
        (1, 1, []),
        (2, 1, [majority(2, 1, 2)]),
        (2, 2, []),
        (3, 1, [majority(3, 1, 2)]),
        (3, 2, []),
        (3, 3, []),
        (3, 4, ["dev: redis.quorum: quorum 4 must be <= redis.nodes (3)"]),
        # Even groups: half is not a majority (two halves of a partition could each fail the master over).
        (4, 2, [majority(4, 2, 3)]),
        (4, 3, []),
        (5, 2, [majority(5, 2, 3)]),
        (5, 3, []),
        (6, 3, [majority(6, 3, 4)]),
        (6, 4, []),
    ],
)
def test_quorum_is_a_majority_of_the_nodes(nodes: int, quorum: int, expected: list[str]) -> None:
    assert found("dev", {"redis": {"nodes": nodes, "quorum": quorum}}) == expected


@pytest.mark.parametrize(
    ("stack", "nodes", "replicas", "expected"),
    [
        ("prod", 3, 2, []),
        (
            "prod",
            3,
            3,
            [
                "prod: redis.minReplicasToWrite: 3 replicas can never be connected with redis.nodes 3 (at most 2): "
                "every write would be refused"
            ],
        ),
        ("dev", 1, 0, []),
        (
            "dev",
            1,
            1,
            [
                "dev: redis.minReplicasToWrite: 1 replicas can never be connected with redis.nodes 1 (at most 0): "
                "every write would be refused"
            ],
        ),
    ],
)
def test_min_replicas_to_write_must_be_reachable(stack: str, nodes: int, replicas: int, expected: list[str]) -> None:
    quorum = nodes // 2 + 1
    assert found(stack, {"redis": {"nodes": nodes, "quorum": quorum, "minReplicasToWrite": replicas}}) == expected


# --- DB layout -----------------------------------------------------------------------------------------------------


def inside_block(stack: str, events_db: int, first: int, last: int, offset: int) -> str:
    return (
        f"{stack}: events.db: events DB {events_db} lies inside ZITADEL's cache block {first}..{last} "
        f"(zitadel.cache.dbOffset {offset} + 1..7), where ZITADEL runs FLUSHDB"
    )


@pytest.mark.parametrize(
    ("events_db", "expected"),
    [
        (
            0,
            [
                "dev: events.db: events DB 0 holds the edge's rate-limit counters "
                "(Sentinel-mode ratelimit cannot select another DB)"
            ],
        ),
        (2, []),  # just below the block 3..9
        (3, [inside_block("dev", 3, 3, 9, 2)]),
        (9, [inside_block("dev", 9, 3, 9, 2)]),
        (10, []),  # just above it
        (15, []),  # databases - 1
        (16, ["dev: events.db: events DB 16 must be < redis.databases (16)"]),
    ],
)
def test_events_db_outside_the_cache_block_and_below_databases(events_db: int, expected: list[str]) -> None:
    assert found("dev", {"events": {"db": events_db}}) == expected


@pytest.mark.parametrize(
    ("offset", "databases", "expected"),
    [
        (0, 16, [inside_block("dev", 1, 1, 7, 0)]),
        (1, 16, []),  # block 2..8 starts just above the events DB
        (8, 16, []),  # block 9..15 ends at databases - 1
        (
            9,
            16,
            ["dev: zitadel.cache.dbOffset: ZITADEL's cache block 10..16 needs DB indices < redis.databases (16)"],
        ),
        (2, 10, []),  # block 3..9 ends at databases - 1
        (2, 9, ["dev: zitadel.cache.dbOffset: ZITADEL's cache block 3..9 needs DB indices < redis.databases (9)"]),
        (10, 32, []),  # ZITADEL's own default offset needs more databases
    ],
)
def test_cache_block_clear_of_events_and_below_databases(offset: int, databases: int, expected: list[str]) -> None:
    overrides = {"zitadel": {"cache": {"dbOffset": offset}}, "redis": {"databases": databases}}
    assert found("dev", overrides) == expected


def test_a_small_databases_count_names_every_broken_index() -> None:
    assert found("prod", {"redis": {"databases": 1}}) == [
        "prod: events.db: events DB 1 must be < redis.databases (1)",
        "prod: zitadel.cache.dbOffset: ZITADEL's cache block 3..9 needs DB indices < redis.databases (1)",
    ]


@pytest.mark.parametrize(
    ("stack", "cache_dbs"),
    [
        # dev also keeps ZITADEL's login state (IdPFormCallbacks, FederatedLogouts) on Redis.
        ("dev", {"Instance": 3, "Milestones": 4, "Organization": 5, "IdPFormCallbacks": 6, "FederatedLogouts": 7}),
        ("prod", {"Instance": 3, "Milestones": 4, "Organization": 5}),
    ],
)
def test_layout_of_the_stacks(stack: str, cache_dbs: dict[str, int]) -> None:
    assert load(stack, *stack_file(stack)).db_layout.as_output() == {
        "databases": 16,
        "rateLimitDb": 0,
        "eventsDb": 1,
        "cacheDbOffset": 2,
        "cacheBlock": [3, 9],
        "cacheDbs": cache_dbs,
    }


def test_layout_follows_its_inputs() -> None:
    layout = DbLayout(events_db=2, cache_db_offset=10, databases=32)
    assert layout.as_output() == {
        "databases": 32,
        "rateLimitDb": 0,
        "eventsDb": 2,
        "cacheDbOffset": 10,
        "cacheBlock": [11, 17],
        "cacheDbs": {"Instance": 11, "Milestones": 12, "Organization": 13},
    }
    assert layout.violations() == []


def test_the_rate_limit_db_stays_out_of_the_cache_block() -> None:
    # DB 0 is fixed and the block starts at dbOffset + 1; the rule guards a layout built with another counter DB.
    assert DbLayout(events_db=1, cache_db_offset=2, databases=16, rate_limit_db=5).violations() == [
        (
            "zitadel.cache.dbOffset",
            "ZITADEL's cache block 3..9 contains the rate-limit DB 5, where ZITADEL runs FLUSHDB",
        )
    ]
    assert DbLayout(events_db=1, cache_db_offset=2, databases=16, rate_limit_db=10).violations() == []


# --- persistence ---------------------------------------------------------------------------------------------------

NO_PERSISTENCE = (
    "redis.persistence.enabled: Sentinel without persistence loses every write on all nodes when the master restarts "
    "before down-after expires; keep it on or set redis.allowDataLossOnRestart: true"
)


@pytest.mark.parametrize(
    ("stack", "enabled", "opt_in", "expected"),
    [
        ("dev", True, False, []),
        ("dev", True, True, []),
        ("dev", False, False, [f"dev: {NO_PERSISTENCE}"]),
        ("dev", False, True, []),
        ("prod", True, False, []),
        ("prod", True, True, ["prod: redis.allowDataLossOnRestart: prod may not opt into data loss on restart"]),
        (
            "prod",
            False,
            False,
            [f"prod: {NO_PERSISTENCE}", "prod: redis.persistence.enabled: prod requires persistence"],
        ),
        (
            "prod",
            False,
            True,
            [
                "prod: redis.allowDataLossOnRestart: prod may not opt into data loss on restart",
                "prod: redis.persistence.enabled: prod requires persistence",
            ],
        ),
    ],
)
def test_persistence(stack: str, enabled: bool, opt_in: bool, expected: list[str]) -> None:
    overrides = {"redis": {"persistence": {"enabled": enabled}, "allowDataLossOnRestart": opt_in}}
    assert found(stack, overrides) == expected


# --- events --------------------------------------------------------------------------------------------------------


def test_event_streams_must_be_distinct() -> None:
    assert found("dev", {"events": {"streams": {"low": "zitadel:events:normal"}}}) == [
        "dev: events.streams.low: stream 'zitadel:events:normal' is also events.streams.normal"
    ]
    # Every duplicate names the first stream that has the name.
    assert found("dev", {"events": {"streams": {"normal": "s", "low": "s", "deadLetter": "s"}}}) == [
        "dev: events.streams.low: stream 's' is also events.streams.normal",
        "dev: events.streams.deadLetter: stream 's' is also events.streams.normal",
    ]


@pytest.mark.parametrize(
    ("backoff", "cap", "expected"),
    [
        ("10s", "10s", []),
        ("1m", "30s", ["dev: events.publishing.retryBackoff: 1m exceeds events.publishing.maxRetryBackoff (30s)"]),
        (
            "1001ms",
            "1s",
            ["dev: events.publishing.retryBackoff: 1001ms exceeds events.publishing.maxRetryBackoff (1s)"],
        ),
    ],
)
def test_event_backoff_within_its_cap(backoff: str, cap: str, expected: list[str]) -> None:
    assert found("dev", {"events": {"publishing": {"retryBackoff": backoff, "maxRetryBackoff": cap}}}) == expected


def test_event_durations_are_go_durations() -> None:
    (violation,) = found("dev", {"events": {"publishing": {"retryBackoff": "two seconds"}}})
    assert violation.startswith("dev: events.publishing.retryBackoff: ") and "Go duration" in violation


# --- prod requirements, each on its own; dev shows each applies to prod only ----------------------------------------


@pytest.mark.parametrize(
    ("stack", "expected"), [("prod", ["prod: redis.nodes: prod requires at least 3 nodes (has 2)"]), ("dev", [])]
)
def test_prod_requires_three_nodes(stack: str, expected: list[str]) -> None:
    assert found(stack, {"redis": {"nodes": 2, "quorum": 2, "minReplicasToWrite": 1}}) == expected


@pytest.mark.parametrize("version", ["23.x", "latest", "", ">=23.0.0", "23.1"])
@pytest.mark.parametrize("release", ["redis", "zitadel"])
def test_prod_requires_exact_chart_versions(release: str, version: str) -> None:
    overrides = {release: {"chart": {"version": version}}}
    assert found("prod", overrides) == [
        f"prod: {release}.chart.version: prod requires an exact chart version, not {version!r}"
    ]
    assert found("dev", overrides) == []


IMAGE_KEYS = [
    ("redis", ("images", "redis")),
    ("redis", ("images", "sentinel")),
    ("redis", ("images", "exporter")),
    ("redis", ("images", "kubectl")),
    ("redis", ("images", "osShell")),
    ("zitadel", ("image",)),
    ("zitadel", ("loginImage",)),
]


@pytest.mark.parametrize("tag", ["latest", "", "stable"])
@pytest.mark.parametrize(("section", "path"), IMAGE_KEYS, ids=lambda p: ".".join(p) if isinstance(p, tuple) else p)
def test_prod_requires_pinned_image_tags(section: str, path: tuple[str, ...], tag: str) -> None:
    override: dict[str, Any] = {"tag": tag}
    for part in reversed(path):
        override = {part: override}
    key = ".".join((section, *path, "tag"))
    assert found("prod", {section: override}) == [f"prod: {key}: prod requires a pinned image tag, not {tag!r}"]
    assert found("dev", {section: override}) == []


@pytest.mark.parametrize(
    ("section", "container", "field", "missing"),
    [
        ("redis", "redis", {"requests": {"cpu": None}}, "requests.cpu"),
        ("redis", "sentinel", {"requests": {"memory": None}}, "requests.memory"),
        ("redis", "passwordCopy", {"limits": {"memory": None}}, "limits.memory"),
        ("redis", "kubectl", {"requests": {"cpu": None, "memory": None}}, "requests.cpu, requests.memory"),
        (
            "zitadel",
            "jobs",
            {"requests": {"cpu": None, "memory": None}, "limits": {"memory": None}},
            "requests.cpu, requests.memory, limits.memory",
        ),
        ("zitadel", "login", {"requests": {"cpu": None}}, "requests.cpu"),
        ("zitadel", "waitForZitadel", {"limits": {"memory": None}}, "limits.memory"),
    ],
)
def test_prod_requires_explicit_resources(section: str, container: str, field: dict[str, Any], missing: str) -> None:
    overrides = {section: {"resources": {container: field}}}
    assert found("prod", overrides) == [
        f"prod: {section}.resources.{container}: prod requires explicit resources: {missing} not set"
    ]
    assert found("dev", overrides) == []


def test_a_cpu_limit_is_not_required() -> None:
    assert found("prod", {"redis": {"resources": {"redis": {"limits": {"cpu": None}}}}}) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"zitadel": {"externalSecure": False}},
            ["prod: zitadel.externalSecure: prod requires TLS towards clients (externalSecure: true)"],
        ),
        (
            {"edge": {"listener": {"tlsSecretName": None}}},
            [
                "prod: edge.listener.tlsSecretName: prod requires TLS at the gateway: an HTTPS listener with its "
                "certificate"
            ],
        ),
    ],
)
def test_prod_requires_tls_towards_clients(overrides: dict[str, Any], expected: list[str]) -> None:
    assert found("prod", overrides) == expected
    assert found("dev", overrides) == []


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("https://vault.example:8200", []),
        ("http://vault:8200", ["prod: vault.address: prod requires TLS to Vault (https://), not 'http://vault:8200'"]),
        ("vault:8200", ["prod: vault.address: prod requires TLS to Vault (https://), not 'vault:8200'"]),
    ],
)
def test_prod_requires_tls_to_vault(address: str, expected: list[str]) -> None:
    assert found("prod", {"vault": {"address": address}}) == expected
    assert found("dev", {"vault": {"address": address}}) == []


UNPROTECTED = "zitadel.protectMasterkey: prod requires protect on the masterkey: losing it loses every encrypted record"


def test_prod_requires_protected_masterkey() -> None:
    overrides = {"zitadel": {"protectMasterkey": False}}
    assert found("prod", overrides) == [f"prod: {UNPROTECTED}"]
    assert found("dev", overrides) == []


# --- the database --------------------------------------------------------------------------------------------------

EXACTLY_ONE = (
    "zitadel.database: mode: external needs exactly one DSN reference: dsnVaultSecret (an existing Vault secret) "
    "or dsnFromConfig: true (the postgresDsn Pulumi secret)"
)
BUNDLED_IN_PROD = (
    "prod: zitadel.database.mode: prod requires an external Postgres (mode: external with a DSN reference)"
)
UNUSED_REFERENCE = "zitadel.database: a DSN reference is only used with mode: external"
NO_DSN_SECRET = "dsnFromConfig is set but the stack has no postgresDsn secret (pulumi config set --secret)"


@pytest.mark.parametrize(
    ("stack", "database", "secret_keys", "expected"),
    [
        ("dev", {"mode": "bundled"}, set(), []),
        ("dev", {"mode": "bundled", "dsnFromConfig": True}, set(), [f"dev: {UNUSED_REFERENCE}"]),
        ("dev", {"mode": "bundled", "dsnVaultSecret": "db"}, set(), [f"dev: {UNUSED_REFERENCE}"]),
        ("dev", {"mode": "external"}, set(), [f"dev: {EXACTLY_ONE}"]),
        ("dev", {"mode": "external", "dsnVaultSecret": "db"}, set(), []),
        ("prod", {"mode": "bundled", "dsnVaultSecret": None}, set(), [BUNDLED_IN_PROD]),
        ("prod", {"mode": "bundled"}, set(), [BUNDLED_IN_PROD, f"prod: {UNUSED_REFERENCE}"]),
        ("prod", {"dsnFromConfig": True}, {"postgresDsn"}, [f"prod: {EXACTLY_ONE}"]),
        (
            "prod",
            {"dsnVaultSecret": None, "dsnFromConfig": True},
            set(),
            [f"prod: postgresDsn: {NO_DSN_SECRET}"],
        ),
        ("prod", {"dsnVaultSecret": None, "dsnFromConfig": True}, {"postgresDsn"}, []),
    ],
)
def test_database_source(stack: str, database: dict[str, Any], secret_keys: set[str], expected: list[str]) -> None:
    overrides: dict[str, Any] = {"zitadel": {"database": database}}
    if secret_keys:
        overrides["postgresDsn"] = SECRET
    # Other rules may apply to a bundled Postgres in prod (its sizing); this test is about the DSN's source.
    about_the_source = [
        v
        for v in found(stack, overrides, secret_keys=secret_keys)
        if v.split(": ")[1].startswith(("zitadel.database", "postgresDsn"))
    ]
    assert about_the_source == expected


def test_a_bundled_postgres_needs_its_resources() -> None:
    assert found("dev", {"zitadel": {"resources": {"postgres": None}}}) == [
        "dev: zitadel.resources.postgres: the bundled Postgres needs requests and a memory limit"
    ]
    external = {"zitadel": {"resources": {"postgres": None}, "database": {"mode": "external", "dsnVaultSecret": "db"}}}
    assert found("dev", external) == []


# --- ZITADEL's network policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "policy", "expected"),
    [
        (
            "prod",
            {"postgresCidrs": []},
            [
                "prod: zitadel.networkPolicy.postgresCidrs: an external Postgres needs the address blocks ZITADEL may "
                "reach it at"
            ],
        ),
        ("dev", {"postgresCidrs": []}, []),  # the bundled Postgres is reached by its pod labels
        # The API server's addresses and ports are the cluster's (kubernetes.apiServerCidrs, apiServerPorts).
        (
            "dev",
            {"kubeApiCidrs": ["10.0.0.1/32"]},
            ["dev: zitadel.networkPolicy.kubeApiCidrs: unknown key (is it misspelled?)"],
        ),
        ("dev", {"externalEgress": [{"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"], "ports": [443]}]}, []),
        (
            "dev",
            {"externalEgress": [{"cidr": "203.0.113.0/24", "except": ["10.0.0.0/8"], "ports": [443]}]},
            ["dev: zitadel.networkPolicy.externalEgress[0].except: 10.0.0.0/8 is not inside 203.0.113.0/24"],
        ),
        (
            "dev",
            {
                "externalEgress": [
                    {"cidr": "0.0.0.0/0", "ports": [443]},
                    {"cidr": "0.0.0.0/0", "except": ["fd00::/8"], "ports": [587]},
                ]
            },
            ["dev: zitadel.networkPolicy.externalEgress[1].except: fd00::/8 is not inside 0.0.0.0/0"],
        ),
    ],
)
def test_network_policy_addresses(stack: str, policy: dict[str, Any], expected: list[str]) -> None:
    assert found(stack, {"zitadel": {"networkPolicy": policy}}) == expected


# --- names ---------------------------------------------------------------------------------------------------------


def test_zitadel_needs_its_own_namespace() -> None:
    assert found("dev", {"zitadel": {"namespace": "database"}}) == [
        "dev: zitadel.namespace: ZITADEL needs its own namespace, not Redis's 'database'"
    ]
    assert found("dev", {"zitadel": {"namespace": "identity"}}) == []


# --- secrets and keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["postgresDsn", "vaultToken", "zitadelAdminKey"])
def test_secret_keys_must_be_pulumi_secrets(key: str) -> None:
    # A stand-in value: which key holds it is what matters, not what it is.
    assert found("prod", {key: "stand-in"}, secret_keys=set()) == [
        f"prod: {key}: must be a Pulumi secret: pulumi config set --secret {key} ..."
    ]
    assert found("prod", {key: SECRET}, secret_keys={key}) == []


def test_the_model_records_each_secret_key_but_the_providers_token() -> None:
    # README's table: three keys only ever set with --secret; the program reads vaultToken itself, the model records
    # whether each of the others is set.
    assert SECRET_KEYS == ("vaultToken", "postgresDsn", "zitadelAdminKey")
    assert [field.alias for field in SecretPresence.model_fields.values()] == list(SECRET_KEYS[1:])
    config, secret_keys = stack_file("prod")
    for key, presence in (
        ("postgresDsn", SecretPresence(postgres_dsn=True)),
        ("zitadelAdminKey", SecretPresence(zitadel_admin_key=True)),
    ):
        assert load("prod", {**config, key: SECRET}, secret_keys | {key}).secrets == presence
    assert load("prod", config, secret_keys).secrets == SecretPresence()


def vault_token() -> str:
    """A stand-in shaped like a Vault service token, made at test time."""
    return "hvs." + secrets.token_urlsafe(24)


@pytest.mark.parametrize(
    ("overrides", "key", "what"),
    [
        (
            lambda: {"vault": {"address": "https://admin:example-only@vault.example:8200"}},
            "vault.address",
            "a URL with a password",
        ),
        (
            lambda: {"events": {"streams": {"high": "host=x password=example-only"}}},
            "events.streams.high",
            "a connection string with a password",
        ),
        (lambda: {"vault": {"audience": vault_token()}}, "vault.audience", "a Vault token"),
        (
            lambda: {"redis": {"clientNamespaces": ["relay", vault_token()]}},
            "redis.clientNamespaces[1]",
            "a Vault token",
        ),
    ],
    ids=["url", "connection-string", "token", "token-in-a-list"],
)
def test_plain_config_may_not_hold_credentials(overrides: Callable[[], dict[str, Any]], key: str, what: str) -> None:
    message = f"prod: {key}: holds {what} in plain config; use a Pulumi secret or a Vault reference"
    assert message in found("prod", overrides())


def test_unknown_keys_are_named() -> None:
    assert found("dev", {"redis": {"qourum": 2}, "zitadell": {}}) == [
        "dev: zitadell: unknown key (is it misspelled?)",
        "dev: redis.qourum: unknown key (is it misspelled?)",
    ]


def test_stack_without_environment() -> None:
    with pytest.raises(StackConfigError) as info:
        load("staging", {})
    assert info.value.violations == [
        "staging: environment: must be dev or prod (stack 'staging' has no default), not None"
    ]
    config, secrets = stack_file("prod")
    assert load("staging", {**config, "environment": "prod"}, secrets).is_prod


def test_rules_on_valid_sections_still_run_when_another_section_is_invalid() -> None:
    (type_error, rule) = found("prod", {"redis": {"nodes": "three"}, "zitadel": {"protectMasterkey": False}})
    assert type_error.startswith("prod: redis.nodes: ")
    assert rule == (f"prod: {UNPROTECTED}")


def misnamed_sections(table: rules.RuleTable) -> set[str]:
    """The sections a rule table says its rules read that are no section of the configuration."""
    return {section for _, sections in table for section in sections} - set(SECTIONS)


def test_each_rule_reads_sections_that_exist() -> None:
    # A misspelled section would silently skip its rule whenever any section of a stack is invalid.
    assert misnamed_sections(rules.RULES) == set()
    typo = (*rules.RULES, (rules.RULES[0][0], frozenset({"redis", "zitadell"})))
    assert misnamed_sections(typo) == {"zitadell"}


def test_rules_run_on_the_sections_they_read() -> None:
    cfg = load("prod", *stack_file("prod"))
    broken = cfg.model_copy(
        update={
            "redis": cfg.redis.model_copy(update={"quorum": 1}),
            "zitadel": cfg.zitadel.model_copy(update={"protect_masterkey": False}),
        }
    )
    majority = "quorum 1 must be a majority of redis.nodes (3): at least 2"
    assert rules.violations(broken, frozenset({"redis"})) == [("redis.quorum", majority)]
    assert rules.violations(broken, frozenset({"zitadel"})) == [
        (UNPROTECTED.split(": ", 1)[0], UNPROTECTED.split(": ", 1)[1])
    ]
    assert rules.violations(broken, frozenset()) == []
    assert rules.violations(broken) == [("redis.quorum", majority), tuple(UNPROTECTED.split(": ", 1))]


def test_one_message_lists_every_violation() -> None:
    config, secrets = stack_file("prod")
    bad = deep_merge(config, {"redis": {"quorum": 4}, "zitadel": {"protectMasterkey": False}, "events": {"db": 4}})
    with pytest.raises(StackConfigError) as info:
        load("prod", bad, secrets)
    assert str(info.value) == (
        "stack 'prod' has 3 configuration errors:\n"
        "  prod: redis.quorum: quorum 4 must be <= redis.nodes (3)\n"
        f"  {inside_block('prod', 4, 3, 9, 2)}\n"
        f"  prod: {UNPROTECTED}"
    )


def test_invalid_config_registers_nothing() -> None:
    config, secrets = stack_file("prod")
    recording = mocked.Recording(stack="prod")
    with pytest.raises(StackConfigError, match=r"prod: redis\.quorum"):
        mocked.run_program("prod", deep_merge(config, {"redis": {"quorum": 1}}), secrets, recording=recording)
    assert recording.resources == []
