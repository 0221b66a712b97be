"""The workflows' Vault login, against a real OpenBao server: GitHub's OIDC token → the stack's JWT role → a token
that deploys exactly this stack.

Each stack's Vault objects are applied as the program declares them (``tests/test_vault_server.py`` maps them to API
calls), with an operator's token: the bootstrap. Tokens shaped like GitHub's (``testbed/github_oidc.py``) are signed
by a key made at test time, which the JWT backend trusts in place of GitHub's (the tests cannot fetch GitHub's);
the backend's issuer, audience, time and bound-claim checks are the server's own. Then the CI token replays the
stack's declared writes — what ``pulumi up`` asks of Vault — and tries what it must not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacks import ci, names
from stacks.config import StackConfig
from testbed.github_oidc import IdTokenEndpoint, Job, LocalIssuer, openssl_available
from testbed.openbao import OpenBaoServer, VaultClient, openbao_server
from tests.conftest import STACKS, record, stack_config
from tests.test_vault_server import Write, declared_writes, existing_objects, recorded, stand_ins

if not openssl_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must provide openssl: it makes the test issuer's key")
    pytest.skip("openssl not installed", allow_module_level=True)

REPOSITORY = "blinkchamber/blinkchamber-identity"
AUDIENCE = "blinkchamber-identity-vault"
#: The jobs README says may log in: dev's previews (any ref) and deploys; prod's deploys from main.
ADMITTED = {
    "dev": [
        Job(REPOSITORY, "dev", ref="refs/pull/7/merge", event_name="pull_request"),
        Job(REPOSITORY, "dev", ref="refs/heads/main"),
    ],
    "prod": [Job(REPOSITORY, "production", ref="refs/heads/main")],
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

    def login(self, token: str) -> tuple[int, dict[str, Any]]:
        answer = VaultClient(self.server.address, None).call(
            "POST", f"auth/{self.cfg.vault.ci.auth_path}/login", {"role": self.names.ci_role, "jwt": token}
        )
        return answer.status, answer.data

    def ci_client(self) -> VaultClient:
        status, data = self.login(self.issuer.token(ADMITTED[self.stack][-1], AUDIENCE))
        assert status == 200, data
        return VaultClient(self.server.address, data["auth"]["client_token"])


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    return LocalIssuer(tmp_path_factory.mktemp("issuer"))


def with_key(body: dict[str, Any], issuer: LocalIssuer) -> dict[str, Any]:
    return {**body, "jwt_validation_pubkeys": [issuer.public_pem]} if "jwt_validation_pubkeys" in body else body


def is_ci_identity(write: Write) -> bool:
    """The JWT backend, the CI role and its policy: the operator's, read-only to CI."""
    return write.resource.startswith(("vault:jwt/", f"vault:index/policy:Policy::{names.CI_VAULT_POLICY}"))


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


def test_the_ci_role_is_stored_as_declared(bed: Bed) -> None:
    stored = bed.root.read("auth/github-actions/role/ci-deploy")
    claims = {"repository": [REPOSITORY], "environment": [{"dev": "dev", "prod": "production"}[bed.stack]]}
    if bed.stack == "prod":
        claims["ref"] = ["refs/heads/main"]
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


def refusals(stack: str) -> list[tuple[str, Job, dict[str, Any], str]]:
    """(case, job, claim overrides, the server's reason)."""
    own = ADMITTED[stack][-1]
    other_environment = "production" if stack == "dev" else "dev"
    cases: list[tuple[str, Job, dict[str, Any], str]] = [
        ("another repository", Job("someone/fork", own.environment), {}, 'claim "repository" does not match'),
        ("another environment", Job(REPOSITORY, other_environment), {}, 'claim "environment" does not match'),
        (
            "a job without an environment",
            Job(REPOSITORY, None, ref="refs/pull/7/merge", event_name="pull_request"),
            {},
            'claim "environment" is missing',
        ),
        ("another audience", own, {"aud": "https://github.com/blinkchamber"}, "invalid audience (aud) claim"),
        ("another issuer", own, {"iss": "https://token.actions.example"}, "invalid issuer (iss) claim"),
        ("an expired token", own, {"exp": 1_000_000_000}, "token is expired"),
    ]
    if stack == "prod":
        cases.append(
            (
                "a branch other than main",
                Job(REPOSITORY, "production", ref="refs/heads/hotfix"),
                {},
                'claim "ref" does not match',
            )
        )
    return cases


@pytest.mark.parametrize("case", range(7))
def test_every_other_job_is_refused(bed: Bed, case: int) -> None:
    cases = refusals(bed.stack)
    if case >= len(cases):
        pytest.skip("dev binds no ref")
    _, job, overrides, reason = cases[case]
    status, data = bed.login(bed.issuer.token(job, overrides.get("aud", AUDIENCE), **overrides))
    assert status == 400 and reason in " ".join(data.get("errors", [])), data


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


def test_the_preflight_sees_the_dsns_keys_not_its_value(bed: Bed) -> None:
    if bed.stack != "prod":
        pytest.skip("dev writes its DSN itself")
    client = bed.ci_client()
    answer = client.call("GET", "secret/subkeys/zitadel-database")
    assert answer.status == 200 and answer.data["data"]["subkeys"] == {"dsn": None}
    assert client.call("GET", "secret/data/zitadel-database").status == 403


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


def test_another_stacks_names_are_out_of_reach(bed: Bed) -> None:
    """A second stack on the same Vault, with its own prefix: dev's CI token cannot touch its objects."""
    if bed.stack != "dev":
        pytest.skip("one shared Vault is enough")
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


def test_a_login_shorter_than_the_providers_token_cuts_it_short(bed: Bed) -> None:
    """Why vault.ci.tokenTtlSeconds must cover vault.providerTokenTtlSeconds: the provider's child token is revoked
    with the login token, whatever TTL it was given (here a 2 s login and a 2700 s child)."""
    if bed.stack != "dev":
        pytest.skip("once is enough")
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


# --- python -m stacks.ci vault-login, end to end ------------------------------------------------------------------


def login_cli(bed: Bed, job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Path, IdTokenEndpoint]:
    github_env = tmp_path / "github_env"
    with IdTokenEndpoint(bed.issuer, job) as endpoint:
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url)
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", endpoint.request_token)
        monkeypatch.setenv("GITHUB_ENV", str(github_env))
        code = ci.main(["vault-login", bed.stack, "--address", bed.server.address])
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
