"""The workflows' Vault login, against a real OpenBao server: GitHub's OIDC token → the stack's JWT role → a token
that deploys exactly this stack, and cannot widen what it or the pods get.

Each stack's Vault objects are applied as the program declares them (``tests/test_vault_server.py`` maps them to API
calls), with an operator's token: the bootstrap. Tokens shaped like GitHub's (``testbed/github_oidc.py``) are signed
by a key made at test time, which the JWT backend trusts in place of GitHub's (the tests cannot fetch GitHub's);
the backend's issuer, audience, time and bound-claim checks are the server's own. Then the CI token replays the
stack's declared writes as Pulumi's Vault provider sends them, and tries what it must not. Each escalation found
against the former deploy policy (issue 20) is performed twice: with the former grants, where the server accepts it,
and with the CI token, which gets 403.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks import names
from stacks.config import StackConfig
from stacktools import ci
from testbed.github_oidc import IdTokenEndpoint, Job, LocalIssuer, openssl_available
from testbed.openbao import OpenBaoServer, TokenReviewStandIn, VaultClient, openbao_server
from testbed.required import require
from tests.conftest import STACKS, record, stack_config
from tests.test_vault_server import STAND_IN_CA, Write, declared_writes, existing_objects, recorded, stand_ins

require(openssl_available(), "openssl", "apt-get install openssl: it makes the test issuer's key")

REPOSITORY = "blinkchamber/blinkchamber-identity"
#: GitHub's numeric IDs of the repository and its owner, as the stacks' defaults name them.
REPOSITORY_ID, OWNER_ID = "2000002", "1000001"
AUDIENCE = "blinkchamber-identity-vault"
#: The deploy jobs README says may log in: each stack's, from main only.
ADMITTED = {
    "dev": [Job(REPOSITORY, "dev", ref="refs/heads/main")],
    "prod": [Job(REPOSITORY, "production", ref="refs/heads/main")],
}
#: The preview jobs: dev's for a pull request (a branch's code), prod's from main before the approval.
PREVIEWS = {
    "dev": Job(REPOSITORY, "dev-preview", ref="refs/pull/7/merge", event_name="pull_request", workflow="pull request"),
    "prod": Job(REPOSITORY, "production-preview", ref="refs/heads/main"),
}


@dataclass
class Bed:
    stack: str
    cfg: StackConfig
    server: OpenBaoServer
    issuer: LocalIssuer
    writes: list[Write]

    @property
    def root(self) -> VaultClient:
        return self.server.client()

    @property
    def names(self) -> names.VaultNames:
        return names.VaultNames.of(self.cfg)

    def login(self, token: str, role: str | None = None) -> tuple[int, dict[str, Any]]:
        answer = VaultClient(self.server.address, None).call(
            "POST", f"auth/{self.cfg.vault.ci.auth_path}/login", {"role": role or self.names.ci_role, "jwt": token}
        )
        return answer.status, answer.data

    def ci_client(self) -> VaultClient:
        status, data = self.login(self.issuer.token(ADMITTED[self.stack][-1], AUDIENCE))
        assert status == 200, data
        return VaultClient(self.server.address, data["auth"]["client_token"])

    def preview_client(self) -> VaultClient:
        status, data = self.login(self.issuer.token(PREVIEWS[self.stack], AUDIENCE), names.CI_PREVIEW_ROLE)
        assert status == 200, data
        return VaultClient(self.server.address, data["auth"]["client_token"])


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("issuer"))


def with_key(body: dict[str, Any], issuer: LocalIssuer) -> dict[str, Any]:
    return {**body, "jwt_validation_pubkeys": [issuer.public_pem]} if "jwt_validation_pubkeys" in body else body


#: What CI deploys: the generated secrets and the pods' roles. Every other object in Vault (the policies, the
#: backends and their config, the CI roles) is the operator's, read-only to CI.
DEPLOYED_BY_CI = ("vault:kv/secretV2:SecretV2::", "vault:kubernetes/authBackendRole:AuthBackendRole::")


def is_deployed_by_ci(write: Write) -> bool:
    return write.resource.startswith(DEPLOYED_BY_CI)


def as_the_provider_sends(write: Write) -> dict[str, Any]:
    """Pulumi's Vault provider adds two fields to every Kubernetes role it creates: the namespace selector, empty
    (terraform-provider-vault 5.6+), and its schema's default token type."""
    if write.resource.startswith("vault:kubernetes/authBackendRole"):
        return {**write.body, "bound_service_account_namespace_selector": "", "token_type": "default"}
    return write.body


def metadata_path(write: Write) -> str:
    """A KV v2 secret's metadata, which the provider reads back after each write (its ``custom_metadata``)."""
    mount, name = write.path.split("/data/", 1)
    return f"{mount}/metadata/{name}"


@contextlib.contextmanager
def deployed_bed(stack: str, issuer: LocalIssuer, workdir: Path) -> Iterator[Bed]:
    recording = recorded(stack)
    with openbao_server(workdir) as server:
        root = server.client()
        for method, path, body in existing_objects(stack):
            root.ok(method, path, with_key(body, issuer))
        writes = declared_writes(recording, stand_ins(recording), jwt_public_key=issuer.public_pem)
        for write in writes:  # the bootstrap, with an operator's token
            root.ok(write.method, write.path, write.body)
        yield Bed(stack, stack_config(stack), server, issuer, writes)


