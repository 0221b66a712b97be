"""The Vault Agent configuration that the Vault Agent Injector (vault-k8s) derives from a pod's annotations.

A port of hashicorp/vault-k8s at tag v1.7.6 (commit fbc5b1f0cd4d1c7dd5a8830e32c8ed636d7318d7), limited to what decides
the configuration of the ``vault-agent-init`` container: ``Init`` (annotations.go:383-619, the injector's defaults
written into the annotations), ``New`` (agent.go:366-565), ``secrets`` (annotations.go:629-707), ``authConfig``
(annotations.go:944-968) and ``newConfig``/``newTemplateConfigs`` (config.go:184-325). The injector passes that
configuration, as JSON, to the init container (container_env.go:87-97, ``VAULT_CONFIG``).

Also here: every annotation name vault-k8s v1.7.6 defines (annotations.go:20-347) with the first release that
defines it, so that a test can tell an annotation the injector reads from one it silently ignores, and which
injector version a pod's annotations need.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.names import VAULT_INJECT_PREFIX as PREFIX

SOURCE = "hashicorp/vault-k8s v1.7.6"

#: Every annotation of annotations.go:20-347 → the first vault-k8s release whose annotations.go defines it.
ANNOTATIONS_SINCE: dict[str, tuple[int, int, int]] = {
    "agent-inject-status": (0, 1, 0),
    "agent-inject": (0, 1, 0),
    "agent-inject-secret": (0, 1, 0),
    "agent-inject-file": (0, 5, 0),
    "agent-inject-perms": (0, 12, 0),
    "agent-inject-template": (0, 1, 0),
    "agent-inject-containers": (0, 15, 0),
    "agent-inject-default-template": (0, 10, 0),
    "agent-inject-template-file": (0, 10, 0),
    "agent-template-left-delim": (1, 5, 0),
    "agent-template-right-delim": (1, 5, 0),
    "agent-inject-token": (0, 3, 0),
    "agent-inject-command": (0, 3, 0),
    "agent-image": (0, 1, 0),
    "agent-request-namespace": (0, 1, 0),
    "agent-init-first": (0, 3, 0),
    "agent-pre-populate": (0, 1, 0),
    "agent-pre-populate-only": (0, 1, 0),
    "agent-configmap": (0, 1, 0),
    "agent-extra-secret": (0, 6, 0),
    "agent-limits-cpu": (0, 1, 0),
    "agent-limits-mem": (0, 1, 0),
    "agent-limits-ephemeral": (1, 0, 0),
    "agent-requests-cpu": (0, 1, 0),
    "agent-requests-mem": (0, 1, 0),
    "agent-requests-ephemeral": (1, 0, 0),
    "agent-revoke-on-shutdown": (0, 3, 0),
    "agent-revoke-grace": (0, 3, 0),
    "namespace": (0, 3, 0),
    "agent-run-as-user": (0, 4, 0),
    "agent-run-as-group": (0, 4, 0),
    "agent-run-as-same-user": (0, 4, 0),
    "agent-share-process-namespace": (1, 2, 0),
    "agent-set-security-context": (0, 4, 0),
    "agent-service-account-token-volume-name": (0, 13, 0),
    "service": (0, 1, 0),
    "proxy-address": (0, 9, 0),
    "tls-skip-verify": (0, 1, 0),
    "tls-secret": (0, 1, 0),
    "tls-server-name": (0, 1, 0),
    "ca-cert": (0, 1, 0),
    "ca-key": (0, 1, 0),
    "client-cert": (0, 1, 0),
    "client-key": (0, 1, 0),
    "client-max-retries": (0, 1, 0),
    "client-timeout": (0, 1, 0),
    "go-max-procs": (0, 16, 0),
    "log-level": (0, 3, 0),
    "log-format": (0, 8, 0),
    "role": (0, 1, 0),
    "auth-type": (0, 9, 0),
    "auth-path": (0, 2, 0),
    "auth-config": (0, 9, 0),
    "secret-volume-path": (0, 3, 0),
    "preserve-secret-case": (0, 3, 0),
    "agent-cache-enable": (0, 5, 0),
    "agent-cache-use-auto-auth-token": (0, 5, 0),
    "agent-cache-listener-port": (0, 5, 0),
    "agent-cache-exit-on-err": (0, 9, 0),
    "agent-copy-volume-mounts": (0, 8, 0),
    "template-config-exit-on-retry-failure": (0, 11, 0),
    "template-static-secret-render-interval": (0, 12, 0),
    "template-max-connections-per-host": (1, 4, 0),
    "template-lease-renewal-threshold": (1, 7, 0),
    "agent-enable-quit": (0, 16, 0),
    "auth-min-backoff": (0, 16, 0),
    "auth-max-backoff": (0, 16, 0),
    "agent-disable-idle-connections": (0, 17, 0),
    "agent-disable-keep-alives": (1, 0, 0),
    "agent-json-patch": (1, 1, 0),
    "agent-init-json-patch": (1, 1, 0),
    "agent-auto-auth-exit-on-err": (1, 1, 0),
    "agent-telemetry": (1, 2, 0),
    "error-on-missing-key": (1, 4, 0),
}

#: Annotations read as ``<annotation>-<secret name>`` (annotations.go:664-682, 669, 772-786).
PER_SECRET = (
    "agent-inject-secret",
    "agent-inject-template",
    "agent-inject-template-file",
    "agent-inject-file",
    "agent-inject-perms",
    "agent-inject-command",
    "agent-template-left-delim",
    "agent-template-right-delim",
    "secret-volume-path",
    "preserve-secret-case",
    "error-on-missing-key",
)
#: Of those, the ones that mean nothing without a secret name (the others also have a pod-wide form).
PER_SECRET_ONLY = tuple(a for a in PER_SECRET if a not in ("secret-volume-path", "preserve-secret-case"))
#: Annotations read as ``<annotation>-<parameter>`` for any parameter (annotations.go:926-942, 944-968).
PER_PARAMETER = ("auth-config", "agent-telemetry")

# config.go:14-22, container_volume.go:22, agent.go:21-22,36
DEFAULT_LEFT_DELIM = "{{"
DEFAULT_RIGHT_DELIM = "}}"
DEFAULT_MAP_TEMPLATE = '{{ with secret "%s" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}'
DEFAULT_JSON_TEMPLATE = '{{ with secret "%s" }}{{ .Data | toJSON }}\n{{ end }}'
PID_FILE = "/home/vault/.pid"
TOKEN_FILE = "/home/vault/.vault-token"
SECRET_VOLUME_PATH = "/vault/secrets"
#: The token Kubernetes mounts with ``automountServiceAccountToken`` (found by agent.go:815-828 in the pod spec).
POD_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class InjectorFlags:
    """The injector's command-line settings that reach the agent configuration (subcommand/injector/flags.go)."""

    #: ``-vault-address`` (no default; the Helm chart of the injector sets the in-cluster Vault service).
    address: str
    auth_type: str = "kubernetes"  # DefaultVaultAuthType, agent.go:21
    auth_path: str = "auth/kubernetes"  # DefaultVaultAuthPath, agent.go:22
    default_template: str = "map"  # DefaultTemplateType, config.go:19
    exit_on_retry_failure: bool = True  # DefaultTemplateConfigExitOnRetryFailure, agent.go:36
    static_secret_render_interval: str = ""
    max_connections_per_host: int = 0
    auth_min_backoff: str = ""
    auth_max_backoff: str = ""


