"""Real deploys that are safe: the target, what a stack owns and never deletes, stack-scoped Vault names, rollouts,
and a diff that tells replacements from updates. Under the SDK's mocks (and the real Redis chart rendered).

Every expected value is a literal written from README's "Deploying for real" and "Blast radius"; each safety rule
has a case where it catches a broken configuration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components.ci_access import bound_claims, deploy_policy, preview_bound_claims, preview_policy
from components.preflight import missing_keys
from components.wiring import ci_access_args
from stacks import names
from stacks.config import StackConfig
from stacks.defaults import deep_merge
from stacks.loader import StackConfigError, load
from stacks.rules import vault_address_key
from stacks.siblings import require_own_vault_names
from stacks.stackfile import read_stack_config
from stacktools import mocked
from stacktools.diff import diff_plans
from stacktools.plan import Plan, describe, plan_stack
from stacktools.replacements import forces_replacement
from tests.conftest import PROJECT_DIR, recorded
from tests.rendering import find, rendered


def config_of(stack: str, patch: dict[str, Any] | None = None) -> tuple[dict[str, Any], set[str]]:
    config, secret_keys = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    return deep_merge(config, patch or {}), set(secret_keys)


def load_with(stack: str, patch: dict[str, Any]) -> StackConfig:
    return load(stack, *config_of(stack, patch))


def violations(stack: str, patch: dict[str, Any]) -> list[str]:
    with pytest.raises(StackConfigError) as refused:
        load_with(stack, patch)
    return refused.value.violations


def run(stack: str, patch: dict[str, Any] | None = None, **kwargs: Any) -> mocked.Recording:
    config, secret_keys = config_of(stack, patch)
    return mocked.run_program(stack, config, secret_keys, **kwargs)


def resource(recording: mocked.Recording, key: str) -> mocked.RecordedResource:
    type_, name = key.split("::")
    return recording.one(type_, name)


# --- the target: prod names its cluster and its Vault -----------------------------------------------------------------


def test_prod_refuses_the_current_context_before_any_resource() -> None:
    config, secret_keys = config_of("prod")
    del config["kubernetes"]["context"]
    recording = mocked.Recording(stack="prod")
    with pytest.raises(StackConfigError) as refused:
        mocked.run_program("prod", config, secret_keys, recording=recording)
    assert refused.value.violations == [
        "prod: kubernetes.context: prod requires an explicit kubeconfig context: the current one may point at another "
        "cluster"
    ]
    assert recording.resources == []  # checked before anything was registered


def test_prod_refuses_a_missing_vault_address() -> None:
    config, secret_keys = config_of("prod")
    del config["vault"]["address"]
    with pytest.raises(StackConfigError) as refused:
        load("prod", config, secret_keys)
    assert "prod: vault.address: required, and this environment has no default" in refused.value.violations


def test_dev_may_use_the_current_context() -> None:
    assert load_with("dev", {}).kubernetes.context is None


def test_the_prod_stack_file_names_its_context() -> None:
    assert load_with("prod", {}).kubernetes.context == "blinkchamber-prod"


# --- ownership: created or adopted by explicit config; protected in prod ----------------------------------------------

NAMESPACES = ("database", "zitadel", "envoy-gateway-system")


@pytest.mark.parametrize(("stack", "protected"), [("dev", False), ("prod", True)])
def test_namespaces_are_created_and_protected_in_prod(stack: str, protected: bool) -> None:
    recording = run(stack)
    for name in NAMESPACES:
        namespace = recording.one("kubernetes:core/v1:Namespace", name)
        assert (namespace.protect, namespace.retain_on_delete) == (protected, False), name
        assert namespace.provider.split("::")[-2] == "kubernetes"  # the stack's provider: no upsert
    assert [r.name for r in recording.by_type("pulumi:providers:kubernetes")] == ["kubernetes"]
    assert "upsertExistingObjects" not in recording.one("pulumi:providers:kubernetes", "kubernetes").inputs


def test_an_adopted_namespace_is_taken_over_alone_and_left_in_place_on_destroy() -> None:
    recording = run("dev", {"kubernetes": {"adoptNamespaces": ["database"]}})
    database = recording.one("kubernetes:core/v1:Namespace", "database")
    assert database.retain_on_delete is True
    adopter = recording.one("pulumi:providers:kubernetes", "adopt-database")
    assert database.provider.split("::")[-2] == "adopt-database"
    assert adopter.inputs == {"upsertExistingObjects": "true", "clusterIdentifier": "dev"}  # provider config: strings
    # Everything else still fails on an object that exists.
    zitadel = recording.one("kubernetes:core/v1:Namespace", "zitadel")
    assert (zitadel.retain_on_delete, zitadel.provider.split("::")[-2]) == (False, "kubernetes")


def test_only_declared_namespaces_can_be_adopted() -> None:
    assert violations("dev", {"kubernetes": {"adoptNamespaces": ["kube-system"]}}) == [
        "dev: kubernetes.adoptNamespaces: 'kube-system' is not a namespace this stack declares "
        "(['database', 'envoy-gateway-system', 'zitadel'])"
    ]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"kubernetes": {"protectNamespaces": False}},
            "prod: kubernetes.protectNamespaces: prod requires protect on its namespaces: deleting one deletes the "
            "volumes in it",
        ),
        (
            {"redis": {"protect": False}},
            "prod: redis.protect: prod requires protect on the Redis release: its volumes hold the event streams",
        ),
    ],
)
def test_prod_refuses_unprotected_stateful_objects(patch: dict[str, Any], expected: str) -> None:
    assert violations("prod", patch) == [expected]


def test_the_redis_volumes_outlive_the_statefulset() -> None:
    statefulset = find(rendered("prod", "redis"), "StatefulSet", "redis-node")
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_shared_vault_backends_are_never_deleted_by_a_stack(stack: str) -> None:
    recording = run(stack, {"vault": {"manageKvMount": True, "manageBackends": True, "ci": {"manageBackend": True}}})
    retained = sorted(f"{r.type}::{r.name}" for r in recording.resources if r.retain_on_delete)
    assert retained == [
        "vault:index/authBackend:AuthBackend::kubernetes",
        "vault:index/mount:Mount::kv",
        "vault:jwt/authBackend:AuthBackend::github-actions",
        "vault:kubernetes/authBackendConfig:AuthBackendConfig::kubernetes",
    ]


def test_what_each_stack_creates_in_vault() -> None:
    """Dev: a dev-mode Vault has secret/, so no KV mount; the auth backends are its own. Prod: both exist."""
    created = {
        stack: sorted(
            f"{r.type}::{r.name}"
            for r in run(stack).resources
            if r.type
            in ("vault:index/mount:Mount", "vault:index/authBackend:AuthBackend", "vault:jwt/authBackend:AuthBackend")
        )
        for stack in ("dev", "prod")
    }
    assert created == {
        "dev": ["vault:index/authBackend:AuthBackend::kubernetes", "vault:jwt/authBackend:AuthBackend::github-actions"],
        "prod": [],
    }


# --- stack-scoped Vault names, from one place -------------------------------------------------------------------------


def test_plain_names_stay_the_default() -> None:
    n = names.VaultNames.of(load_with("dev", {}))
    assert (n.redis_role, n.redis_policy, n.kv_path(n.redis_secret)) == (
        "redis-role",
        "redis-read",
        "secret/data/redis",
    )
    assert (n.ci_role, n.ci_policy) == ("ci-deploy", "ci-deploy")


def test_a_prefix_reaches_policies_roles_paths_annotations_and_outputs() -> None:
    recording = run("dev", {"vault": {"namePrefix": "staging"}})
    plan = describe(recording)
    policies = {
        r["inputs"]["name"]: r["inputs"]["policy"]
        for r in plan.resources.values()
        if r["type"] == "vault:index/policy:Policy"
    }
    assert sorted(policies) == [
        "staging-ci-deploy",
        "staging-ci-preview",
        "staging-event-consumer-read",
        "staging-event-relay-read",
        "staging-redis-read",
        "staging-zitadel-read",
    ]
    assert policies["staging-redis-read"] == (
        'path "secret/data/staging/redis" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/staging/redis-acl" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/staging/redis-users/exporter" {\n  capabilities = ["read"]\n}\n'
    )
    roles = {
        r["inputs"]["roleName"]: r["inputs"]["tokenPolicies"]
        for r in plan.resources.values()
        if r["type"] == "vault:kubernetes/authBackendRole:AuthBackendRole"
    }
    assert roles == {
        "staging-redis-role": ["staging-redis-read"],
        "staging-zitadel-role": ["staging-zitadel-read"],
        "staging-event-relay-role": ["staging-event-relay-read"],
    }
    secrets = sorted(r["inputs"]["name"] for r in plan.resources.values() if r["type"] == "vault:kv/secretV2:SecretV2")
    assert secrets == [
        "staging/event-relay",
        "staging/redis",
        "staging/redis-acl",
        "staging/redis-users/event-consumer",
        "staging/redis-users/event-relay",
        "staging/redis-users/exporter",
        "staging/redis-users/ratelimit",
        "staging/redis-users/zitadel",
        "staging/zitadel",
        "staging/zitadel-database",
    ]
    redis = plan.resources["kubernetes:helm.sh/v3:Release::redis"]["inputs"]["values"]["replica"]["podAnnotations"]
    assert redis["vault.hashicorp.com/role"] == "staging-redis-role"
    assert redis["vault.hashicorp.com/agent-inject-secret-redis-password"] == "secret/data/staging/redis"
    zitadel = plan.resources["kubernetes:helm.sh/v3:Release::zitadel"]["inputs"]["values"]
    for pod in (zitadel["podAnnotations"], zitadel["initJob"]["podAnnotations"], zitadel["setupJob"]["podAnnotations"]):
        assert pod["vault.hashicorp.com/role"] == "staging-zitadel-role"
        assert (
            'secret "secret/data/staging/zitadel-database"'
            in pod["vault.hashicorp.com/agent-inject-template-zitadel-secrets"]
        )
    ci_role = plan.resources["vault:jwt/authBackendRole:AuthBackendRole::ci-deploy"]["inputs"]
    assert (ci_role["roleName"], ci_role["tokenPolicies"]) == ("staging-ci-deploy", ["staging-ci-deploy"])
    assert plan.outputs["vaultRoles"] == {"redis": "staging-redis-role", "zitadel": "staging-zitadel-role"}
    assert plan.outputs["vaultPaths"]["redisPassword"] == "secret/data/staging/redis"
    # The Pulumi resource names stay the seed's: only the names in Vault move.
    assert "vault:index/policy:Policy::redis-read" in plan.resources


def test_the_deploy_policy_follows_the_prefix() -> None:
    policy = deploy_policy(ci_access_args(load_with("dev", {"vault": {"namePrefix": "staging"}})))
    assert 'path "auth/kubernetes/role/staging-redis-role"' in policy
    assert '"token_policies" = [["staging-redis-read"]]' in policy
    assert 'path "secret/data/staging/redis"' in policy
    assert 'path "secret/data/redis"' not in policy and '"redis-read"' not in policy


def copy_project(tmp_path: Path, extra: dict[str, str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    for name, text in extra.items():
        (tmp_path / name).write_text(text)
    return tmp_path


STAGING_ON_DEVS_VAULT = """config:
  blinkchamber-identity:environment: dev
  blinkchamber-identity:vault:
    address: http://vault.vault.svc.cluster.local:8200/