@pytest.fixture(scope="module", params=STACKS)
def bed(request: pytest.FixtureRequest, issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    stack = str(request.param)
    with deployed_bed(stack, issuer, tmp_path_factory.mktemp(f"openbao-jwt-{stack}")) as deployed:
        yield deployed


@pytest.fixture(params=STACKS)
def fresh_bed(request: pytest.FixtureRequest, issuer: LocalIssuer, tmp_path: Path) -> Iterator[Bed]:
    """A server of the test's own: the former grants' escalations change what they find."""
    with deployed_bed(str(request.param), issuer, tmp_path) as deployed:
        yield deployed


# --- the role, and who it admits ----------------------------------------------------------------------------------


#: Both roles bind the repository by name and by its and its owner's IDs.
REPOSITORY_CLAIMS = {"repository": [REPOSITORY], "repository_id": [REPOSITORY_ID], "repository_owner_id": [OWNER_ID]}


def test_the_ci_role_is_stored_as_declared(bed: Bed) -> None:
    stored = bed.root.read("auth/github-actions/role/ci-deploy")
    claims = {
        **REPOSITORY_CLAIMS,
        "environment": [{"dev": "dev", "prod": "production"}[bed.stack]],
        "ref": ["refs/heads/main"],
    }
    assert {
        k: stored[k] for k in ("role_type", "user_claim", "bound_audiences", "bound_claims", "bound_claims_type")
    } == {
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": [AUDIENCE],
        "bound_claims": claims,
        "bound_claims_type": "string",
    }
    assert (stored["token_policies"], stored["token_ttl"], stored["token_max_ttl"]) == (["ci-deploy"], 3600, 3600)
    assert stored["token_no_default_policy"] is True
    assert bed.root.read("auth/github-actions/config")["bound_issuer"] == "https://token.actions.githubusercontent.com"


def test_the_stacks_jobs_log_in_for_a_short_while(bed: Bed) -> None:
    for job in ADMITTED[bed.stack]:
        status, data = bed.login(bed.issuer.token(job, AUDIENCE))
        assert status == 200, data
        auth = data["auth"]
        assert auth["policies"] == ["ci-deploy"]  # not Vault's `default` policy
        assert auth["lease_duration"] == 3600
        assert {k: auth["metadata"][k] for k in ("actor", "ref", "workflow")} == {
            "actor": "octocat",
            "ref": job.ref,
            "workflow": "deploy",
        }
        # user_claim "sub": each environment is one entity, whatever the run.
        entity = bed.root.read(f"identity/entity/id/{auth['entity_id']}")
        assert [alias["name"] for alias in entity["aliases"]] == [job.subject]
        assert job.subject == f"repo:{REPOSITORY}:environment:{job.environment}"


def test_the_preview_role_is_stored_as_declared(bed: Bed) -> None:
    stored = bed.root.read("auth/github-actions/role/ci-preview")
    claims = {
        "dev": {**REPOSITORY_CLAIMS, "environment": ["dev-preview"], "event_name": ["pull_request"]},
        "prod": {
            **REPOSITORY_CLAIMS,
            "environment": ["production-preview"],
            "event_name": ["push"],
            "ref": ["refs/heads/main"],
        },
    }[bed.stack]
    assert (stored["bound_claims"], stored["bound_audiences"], stored["user_claim"]) == (claims, [AUDIENCE], "sub")
    assert (stored["token_policies"], stored["token_ttl"], stored["token_max_ttl"]) == (["ci-preview"], 3600, 3600)
    assert stored["token_no_default_policy"] is True


def _token_for(bed: Bed, job: Job, overrides: dict[str, Any]) -> str:
    return bed.issuer.token(job, overrides.get("aud", AUDIENCE), **overrides)


#: (stack, case) → job, claim overrides, the server's reason: every job the deploy role must refuse.
DEPLOY_REFUSALS: dict[tuple[str, str], tuple[Job, dict[str, Any], str]] = {}
for _stack, _own, _other in (("dev", ADMITTED["dev"][0], "production"), ("prod", ADMITTED["prod"][0], "dev")):
    DEPLOY_REFUSALS.update(
        {
            (_stack, "another repository"): (
                Job("someone/fork", _own.environment),
                {},
                'claim "repository" does not match',
            ),
            (_stack, "the right name, another repository's ID"): (
                Job(REPOSITORY, _own.environment, repository_id="9000009"),
                {},
                'claim "repository_id" does not match',
            ),
            (_stack, "the right name, another owner's ID"): (
                Job(REPOSITORY, _own.environment, repository_owner_id="9000009"),
                {},
                'claim "repository_owner_id" does not match',
            ),
            (_stack, "another environment"): (Job(REPOSITORY, _other), {}, 'claim "environment" does not match'),
            (_stack, "the preview environment"): (
                Job(REPOSITORY, PREVIEWS[_stack].environment),
                {},
                'claim "environment" does not match',
            ),
            (_stack, "a job without an environment"): (
                Job(REPOSITORY, None),
                {},
                'claim "environment" is missing',
            ),
            (_stack, "another audience"): (
                _own,
                {"aud": "https://github.com/blinkchamber"},
                "invalid audience (aud) claim",
            ),
            (_stack, "another issuer"): (_own, {"iss": "https://token.actions.example"}, "invalid issuer (iss) claim"),
            (_stack, "an expired token"): (_own, {"exp": 1_000_000_000}, "token is expired"),
            (_stack, "a branch other than main"): (
                Job(REPOSITORY, _own.environment, ref="refs/heads/hotfix"),
                {},
                'claim "ref" does not match',
            ),
            # A branch's workflow that names the deploy environment: its ref is the pull request's, never main.
            (_stack, "a pull request in the deploy environment"): (
                Job(REPOSITORY, _own.environment, ref="refs/pull/7/merge", event_name="pull_request"),
                {},
                'claim "ref" does not match',
            ),
        }
    )

#: (stack, case) → job, claim overrides, reason: every job the read-only preview role must refuse. Each breaks one
#: bound claim only: the server checks them in no fixed order and names the first that fails.
PREVIEW_REFUSALS: dict[tuple[str, str], tuple[Job, dict[str, Any], str]] = {
    ("dev", "a pull request in the deploy environment"): (
        Job(REPOSITORY, "dev", ref="refs/pull/7/merge", event_name="pull_request"),
        {},
        'claim "environment" does not match',
    ),
    ("dev", "a push, not a pull request"): (
        Job(REPOSITORY, "dev-preview", ref="refs/heads/feature"),
        {},
        'claim "event_name" does not match',
    ),
    ("dev", "the right name, another repository's ID"): (
        Job(REPOSITORY, "dev-preview", event_name="pull_request", repository_id="9000009"),
        {},
        'claim "repository_id" does not match',
    ),
    ("dev", "another repository"): (
        Job("someone/fork", "dev-preview", event_name="pull_request"),
        {},
        'claim "repository" does not match',
    ),
    ("prod", "the deploy job"): (ADMITTED["prod"][0], {}, 'claim "environment" does not match'),
    ("prod", "a pull request"): (
        Job(REPOSITORY, "production-preview", event_name="pull_request"),
        {},
        'claim "event_name" does not match',
    ),
    ("prod", "a branch other than main"): (
        Job(REPOSITORY, "production-preview", ref="refs/heads/hotfix"),
        {},
        'claim "ref" does not match',
    ),
    ("prod", "the right name, another owner's ID"): (
        Job(REPOSITORY, "production-preview", repository_owner_id="9000009"),
        {},
        'claim "repository_owner_id" does not match',
    ),
}


@pytest.mark.parametrize(("bed", "case"), sorted(DEPLOY_REFUSALS), indirect=["bed"])
def test_every_other_job_is_refused(bed: Bed, case: str) -> None:
    job, overrides, reason = DEPLOY_REFUSALS[(bed.stack, case)]
    status, data = bed.login(_token_for(bed, job, overrides))
    assert status == 400 and reason in " ".join(data.get("errors", [])), data


@pytest.mark.parametrize(("bed", "case"), sorted(PREVIEW_REFUSALS), indirect=["bed"])
def test_the_preview_role_refuses_every_other_job(bed: Bed, case: str) -> None:
    job, overrides, reason = PREVIEW_REFUSALS[(bed.stack, case)]
    status, data = bed.login(_token_for(bed, job, overrides), names.CI_PREVIEW_ROLE)
    assert status == 400 and reason in " ".join(data.get("errors", [])), data


def test_the_right_name_with_another_id_logs_in_when_the_role_binds_the_name_only(bed: Bed) -> None:
    """The ID binding is what refuses a re-created repository of the same name: without it, that token gets in."""
    stored = bed.root.read("auth/github-actions/role/ci-deploy")
    by_name = {k: v for k, v in stored["bound_claims"].items() if k not in ("repository_id", "repository_owner_id")}
    kept = {k: stored[k] for k in ("role_type", "user_claim", "bound_audiences", "token_policies")}
    bed.root.write("auth/github-actions/role/by-name", {**kept, "bound_claims": by_name})
    try:
        impostor = Job(REPOSITORY, ADMITTED[bed.stack][0].environment, repository_id="9000009")
        assert bed.login(bed.issuer.token(impostor, AUDIENCE), "by-name")[0] == 200
        assert bed.login(bed.issuer.token(impostor, AUDIENCE))[0] == 400
    finally:
        bed.root.ok("DELETE", "auth/github-actions/role/by-name")


def test_a_token_signed_by_another_key_is_refused(bed: Bed, tmp_path: Path) -> None:
    forger = LocalIssuer(tmp_path)
    status, data = bed.login(forger.token(ADMITTED[bed.stack][-1], AUDIENCE))
    assert status == 400 and "error verifying token signature" in " ".join(data["errors"]), data


# --- what the CI token may do: exactly this stack's deploy ----------------------------------------------------------


#: The child token Pulumi's Vault provider asks for (terraform-provider-vault's createChildToken), for the stacks'
#: vault.providerTokenTtlSeconds.
PROVIDER_CHILD_TOKEN = {"display_name": "terraform", "ttl": "2700s", "explicit_max_ttl": "2700s", "renewable": False}


def test_the_ci_token_deploys_what_the_stack_declares(bed: Bed) -> None:
    client = bed.ci_client()
    # The provider's start: it looks its token up, then works with a child token that holds the login's policy only.
    assert client.call("GET", "auth/token/lookup-self").status == 200
    child = client.write("auth/token/create", PROVIDER_CHILD_TOKEN)["auth"]
    assert (child["policies"], child["lease_duration"], child["renewable"]) == (["ci-deploy"], 2700, False)
    provider = VaultClient(bed.server.address, child["client_token"])
    deployed = [write for write in bed.writes if is_deployed_by_ci(write)]
    assert {write.resource.split("::")[0] for write in deployed} == {
        "vault:kv/secretV2:SecretV2",
        "vault:kubernetes/authBackendRole:AuthBackendRole",
    }
    # From scratch, as after a lost secret or role: the operator's objects stay.
    for write in deployed:
        is_secret = write.resource.startswith("vault:kv/")
        bed.root.ok("DELETE", metadata_path(write) if is_secret else write.path)
    for write in deployed:
        answer = provider.call(write.method, write.path, as_the_provider_sends(write))
        assert answer.status < 400, f"{write.resource}: {answer.status} {answer.data.get('errors')}"
        assert provider.call("GET", write.read_path).status == 200, write.resource
        if write.resource.startswith("vault:kv/"):
            assert provider.call("GET", metadata_path(write)).status == 200, write.resource


def test_the_operators_objects_are_read_only_to_ci(bed: Bed) -> None:
    """Every policy, backend, backend config and CI role: a refresh reads them, only the operator's run writes them."""
    client = bed.ci_client()
    operators = [write for write in bed.writes if not is_deployed_by_ci(write)]
    assert {write.resource.split("::")[0] for write in operators} >= {
        "vault:index/policy:Policy",
        "vault:jwt/authBackendRole:AuthBackendRole",
    }
    for write in operators:
        # An auth backend's own mount is read as the provider reads it (GET sys/auth/<path>, root-protected).
        reads = [write.read_path, *([write.path] if write.path.startswith("sys/auth/") else [])]
        assert {path: client.call("GET", path).status for path in reads} == {path: 200 for path in reads}
        assert client.call(write.method, write.path, write.body).status == 403, write.resource


@pytest.mark.parametrize("bed", ["prod"], indirect=True)  # dev writes its DSN itself
@pytest.mark.parametrize("role", ["deploy", "preview"])
def test_the_preflight_sees_the_dsns_keys_not_its_value(bed: Bed, role: str) -> None:
    client = bed.ci_client() if role == "deploy" else bed.preview_client()
    answer = client.call("GET", "secret/subkeys/zitadel-database")
    assert answer.status == 200 and answer.data["data"]["subkeys"] == {"dsn": None}
    assert client.call("GET", "secret/data/zitadel-database").status == 403


# --- what the preview token may do: nothing but look -----------------------------------------------------------------


def test_the_preview_token_logs_in_with_the_read_only_policy(bed: Bed) -> None:
    status, data = bed.login(bed.issuer.token(PREVIEWS[bed.stack], AUDIENCE), names.CI_PREVIEW_ROLE)
    assert status == 200, data
    assert data["auth"]["policies"] == ["ci-preview"]
    # Pulumi's Vault provider looks its token up, then makes its child token: the login's own policy, never more.
    client = bed.preview_client()
    assert client.call("GET", "auth/token/lookup-self").status == 200
    child = client.write("auth/token/create", PROVIDER_CHILD_TOKEN)["auth"]
    assert child["policies"] == ["ci-preview"]


def preview_refusals(bed: Bed) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """What a branch's code must not do with the preview token (dev's runs any pull request's code)."""
    role = {"bound_service_account_names": ["redis"], "bound_service_account_namespaces": ["database"]}
    return [
        ("the Kubernetes backend's config", "POST", "auth/kubernetes/config", {"kubernetes_host": "https://evil"}),
        ("tuning the KV mount", "POST", "sys/mounts/secret/tune", {"max_versions": 1}),
        ("tuning the Kubernetes backend", "POST", "sys/auth/kubernetes/tune", {"default_lease_ttl": "1s"}),
        ("enabling a backend", "POST", "sys/auth/evil", {"type": "userpass"}),
        ("writing a secret", "POST", "secret/data/redis", {"data": {"password": "x"}}),
        ("reading a secret's value", "GET", "secret/data/redis", None),
        ("reading the masterkey", "GET", "secret/data/zitadel", None),
        ("listing the secrets", "LIST", "secret/metadata", None),
        ("a pod role", "POST", "auth/kubernetes/role/redis-role", {**role, "token_policies": ["redis-read"]}),
        ("a policy", "PUT", "sys/policies/acl/redis-read", {"policy": 'path "*" { capabilities = ["read"] }'}),
        ("the deploy role", "POST", "auth/github-actions/role/ci-deploy", {"bound_claims": {"repository": ["*"]}}),
        ("its own role", "POST", "auth/github-actions/role/ci-preview", {"token_policies": ["ci-deploy"]}),
        ("the JWT backend's keys", "POST", "auth/github-actions/config", {"jwt_validation_pubkeys": ["x"]}),
        ("a child token with the deploy policy", "POST", "auth/token/create", {"policies": ["ci-deploy"]}),
    ]


def test_the_preview_token_writes_nothing_and_reads_no_secret(bed: Bed) -> None:
    client = bed.preview_client()
    before = bed.root.read("auth/kubernetes/config")["kubernetes_host"]
    found = {case: client.call(method, path, body).status for case, method, path, body in preview_refusals(bed)}
    # A child token may only hold a subset of its parent's policies: refused as a bad request.
    assert found == {case: 400 if case.startswith("a child token") else 403 for case, *_ in preview_refusals(bed)}
    assert bed.root.read("auth/kubernetes/config")["kubernetes_host"] == before


REDIS_ROLE, REDIS_POLICY = "auth/kubernetes/role/redis-role", "sys/policies/acl/redis-read"
KUBERNETES_CONFIG = "auth/kubernetes/config"
#: An empty label selector matches every namespace.
ANY_NAMESPACE = {"bound_service_account_namespace_selector": "{}"}


def escalations(bed: Bed) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    role = {"bound_service_account_names": ["redis"], "bound_service_account_namespaces": ["database"]}
    declared = {**role, "token_policies": ["redis-read"]}
    return [
        (
            "a pod role granting the CI policy",
            "POST",
            "auth/kubernetes/role/redis-role",
            {**role, "token_policies": ["ci-deploy"]},
        ),
        ("a pod role granting root", "POST", "auth/kubernetes/role/redis-role", {**role, "token_policies": ["root"]}),
        (
            "a pod role for another service account",
            "POST",
            "auth/kubernetes/role/redis-role",
            {**role, "bound_service_account_names": ["default"], "token_policies": ["redis-read"]},
        ),
        ("a new role", "POST", "auth/kubernetes/role/backdoor", {**role, "token_policies": ["redis-read"]}),
        # Every field the stack writes has its declared value, and no other field passes (issue 20).
        ("a pod role with the deprecated policies field", "POST", REDIS_ROLE, {**role, "policies": ["ci-deploy"]}),
        (
            "a pod role with policies beside its own",
            "POST",
            REDIS_ROLE,
            {**role, "token_policies": ["redis-read"], "policies": ["root"]},
        ),
        ("a pod role admitting any namespace", "POST", REDIS_ROLE, {**declared, **ANY_NAMESPACE}),
        ("a pod role with periodic tokens", "POST", REDIS_ROLE, {**declared, "token_period": 86400}),
        ("a pod role with another token type", "POST", REDIS_ROLE, {**declared, "token_type": "batch"}),
        ("a pod role aliased by UID", "POST", REDIS_ROLE, {**declared, "alias_name_source": "serviceaccount_uid"}),
        ("rewriting a pod's policy", "PUT", REDIS_POLICY, {"policy": 'path "secret/*" { capabilities = ["read"] }'}),
        ("deleting a pod's policy", "DELETE", REDIS_POLICY, None),
        ("the Kubernetes backend's config", "POST", "auth/kubernetes/config", {"kubernetes_host": "https://evil"}),
        ("tuning the Kubernetes backend", "POST", "sys/auth/kubernetes/tune", {"default_lease_ttl": "1s"}),
        ("its own role", "POST", "auth/github-actions/role/ci-deploy", {"bound_claims": {"repository": ["*"]}}),
        ("its own policy", "PUT", "sys/policies/acl/ci-deploy", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("the preview role", "POST", "auth/github-actions/role/ci-preview", {"token_policies": ["ci-deploy"]}),
        (
            "the preview policy",
            "PUT",
            "sys/policies/acl/ci-preview",
            {"policy": 'path "*" { capabilities = ["sudo"] }'},
        ),
        ("a new policy", "PUT", "sys/policies/acl/admin", {"policy": 'path "*" { capabilities = ["read"] }'}),
        ("the JWT backend's keys", "POST", "auth/github-actions/config", {"jwt_validation_pubkeys": ["x"]}),
        ("disabling the JWT backend", "DELETE", "sys/auth/github-actions", None),
        ("disabling the Kubernetes backend", "DELETE", "sys/auth/kubernetes", None),
        ("unmounting the KV engine", "DELETE", "sys/mounts/secret", None),
        ("listing the secrets", "LIST", "secret/metadata", None),
        ("a secret outside the stack", "POST", "secret/data/other-team", {"data": {"k": "v"}}),
        ("a child token with another policy", "POST", "auth/token/create", {"policies": ["root"]}),
        ("a periodic child token", "POST", "auth/token/create", {"period": "768h"}),
    ]


def test_the_ci_token_cannot_widen_what_it_or_the_pods_get(bed: Bed) -> None:
    client = bed.ci_client()
    before = bed.root.read(REDIS_POLICY)["policy"]
    found = {case: client.call(method, path, body).status for case, method, path, body in escalations(bed)}
    # A child token may only hold a subset of its parent's policies, and only sudo makes a periodic one: refused
    # as bad requests.
    assert found == {case: 400 if "child token" in case else 403 for case, *_ in escalations(bed)}
    # Nothing changed: the role still grants what it declared, for its own namespace only, and its policy reads.
    role = bed.root.read(REDIS_ROLE)
    assert (role["token_policies"], role["bound_service_account_namespace_selector"]) == (["redis-read"], "")
    assert bed.root.read(REDIS_POLICY)["policy"] == before


# --- issue 20: each escalation with the former grants (accepted) and with the CI token (403) ------------------------

#: The former deploy policy's blocks on the paths the escalations use: a pod role let any other field through
#: (``"*" = []``), the pods' policies were the deploy token's to write, and dev's also wrote the Kubernetes backend's
#: config.
FORMER_ROLE = """path "auth/kubernetes/role/{role}" {{
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {{
    "token_policies" = [["{policy}"]]
    "bound_service_account_names" = [["{account}"]]
    "bound_service_account_namespaces" = [["{namespace}"]]
    "*" = []
  }}
}}
path "sys/policies/acl/{policy}" {{
  capabilities = ["create", "read", "update", "delete"]
}}
"""
FORMER_DEV_CONFIG = """path "auth/kubernetes/config" {
  capabilities = ["create", "read", "update"]
}
"""
#: role → its policy, service account and namespace, as the stacks declare them.
PODS = {
    "redis-role": ("redis-read", "redis", "database"),
    "event-relay-role": ("event-relay-read", "event-relay", "zitadel"),
}


def former_client(bed: Bed) -> VaultClient:
    """A token holding the former deploy policy's blocks (without Vault's ``default`` policy, like the CI token)."""
    text = "".join(
        FORMER_ROLE.format(role=role, policy=policy, account=account, namespace=namespace)
        for role, (policy, account, namespace) in PODS.items()
    )
    text += FORMER_DEV_CONFIG if bed.stack == "dev" else ""
    bed.root.ok("PUT", "sys/policies/acl/former-ci-deploy", {"policy": text})
    token = bed.root.write("auth/token/create", {"policies": ["former-ci-deploy"], "no_default_policy": True})
    return bed.root.with_token(token["auth"]["client_token"])


def test_a_pod_role_cannot_take_the_deprecated_policies_field(fresh_bed: Bed) -> None:
    """Escalation 1: ``policies`` is an alias of ``token_policies`` that the pinned value never saw."""
    body = {"bound_service_account_names": ["redis"], "bound_service_account_namespaces": ["database"]}
    body["policies"] = ["ci-deploy"]
    assert fresh_bed.ci_client().call("POST", REDIS_ROLE, body).status == 403
    assert fresh_bed.root.read(REDIS_ROLE)["token_policies"] == ["redis-read"]
    assert former_client(fresh_bed).call("POST", REDIS_ROLE, body).status == 204
    assert fresh_bed.root.read(REDIS_ROLE)["token_policies"] == ["ci-deploy"]


def test_a_pod_role_cannot_admit_any_namespace(fresh_bed: Bed) -> None:
    """Escalation 2: a namespace selector admits the service account's name in every namespace it matches."""
    body = {
        "bound_service_account_names": ["redis"],
        "bound_service_account_namespaces": ["database"],
        "token_policies": ["redis-read"],
        **ANY_NAMESPACE,
    }
    assert fresh_bed.ci_client().call("POST", REDIS_ROLE, body).status == 403
    assert fresh_bed.root.read(REDIS_ROLE)["bound_service_account_namespace_selector"] == ""
    assert former_client(fresh_bed).call("POST", REDIS_ROLE, body).status == 204
    assert fresh_bed.root.read(REDIS_ROLE)["bound_service_account_namespace_selector"] == "{}"


def test_ci_can_rewrite_no_pod_policy_nor_the_kubernetes_config(fresh_bed: Bed) -> None:
    """Escalation 3's two grants: any text in a pod's policy; in dev, the Kubernetes backend's TokenReview host."""
    wide = {"policy": 'path "sys/policies/acl/*" { capabilities = ["create", "update"] }'}
    config = {"kubernetes_host": "https://127.0.0.1:1", "disable_local_ca_jwt": True, "kubernetes_ca_cert": STAND_IN_CA}
    client = fresh_bed.ci_client()
    found = {"policy": client.call("PUT", REDIS_POLICY, wide), "config": client.call("POST", KUBERNETES_CONFIG, config)}
    assert {grant: answer.status for grant, answer in found.items()} == {"policy": 403, "config": 403}
    former = former_client(fresh_bed)
    assert former.call("PUT", REDIS_POLICY, wide).status == 204
    # Prod's former policy never wrote the backend's config: there the chain needed a pod's token instead.
    assert former.call("POST", KUBERNETES_CONFIG, config).status == {"dev": 204, "prod": 403}[fresh_bed.stack]


def pod_login(bed: Bed, api: TokenReviewStandIn, role: str) -> VaultClient:
    """A Kubernetes login as the role's pods, with a token the (stand-in) API server issued to their account."""
    _, account, namespace = PODS[role]
    jwt = api.issue(namespace, account)
    auth = VaultClient(bed.server.address, None).write("auth/kubernetes/login", {"role": role, "jwt": jwt})["auth"]
    return VaultClient(bed.server.address, auth["client_token"])


def point_at(client: VaultClient, api: TokenReviewStandIn) -> int:
    body = {"kubernetes_host": api.address, "disable_local_ca_jwt": True, "kubernetes_ca_cert": STAND_IN_CA}
    return client.call("POST", KUBERNETES_CONFIG, body).status


def test_ci_cannot_rewrite_its_own_policy_through_a_pod(fresh_bed: Bed) -> None:
    """Escalation 3, end to end: a pod's policy made wide, then a pod's login rewrites the CI policy. In dev the former
    token pointed the backend at a TokenReview endpoint of its own; in prod it needed a pod's token, which CI can get
    because it deploys the pods (here: the stand-in API server is the cluster's, and issues one)."""
    bed = fresh_bed
    own = {"policy": 'path "*" { capabilities = ["create", "read", "update", "delete", "sudo"] }'}
    wide = {"policy": 'path "sys/policies/acl/*" { capabilities = ["create", "update"] }'}
    declared = bed.root.read("sys/policies/acl/ci-deploy")["policy"]
    with TokenReviewStandIn() as api:
        # Now: neither grant is there, and a pod's own login gets its own read-only policy.
        client = bed.ci_client()
        assert point_at(client, api) == 403
        assert client.call("PUT", "sys/policies/acl/event-relay-read", wide).status == 403
        assert point_at(bed.root, api) == 204  # the cluster's API server, which issues the pods' tokens
        pod = pod_login(bed, api, "event-relay-role")
        assert pod.read("auth/token/lookup-self")["policies"] == ["default", "event-relay-read"]
        assert pod.call("PUT", "sys/policies/acl/ci-deploy", own).status == 403
        assert bed.root.read("sys/policies/acl/ci-deploy")["policy"] == declared
        # Before: the same steps with the former grants end in the CI policy rewritten.
        former = former_client(bed)
        if bed.stack == "dev":
            assert point_at(former, api) == 204
        assert former.call("PUT", "sys/policies/acl/event-relay-read", wide).status == 204
        pod = pod_login(bed, api, "event-relay-role")
        assert pod.call("PUT", "sys/policies/acl/ci-deploy", own).status == 204
        assert bed.root.read("sys/policies/acl/ci-deploy")["policy"] == own["policy"]


#: Reached through Vault's ``default`` policy only: its cubbyhole and the hashing tool.
DEFAULT_POLICY_PATHS = (("POST", "cubbyhole/stash", {"k": "v"}), ("POST", "sys/tools/hash", {"input": "aGk="}))


def test_ci_logins_carry_no_default_policy(bed: Bed) -> None:
    """Escalation 5: without ``token_no_default_policy`` a login also gets ``default``."""
    for login in (bed.ci_client(), bed.preview_client()):
        assert [login.call(method, path, body).status for method, path, body in DEFAULT_POLICY_PATHS] == [403, 403]
        assert login.call("GET", "auth/token/lookup-self").status == 200  # what the provider needs of it
    stored = bed.root.read("auth/github-actions/role/ci-deploy")
    kept = {k: stored[k] for k in ("role_type", "user_claim", "bound_audiences", "bound_claims", "token_policies")}
    bed.root.write("auth/github-actions/role/with-default", kept)
    try:
        status, data = bed.login(bed.issuer.token(ADMITTED[bed.stack][-1], AUDIENCE), "with-default")
        assert status == 200 and sorted(data["auth"]["policies"]) == ["ci-deploy", "default"]
        former = VaultClient(bed.server.address, data["auth"]["client_token"])
        assert [former.call(method, path, body).status for method, path, body in DEFAULT_POLICY_PATHS] == [204, 200]
    finally:
        bed.root.ok("DELETE", "auth/github-actions/role/with-default")


@pytest.mark.parametrize("bed", ["dev"], indirect=True)  # one shared Vault is enough
def test_another_stacks_names_are_out_of_reach(bed: Bed) -> None:
    """A second stack on the same Vault, with its own prefix: dev's CI token cannot touch its objects."""
    # The backends are the first stack's: the second one uses them.
    staging = record(
        "dev",
        {
            "vault": {
                "address": bed.cfg.vault.address,
                "namePrefix": "staging",
                "manageBackends": False,
                "ci": {"manageBackend": False},
            }
        },
    )
    theirs = [w for w in declared_writes(staging, stand_ins(staging), jwt_public_key=bed.issuer.public_pem)]
    for write in theirs:
        bed.root.ok(write.method, write.path, write.body)
    client = bed.ci_client()
    own = {w.path for w in bed.writes}
    foreign = [
        w for w in theirs if w.path not in own and not w.path.startswith(("sys/auth/", "auth/github-actions/config"))
    ]
    assert {w.path for w in foreign} >= {"sys/policies/acl/staging-redis-read", "secret/data/staging/redis"}
    assert {w.path: client.call(w.method, w.path, w.body).status for w in foreign} == {w.path: 403 for w in foreign}


@pytest.mark.parametrize("bed", ["dev"], indirect=True)  # once is enough
def test_a_login_shorter_than_the_providers_token_cuts_it_short(bed: Bed) -> None:
    """Why vault.ci.tokenTtlSeconds must cover vault.providerTokenTtlSeconds: the provider's child token is revoked
    with the login token, whatever TTL it was given (here a 2 s login and a 2700 s child)."""
    stored = bed.root.read("auth/github-actions/role/ci-deploy")
    short = {k: stored[k] for k in ("role_type", "user_claim", "bound_audiences", "bound_claims", "token_policies")}
    bed.root.write("auth/github-actions/role/short", {**short, "token_ttl": 2, "token_max_ttl": 2})
    try:
        login = VaultClient(bed.server.address, None).write(
            "auth/github-actions/login", {"role": "short", "jwt": bed.issuer.token(ADMITTED["dev"][-1], AUDIENCE)}
        )
        child = VaultClient(bed.server.address, login["auth"]["client_token"]).write(
            "auth/token/create", {"ttl": "2700s"}
        )
        assert child["auth"]["lease_duration"] == 2700
        child_client = VaultClient(bed.server.address, child["auth"]["client_token"])
        deadline = time.monotonic() + 15
        while child_client.call("GET", "auth/token/lookup-self").status == 200 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert child_client.call("GET", "auth/token/lookup-self").status == 403
    finally:
        bed.root.ok("DELETE", "auth/github-actions/role/short")


# --- python -m stacktools.ci vault-login, end to end ------------------------------------------------------------------


def login_cli(
    bed: Bed, job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str, address: str | None = None
) -> tuple[int, Path, IdTokenEndpoint]:
    github_env = tmp_path / "github_env"
    with IdTokenEndpoint(bed.issuer, job) as endpoint:
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url)
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", endpoint.request_token)
        monkeypatch.setenv("GITHUB_ENV", str(github_env))
        code = ci.main(["vault-login", bed.stack, "--address", address or bed.server.address, *extra])
    return code, github_env, endpoint


def test_vault_login_hands_a_masked_token_to_the_next_steps(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, github_env, endpoint = login_cli(bed, ADMITTED[bed.stack][-1], tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0
    assert endpoint.requested == [AUDIENCE]  # the stack's audience, never GitHub's default
    exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
    assert sorted(exported) == ["VAULT_ADDR", "VAULT_TOKEN"] and exported["VAULT_ADDR"] == bed.server.address
    token = exported["VAULT_TOKEN"]
    # The mask comes first; the token appears nowhere else in the log.
    assert out.splitlines()[0] == f"::add-mask::{token}" and out.count(token) == 1
    assert "policies ci-deploy, valid 3600s" in out
    assert VaultClient(bed.server.address, token).read("auth/token/lookup-self")["policies"] == ["ci-deploy"]


def test_vault_login_from_another_environment_exports_nothing(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Job(REPOSITORY, "production" if bed.stack == "dev" else "dev")
    code, github_env, _ = login_cli(bed, other, tmp_path, monkeypatch)
    captured = capsys.readouterr()
    assert code == 2 and not github_env.exists() and captured.out == ""
    assert f"Vault at {bed.server.address} refused the login as ci-deploy (400)" in captured.err
    assert 'claim "environment" does not match' in captured.err


def test_vault_login_preview_gets_the_read_only_token(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, github_env, _ = login_cli(bed, PREVIEWS[bed.stack], tmp_path, monkeypatch, "--preview")
    assert code == 0, capsys.readouterr().err
    token = dict(line.split("=", 1) for line in github_env.read_text().splitlines())["VAULT_TOKEN"]
    assert VaultClient(bed.server.address, token).read("auth/token/lookup-self")["policies"] == ["ci-preview"]
    # Without --preview the same job asks for the deploy role, which refuses it.
    code, github_env, _ = login_cli(bed, PREVIEWS[bed.stack], tmp_path / "again", monkeypatch)
    assert code == 2 and not github_env.exists()
    assert "refused the login as ci-deploy (400)" in capsys.readouterr().err


def test_vault_login_refuses_plain_http_before_asking_for_a_token(
    bed: Bed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stack's address as dev's stack file has it (plain http, not loopback): no OIDC token is even minted."""
    code, github_env, endpoint = login_cli(
        bed, ADMITTED[bed.stack][0], tmp_path, monkeypatch, address="http://vault.vault.svc.cluster.local:8200"
    )
    assert code == 2 and endpoint.requested == [] and not github_env.exists()
    assert (
        "refusing to send the job's OIDC token to http://vault.vault.svc.cluster.local:8200 over http"
        in capsys.readouterr().err
    )
