"""Checks that run before a Helm release waits on something the stack does not own.

ZITADEL's release waits up to ``zitadel.releaseTimeoutSeconds`` (15 minutes) for its init job, whose Vault agent
retries a missing secret for about 5 minutes per attempt: a DSN that is not in Vault surfaces as a timeout. The
program asks Vault first, through its KV v2 ``subkeys`` endpoint, which lists a secret's keys with every value
``null``: the DSN itself is never read. It runs in ``pulumi preview`` as in ``pulumi up``, and the release's values
wait for its answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pulumi
import pulumi_vault as vault

from stacks import names


class PreflightError(RuntimeError):
    """Something a release needs is missing; the message names it and where it was looked for."""


def missing_keys(subkeys_json: str | None, required: Iterable[str]) -> list[str]:
    """The ``required`` keys the secret lacks; all of them when the answer holds no subkeys (no such secret)."""
    subkeys = json.loads(subkeys_json) if subkeys_json else None
    if not isinstance(subkeys, dict):
        return sorted(required)
    return sorted(key for key in required if key not in subkeys)


def require_secret_keys(
    resource_name: str,
    *,
    mount: str,
    secret: str,
    keys: Iterable[str],
    needed_by: str,
    provider: vault.Provider,
) -> pulumi.Output[str]:
    """The secret's API path, once Vault confirms it holds ``keys``; fails the deployment otherwise."""
    required = sorted(keys)
    path = names.kv2_api_path(mount, secret)
    answer = vault.kv.get_secret_subkeys_v2_output(
        mount=mount, name=secret, opts=pulumi.InvokeOutputOptions(provider=provider)
    )

    def check(subkeys_json: str | None) -> str:
        missing = missing_keys(subkeys_json, required)
        if missing:
            raise PreflightError(
                f"{resource_name}: {path} lacks {', '.join(repr(k) for k in missing)}, which {needed_by} reads; "
                "write it to Vault before deploying (README, Prerequisites)"
            )
        return path

    return answer.data_json.apply(check)