"""


def test_two_stacks_with_the_same_vault_and_names_are_refused(tmp_path: Path) -> None:
    project = copy_project(tmp_path, {"Pulumi.staging.yaml": STAGING_ON_DEVS_VAULT})
    with pytest.raises(StackConfigError) as refused:
        require_own_vault_names(load_with("dev", {}), project)
    (violation,) = refused.value.violations
    assert violation.startswith(
        "dev: vault.namePrefix: stack 'staging' writes to the same Vault (http://vault.vault.svc.cluster.local:8200) "
        "under the same names ("
    )
    assert violation.endswith("give each a distinct vault.namePrefix")
    # The program runs the check before any resource: the offline plan refuses too.
    recording = mocked.Recording(stack="dev")
    config, secret_keys = config_of("dev")
    with pytest.raises(StackConfigError):
        mocked.run_program("dev", config, secret_keys, program=_program_in(project), recording=recording)
    assert recording.resources == []


def test_a_prefix_or_another_vault_lets_them_share(tmp_path: Path) -> None:
    prefixed = STAGING_ON_DEVS_VAULT + "    namePrefix: staging\n"
    require_own_vault_names(load_with("dev", {}), copy_project(tmp_path / "a", {"Pulumi.staging.yaml": prefixed}))
    elsewhere = STAGING_ON_DEVS_VAULT.replace("vault.vault.svc", "vault.staging.svc")
    require_own_vault_names(load_with("dev", {}), copy_project(tmp_path / "b", {"Pulumi.staging.yaml": elsewhere}))


@pytest.mark.parametrize(
    "address",
    [
        "http://vault.vault.svc.cluster.local:8200/",
        "HTTP://Vault.Vault.SVC.cluster.local:8200",
        "http://vault.vault.svc.cluster.local.:8200//",
    ],
)
def test_the_same_vault_written_another_way_is_the_same_vault(tmp_path: Path, address: str) -> None:
    staging = STAGING_ON_DEVS_VAULT.replace("http://vault.vault.svc.cluster.local:8200/", address)
    with pytest.raises(StackConfigError) as refused:
        require_own_vault_names(load_with("dev", {}), copy_project(tmp_path, {"Pulumi.staging.yaml": staging}))
    (violation,) = refused.value.violations
    assert violation.startswith("dev: vault.namePrefix: stack 'staging' writes to the same Vault")


def test_default_ports_are_the_same_vault() -> None:
    assert vault_address_key("https://Vault.example/") == vault_address_key("https://vault.example:443")
    assert vault_address_key("http://vault.example") != vault_address_key("https://vault.example")
    assert vault_address_key("https://vault.example:8200") != vault_address_key("https://vault.example")


def test_an_invalid_sibling_stops_the_run_naming_its_file(tmp_path: Path) -> None:
    """Left out, it would leave the duplicate-names check undone: it may share dev's Vault and names."""
    broken = STAGING_ON_DEVS_VAULT + "  blinkchamber-identity:redis:\n    quorum: 7\n"
    project = copy_project(tmp_path, {"Pulumi.staging.yaml": broken})
    with pytest.raises(StackConfigError) as refused:
        require_own_vault_names(load_with("dev", {}), project)
    (violation,) = refused.value.violations
    assert violation.startswith("dev: Pulumi.staging.yaml: sibling stack 'staging' is invalid (staging: redis.")
    assert violation.endswith(
        "so whether it shares this stack's Vault names cannot be checked: fix or remove that file"
    )


