"""The Pulumi program under mocks: resources, parents, dependencies, options and the exact Helm values."""

from __future__ import annotations

from components.redis import redis_values
from components.zitadel import zitadel_values
from stacks import mocked, names
from stacks.config import StackConfig
from stacks.defaults import deep_merge
from stacks.plan import mask
from stacks.stackfile import read_stack_config
from tests.conftest import PROJECT_DIR

RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET_V2 = "vault:kv/secretV2:SecretV2"
ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"
POLICY = "vault:index/policy:Policy"
RANDOM = "random:index/randomPassword:RandomPassword"
K8S_SECRET = "kubernetes:core/v1:Secret"


def components(recording: mocked.Recording) -> dict[str, str]:
    return {r.urn: r.name for r in recording.resources if r.type.startswith("blinkchamber:identity:")}


def test_children_are_parented_to_their_component(recording: mocked.Recording) -> None:
    parents = components(recording)
    assert sorted(parents.values()) == ["redis", "vault", "zitadel"]
    expected_parent = {
        RELEASE + "/redis": "redis",
        RELEASE + "/zitadel": "zitadel",
        SECRET_V2 + "/redis": "vault",
        ROLE + "/redis-role": "vault",
        ROLE + "/zitadel-role": "vault",
        RANDOM + "/zitadel-masterkey": "vault",
        K8S_SECRET + "/zitadel-masterkey": "zitadel",
        "kubernetes:core/v1:Namespace/database": "redis",
    }
    for key, parent in expected_parent.items():
        type_, name = key.rsplit("/", 1)
        assert parents[recording.one(type_, name).parent] == parent, key


def test_releases_wait_for_their_vault_access(recording: mocked.Recording) -> None:
    redis = recording.one(RELEASE, "redis")
    zitadel = recording.one(RELEASE, "zitadel")
    for dep in (
        recording.one(SECRET_V2, "redis"),
        recording.one(POLICY, names.REDIS_VAULT_POLICY),
        recording.one(ROLE, names.REDIS_VAULT_ROLE),
    ):
        assert dep.urn in redis.dependencies
    for dep in (
        recording.one(SECRET_V2, "redis"),
        recording.one(POLICY, names.ZITADEL_VAULT_POLICY),
        recording.one(ROLE, names.ZITADEL_VAULT_ROLE),
        recording.one(K8S_SECRET, names.ZITADEL_MASTERKEY_SECRET),
        redis,  # the setup job connects to Redis
    ):
        assert dep.urn in zitadel.dependencies


def test_exact_helm_values(recording: mocked.Recording, cfg: StackConfig) -> None:
    # The program passes the builders' documents unchanged (numbers travel as doubles over the RPC layer).
    assert mask(recording.one(RELEASE, "redis").inputs["values"]) == redis_values(cfg)
    assert mask(recording.one(RELEASE, "zitadel").inputs["values"]) == zitadel_values(cfg)


def test_release_charts_are_pinned(recording: mocked.Recording) -> None:
    redis = recording.one(RELEASE, "redis").inputs
    assert (redis["chart"], redis["version"], redis["namespace"]) == (
        "oci://registry-1.docker.io/bitnamicharts/redis",
        "23.1.1",
        "database",
    )
    zitadel = recording.one(RELEASE, "zitadel").inputs
    assert (zitadel["chart"], zitadel["version"], zitadel["repositoryOpts"]["repo"]) == (
        "zitadel",
        "9.34.0",
        "https://charts.zitadel.com",
    )


def test_vault_roles_bind_exactly_the_service_accounts(recording: mocked.Recording, cfg: StackConfig) -> None:
    redis = recording.one(ROLE, "redis-role").inputs
    assert redis["boundServiceAccountNames"] == ["redis"]
    assert redis["boundServiceAccountNamespaces"] == ["database"]
    assert redis["tokenPolicies"] == ["redis-read"]
    zitadel = recording.one(ROLE, "zitadel-role").inputs
    assert zitadel["boundServiceAccountNames"] == ["zitadel"]
    assert zitadel["boundServiceAccountNamespaces"] == [cfg.zitadel.namespace]
    for role in (redis, zitadel):
        assert role["aliasNameSource"] == "serviceaccount_name"
        assert "audience" not in role  # default pod tokens do not carry a "vault" audience