@dataclass
class Secret:
    """agent.go ``Secret``: one rendered file."""

    name: str
    raw_name: str
    path: str = ""
    template: str = ""
    template_file: str = ""
    mount_path: str = ""
    command: str = ""
    left_delimiter: str = ""
    right_delimiter: str = ""
    file_path_and_name: str = ""
    file_permission: str = ""
    err_missing_key: bool = False


def parse_bool(raw: str) -> bool:
    """Go's ``strconv.ParseBool`` (parseutil.ParseBool on a string); the injector refuses the pod otherwise."""
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean {raw!r}")


def _key(name: str) -> str:
    return PREFIX + name


def init_annotations(annotations: Mapping[str, str], flags: InjectorFlags) -> dict[str, str]:
    """``Init`` (annotations.go:383-619): the pod's annotations with the injector's defaults for those not set.

    Only the defaults that reach the agent configuration are ported.
    """
    result = dict(annotations)
    defaults = {
        "service": flags.address,  # :409-411
        "auth-type": flags.auth_type,  # :413-418
        "auth-path": flags.auth_path,  # :420-422
        "namespace": "",  # :424-426 (no -vault-namespace flag given)
        "secret-volume-path": SECRET_VOLUME_PATH,  # :467-469
        "agent-cache-enable": "false",  # :522-524
        "agent-cache-listener-port": "8200",  # :526-528
        "agent-cache-use-auto-auth-token": "true",  # :530-532
        "agent-cache-exit-on-err": "false",  # :534-536
        "agent-inject-default-template": flags.default_template,  # :546-548
        "template-config-exit-on-retry-failure": "true" if flags.exit_on_retry_failure else "false",  # :550-552
        "template-static-secret-render-interval": flags.static_secret_render_interval,  # :554-556
        "template-max-connections-per-host": str(flags.max_connections_per_host),  # :558-560
        "agent-disable-idle-connections": "",  # :586-588
        "agent-disable-keep-alives": "",  # :590-592
    }
    for name, value in defaults.items():
        result.setdefault(_key(name), value)
    # :562-584: the backoffs only when the flag is set.
    if flags.auth_min_backoff:
        result.setdefault(_key("auth-min-backoff"), flags.auth_min_backoff)
    if flags.auth_max_backoff:
        result.setdefault(_key("auth-max-backoff"), flags.auth_max_backoff)
    return result


