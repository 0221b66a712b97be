"""The workflows' identity in the stack's Vault: GitHub's OIDC token for a short-lived token that deploys this stack.

A job of the stack's GitHub environment requests an OIDC token for ``vault.ci.audience``; the JWT auth backend at
``vault.ci.authPath`` trusts GitHub's issuer, and the stack's role admits the token only when its claims name the
repository (name and numeric IDs), the environment and the ref. The login gets ``vault.ci.tokenTtlSeconds`` and the
deploy policy below, without Vault's ``default`` policy.

The deploy policy writes two kinds of object and nothing else: the KV secrets the stack writes, and the pods'
Kubernetes-auth roles, each role only with the fields the stack writes and each field only with its declared value
(``allowed_parameters`` without ``"*"``: the deprecated ``policies``, a namespace selector or a token bound is
refused). Everything that decides what a token may do is the operator's and read-only to CI: every policy (the
pods', the consumers', CI's own), the auth backends and their config, the CI roles. A change to one of them takes
an operator's run (README, "The first deploy"); until then CI's ``pulumi up`` fails with a 403 naming the path.

Previews get a role of their own (``vault.ci.preview``): another GitHub environment, and a policy that writes
nothing and reads no secret's value. A pull request's preview runs a branch's code, which must never hold a token
that can deploy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_vault as vault

from components.vault import PodRole, pod_role_settings
from stacks import names
from stacks.config import VaultCi, VaultConfig

#: Every operation on an object CI deploys; ``list`` is never granted.
_OWN = ("create", "read", "update", "delete")
#: Reading an auth method's mount or its tuning is root-protected (``sudo``); without write capabilities it changes
#: nothing.
_READ_AUTH_MOUNT = ("read", "sudo")
#: What Pulumi's Vault provider (terraform-provider-vault 5.6 and later) sends on a Kubernetes role besides the
#: program's inputs: the namespace selector on every write, empty when unset, and its schema's default token type.
PROVIDER_ROLE_FIELDS: Mapping[str, str] = {"bound_service_account_namespace_selector": "", "token_type": "default"}


@dataclass(frozen=True)
class Grant:
    path: str
    capabilities: tuple[str, ...]
    why: str
    #: Parameter → the values allowed (a list value must equal one of them as a whole; ``[]``: any value). Without a
    #: ``"*"`` key, any parameter not named is refused.
    allowed_parameters: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CiAccessArgs:
    """What the workflows' identity covers: the Vault section (its ``ci`` login, the mounts and backends the stack
    manages), the stack's names in Vault, the pods' roles and the secrets the stack writes."""

    vault: VaultConfig
    names: names.VaultNames
    pods: Sequence[PodRole]
    #: The KV secrets (names inside the mount) the stack writes.
    written_secrets: Sequence[str]


def role_parameters(pod: PodRole, settings: Mapping[str, str | int]) -> dict[str, list[Any]]:
    """Each field the stack writes on the pod's role (``settings``: ``components.vault.pod_role_settings``), with the
    only value it may take; no other field."""
    allowed: dict[str, list[Any]] = {
        "token_policies": [[pod.policy]],
        "bound_service_account_names": [[pod.service_account]],
        "bound_service_account_namespaces": [[pod.namespace]],
        **{name: [value] for name, value in PROVIDER_ROLE_FIELDS.items()},
    }
    for name, value in settings.items():
        # Vault compares the request's JSON number with the policy's integer as unequal: a number can only be allowed.
        allowed[name] = [] if isinstance(value, int) else [value]
    return allowed


def provider_grants() -> list[Grant]:
    """What Pulumi's Vault provider does with any token before its first call: look it up, make a child token."""
    return [
        Grant("auth/token/lookup-self", ("read",), "the provider looks its token up first (no `default` policy here)"),
        Grant("auth/token/create", ("update",), "Pulumi's Vault provider works with a child token of the login"),
    ]


