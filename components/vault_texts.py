"""Vault texts as plain functions: read-only policies (HCL) and Vault Agent Injector annotations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_PREFIX = "vault.hashicorp.com/"


def read_policy(paths: Iterable[str]) -> str:
    """A policy granting ``read`` and nothing else on exactly ``paths`` (KV v2 API paths)."""
    return "".join(f'path "{path}" {{\n  capabilities = ["read"]\n}}\n' for path in sorted(set(paths)))


@dataclass(frozen=True)
class InjectedFile:
    """One file the agent renders under /vault/secrets."""

    #: Injector name; lower-case so that the file name is exactly this (the injector lower-cases it otherwise).
    name: str
    #: The KV v2 API path the agent must be allowed to read.
    vault_path: str
    #: consul-template body.
    template: str
    #: File name under /vault/secrets when it differs from ``name``.
    file: str | None = None
    #: Template delimiters, when the chart runs annotations through Helm's ``tpl`` (Bitnami does).
    delimiters: tuple[str, str] | None = None


def injector_annotations(
    *,
    role: str,
    auth_path: str,
    files: Iterable[InjectedFile],
    init_first: bool = False,
) -> dict[str, str]:
    """Pod annotations for the Vault Agent Injector: init container only (no sidecar), rendering ``files``.

    The agent runs only as an init container (``agent-pre-populate-only``): the consumers read their secrets at
    start, and a Job with the agent sidecar would never complete.
    """
    annotations = {
        f"{_PREFIX}agent-inject": "true",
        f"{_PREFIX}role": role,
        f"{_PREFIX}auth-path": f"auth/{auth_path}",
        f"{_PREFIX}agent-pre-populate-only": "true",
    }
    if init_first:
        annotations[f"{_PREFIX}agent-init-first"] = "true"
    for f in files:
        if f.name != f.name.lower():
            raise ValueError(f"injector name {f.name!r} must be lower-case: the injector lower-cases file names")
        annotations[f"{_PREFIX}agent-inject-secret-{f.name}"] = f.vault_path
        annotations[f"{_PREFIX}agent-inject-template-{f.name}"] = f.template
        if f.file:
            annotations[f"{_PREFIX}agent-inject-file-{f.name}"] = f.file
        if f.delimiters:
            annotations[f"{_PREFIX}agent-template-left-delim-{f.name}"] = f.delimiters[0]
            annotations[f"{_PREFIX}agent-template-right-delim-{f.name}"] = f.delimiters[1]
    return annotations


def secret_value_template(vault_path: str, key: str, delimiters: tuple[str, str] = ("{{", "}}")) -> str:
    """A template printing one key of a KV v2 secret, with no trailing newline."""
    left, right = delimiters
    return f'{left}- with secret "{vault_path}" -{right}{left} .Data.data.{key} {right}{left}- end {right}'