def _secret_value(annotations: Mapping[str, str], annotation: str, raw_name: str, default: str = "") -> str:
    # annotationsSecretValue, annotations.go:688-694
    return annotations.get(f"{_key(annotation)}-{raw_name}", default)


def _preserve_secret_case(annotations: Mapping[str, str], raw_name: str) -> bool:
    # annotations.go:772-786; the error of a bad value is dropped by secretName (:698)
    raw = annotations.get(f"{_key('preserve-secret-case')}-{raw_name}", annotations.get(_key("preserve-secret-case")))
    if raw is None:
        return False
    try:
        return parse_bool(raw)
    except ValueError:
        return False


def secrets(annotations: Mapping[str, str]) -> list[Secret]:
    """``secrets()`` (annotations.go:629-686): one entry per name that has a secret, template-file or template."""
    found: list[Secret] = []
    seen: set[str] = set()
    for annotation_name, value in annotations.items():
        if not value.strip():
            continue
        # :634 the order matters: "agent-inject-template-file-x" names the secret "x", not "file-x".
        for annotation in ("agent-inject-secret", "agent-inject-template-file", "agent-inject-template"):
            prefix = f"{_key(annotation)}-"
            if not annotation_name.startswith(prefix):
                continue
            raw_name = annotation_name[len(prefix) :]
            name = raw_name if _preserve_secret_case(annotations, raw_name) else raw_name.lower()
            if not name:
                continue
            if raw_name not in seen:
                seen.add(raw_name)
                found.append(Secret(name=name, raw_name=raw_name))
            break
    for secret in found:
        raw = secret.raw_name
        secret.path = _secret_value(annotations, "agent-inject-secret", raw)
        secret.template = _secret_value(annotations, "agent-inject-template", raw)
        if not secret.template:
            secret.template_file = _secret_value(annotations, "agent-inject-template-file", raw)
        pod_wide = annotations[_key("secret-volume-path")]
        secret.mount_path = _secret_value(annotations, "secret-volume-path", raw, pod_wide)
        secret.command = _secret_value(annotations, "agent-inject-command", raw)
        secret.left_delimiter = _secret_value(annotations, "agent-template-left-delim", raw)
        secret.right_delimiter = _secret_value(annotations, "agent-template-right-delim", raw)
        secret.file_path_and_name = _secret_value(annotations, "agent-inject-file", raw)
        secret.file_permission = _secret_value(annotations, "agent-inject-perms", raw)
        # :676-682 parseutil.ParseBool("") is false
        missing_key = _secret_value(annotations, "error-on-missing-key", raw)
        secret.err_missing_key = parse_bool(missing_key) if missing_key else False
    return found


