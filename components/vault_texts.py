"""Vault texts as plain functions: read-only policies (HCL) and Vault Agent Injector annotations."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from stacks.names import VAULT_INJECT_PREFIX as _PREFIX


def read_policy(paths: Iterable[str]) -> str:
    """A policy granting ``read`` and nothing else on exactly ``paths`` (KV v2 API paths)."""
    return "".join(f'path "{path}" {{\n  capabilities = ["read"]\n}}\n' for path in sorted(set(paths)))


@dataclass(frozen=True)
class InjectedFile:
    """One file the agent renders under /vault/secrets."""

    #: Injector name; lower-case so that the file name is exactly this (the injector lower-cases it otherwise).
    name: str
    #: The KV v2 API path the agent must be allowed to read; ``None`` for a template that reads no secret.
    vault_path: str | None
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
    """Pod annotations for the Vault Agent Injector (vault-k8s 1.5.0+): init container only, rendering ``files``.

    The agent runs only as an init container (``agent-pre-populate-only``): the consumers read their secrets at
    start, and a Job with the agent sidecar would never complete. Every file fails to render when a key it names is
    missing (``error-on-missing-key``, vault-k8s 1.4.0): the agent would otherwise write ``<no value>`` and exit 0.
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
        if f.vault_path is not None:
            annotations[f"{_PREFIX}agent-inject-secret-{f.name}"] = f.vault_path
        # Since vault-k8s 1.3.0 the template alone declares the file.
        annotations[f"{_PREFIX}agent-inject-template-{f.name}"] = f.template
        annotations[f"{_PREFIX}error-on-missing-key-{f.name}"] = "true"
        if f.file:
            annotations[f"{_PREFIX}agent-inject-file-{f.name}"] = f.file
        if f.delimiters:
            # vault-k8s 1.5.0: an older injector ignores these and the file holds the template text itself.
            annotations[f"{_PREFIX}agent-template-left-delim-{f.name}"] = f.delimiters[0]
            annotations[f"{_PREFIX}agent-template-right-delim-{f.name}"] = f.delimiters[1]
    return annotations


def secret_value_template(vault_path: str, key: str, delimiters: tuple[str, str] = ("{{", "}}")) -> str:
    """A template printing one key of a KV v2 secret, with no trailing newline."""
    left, right = delimiters
    return f'{left}- with secret "{vault_path}" -{right}{left} .Data.data.{key} {right}{left}- end {right}'


def password_copy_script(source: str, target: str, *, alphabet: str, length: int) -> str:
    """POSIX sh: copy a rendered password file to ``target`` (mode 0400) only if it is exactly one password.

    Fails closed on anything else (exit 1, nothing written): the template text itself (an injector too old for the
    template's delimiters), ``<no value>``, an empty file, a trailing newline or a wrong length. The value is never
    printed.
    """
    # Spelled out in a bracket expression: ranges and classes would depend on the locale, punctuation could be syntax.
    if not (alphabet.isascii() and alphabet.isalnum()):
        raise ValueError("the password alphabet must be ASCII letters and digits")
    reason = f"not a {length}-character password of the generated alphabet"
    lines = [
        f"src={shlex.quote(source)}",
        f"dst={shlex.quote(target)}",
        # The trailing "." keeps trailing newlines, which $(...) would strip.
        'pw=$(cat "$src"; echo .)',
        "pw=${pw%.}",
        f'case $pw in *[!{alphabet}]*) echo "$src: {reason}" >&2; exit 1 ;; esac',
        f'if [ "${{#pw}}" -ne {length} ]; then echo "$src: {reason}" >&2; exit 1; fi',
        # A restarted pod re-runs its init containers on the same emptyDir, where the old copy is read-only.
        'rm -f "$dst"',
        '(umask 0377 && printf %s "$pw" > "$dst")',
    ]
    return "".join(f"{line}\n" for line in lines)