def test_a_sibling_that_is_not_yaml_stops_the_run_naming_its_file(tmp_path: Path) -> None:
    project = copy_project(tmp_path, {"Pulumi.staging.yaml": "config: [unclosed\n"})
    with pytest.raises(StackConfigError) as refused:
        require_own_vault_names(load_with("dev", {}), project)
    (violation,) = refused.value.violations
    assert violation.startswith("dev: Pulumi.staging.yaml: sibling stack 'staging' is invalid (not YAML: ")


def _program_in(project: Path) -> Path:
    shutil.copy(PROJECT_DIR / "__main__.py", project / "__main__.py")
    return project / "__main__.py"


# --- rollouts ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_zitadel_is_not_rolled_back_onto_a_migrated_schema(stack: str) -> None:
    plan = describe(run(stack))
    zitadel = plan.resources["kubernetes:helm.sh/v3:Release::zitadel"]["inputs"]
    redis = plan.resources["kubernetes:helm.sh/v3:Release::redis"]["inputs"]
    assert (zitadel["atomic"], zitadel["timeout"]) == (False, 900)
    assert (redis["atomic"], redis["timeout"]) == (True, 600)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_password_version_rolls_redis_and_zitadel(stack: str) -> None:
    values = {
        r.name: r.inputs["values"]
        for r in run(stack).by_type("kubernetes:helm.sh/v3:Release")
        if r.name in ("redis", "zitadel")
    }
    marker = "blinkchamber.io/redis-password-version"
    # The mocked provider reads back KV version 1 after the first write: the version, never the value.
    assert values["redis"]["replica"]["podAnnotations"][marker] == "1"
    # A rotated client password changes the hashes Redis loads: the users' secret version rolls Redis too.
    assert values["redis"]["replica"]["podAnnotations"]["blinkchamber.io/redis-acl-version"] == "1"
    assert values["zitadel"]["podAnnotations"][marker] == "1"
    assert marker not in values["zitadel"]["setupJob"]["podAnnotations"]  # hook jobs run on every upgrade anyway


