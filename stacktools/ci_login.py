"""How a deploy job gets its credentials, none of them stored in GitHub: Vault through OIDC, the cluster in-cluster.

``vault_login``: the job asks the runner for a GitHub OIDC token for the stack's ``vault.ci.audience``
(``ACTIONS_ID_TOKEN_REQUEST_URL``/``_TOKEN``, present when the job has ``id-token: write``) and exchanges it at the
stack's JWT auth backend for a token of the stack's CI role. The role admits only the stack's repository and
GitHub environment and refs; the token lives ``vault.ci.tokenTtlSeconds``. ``preview=True`` logs in as the
stack's read-only preview role instead. The OIDC token is a bearer credential: it goes to Vault over https only
(or loopback, or with an explicit ``allow_insecure``).

``in_cluster_kubeconfig``: the deploy jobs run on self-hosted runners inside the target cluster (one runner set per
environment, each with its own ServiceAccount). The kubeconfig names the stack's ``kubernetes.context`` and reads
the pod's projected service-account token from its file, which the kubelet keeps fresh.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stacks import names
from stacks.config import StackConfig

#: Where a pod's service-account token, CA and namespace are mounted.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: The context name of the in-cluster kubeconfig of a stack that names none (dev: its current context).
IN_CLUSTER_CONTEXT = "in-cluster"


class LoginError(RuntimeError):
    """A credential could not be obtained; the message never holds a token."""


@dataclass(frozen=True)
class VaultLogin:
    address: str
    token: str
    policies: list[str]
    ttl_seconds: int


def _open(request: urllib.request.Request, cafile: str | None = None) -> Any:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read() or b"null")


def github_oidc_token(audience: str, env: Mapping[str, str]) -> str:
    """The job's OIDC token for ``audience`` from the runner (``permissions: id-token: write``)."""
    url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        raise LoginError(
            "no GitHub OIDC token: the job needs `permissions: id-token: write` (pull requests from forks get none)"
        )
    separator = "&" if "?" in url else "?"
    request = urllib.request.Request(
        f"{url}{separator}{urllib.parse.urlencode({'audience': audience})}",
        headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
    )
    try:
        answer = _open(request)
    except urllib.error.HTTPError as error:
        raise LoginError(f"the runner refused the OIDC token request: {error.code}") from None
    token = answer.get("value") if isinstance(answer, dict) else None
    if not token:
        raise LoginError("the runner's answer holds no OIDC token")
    return str(token)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(address: str, *, allow_insecure: bool = False) -> None:
    """Refuse to send a GitHub token to Vault in clear text: a replayable credential for the token's whole life.

    Loopback never leaves the machine; anything else takes https, or the explicit ``allow_insecure``."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "https" or allow_insecure or is_loopback(parts.hostname or ""):
        return
    raise LoginError(
        f"refusing to send the job's OIDC token to {address} over {parts.scheme or 'an unknown scheme'}: give Vault "
        "an https address (--address), or pass --allow-insecure to accept that anyone on the path can replay it"
    )


def role_name(cfg: StackConfig, *, preview: bool = False) -> str:
    """The stack's deploy role, or its read-only preview role."""
    vault_names = names.VaultNames.of(cfg)
    if not preview:
        return vault_names.ci_role
    if cfg.vault.ci.preview is None:
        raise LoginError(f"stack {cfg.stack!r} declares no preview role (vault.ci.preview)")
    return vault_names.ci_preview_role


def vault_login(
    cfg: StackConfig,
    jwt: str,
    *,
    address: str | None = None,
    cafile: str | None = None,
    preview: bool = False,
    allow_insecure: bool = False,
) -> VaultLogin:
    """Exchange the OIDC token for a Vault token of the stack's CI role (or its preview role)."""
    ci = cfg.vault.ci
    if not ci.enabled:
        raise LoginError(f"stack {cfg.stack!r} declares no CI login (vault.ci.enabled is false)")
    role = role_name(cfg, preview=preview)
    address = (address or cfg.vault.address).rstrip("/")
    require_https(address, allow_insecure=allow_insecure)
    request = urllib.request.Request(
        f"{address}/v1/auth/{ci.auth_path}/login",
        data=json.dumps({"role": role, "jwt": jwt}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        answer = _open(request, cafile)
    except urllib.error.HTTPError as error:
        try:
            errors = json.loads(error.read() or b"{}").get("errors", [])
        except json.JSONDecodeError:
            errors = []
        raise LoginError(
            f"Vault at {address} refused the login as {role} ({error.code}): {'; '.join(errors)}"
        ) from None
    auth = answer["auth"]
    return VaultLogin(address, str(auth["client_token"]), list(auth["policies"]), int(auth["lease_duration"]))


def export_login(login: VaultLogin, github_env: Path) -> str:
    """Hand the token to the job's later steps (``$GITHUB_ENV``, where Pulumi's Vault provider reads it).

    Returns the workflow command that masks it in the job's log: printed before anything else.
    """
    with github_env.open("a") as env:
        env.write(f"VAULT_ADDR={login.address}\nVAULT_TOKEN={login.token}\n")
    return f"::add-mask::{login.token}"


def api_server_url(env: Mapping[str, str]) -> str:
    """The API server as a pod sees it (the variables Kubernetes sets in every container)."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return "https://kubernetes.default.svc"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def in_cluster_kubeconfig(cfg: StackConfig, service_account_dir: Path, server: str) -> dict[str, Any]:
    """A kubeconfig for the runner pod's own ServiceAccount, with the stack's context name."""
    for name in ("token", "ca.crt"):
        if not (service_account_dir / name).is_file():
            raise LoginError(
                f"{service_account_dir / name} is missing: the deploy jobs run on a self-hosted runner inside the "
                "stack's cluster (README, Deploying for real)"
            )
    context = cfg.kubernetes.context or IN_CLUSTER_CONTEXT
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority": str(service_account_dir / "ca.crt")},
            }
        ],
        # The kubelet rotates the projected token in place: the file, never a copy of it.
        "users": [{"name": context, "user": {"tokenFile": str(service_account_dir / "token")}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }


def write_kubeconfig(kubeconfig: Mapping[str, Any], out: Path, github_env: Path | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600, exist_ok=True)
    out.chmod(0o600)
    out.write_text(yaml.safe_dump(dict(kubeconfig), sort_keys=False))
    if github_env is not None:
        with github_env.open("a") as env:
            env.write(f"KUBECONFIG={out}\n")
