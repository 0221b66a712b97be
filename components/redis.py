"""Redis with Sentinel: the Bitnami chart as a Helm release, its password delivered by the Vault Agent Injector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import edge_pods, ownership, redis_settings
from components.helm import chart_args
from components.isolation import pod_security_labels
from components.vault import PASSWORD_ALPHABET
from components.vault_texts import InjectedFile, injector_annotations, password_copy_script, secret_value_template
from stacks import names
from stacks.config import Image, StackConfig

#: The Bitnami chart runs pod annotations through Helm's ``tpl``; ``{{`` would be read as Helm template code.
_TPL_SAFE_DELIMITERS = ("[[", "]]")
#: The copy runs as the chart's Redis user (``containerSecurityContext.runAsUser``).
_REDIS_UID = 1001


def _image(image: Image) -> dict[str, str]:
    return {"registry": image.registry, "repository": image.repository, "tag": image.tag}


def redis_password_file(cfg: StackConfig) -> InjectedFile:
    vault_names = names.VaultNames.of(cfg)
    vault_path = vault_names.kv_path(vault_names.redis_secret)
    return InjectedFile(
        name=names.REDIS_INJECT_NAME,
        vault_path=vault_path,
        template=secret_value_template(vault_path, names.REDIS_SECRET_KEY, _TPL_SAFE_DELIMITERS),
        delimiters=_TPL_SAFE_DELIMITERS,
    )


def _password_copy_container(cfg: StackConfig) -> dict[str, Any]:
    """Copies the agent's file into the chart's emptyDir, where every container, probe and hook reads it."""
    source = f"{names.VAULT_SECRETS_DIR}/{names.REDIS_INJECT_NAME}"
    target = f"{names.REDIS_PASSWORD_DIR}/{names.REDIS_PASSWORD_FILE}"
    return {
        "name": "copy-redis-password",
        "image": cfg.redis.images.redis.reference,
        # Fails closed unless the agent's file is exactly one generated password (README: vault-k8s >= 1.5.0).
        "command": [
            "/bin/sh",
            "-ec",
            password_copy_script(source, target, alphabet=PASSWORD_ALPHABET, length=cfg.redis.password_length),
        ],
        "securityContext": {
            "runAsUser": _REDIS_UID,
            "runAsGroup": _REDIS_UID,
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": cfg.redis.resources.password_copy.as_k8s(),
        "volumeMounts": [{"name": names.REDIS_PASSWORD_VOLUME, "mountPath": names.REDIS_PASSWORD_DIR}],
    }


def _network_policy(cfg: StackConfig) -> dict[str, Any]:
    """Ingress only from ZITADEL's namespace, the edge's ratelimit pods (and the configured clients); egress only to
    Vault and the API."""
    client_namespaces = (cfg.zitadel.namespace, *cfg.redis.client_namespaces)
    return {
        "enabled": True,
        "allowExternal": False,
        "allowExternalEgress": False,
        "extraIngress": [
            {
                "ports": [
                    {"port": names.REDIS_PORT, "protocol": "TCP"},
                    {"port": names.SENTINEL_PORT, "protocol": "TCP"},
                ],
                "from": [
                    *(
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
                        for namespace in client_namespaces
                    ),
                    # The gateway's rate-limit counters (DB 0), through Sentinel: only the ratelimit pods.
                    edge_pods.in_namespace(cfg.edge.namespace, edge_pods.RATE_LIMIT_LABELS),
                ],
            }
        ],
        "extraEgress": [
            {
                # The chart opens DNS over UDP only; answers too large for UDP are retried over TCP.
                "ports": [{"port": 53, "protocol": "TCP"}],
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": cfg.kubernetes.dns_namespace}
                        }
                    }
                ],
            },
            {
                # The Vault agent init container logs in and fetches the password.
                "ports": [{"port": cfg.vault.port, "protocol": "TCP"}],
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cfg.vault.namespace}}}],
            },
            {
                # The kubectl sidecar relabels the master pod so that the master Service follows failovers. The API
                # server is no pod (its Service address is translated first): only its address blocks can match it.
                "ports": [{"port": port, "protocol": "TCP"} for port in cfg.redis.kube_api_ports],
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in cfg.kubernetes.api_server_cidrs],
            },
        ],
    }


def db_layout_annotations(cfg: StackConfig) -> dict[str, str]:
    layout = cfg.db_layout
    return {
        names.EVENTS_DB_ANNOTATION: str(layout.events_db),
        names.CACHE_BLOCK_ANNOTATION: f"{layout.cache_block.start}-{layout.cache_block.stop - 1}",
    }


def redis_values(cfg: StackConfig, password_version: pulumi.Input[str] | None = None) -> dict[str, Any]:
    """The Bitnami Redis chart values of a stack. No secret: the password reaches the pods through Vault.

    ``password_version`` (the KV version of the password, never the value) goes on the pod template: a new password
    then rolls every node; otherwise the values would not change and pods would take it one crash at a time.
    """
    r = cfg.redis
    sentinel = redis_settings.sentinel_settings(r)
    relocated = any(image.registry != "docker.io" for _, image in r.images)
    persistence: dict[str, Any] = {"enabled": r.persistence.enabled, "size": r.persistence.size}
    if r.persistence.storage_class:
        persistence["storageClass"] = r.persistence.storage_class
    return {
        # A mirror registry is "relocated" for the chart's image guard and would fail the render.
        "global": {"security": {"allowInsecureImages": relocated}},
        # The DB layout on every Redis object: operators see it, and the policy pack checks ZITADEL against it.
        "commonAnnotations": db_layout_annotations(cfg),
        "architecture": "replication",
        "image": _image(r.images.redis),
        "auth": {
            "enabled": True,
            "sentinel": True,
            # No chart Secret: an emptyDir the password-copy init container fills from the Vault agent's file.
            "usePasswordFiles": True,
            "usePasswordFileFromSecret": False,
        },
        "commonConfiguration": redis_settings.redis_conf_text(r),
        "replica": {
            "replicaCount": r.nodes,
            # The injector rejects pods without a token, and the master Service's kubectl sidecar needs it.
            "automountServiceAccountToken": True,
            "disableCommands": list(redis_settings.disabled_commands()),
            "podAnnotations": {
                **injector_annotations(
                    role=names.VaultNames.of(cfg).redis_role,
                    auth_path=cfg.vault.kubernetes_auth_path,
                    files=[redis_password_file(cfg)],
                    init_first=True,
                ),
                **({names.REDIS_PASSWORD_VERSION_ANNOTATION: password_version} if password_version is not None else {}),
            },
            "initContainers": [_password_copy_container(cfg)],
            # Merged into the chart's (fsGroup 1001): the Vault agent containers the injector adds set no seccomp
            # profile of their own, so Pod Security "restricted" needs it at pod level.
            "podSecurityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "resources": r.resources.redis.as_k8s(),
            "persistence": persistence,
            "podAntiAffinityPreset": r.pod_anti_affinity,
            "pdb": {"create": True, "maxUnavailable": 1},
        },
        "sentinel": {
            "enabled": True,
            # Sentinel mode's StatefulSet: its volumes (AOF, the event streams) outlive a deleted StatefulSet or a
            # scale-down (Kubernetes' default too, stated here so that a chart default cannot change it).
            "persistentVolumeClaimRetentionPolicy": {"enabled": True, "whenDeleted": "Retain", "whenScaled": "Retain"},
            "image": _image(r.images.sentinel),
            "masterSet": sentinel.master_set,
            "quorum": sentinel.quorum,
            "downAfterMilliseconds": sentinel.down_after_milliseconds,
            "failoverTimeout": sentinel.failover_timeout,
            "parallelSyncs": sentinel.parallel_syncs,
            # ZITADEL's client takes one address and cannot ask Sentinel: it needs a Service that follows the master.
            "masterService": {"enabled": True},
            "resources": r.resources.sentinel.as_k8s(),
        },
        "rbac": {"create": True},
        "serviceAccount": {"create": True, "name": names.REDIS_SERVICE_ACCOUNT},
        "metrics": {
            "enabled": r.metrics,
            "image": _image(r.images.exporter),
            "resources": r.resources.metrics.as_k8s(),
        },
        "kubectl": {"image": _image(r.images.kubectl), "resources": r.resources.kubectl.as_k8s()},
        "volumePermissions": {"image": _image(r.images.os_shell)},
        "sysctl": {"image": _image(r.images.os_shell)},
        "networkPolicy": _network_policy(cfg),
    }


class RedisSentinel(pulumi.ComponentResource):
    """Namespace and Helm release of the Redis Sentinel cluster."""

    master_address: pulumi.Output[str]
    sentinel_address: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        *,
        vault_access: Sequence[pulumi.Resource],
        password_version: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("blinkchamber:identity:RedisSentinel", name, None, opts)
        namespace = ownership.namespace(names.REDIS_NAMESPACE, cfg, labels=pod_security_labels(cfg), parent=self)
        self.release = k8s.helm.v3.Release(
            names.REDIS_RELEASE,
            name=names.REDIS_RELEASE,
            namespace=namespace.metadata.name,
            values=redis_values(cfg, password_version),
            # Roll back a failed upgrade instead of leaving a half-updated Sentinel group.
            atomic=True,
            timeout=cfg.redis.release_timeout_seconds,
            **chart_args(cfg.redis.chart),
            # The pods' Vault agent needs its role, policy and secret before the first pod starts. Protected in prod:
            # deleting the release deletes the StatefulSet that holds the event streams.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *vault_access], protect=cfg.redis.protect),
        )
        domain = cfg.kubernetes.cluster_domain
        self.master_address = pulumi.Output.from_input(names.redis_master_address(domain))
        self.sentinel_address = pulumi.Output.from_input(names.sentinel_address(domain))
        self.register_outputs({"masterAddress": self.master_address, "sentinelAddress": self.sentinel_address})