def test_a_new_password_version_changes_the_pod_templates() -> None:
    old = describe(run("dev"))
    new = Plan.from_json(old.to_json())
    for release, path in (("redis", ("replica", "podAnnotations")), ("zitadel", ("podAnnotations",))):
        node = new.resources[f"kubernetes:helm.sh/v3:Release::{release}"]["inputs"]["values"]
        for step in path:
            node = node[step]
        node["blinkchamber.io/redis-password-version"] = "2"
    lines = [line for change in diff_plans(old, new).changes for line in change.lines]
    assert '~ inputs.values.replica.podAnnotations.blinkchamber.io/redis-password-version: "1" → "2"' in lines
    assert '~ inputs.values.podAnnotations.blinkchamber.io/redis-password-version: "1" → "2"' in lines


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_vault_providers_token_outlives_the_helm_waits(stack: str) -> None:
    provider = run(stack).one("pulumi:providers:vault", "vault")
    assert provider.inputs["maxLeaseTtlSeconds"] == "2700"  # provider config travels as strings


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"vault": {"providerTokenTtlSeconds": 1200}},
            "dev: vault.providerTokenTtlSeconds: 1200s expires before the Helm releases' waits end (1500s: "
            "the longer of redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then "
            "zitadel.releaseTimeoutSeconds)",
        ),
        (
            {"zitadel": {"releaseTimeoutSeconds": 2400}},
            "dev: vault.providerTokenTtlSeconds: 2700s expires before the Helm releases' waits end (3000s: "
            "the longer of redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then "
            "zitadel.releaseTimeoutSeconds)",
        ),
        # Ending exactly when the waits end is already too short.
        (
            {"vault": {"providerTokenTtlSeconds": 1500}},
            "dev: vault.providerTokenTtlSeconds: 1500s expires before the Helm releases' waits end (1500s: "
            "the longer of redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then "
            "zitadel.releaseTimeoutSeconds)",
        ),
        # A shorter Redis wait does not shorten ZITADEL's start: the edge's release runs beside it, 600 s.
        (
            {"redis": {"releaseTimeoutSeconds": 300}, "vault": {"providerTokenTtlSeconds": 1300}},
            "dev: vault.providerTokenTtlSeconds: 1300s expires before the Helm releases' waits end (1500s: "
            "the longer of redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then "
            "zitadel.releaseTimeoutSeconds)",
        ),
        (
            {"edge": {"releaseTimeoutSeconds": 1800}},
            "dev: vault.providerTokenTtlSeconds: 2700s expires before the Helm releases' waits end (2700s: "
            "the longer of redis.releaseTimeoutSeconds and edge.releaseTimeoutSeconds, then "
            "zitadel.releaseTimeoutSeconds)",
        ),
        (
            {"vault": {"ci": {"tokenTtlSeconds": 1800}}},
            "dev: vault.ci.tokenTtlSeconds: 1800s is shorter than vault.providerTokenTtlSeconds (2700s): the "
            "provider's child token cannot outlive the login's",
        ),
    ],
)
def test_token_lifetimes_that_end_mid_deploy_are_refused(patch: dict[str, Any], expected: str) -> None:
    assert violations("dev", patch) == [expected]