def operator_policies(args: CiAccessArgs) -> list[str]:
    """Every policy the stack declares, the pods' and CI's own: written only by the operator's run."""
    prefix = args.names.policy_path("")
    declared = {path for path in args.names.owned() if path.startswith(prefix)}
    declared |= {args.names.policy_path(pod.policy) for pod in args.pods}
    return sorted(declared)


def deploy_grants(args: CiAccessArgs) -> list[Grant]:
    """What the provider does for this stack, path by path."""
    n, v = args.names, args.vault
    grants = provider_grants()
    for secret in args.written_secrets:
        grants.append(Grant(n.kv_path(secret), _OWN, "a secret the stack writes"))
        grants.append(Grant(n.metadata_path(secret), ("read",), "its versions: the provider reads them after a write"))
    if n.external_database is not None:
        grants.append(
            Grant(n.subkeys_path(n.external_database[0]), ("read",), "the preflight: the DSN's keys, never its value")
        )
    settings = pod_role_settings(v)
    for pod in args.pods:
        grants.append(
            Grant(
                n.kubernetes_role_path(pod.role),
                _OWN,
                f"the role of {pod.service_account}'s pods: only the fields the stack writes, with their values",
                role_parameters(pod, settings),
            )
        )
    # The operator's: read-only here (a refresh reads them back).
    grants += [Grant(path, ("read",), "a policy: the operator's") for path in operator_policies(args)]
    if v.manage_kv_mount:
        grants.append(Grant(f"sys/mounts/{v.kv_mount}", ("read",), "the KV v2 mount: the operator's"))
        grants.append(Grant(f"sys/mounts/{v.kv_mount}/tune", ("read",), "its settings"))
    if v.manage_backends:
        grants += _backend_grants(n.kubernetes_auth_path, "the Kubernetes auth backend")
    if v.ci.manage_backend:
        grants += _backend_grants(n.ci_auth_path, "the JWT backend")
    if v.manage_backends or v.ci.manage_backend:
        grants.append(Grant("sys/auth", ("read",), "the provider finds auth backends in the list of mounts"))
    grants.append(Grant(n.ci_role_path(n.ci_role), ("read",), "this role: the operator's"))
    if v.ci.preview is not None:
        grants.append(Grant(n.ci_role_path(n.ci_preview_role), ("read",), "the previews' role: the operator's"))
    return grants


def _backend_grants(path: str, what: str) -> list[Grant]:
    return [
        Grant(f"sys/auth/{path}", _READ_AUTH_MOUNT, f"{what}: the operator's"),
        Grant(f"sys/auth/{path}/tune", _READ_AUTH_MOUNT, "its settings"),
        Grant(f"auth/{path}/config", ("read",), "its config: never written by CI"),
    ]


def preview_grants(n: names.VaultNames) -> list[Grant]:
    """What ``pulumi preview`` asks of Vault, and nothing else: it writes nothing and reads no secret's value.

    A preview without ``--refresh`` reads no resource back; the provider only looks its token up, makes its child
    token (which can hold only this policy) and runs the program's invokes: the preflight's ``subkeys`` of an
    external DSN.
    """
    grants = provider_grants()
    if n.external_database is not None:
        path = n.subkeys_path(n.external_database[0])
        grants.append(Grant(path, ("read",), "the preflight: the DSN's keys, never its value"))
    return grants


def render_policy(grants: Sequence[Grant]) -> str:
    """HCL, one commented block per grant."""
    blocks = []
    for grant in grants:
        lines = [f"# {grant.why}", f'path "{grant.path}" {{', f"  capabilities = {json.dumps(grant.capabilities)}"]
        if grant.allowed_parameters:
            lines.append("  allowed_parameters = {")
            allowed = grant.allowed_parameters.items()
            lines += [f"    {json.dumps(key)} = {json.dumps(list(values))}" for key, values in allowed]
            lines.append("  }")
        lines.append("}")
        blocks.append("\n".join(lines) + "\n")
    return "".join(blocks)


def deploy_policy(args: CiAccessArgs) -> str:
    return render_policy(deploy_grants(args))


def preview_policy(n: names.VaultNames) -> str:
    return render_policy(preview_grants(n))