def _go_join(*parts: str) -> str:
    """Go's ``filepath.Join``: joins every non-empty part (an absolute one too) and cleans the result."""
    kept = [p for p in parts if p]
    return posixpath.normpath("/".join(kept)) if kept else ""


def template_configs(annotations: Mapping[str, str], default_template: str) -> list[dict[str, Any]]:
    """``newTemplateConfigs`` (config.go:184-231), JSON as ``Template`` marshals it (omitempty, config.go:83-93)."""
    templates = []
    for secret in secrets(annotations):
        contents = secret.template
        if not secret.template_file and not contents:
            if default_template == "json":
                contents = DEFAULT_JSON_TEMPLATE % secret.path
            elif default_template == "map":
                contents = DEFAULT_MAP_TEMPLATE % secret.path
        destination = f"{secret.mount_path}/{secret.name}"
        if secret.file_path_and_name:
            destination = _go_join(secret.mount_path, secret.file_path_and_name)
        template: dict[str, Any] = {
            "source": secret.template_file,
            "contents": contents,
            "destination": destination,
            "left_delimiter": secret.left_delimiter or DEFAULT_LEFT_DELIM,
            "right_delimiter": secret.right_delimiter or DEFAULT_RIGHT_DELIM,
            "command": secret.command,
            "error_on_missing_key": secret.err_missing_key,
            "perms": secret.file_permission,
        }
        templates.append({k: v for k, v in template.items() if v or k == "destination"})
    return templates


def auth_config(annotations: Mapping[str, str], token_path: str) -> dict[str, Any]:
    """``authConfig`` (annotations.go:944-968): the auto-auth method's ``config``."""
    config: dict[str, Any] = {"token_path": token_path}
    prefix = f"{_key('auth-config')}-"
    for annotation, value in annotations.items():
        if annotation.startswith(prefix):
            config[annotation[len(prefix) :].replace("-", "_")] = value
    role = annotations.get(_key("role"), "")
    if role:
        config["role"] = role
    return config


def _bool(annotations: Mapping[str, str], name: str, default: bool) -> bool:
    raw = annotations.get(_key(name))
    return default if raw is None else parse_bool(raw)


