"""Which input changes make a provider replace a resource (delete it and create it again) instead of updating it.

The installed provider packages carry no schema (``pulumi_vault``, ``pulumi_random`` and ``pulumi_kubernetes`` ship
only their Python SDKs; the schema lives in the provider plugin binaries, which the offline plan never downloads).
So this is a table, read from the providers' sources:

- terraform-provider-random, ``internal/provider/resource_password.go`` (schema v3): every argument of
  ``random_password`` has ``RequiresReplace`` — a new length (``redis.passwordLength``) is a new password.
- terraform-provider-vault (commit 31447510c5, the source of pulumi-vault 7.x), the ``ForceNew`` fields of
  ``resource_mount.go``, ``resource_auth_backend.go``, ``resource_policy.go``, ``resource_kv_secret_v2.go``,
  ``resource_kubernetes_auth_backend_{config,role}.go`` and ``resource_jwt_auth_backend{,_role}.go``; ``namespace``
  is ``ForceNew`` on all of them. A mount's or auth backend's ``path`` is a remount (an update) on Vault 1.10 and
  newer (``getMountCustomizeDiffFunc``), so it is not listed.
- pulumi-kubernetes (commit 94977969d6), ``provider/pkg/provider/diff.go`` (``forceNewProperties``: every object's
  ``metadata.name`` and ``metadata.namespace``; a Secret's ``type``, ``stringData`` and ``data`` unless the provider
  enables mutable Secrets, which this program does not), ``helm_release.go`` (a release's ``name`` and
  ``namespace``) and ``provider.go`` (``DiffConfig``: with ``clusterIdentifier`` set, as this program sets it, only a
  change of the identifier replaces the provider — and with it every object it manages; adding it replaces nothing).

A type missing here (another provider's) is never marked: the marks are a floor, not a promise.
"""

from __future__ import annotations

from typing import Final

from stacks import names

#: Every argument of the resource.
EVERY_INPUT: Final = "*"

REPLACE_ON_CHANGE: Final[dict[str, tuple[str, ...]]] = {
    names.RANDOM_PASSWORD_TYPE: (EVERY_INPUT,),
    "vault:index/mount:Mount": ("type", "local", "sealWrap", "externalEntropyAccess", "namespace"),
    "vault:index/authBackend:AuthBackend": ("type", "local", "namespace"),
    names.VAULT_POLICY_TYPE: ("name", "namespace"),
    names.VAULT_KV_SECRET_TYPE: ("mount", "name", "namespace"),
    "vault:kubernetes/authBackendConfig:AuthBackendConfig": ("backend", "namespace"),
    "vault:kubernetes/authBackendRole:AuthBackendRole": ("backend", "roleName", "namespace"),
    "vault:jwt/authBackend:AuthBackend": ("type", "local", "namespace"),
    "vault:jwt/authBackendRole:AuthBackendRole": ("backend", "roleName", "roleType", "namespace"),
    names.HELM_RELEASE_TYPE: ("name", "namespace"),
    names.KUBERNETES_SECRET_TYPE: ("metadata.name", "metadata.namespace", "type", "stringData", "data"),
    "kubernetes:core/v1:Service": ("metadata.name", "metadata.namespace", "spec.clusterIP"),
    "pulumi:providers:kubernetes": ("clusterIdentifier",),
}
#: Every other Kubernetes object.
KUBERNETES_OBJECT: Final = ("metadata.name", "metadata.namespace")
#: Fields whose addition or removal is not a replacement, only a change of value.
_ONLY_WHEN_CHANGED: Final = {("pulumi:providers:kubernetes", "clusterIdentifier")}


def replace_fields(type_: str) -> tuple[str, ...]:
    if type_ in REPLACE_ON_CHANGE:
        return REPLACE_ON_CHANGE[type_]
    if type_.startswith("kubernetes:") and not type_.startswith("kubernetes:helm.sh/"):
        return KUBERNETES_OBJECT
    return ()


def forces_replacement(type_: str, path: str, kind: str = "~") -> bool:
    """Whether a change (``kind``: ``~`` changed, ``+`` added, ``-`` removed) at input ``path`` (``inputs.a.b``, or a
    list index ``inputs.a[0]``) makes the provider replace a resource of ``type_``."""
    if not path.startswith("inputs."):
        return False
    field_path = path[len("inputs.") :]
    for field in replace_fields(type_):
        if kind != "~" and (type_, field) in _ONLY_WHEN_CHANGED:
            continue
        if field == EVERY_INPUT or field_path == field or field_path.startswith((f"{field}.", f"{field}[")):
            return True
    return False
