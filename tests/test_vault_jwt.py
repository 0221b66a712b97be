"""The workflows' Vault login, against a real OpenBao server: GitHub's OIDC token → the stack's JWT role → a token
that deploys exactly this stack.

Each stack's Vault objects are applied as the program declares them (``tests/test_vault_server.py`` maps them to API
calls), with an operator's token: the bootstrap. Tokens shaped like GitHub's (``testbed/github_oidc.py``) are signed
by a key made at test time, which the JWT backend trusts in place of GitHub's (the tests cannot fetch GitHub's);
the backend's issuer, audience, time and bound-claim checks are the server's own. Then the CI token replays the
stack's declared writes — what ``pulumi up`` asks of Vault — and tries what it must not.
"""

from __future__ import annotations

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
from testbed.openbao import OpenBaoServer, VaultClient, openbao_server
from testbed.required import require
from tests.conftest import STACKS, record, stack_config
from tests.test_vault_server import Write, declared_writes, existing_objects, recorded, stand_ins

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


def is_ci_identity(write: Write) -> bool:
    """The JWT backend, the CI roles and their policies: the operator's, read-only to CI."""
    policies = (names.CI_VAULT_POLICY, names.CI_PREVIEW_POLICY)
    return write.resource.startswith(("vault:jwt/", *(f"vault:index/policy:Policy::{p}" for p in policies)))


@pytest.fixture(scope="module", params=STACKS)
def bed(request: pytest.FixtureRequest, issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    stack = str(request.param)
    recording = recorded(stack)
    with openbao_server(tmp_path_factory.mktemp(f"openbao-jwt-{stack}")) as server:
        root = server.client()
        for method, path, body in existing_objects(stack):
            root.ok(method, path, with_key(body, issuer))
        writes = declared_writes(recording, stand_ins(recording), jwt_public_key=issuer.public_pem)
        for write in writes:  # the bootstrap, with an operator's token
            root.ok(write.method, write.path, write.body)
        yield Bed(stack, stack_config(stack), server, issuer, writes)


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
    assert bed.root.read("auth/github-actions/config")["bound_issuer"] == "https://token.actions.githubusercontent.com"


def test_the_stacks_jobs_log_in_for_a_short_while(bed: Bed) -> None:
    for job in ADMITTED[bed.stack]:
        status, data = bed.login(bed.issuer.token(job, AUDIENCE))
        assert status == 200, data
        auth = data["auth"]
        assert sorted(auth["policies"]) == ["ci-deploy", "default"]
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


def test_the_ci_token_deploys_what_the_stack_declares(bed: Bed) -> None:
    client = bed.ci_client()
    replayed = [write for write in bed.writes if not is_ci_identity(write)]
    assert replayed, "nothing to replay"
    # From scratch, as a first deploy would: the auth backend the stack creates (dev) is gone, roles and all.
    for write in replayed:
        if write.path.startswith(("sys/auth/", "sys/mounts/")):
            bed.root.ok("DELETE", write.path)
    for write in replayed:
        answer = client.call(write.method, write.path, write.body)
        assert answer.status < 400, f"{write.resource}: {answer.status} {answer.data.get('errors')}"
        assert client.call("GET", write.read_path).status == 200, write.resource
    # The provider's child token, for the provider's TTL: not cut short by the login's.
    child = client.write("auth/token/create", {"ttl": f"{bed.cfg.vault.provider_token_ttl_seconds}s"})["auth"]
    assert child["lease_duration"] == 2700
    # The CI identity: readable (a refresh), not writable.
    for write in bed.writes:
        if is_ci_identity(write) and not write.path.startswith("sys/auth/"):
            assert client.call("GET", write.read_path).status == 200, write.resource
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
    assert sorted(data["auth"]["policies"]) == ["ci-preview", "default"]
    # Pulumi's Vault provider makes its child token: the login's own policies, never more.
    child = bed.preview_client().write("auth/token/create", {"ttl": "2700s"})["auth"]
    assert sorted(child["policies"]) == ["ci-preview", "default"]


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


def escalations(bed: Bed) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    role = {"bound_service_account_names": ["redis"], "bound_service_account_namespaces": ["database"]}
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
    ]


def test_the_ci_token_cannot_widen_what_it_or_the_pods_get(bed: Bed) -> None:
    client = bed.ci_client()
    found = {case: client.call(method, path, body).status for case, method, path, body in escalations(bed)}
    # A child token may only hold a subset of its parent's policies: refused as a bad request.
    assert found == {case: 400 if case.startswith("a child token") else 403 for case, *_ in escalations(bed)}
    # Nothing changed: the role still grants what it declared.
    assert bed.root.read("auth/kubernetes/role/redis-role")["token_policies"] == ["redis-read"]


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
    assert "policies ci-deploy, default, valid 3600s" in out or "policies default, ci-deploy, valid 3600s" in out
    assert sorted(VaultClient(bed.server.address, token).read("auth/token/lookup-self")["policies"]) == [
        "ci-deploy",
        "default",
    ]


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
    assert sorted(VaultClient(bed.server.address, token).read("auth/token/lookup-self")["policies"]) == [
        "ci-preview",
        "default",
    ]
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