def test_dev_creates_vault_backends_prod_uses_existing(recording: mocked.Recording, stack: str) -> None:
    mounts = recording.by_type("vault:index/mount:Mount")
    backends = recording.by_type("vault:index/authBackend:AuthBackend")
    if stack == "dev":
        assert [m.inputs["path"] for m in mounts] == ["secret"]
        assert mounts[0].inputs["options"] == {"version": "2"}
        assert [b.inputs["type"] for b in backends] == ["kubernetes"]
        # Roles and secrets wait for the backends they live in.
        assert mounts[0].urn in recording.one(SECRET_V2, "redis").dependencies
        assert backends[0].urn in recording.one(ROLE, "redis-role").dependencies
    else:
        assert mounts == [] and backends == []
        assert recording.one(ROLE, "redis-role").inputs["backend"] == "kubernetes"


def test_generated_secrets_meet_their_rules(recording: mocked.Recording) -> None:
    redis = recording.one(RANDOM, "redis-password").inputs
    assert redis["length"] >= 32 and redis["special"] is False  # URL-safe: letters and digits only
    masterkey = recording.one(RANDOM, "zitadel-masterkey").inputs
    assert masterkey["length"] == 32 and masterkey["special"] is False


def test_vault_secrets_are_pulumi_secrets(recording: mocked.Recording) -> None:
    for secret in recording.by_type(SECRET_V2):
        assert mask(secret.inputs["dataJson"]) == "[secret]", secret.name
    assert recording.one(SECRET_V2, "redis").inputs["name"] == "redis"
    assert recording.one(SECRET_V2, "zitadel").inputs["name"] == "zitadel"


def test_masterkey_is_protected_in_prod(recording: mocked.Recording, stack: str) -> None:
    guarded = [
        recording.one(RANDOM, "zitadel-masterkey"),
        recording.one(SECRET_V2, "zitadel"),
        recording.one(K8S_SECRET, names.ZITADEL_MASTERKEY_SECRET),
    ]
    assert [r.protect for r in guarded] == [stack == "prod"] * 3
    # Nothing else is protected: a protected Redis password would block its own rotation.
    assert not recording.one(RANDOM, "redis-password").protect


def test_database_dsn_source(recording: mocked.Recording, stack: str) -> None:
    dsn_secrets = [s for s in recording.by_type(SECRET_V2) if s.name == "zitadel-database"]
    if stack == "dev":
        # Bundled Postgres: the DSN is generated and written to Vault, the subchart reads a Pulumi-made Secret.
        assert len(dsn_secrets) == 1
        assert recording.one(K8S_SECRET, names.ZITADEL_POSTGRES_AUTH_SECRET)
    else:
        # External Postgres: the DSN is an existing Vault secret this stack only reads.
        assert dsn_secrets == []
        assert not [s for s in recording.by_type(K8S_SECRET) if s.name == names.ZITADEL_POSTGRES_AUTH_SECRET]


def test_dsn_from_config_is_written_to_vault() -> None:
    zitadel = {"database": {"dsnVaultSecret": None, "dsnFromConfig": True}}
    config, secrets = read_stack_config(PROJECT_DIR / "Pulumi.prod.yaml")
    config = deep_merge(config, {"zitadel": zitadel})
    config["postgresDsn"] = mocked.UNDECRYPTED
    recording = mocked.run_program("prod", config, {*secrets, "postgresDsn"})
    secret = recording.one(SECRET_V2, "zitadel-database")
    assert mask(secret.inputs["dataJson"]) == "[secret]"
    assert secret.inputs["name"] == names.DATABASE_SECRET_NAME


def test_stack_outputs(recording: mocked.Recording, cfg: StackConfig) -> None:
    out = {name: o.value for name, o in recording.outputs.items()}
    assert out["redisMasterAddress"] == "redis-master.database.svc.cluster.local:6379"
    assert out["redisSentinelAddress"] == "redis.database.svc.cluster.local:26379"
    assert out["redisSentinelMasterSet"] == "mymaster"
    assert out["vaultRoles"] == {"redis": "redis-role", "zitadel": "zitadel-role"}
    assert out["vaultPaths"]["redisPassword"] == "secret/data/redis"
    assert out["redisDbLayout"]["eventsDb"] == 1
    assert out["redisDbLayout"]["cacheDbs"] == {"Instance": 3, "Milestones": 4, "Organization": 5}
    expected_url = "https://id.blinkchamber.com" if cfg.is_prod else "http://localhost:8080"
    assert out["zitadelUrl"] == expected_url
    assert not any(o.secret for o in recording.outputs.values())