def agent_config(
    pod_annotations: Mapping[str, str], flags: InjectorFlags, *, init: bool = True, token_path: str = POD_TOKEN_PATH
) -> dict[str, Any]:
    """The agent configuration of the pod's ``vault-agent-init`` (``init``) or sidecar container, as JSON.

    ``newConfig`` (config.go:233-325) on the ``Agent`` that ``New`` (agent.go:366-565) builds from the annotations
    after ``Init``. Telemetry, TLS files and the persistent cache are not ported: the caller must not use them.
    """
    annotations = init_annotations(pod_annotations, flags)
    unported = ("agent-telemetry-", "ca-cert", "ca-key", "client-cert", "client-key", "tls-", "agent-enable-quit")
    used = [a for a in pod_annotations if a.removeprefix(PREFIX).startswith(unported)]
    if used:
        raise NotImplementedError(f"not ported: {used}")
    default_template = annotations[_key("agent-inject-default-template")].lower()
    if default_template not in ("map", "json"):  # agent.go:503-509
        raise ValueError(f"invalid default template type: {default_template}")
    pre_populate_only = _bool(annotations, "agent-pre-populate-only", False)
    cache_enable = _bool(annotations, "agent-cache-enable", False)
    pre_populate = _bool(annotations, "agent-pre-populate", True)

    method: dict[str, Any] = {
        "type": annotations[_key("auth-type")],
        "mount_path": annotations[_key("auth-path")],
        "min_backoff": annotations.get(_key("auth-min-backoff"), ""),
        "max_backoff": annotations.get(_key("auth-max-backoff"), ""),
        "namespace": annotations[_key("namespace")],
        "config": auth_config(annotations, token_path),
        "exit_on_err": _bool(annotations, "agent-auto-auth-exit-on-err", False),
    }
    sinks: list[dict[str, Any]] = [{"type": "file", "config": {"path": TOKEN_FILE}}]
    if _bool(annotations, "agent-inject-token", False):  # config.go:277-284
        token_sink = posixpath.join(annotations[_key("secret-volume-path")], "token")
        sinks.append({"type": "file", "config": {"path": token_sink}})
    template_config: dict[str, Any] = {
        "exit_on_retry_failure": _bool(annotations, "template-config-exit-on-retry-failure", True),
        "static_secret_render_interval": annotations.get(_key("template-static-secret-render-interval"), ""),
        "max_connections_per_host": int(annotations.get(_key("template-max-connections-per-host"), "0") or 0),
        "lease_renewal_threshold": float(annotations.get(_key("template-lease-renewal-threshold"), "0") or 0),
    }
    config: dict[str, Any] = {
        "auto_auth": {
            "method": {k: v for k, v in method.items() if v or k == "type"},
            "sink": sinks,
        },
        "exit_after_auth": init,
        "pid_file": PID_FILE,
        "vault": {"address": annotations[_key("service")]},
        "template": template_configs(annotations, default_template),
        # exit_on_retry_failure has no omitempty (config.go:125)
        "template_config": {k: v for k, v in template_config.items() if v or k == "exit_on_retry_failure"},
    }
    for key, name in (
        ("disable_idle_connections", "agent-disable-idle-connections"),
        ("disable_keep_alives", "agent-disable-keep-alives"),
    ):
        raw = annotations.get(_key(name), "")
        if raw:  # agent.go:551-557
            config[key] = raw.split(",")
    # config.go:286-302: a listener and cache only for a persistent cache, or a sidecar with the cache enabled.
    listener = [
        {"type": "tcp", "address": f"127.0.0.1:{annotations[_key('agent-cache-listener-port')]}", "tls_disable": True}
    ]
    use_token = annotations[_key("agent-cache-use-auto-auth-token")]
    if cache_enable and pre_populate and not pre_populate_only:  # cachePersist, annotations.go:900-905
        raise NotImplementedError("persistent cache not ported")
    if cache_enable and not pre_populate_only and not init:
        config["listener"] = listener
        config["cache"] = {"use_auto_auth_token": use_token} if use_token else {}
    if not config["template"]:
        del config["template"]
    return config


@dataclass(frozen=True)
class Injection:
    """What the injector does with one pod's annotations."""

    #: The ``vault-agent-init`` container's configuration.
    init_config: dict[str, Any]
    #: No sidecar: only the init container runs (agent.go:716).
    pre_populate_only: bool
    #: ``vault-agent-init`` runs before the pod's own init containers (agent.go:677-690).
    init_first: bool
    #: ``vault.hashicorp.com/*`` annotations vault-k8s v1.7.6 does not read: silently ignored.
    ignored: list[str] = field(default_factory=list)
    #: The oldest vault-k8s release that reads every annotation the pod sets.
    needs_version: tuple[int, int, int] = (0, 0, 0)


def should_inject(annotations: Mapping[str, str]) -> bool:
    """``ShouldInject`` (agent.go:569-603) for a pod being created."""
    raw = annotations.get(_key("agent-inject"))
    return raw is not None and parse_bool(raw) and annotations.get(_key("agent-inject-status")) != "injected"


