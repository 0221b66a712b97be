"""GitHub Actions' OIDC tokens, for the tests: a local issuer key and a stand-in of the runner's ID-token endpoint.

``LocalIssuer`` makes an RSA key at test time (``openssl``) and signs RS256 JWTs with the claims GitHub puts in an
Actions token (``iss``, ``aud``, ``sub`` as ``repo:<owner>/<name>:environment:<env>``, ``repository``,
``environment``, ``ref``, ``actor``, ``run_id`` ...). A Vault JWT backend configured with its public key
(``jwt_validation_pubkeys``) and GitHub's issuer checks them exactly as it would check GitHub's own: the signature,
``iss``, ``aud``, the time claims and the role's bound claims. Only the key differs (GitHub's is fetched from
``https://token.actions.githubusercontent.com``, which the tests cannot reach).

``IdTokenEndpoint`` answers what a job's ``ACTIONS_ID_TOKEN_REQUEST_URL`` answers: ``GET ...&audience=<aud>`` with
the request token as a bearer → ``{"value": <jwt>}``, for one job's claims.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.names import GITHUB_OIDC_ISSUER
from testbed.loopback import LoopbackServer, QuietHandler, send_json


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Job:
    """The context of one workflow job, as GitHub writes it into the job's OIDC token."""

    repository: str
    environment: str | None = None
    ref: str = "refs/heads/main"
    event_name: str = "push"
    actor: str = "octocat"
    workflow: str = "deploy"
    #: GitHub's numeric IDs of the repository and its owner (the stacks' ``vault.ci.repositoryId``/``OwnerId``).
    repository_id: str = "2000002"
    repository_owner_id: str = "1000001"

    @property
    def subject(self) -> str:
        # GitHub's default subject: the environment when the job has one, else the pull request or the ref.
        if self.environment:
            return f"repo:{self.repository}:environment:{self.environment}"
        if self.event_name == "pull_request":
            return f"repo:{self.repository}:pull_request"
        return f"repo:{self.repository}:ref:{self.ref}"

    def claims(self, audience: str, now: int, lifetime: int) -> dict[str, Any]:
        owner = self.repository.split("/", 1)[0]
        claims: dict[str, Any] = {
            "jti": secrets.token_hex(16),
            "sub": self.subject,
            "aud": audience,
            "ref": self.ref,
            "sha": secrets.token_hex(20),
            "repository": self.repository,
            "repository_owner": owner,
            "repository_owner_id": self.repository_owner_id,
            "repository_id": self.repository_id,
            "repository_visibility": "private",
            "run_id": str(3_000_000 + secrets.randbelow(1_000_000)),
            "run_number": "42",
            "run_attempt": "1",
            "actor": self.actor,
            "actor_id": "4000004",
            "workflow": self.workflow,
            "workflow_ref": f"{self.repository}/.github/workflows/{self.workflow}.yml@{self.ref}",
            "job_workflow_ref": f"{self.repository}/.github/workflows/{self.workflow}.yml@{self.ref}",
            "event_name": self.event_name,
            "ref_type": "branch",
            "runner_environment": "self-hosted",
            "iss": GITHUB_OIDC_ISSUER,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + lifetime,
        }
        if self.environment:
            claims["environment"] = self.environment
        return claims


class LocalIssuer:
    """An RS256 signing key made for the test run, standing in for GitHub's OIDC key."""

    def __init__(self, workdir: Path) -> None:
        if not openssl_available():
            raise FileNotFoundError("openssl not found: it makes the test issuer's key")
        workdir.mkdir(parents=True, exist_ok=True)
        self._key = workdir / "issuer-key.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self._key)],
            check=True,
            capture_output=True,
        )
        self.public_pem = subprocess.run(
            ["openssl", "pkey", "-in", str(self._key), "-pubout"], check=True, capture_output=True, text=True
        ).stdout.strip()  # as Vault stores it
        self.kid = secrets.token_hex(8)

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(dict(claims)).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self._key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def token(self, job: Job, audience: str, *, lifetime: int = 300, **overrides: Any) -> str:
        """A token for ``job``; ``overrides`` replace claims (``iss``, ``exp`` ...) to build broken ones."""
        claims = job.claims(audience, int(time.time()), lifetime)
        claims.update(overrides)
        return self.sign(claims)


@dataclass
class IdTokenEndpoint:
    """The runner's ID-token endpoint for one job: a bearer request token in, a token for the asked audience out."""

    issuer: LocalIssuer
    job: Job
    request_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    #: The audiences the job asked for, in order.
    requested: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        endpoint = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server dispatches on this name
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                if self.headers.get("Authorization") != f"Bearer {endpoint.request_token}":
                    self.send_error(401)
                    return
                audience = query.get("audience", [f"https://github.com/{endpoint.job.repository.split('/')[0]}"])[0]
                endpoint.requested.append(audience)
                send_json(self, 200, json.dumps({"value": endpoint.issuer.token(endpoint.job, audience)}).encode())

        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        """As GitHub sets ``ACTIONS_ID_TOKEN_REQUEST_URL``: already with a query string."""
        return f"{self._server.address}/idtoken?api-version=2.0"

    def __enter__(self) -> IdTokenEndpoint:
        self._server.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.__exit__()
