"""The ZITADEL release's Helm post-renderer: the server reads its masterkey from the Vault agent's file.

ZITADEL chart 9.34.0 starts the server with ``--masterkeyFromEnv`` and a ``ZITADEL_MASTERKEY`` env taken from the
Secret ``masterkeySecretName``, with no value to change either (its setup job takes extra arguments; the Deployment
does not). This post-renderer swaps them for ``--masterkeyFile`` and the agent's file, and fails (exit 1, nothing
on stdout) on any Deployment that does not look as the pinned chart renders it, rather than deploy a guess.

Helm 3, inside the Kubernetes provider, hands a post-renderer the release's manifests but not its hooks: the setup
job's masterkey comes from its ``additionalArgs`` (``components.zitadel.setup_args``) either way.

Run by ``bin/zitadel-postrender``: the manifests in on stdin, out on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Final

import yaml

from stacks import names

#: The chart's flag and env that read the masterkey from the environment.
FROM_ENV_FLAG: Final = "--masterkeyFromEnv"
MASTERKEY_ENV: Final = "ZITADEL_MASTERKEY"
#: What replaces the flag: one source only (ZITADEL refuses two), the file the agent renders.
FROM_FILE_ARGS: Final = ("--masterkeyFile", f"{names.VAULT_SECRETS_DIR}/{names.ZITADEL_MASTERKEY_INJECT_NAME}")


class PostRenderError(Exception):
    """The manifests are not what the pinned chart renders: the release must not go ahead."""


def _server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    found = [c for c in containers if c.get("name") == names.ZITADEL_CHART_NAME]
    if len(found) != 1:
        raise PostRenderError(f"Deployment/{names.ZITADEL_FULLNAME}: {len(found)} containers named zitadel")
    return dict(found[0])


def masterkey_from_file(manifests: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``manifests`` with the ZITADEL Deployment's masterkey read from the agent's file; nothing else changes."""
    out: list[dict[str, Any]] = []
    changed = 0
    for manifest in manifests:
        metadata = manifest.get("metadata") or {}
        if manifest.get("kind") != "Deployment" or metadata.get("name") != names.ZITADEL_FULLNAME:
            out.append(manifest)
            continue
        container = _server_container(manifest)
        args = list(container.get("args") or [])
        env = list(container.get("env") or [])
        from_env = [i for i, arg in enumerate(args) if arg == FROM_ENV_FLAG]
        masterkey_env = [e for e in env if e.get("name") == MASTERKEY_ENV]
        if len(from_env) != 1 or len(masterkey_env) != 1 or any(a.startswith("--masterkeyFile") for a in args):
            raise PostRenderError(
                f"Deployment/{names.ZITADEL_FULLNAME}: expected one {FROM_ENV_FLAG} and one {MASTERKEY_ENV} env, "
                f"found {len(from_env)} and {len(masterkey_env)}: not the chart this post-renderer was written for"
            )
        index = from_env[0]
        container["args"] = [*args[:index], *FROM_FILE_ARGS, *args[index + 1 :]]
        container["env"] = [e for e in env if e.get("name") != MASTERKEY_ENV]
        spec = manifest["spec"]["template"]["spec"]
        spec["containers"] = [container if c.get("name") == names.ZITADEL_CHART_NAME else c for c in spec["containers"]]
        out.append(manifest)
        changed += 1
    if changed != 1:
        raise PostRenderError(f"{changed} Deployments named {names.ZITADEL_FULLNAME} in the release's manifests")
    return out


def main(stdin: Any = None, stdout: Any = None, stderr: Any = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        manifests = [doc for doc in yaml.safe_load_all(stdin) if doc]
        rendered = masterkey_from_file(manifests)
    except (PostRenderError, yaml.YAMLError) as error:
        print(f"zitadel-postrender: {error}", file=stderr)
        return 1
    yaml.safe_dump_all(rendered, stdout, explicit_start=True, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