def ignored_annotations(annotations: Mapping[str, str]) -> list[str]:
    """The pod's ``vault.hashicorp.com/*`` annotations that vault-k8s v1.7.6 never reads.

    A per-secret annotation counts as read only when its suffix names a secret the pod declares: the injector looks
    up ``<annotation>-<raw name>`` for each declared secret and nothing else.
    """
    raw_names = {s.raw_name for s in secrets(init_annotations(annotations, InjectorFlags(address="-")))}
    ignored = []
    for key in annotations:
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        if name in ANNOTATIONS_SINCE and name not in PER_PARAMETER + PER_SECRET_ONLY:
            continue
        if any(name.startswith(f"{p}-") for p in PER_PARAMETER):
            continue
        # The longest matching per-secret annotation decides ("agent-inject-template-file-x" vs "-template-").
        matches = sorted((p for p in PER_SECRET if name.startswith(f"{p}-")), key=len, reverse=True)
        if matches and name[len(matches[0]) + 1 :] in raw_names:
            continue
        ignored.append(key)
    return sorted(ignored)


def needed_version(annotations: Mapping[str, str]) -> tuple[int, int, int]:
    """The oldest vault-k8s that defines every annotation the pod sets (ignored ones excluded)."""
    ignored = set(ignored_annotations(annotations))
    versions = [(0, 0, 0)]
    for key in annotations:
        if not key.startswith(PREFIX) or key in ignored:
            continue
        name = key.removeprefix(PREFIX)
        # The longest annotation name that matches: "agent-inject-secret-x" is agent-inject-secret, not agent-inject.
        matches = sorted((a for a in ANNOTATIONS_SINCE if name == a or name.startswith(f"{a}-")), key=len)
        versions.append(ANNOTATIONS_SINCE[matches[-1]])
    return max(versions)


def injection(pod_annotations: Mapping[str, str], flags: InjectorFlags) -> Injection:
    """The init container's configuration and the injection facts of a pod the injector mutates."""
    if not should_inject(pod_annotations):
        raise ValueError("the injector leaves this pod alone (no agent-inject: true)")
    return Injection(
        init_config=agent_config(pod_annotations, flags, init=True),
        pre_populate_only=_bool(pod_annotations, "agent-pre-populate-only", False),
        init_first=_bool(pod_annotations, "agent-init-first", False),
        ignored=ignored_annotations(pod_annotations),
        needs_version=needed_version(pod_annotations),
    )


def for_test_bed(
    config: Mapping[str, Any], *, address: str, root: Path, token_file: Path | None = None
) -> dict[str, Any]:
    """The same configuration, run outside a pod: only what is specific to the pod changes.

    The Vault address, and every file path (token sink, pid file, template destinations, the pod's service-account
    token) moved under ``root``, which plays the container's file system. With ``token_file`` the auto-auth method
    becomes ``token_file`` (a token made for the test); without, the injected method is kept as it is. Templates,
    delimiters, ``error_on_missing_key``, ``exit_after_auth`` and ``template_config`` are never changed.
    """

    def moved(path: str) -> str:
        return str(root / path.lstrip("/"))

    bed = copy.deepcopy(dict(config))
    bed["vault"] = {**bed["vault"], "address": address}
    bed["pid_file"] = moved(bed["pid_file"])
    method = bed["auto_auth"]["method"]
    if token_file is not None:
        bed["auto_auth"]["method"] = {"type": "token_file", "config": {"token_file_path": str(token_file)}}
    elif "token_path" in method.get("config", {}):
        method["config"]["token_path"] = moved(method["config"]["token_path"])
    for sink in bed["auto_auth"]["sink"]:
        sink["config"]["path"] = moved(sink["config"]["path"])
    for template in bed.get("template", []):
        template["destination"] = moved(template["destination"])
    return bed