def _repository_claims(ci: VaultCi) -> dict[str, str]:
    # The IDs as well as the name: a deleted or renamed repository's name can be registered again by anyone.
    return {
        "repository": ci.repository,
        "repository_id": ci.repository_id,
        "repository_owner_id": ci.repository_owner_id,
    }


def bound_claims(ci: VaultCi) -> dict[str, str]:
    """The claims a deploy job's GitHub token must carry; a list is comma-separated, as the provider sends it."""
    claims = {**_repository_claims(ci), "environment": ci.environment}
    if ci.refs:
        claims["ref"] = ",".join(ci.refs)
    return claims


def preview_bound_claims(ci: VaultCi) -> dict[str, str]:
    """The claims a preview job's token must carry: the repository, the previews' own environment, its events."""
    preview = ci.preview
    if preview is None:
        raise ValueError("no preview role declared (vault.ci.preview)")
    claims = {**_repository_claims(ci), "environment": preview.environment}
    if preview.event_names:
        claims["event_name"] = ",".join(preview.event_names)
    if preview.refs:
        claims["ref"] = ",".join(preview.refs)
    return claims


#: Claims copied into the token's metadata, for the audit log: who ran what.
CLAIM_MAPPINGS = {"actor": "actor", "ref": "ref", "sha": "sha", "run_id": "run_id", "workflow": "workflow"}


class CiAccess(pulumi.ComponentResource):
    """The JWT backend (when the stack manages it), the deploy policy and the role of the stack's GitHub environment."""

    def __init__(
        self, name: str, args: CiAccessArgs, *, provider: vault.Provider, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(names.component_type("CiAccess"), name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        n, ci = args.names, args.vault.ci
        after: list[pulumi.Resource] = []
        if ci.manage_backend:
            jwt = vault.jwt.AuthBackend(
                "github-actions",
                path=ci.auth_path,
                type="jwt",
                description="GitHub Actions OIDC: the deploy workflows of the BlinkChamber identity tier",
                oidc_discovery_url=names.GITHUB_OIDC_ISSUER,
                bound_issuer=names.GITHUB_OIDC_ISSUER,
                # Shared by every stack on this Vault: never deleted by one of them.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
            )
            after.append(jwt)
        policy = vault.Policy(names.CI_VAULT_POLICY, name=n.ci_policy, policy=deploy_policy(args), opts=child)
        self.role = self._role(names.CI_VAULT_ROLE, ci, n.ci_role, bound_claims(ci), policy, after, child)
        outputs = {"role": n.ci_role, "authPath": ci.auth_path}
        if ci.preview is not None:
            read_only = vault.Policy(
                names.CI_PREVIEW_POLICY, name=n.ci_preview_policy, policy=preview_policy(n), opts=child
            )
            claims = preview_bound_claims(ci)
            self._role(names.CI_PREVIEW_ROLE, ci, n.ci_preview_role, claims, read_only, after, child)
            outputs["previewRole"] = n.ci_preview_role
        self.register_outputs(outputs)

    @staticmethod
    def _role(
        resource_name: str,
        ci: VaultCi,
        role_name: str,
        claims: dict[str, str],
        policy: vault.Policy,
        after: list[pulumi.Resource],
        child: pulumi.ResourceOptions,
    ) -> vault.jwt.AuthBackendRole:
        return vault.jwt.AuthBackendRole(
            resource_name,
            backend=ci.auth_path,
            role_name=role_name,
            role_type="jwt",
            # GitHub's sub: repo:<owner>/<name>:environment:<environment>, the entity alias of every run.
            user_claim="sub",
            bound_audiences=[ci.audience],
            bound_claims=claims,
            bound_claims_type="string",
            claim_mappings=CLAIM_MAPPINGS,
            token_policies=[policy.name],
            # Exactly its policy: Vault's ``default`` policy (cubbyhole, response wrapping, its entity) is not needed.
            token_no_default_policy=True,
            # Short-lived and not renewable beyond it: the job's whole run, nothing after.
            token_ttl=ci.token_ttl_seconds,
            token_max_ttl=ci.token_ttl_seconds,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=after)),
        )