@pytest.mark.parametrize(
    ("stack", "deploy", "preview"),
    [
        (
            "dev",
            {"environment": "dev", "ref": "refs/heads/main"},
            {"environment": "dev-preview", "event_name": "pull_request"},
        ),
        (
            "prod",
            {"environment": "production", "ref": "refs/heads/main"},
            {"environment": "production-preview", "event_name": "push", "ref": "refs/heads/main"},
        ),
    ],
)
def test_both_roles_bind_the_repository_by_name_and_ids(
    stack: str, deploy: dict[str, str], preview: dict[str, str]
) -> None:
    repository = {
        "repository": "blinkchamber/blinkchamber-identity",
        "repository_id": "2000002",
        "repository_owner_id": "1000001",
    }
    cfg = load_with(stack, {})
    assert bound_claims(cfg.vault.ci) == {**repository, **deploy}
    assert preview_bound_claims(cfg.vault.ci) == {**repository, **preview}


def test_repository_ids_are_numbers() -> None:
    assert load_with("dev", {"vault": {"ci": {"repositoryId": 123456}}}).vault.ci.repository_id == "123456"
    assert violations("dev", {"vault": {"ci": {"repositoryId": "blinkchamber"}}}) == [
        "dev: vault.ci.repositoryId: String should match pattern '^[1-9][0-9]*$'"
    ]


def test_the_preview_policy_writes_nothing() -> None:
    # The provider looks its token up (the login has no `default` policy), then makes its child token.
    assert preview_policy(names.VaultNames.of(load_with("dev", {}))) == (
        "# the provider looks its token up first (no `default` policy here)\n"
        'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}\n'
        "# Pulumi's Vault provider works with a child token of the login\n"
        'path "auth/token/create" {\n  capabilities = ["update"]\n}\n'
    )
    prod = preview_policy(names.VaultNames.of(load_with("prod", {})))
    assert 'path "secret/subkeys/zitadel-database" {\n  capabilities = ["read"]\n}' in prod
    assert '"create"' not in prod and '"delete"' not in prod and '"sudo"' not in prod


def test_a_preview_in_the_deploy_environment_is_refused() -> None:
    assert violations("dev", {"vault": {"ci": {"preview": {"environment": "dev"}}}}) == [
        "dev: vault.ci.preview.environment: 'dev' is also the deploy role's environment: a preview job (a branch's "
        "code) would be admitted by the deploy role too"
    ]


def test_prod_logs_in_only_from_its_refs() -> None:
    assert violations("prod", {"vault": {"ci": {"refs": []}}}) == [
        "prod: vault.ci.refs: prod requires the refs whose workflows may deploy it (e.g. refs/heads/main)"
    ]


#: A program that fails mid-run leaves its other outputs' tasks in the SDK's global runtime state, where the next run
#: under the mocks in the same process would meet them: the failing run gets a process of its own.
_MISSING_DSN_RUN = """
import json, sys
from stacktools import mocked
from stacks.stackfile import read_stack_config
from components.preflight import PreflightError
config, secret_keys = read_stack_config(mocked.PROJECT_DIR / "Pulumi.prod.yaml")
recording = mocked.Recording(stack="prod")
try:
    mocked.run_program("prod", config, secret_keys, recording=recording, vault_subkeys=json.loads(sys.argv[1]))
except PreflightError as exc:
    print(json.dumps({"error": str(exc), "declared": [f"{r.type}::{r.name}" for r in recording.resources]}))
"""


def test_the_preflight_lets_the_release_wait_only_for_a_dsn_in_vault() -> None:
    # The prerequisites hold (README): the secret has its key, and the release is declared.
    assert run("prod").one("kubernetes:helm.sh/v3:Release", "zitadel")
    # The DSN secret lacks its key: the deployment fails before ZITADEL's release is registered.
    done = subprocess.run(
        [sys.executable, "-c", _MISSING_DSN_RUN, json.dumps({"secret/zitadel-database": ["url"]})],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["error"] == (
        "zitadel-database: secret/data/zitadel-database lacks 'dsn', which ZITADEL (its init job first) reads; "
        "write it to Vault before deploying (README, Prerequisites)"
    )
    assert "kubernetes:helm.sh/v3:Release::redis" in outcome["declared"]
    assert "kubernetes:helm.sh/v3:Release::zitadel" not in outcome["declared"]


def test_the_preflight_reads_keys_never_values() -> None:
    assert missing_keys('{"dsn": null}', ["dsn"]) == []
    assert missing_keys('{"url": null}', ["dsn"]) == ["dsn"]
    assert missing_keys(None, ["dsn"]) == ["dsn"]  # no such secret
    # Dev writes its DSN itself: nothing to check.
    assert run("dev", vault_subkeys={}).one("kubernetes:helm.sh/v3:Release", "zitadel")


#: Where each stack's pods may reach the API server (``kubernetes.apiServerCidrs``: prod's stack file narrows it).
API_SERVER_BLOCKS = {
    "dev": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
    "prod": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"ipBlock": {"cidr": "172.16.0.0/12"}},
        {"ipBlock": {"cidr": "192.168.0.0/16"}},
    ],
}
API_SERVER_PORTS = [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_redis_api_egress_has_a_destination(stack: str) -> None:
    values = run(stack).one("kubernetes:helm.sh/v3:Release", "redis").inputs["values"]
    (api,) = [
        rule for rule in values["networkPolicy"]["extraEgress"] if {"port": 6443, "protocol": "TCP"} in rule["ports"]
    ]
    assert api["to"] == API_SERVER_BLOCKS[stack]
    assert api["ports"] == API_SERVER_PORTS


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("policy", ["zitadel-kube-api", "edge-controller", "edge-certgen"])
def test_zitadels_and_the_edges_api_egress_is_the_api_servers_addresses(stack: str, policy: str) -> None:
    # One list of addresses for every pod that talks to the API: prod's narrowing reaches ZITADEL's jobs too.
    spec = recorded(stack).one("kubernetes:networking.k8s.io/v1:NetworkPolicy", policy).inputs["spec"]
    assert spec["egress"] == [{"to": API_SERVER_BLOCKS[stack], "ports": API_SERVER_PORTS}]


def test_prod_refuses_an_api_egress_to_anywhere() -> None:
    assert violations("prod", {"kubernetes": {"apiServerCidrs": ["0.0.0.0/0"]}}) == [
        "prod: kubernetes.apiServerCidrs: prod requires the API server's own addresses, not 0.0.0.0/0 (any host on "
        "the API ports)"
    ]
    assert violations("dev", {"kubernetes": {"apiServerCidrs": []}}) == [
        "dev: kubernetes.apiServerCidrs: the Redis kubectl sidecar moves the master Service through the API server: "
        "it needs its address"
    ]
    assert violations("dev", {"kubernetes": {"apiServerPorts": []}}) == [
        "dev: kubernetes.apiServerPorts: the Redis kubectl sidecar, ZITADEL's setup job and the edge's controller "
        "reach the API server: it needs its ports"
    ]


# --- the diff tells replacements from updates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "path", "kind", "replaces"),
    [
        ("random:index/randomPassword:RandomPassword", "inputs.length", "~", True),
        ("vault:kv/secretV2:SecretV2", "inputs.name", "~", True),
        ("vault:kv/secretV2:SecretV2", "inputs.dataJson", "~", False),
        ("vault:index/policy:Policy", "inputs.policy", "~", False),
        ("vault:kubernetes/authBackendRole:AuthBackendRole", "inputs.roleName", "~", True),
        ("vault:kubernetes/authBackendRole:AuthBackendRole", "inputs.tokenPolicies", "~", False),
        ("vault:index/authBackend:AuthBackend", "inputs.path", "~", False),  # a remount on Vault >= 1.10
        ("kubernetes:helm.sh/v3:Release", "inputs.namespace", "~", True),
        ("kubernetes:helm.sh/v3:Release", "inputs.values.replica.replicaCount", "~", False),
        ("kubernetes:core/v1:Namespace", "inputs.metadata.name", "~", True),
        ("kubernetes:core/v1:Namespace", "inputs.metadata.labels", "~", False),
        ("kubernetes:core/v1:Secret", "inputs.stringData.masterkey", "~", True),
        ("pulumi:providers:kubernetes", "inputs.clusterIdentifier", "~", True),
        ("pulumi:providers:kubernetes", "inputs.clusterIdentifier", "+", False),
        ("pulumi:providers:kubernetes", "inputs.context", "~", False),
        ("zitadel:index/machineUser:MachineUser", "inputs.userName", "~", False),  # not in the table
    ],
)
def test_the_replacement_table(type_: str, path: str, kind: str, replaces: bool) -> None:
    assert forces_replacement(type_, path, kind) is replaces


def test_a_longer_redis_password_is_a_replacement_not_an_update() -> None:
    old = plan_stack("dev")
    new = describe(run("dev", {"redis": {"passwordLength": 64}}))
    result = diff_plans(old, new)
    replaced = {c.key: c.lines for c in result.changes if c.action == "+/-"}
    # The chart's password and each client user's (redis.passwordLength sizes them all).
    assert replaced == {
        f"random:index/randomPassword:RandomPassword::{name}": ["~ inputs.length: 48 → 64 (forces replacement)"]
        for name in (
            "redis-password",
            "redis-zitadel-password",
            "redis-event-relay-password",
            "redis-ratelimit-password",
            "redis-exporter-password",
            "redis-event-consumer-password",
        )
    }
    rendered_diff = result.render()
    assert "  +/- random:index/randomPassword:RandomPassword::redis-password\n" in rendered_diff
    assert result.summary().startswith("Plan: 0 to add, ") and ", 6 to replace, 0 to delete" in result.summary()
    assert result.to_json()["summary"]["replace"] == 6


def test_a_vault_prefix_replaces_the_named_objects() -> None:
    result = diff_plans(plan_stack("dev"), describe(run("dev", {"vault": {"namePrefix": "dev"}})))
    replaced = sorted(c.key for c in result.changes if c.action == "+/-")
    assert "vault:index/policy:Policy::redis-read" in replaced
    assert "vault:kv/secretV2:SecretV2::redis" in replaced
    assert "vault:kubernetes/authBackendRole:AuthBackendRole::redis-role" in replaced
    # The release only changes its annotations: an update.
    assert {c.key: c.action for c in result.changes}["kubernetes:helm.sh/v3:Release::redis"] == "~"


POSTGRES_PASSWORDS = (
    "random:index/randomPassword:RandomPassword::postgres-admin-password",
    "random:index/randomPassword:RandomPassword::postgres-app-password",
)


def as_before_the_move(plan: Plan) -> Plan:
    """``plan`` as it was when the bundled Postgres's passwords were children of the Vault component."""
    before = Plan.from_json(plan.to_json())
    for key in POSTGRES_PASSWORDS:
        before.resources[key]["parent"] = "blinkchamber:identity:VaultAccess::vault"
        del before.resources[key]["aliases"]
    return before


def test_only_the_moved_passwords_carry_an_alias_in_the_plan() -> None:
    # The Kubernetes SDK's aliases of former API versions name other types: no plan shows them.
    plan = plan_stack("dev")
    aliased = {key: res["aliases"] for key, res in plan.resources.items() if "aliases" in res}
    assert aliased == {
        key: [f"urn:pulumi:dev::blinkchamber-identity::blinkchamber:identity:VaultAccess${key}"]
        for key in POSTGRES_PASSWORDS
    }
    assert not any("aliases" in res for res in plan_stack("prod").resources.values())


def test_the_bundled_postgres_passwords_move_without_a_new_password() -> None:
    now = plan_stack("dev")
    kept = diff_plans(as_before_the_move(now), now)
    assert [(c.action, c.key, c.lines) for c in kept.changes] == [
        (
            "~",
            key,
            [
                '~ parent: "blinkchamber:identity:VaultAccess::vault" → "" (moved, and an alias names its old URN: '
                "the same resource, not replaced)"
            ],
        )
        for key in POSTGRES_PASSWORDS
    ]
    assert kept.replacements == 0
    # Without the alias, a new superuser password that the initialized database would not know.
    unaliased = Plan.from_json(now.to_json())
    for key in POSTGRES_PASSWORDS:
        del unaliased.resources[key]["aliases"]
    replaced = diff_plans(as_before_the_move(now), unaliased)
    assert [(c.action, c.key) for c in replaced.changes] == [("+/-", key) for key in POSTGRES_PASSWORDS]
    assert replaced.summary() == "Plan: 0 to add, 0 to change, 2 to replace, 0 to delete."


def test_retain_on_delete_changes_are_shown() -> None:
    old = plan_stack("dev")
    new = Plan.from_json(old.to_json())
    new.resources["vault:index/authBackend:AuthBackend::kubernetes"]["retainOnDelete"] = False
    (change,) = diff_plans(old, new).changes
    assert (change.action, change.lines) == ("~", ["~ retainOnDelete: true → false"])
