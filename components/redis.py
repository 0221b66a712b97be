"""Redis with Sentinel: the Bitnami chart as a Helm release, its password delivered by the Vault Agent Injector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from components import edge_pods, netpol, ownership, redis_acl, redis_settings
from components.helm import chart_args, image_values
from components.passwords import PASSWORD_ALPHABET
from components.peers import ClusterNetwork, PrometheusScraper, VaultEndpoint
from components.redis_acl import RedisUser
from components.vault_texts import InjectedFile, injector_annotations, password_copy_script, secret_value_template
from stacks import names
from stacks.config import RedisConfig
from stacks.dblayout import DbLayout

#: The Bitnami chart runs pod annotations through Helm's ``tpl``; ``{{`` would be read as Helm template code.
_TPL_SAFE_DELIMITERS = ("[[", "]]")
#: The copy runs as the chart's Redis user (``containerSecurityContext.runAsUser``).
_REDIS_UID = 1001


@dataclass(frozen=True)
class RedisArgs:
    """What the Redis Sentinel set needs: its own configuration section, who may reach it, and its Vault agent's
    login and password."""

    redis: RedisConfig
    #: Namespaces whose pods may reach Redis and Sentinel (ZITADEL's, then ``redis.clientNamespaces``).
    client_namespaces: tuple[str, ...]
    #: The edge's namespace: its ratelimit pods keep their counters in DB 0, through Sentinel.
    rate_limit_namespace: str
    #: The Vault endpoint the pods' agents reach (egress), the role they log in with, the password's KV v2 path.
    vault: VaultEndpoint
    vault_role: str
    password_path: str
    #: The KV v2 API path of the users' password hashes (``redis-acl``), and the client users themselves.
    acl_path: str
    users: tuple[RedisUser, ...]
    #: The KV v2 API path of the exporter user's password.
    exporter_password_path: str
    cluster: ClusterNetwork
    #: Recorded on every Redis object for operators (the events DB, ZITADEL's cache block).
    db_layout: DbLayout
    namespaces: ownership.NamespacePolicy
    #: The only source the exporter's port admits, and whether the chart renders its ServiceMonitor.
    prometheus: PrometheusScraper
    #: The event streams (in ``db_layout.events_db``) the exporter reports on; none without the relay.
    event_streams: tuple[str, ...] = ()


def redis_password_file(password_path: str) -> InjectedFile:
    """The agent's file with the password at ``password_path`` (a KV v2 API path), in ``tpl``-safe delimiters."""
    return InjectedFile(
        name=names.REDIS_INJECT_NAME,
        vault_path=password_path,
        template=secret_value_template(password_path, names.REDIS_SECRET_KEY, _TPL_SAFE_DELIMITERS),
        delimiters=_TPL_SAFE_DELIMITERS,
    )


def acl_files(acl_path: str, users: Sequence[RedisUser]) -> list[InjectedFile]:
    """redis-server's ACL file and the sentinels' client users, from the hashes at ``acl_path``: the agent fails
    (``error-on-missing-key``) rather than render a user without its hash."""
    files = (
        (names.REDIS_ACL_INJECT_NAME, redis_acl.acl_lines),
        (names.SENTINEL_ACL_INJECT_NAME, redis_acl.sentinel_lines),
    )
    return [
        InjectedFile(
            name=name,
            vault_path=acl_path,
            template=redis_acl.agent_template(partial(lines, users), acl_path, _TPL_SAFE_DELIMITERS),
            delimiters=_TPL_SAFE_DELIMITERS,
        )
        for name, lines in files
    ]


def exporter_password_file(password_path: str) -> InjectedFile:
    """redis_exporter's password file: a JSON map of the address it scrapes to the ``exporter`` user's password."""
    left, right = _TPL_SAFE_DELIMITERS
    value = f"{left} .Data.data.{names.REDIS_SECRET_KEY} | toJSON {right}"
    body = ",".join(f'"{address}":{value}' for address in names.REDIS_EXPORTER_ADDRESSES)
    return InjectedFile(
        name=names.REDIS_EXPORTER_INJECT_NAME,
        vault_path=password_path,
        template=f'{left}- with secret "{password_path}" -{right}{{{body}}}{left}- end {right}',
        delimiters=_TPL_SAFE_DELIMITERS,
    )


def exporter_args(streams: Sequence[str] = (), db: int = 0) -> dict[str, str]:
    """The exporter sidecar's flags (``metrics.extraArgs``; a flag beats the chart's ``REDIS_USER=default`` and the
    password it exports from the chart's file): its own user, its password from its file, and no ``CONFIG GET``;
    with ``streams``, their length, groups, lag and pending entries (in DB ``db``) for the alerts."""
    args = {
        "redis.user": names.REDIS_EXPORTER_USER,
        # Empty, so that redis_exporter reads its password file.
        "redis.password": "",
        "redis.password-file": f"{names.VAULT_SECRETS_DIR}/{names.REDIS_EXPORTER_INJECT_NAME}",
        # CONFIG GET * would answer masterauth, the chart's own password; maxmemory comes from INFO.
        "config-command": "-",
    }
    if streams:
        # Exact names, each ``db<n>=<name>`` (URL-escaped: redis_exporter unescapes them): no SCAN.
        args["check-single-streams"] = ",".join(f"db{db}={quote(stream, safe=':')}" for stream in streams)
    return args


def _password_copy_container(redis: RedisConfig) -> dict[str, Any]:
    """Copies the agent's file into the chart's emptyDir, where every container, probe and hook reads it."""
    source = f"{names.VAULT_SECRETS_DIR}/{names.REDIS_INJECT_NAME}"
    target = f"{names.REDIS_PASSWORD_DIR}/{names.REDIS_PASSWORD_FILE}"
    return {
        "name": "copy-redis-password",
        "image": redis.images.redis.reference,
        # Fails closed unless the agent's file is exactly one generated password (README: vault-k8s >= 1.5.0).
        "command": [
            "/bin/sh",
            "-ec",
            password_copy_script(source, target, alphabet=PASSWORD_ALPHABET, length=redis.password_length),
        ],
        "securityContext": {
            "runAsUser": _REDIS_UID,
            "runAsGroup": _REDIS_UID,
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": redis.resources.password_copy.as_k8s(),
        "volumeMounts": [{"name": names.REDIS_PASSWORD_VOLUME, "mountPath": names.REDIS_PASSWORD_DIR}],
    }


def _network_policy(args: RedisArgs) -> dict[str, Any]:
    """Ingress only from the client namespaces and the edge's ratelimit pods, and from the configured Prometheus on the
    exporter's port; egress only to DNS, Vault and the API."""
    return {
        "enabled": True,
        "allowExternal": False,
        "allowExternalEgress": False,
        # The chart's own rule for the exporter's port (9121) admits any source unless it names one, and cannot name
        # none: it names the configured Prometheus, whether or not the stack declares monitors for it.
        "metrics": {
            "allowExternal": False,
            "ingressNSMatchLabels": {netpol.NAMESPACE_NAME_LABEL: args.prometheus.namespace},
            "ingressNSPodMatchLabels": dict(args.prometheus.pod_labels),
        },
        "extraIngress": [
            {
                "ports": netpol.ports(names.REDIS_PORT, names.SENTINEL_PORT),
                "from": [
                    *(netpol.namespace(namespace) for namespace in args.client_namespaces),
                    # The gateway's rate-limit counters (DB 0), through Sentinel: only the ratelimit pods.
                    netpol.in_namespace(args.rate_limit_namespace, edge_pods.RATE_LIMIT_LABELS),
                ],
            }
        ],
        "extraEgress": [
            # The chart opens DNS over UDP only; answers too large for UDP are retried over TCP.
            {"ports": netpol.ports(netpol.DNS_PORT), "to": [netpol.namespace(args.cluster.dns_namespace)]},
            # The Vault agent init container logs in and fetches the password.
            {"ports": netpol.ports(args.vault.port), "to": [netpol.namespace(args.vault.namespace)]},
            # The kubectl sidecar relabels the master pod so that the master Service follows failovers.
            netpol.api_server_egress(args.cluster),
        ],
    }


def db_layout_annotations(layout: DbLayout) -> dict[str, str]:
    return {
        names.EVENTS_DB_ANNOTATION: str(layout.events_db),
        names.CACHE_BLOCK_ANNOTATION: f"{layout.cache_block.start}-{layout.cache_block.stop - 1}",
    }


def redis_values(
    args: RedisArgs,
    password_version: pulumi.Input[str] | None = None,
    acl_version: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """The Bitnami Redis chart values of a stack. No secret: the passwords reach the pods through Vault.

    ``password_version`` and ``acl_version`` (the KV versions of the password and of the users' hashes, never the
    values) go on the pod template: a new password then rolls every node; otherwise the values would not change and
    pods would take it one crash at a time.
    """
    r = args.redis
    sentinel = redis_settings.sentinel_settings(r)
    relocated = any(image.registry != names.BITNAMI_REGISTRY for _, image in r.images)
    persistence: dict[str, Any] = {"enabled": r.persistence.enabled, "size": r.persistence.size}
    if r.persistence.storage_class:
        persistence["storageClass"] = r.persistence.storage_class
    return {
        # An image from another registry than Bitnami's (the project's own Redis build, a mirror) is "substituted"
        # for the chart's image guard, which would fail the render.
        "global": {"security": {"allowInsecureImages": relocated}},
        # The DB layout on every Redis object, for operators (kubectl describe).
        "commonAnnotations": db_layout_annotations(args.db_layout),
        "architecture": "replication",
        "image": image_values(r.images.redis, registry_apart=True),
        "auth": {
            "enabled": True,
            "sentinel": True,
            # No chart Secret: an emptyDir the password-copy init container fills from the Vault agent's file.
            "usePasswordFiles": True,
            "usePasswordFileFromSecret": False,
        },
        # The users from the Vault agent's file: with an ACL file redis-server ignores the chart's --requirepass, and
        # the file gives ``default`` the same password.
        "commonConfiguration": redis_settings.redis_conf_text(r)
        + f"aclfile {names.VAULT_SECRETS_DIR}/{names.REDIS_ACL_INJECT_NAME}\n",
        "replica": {
            "replicaCount": r.nodes,
            # The injector rejects pods without a token, and the master Service's kubectl sidecar needs it.
            "automountServiceAccountToken": True,
            # FLUSHALL renamed to "" on every node (replica.disableCommands reaches the master too).
            "disableCommands": list(names.REDIS_DISABLED_COMMANDS),
            "podAnnotations": {
                **injector_annotations(
                    role=args.vault_role,
                    auth_path=args.vault.auth_path,
                    files=[
                        redis_password_file(args.password_path),
                        *acl_files(args.acl_path, args.users),
                        exporter_password_file(args.exporter_password_path),
                    ],
                    init_first=True,
                ),
                **({names.REDIS_PASSWORD_VERSION_ANNOTATION: password_version} if password_version is not None else {}),
                **({names.REDIS_ACL_VERSION_ANNOTATION: acl_version} if acl_version is not None else {}),
            },
            "initContainers": [_password_copy_container(r)],
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
            "image": image_values(r.images.sentinel, registry_apart=True),
            "masterSet": sentinel.master_set,
            "quorum": sentinel.quorum,
            "downAfterMilliseconds": sentinel.down_after_milliseconds,
            "failoverTimeout": sentinel.failover_timeout,
            "parallelSyncs": sentinel.parallel_syncs,
            # ZITADEL's client takes one address and cannot ask Sentinel: it needs a Service that follows the master.
            "masterService": {"enabled": True},
            # The clients' Sentinel users (discovery only), rendered by the Vault agent; the chart's own requirepass
            # stays the ``default`` user's, for the sentinels, the chart's scripts and the master-label sidecar.
            "configuration": f"include {names.VAULT_SECRETS_DIR}/{names.SENTINEL_ACL_INJECT_NAME}\n",
            "resources": r.resources.sentinel.as_k8s(),
        },
        "rbac": {"create": True},
        "serviceAccount": {"create": True, "name": names.REDIS_SERVICE_ACCOUNT},
        "metrics": {
            "enabled": r.metrics,
            "image": image_values(r.images.exporter, registry_apart=True),
            "extraArgs": exporter_args(args.event_streams, args.db_layout.events_db),
            # The chart's ServiceMonitor (the metrics Service, port http-metrics), labelled for Prometheus's selector.
            "serviceMonitor": {
                "enabled": args.prometheus.monitors,
                "additionalLabels": dict(args.prometheus.selector_labels),
                "interval": args.prometheus.scrape_interval,
            },
            "resources": r.resources.metrics.as_k8s(),
        },
        "kubectl": {
            "image": image_values(r.images.kubectl, registry_apart=True),
            "resources": r.resources.kubectl.as_k8s(),
        },
        "volumePermissions": {"image": image_values(r.images.os_shell, registry_apart=True)},
        "sysctl": {"image": image_values(r.images.os_shell, registry_apart=True)},
        "networkPolicy": _network_policy(args),
    }


class RedisSentinel(pulumi.ComponentResource):
    """Namespace and Helm release of the Redis Sentinel cluster."""

    master_address: pulumi.Output[str]
    sentinel_address: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: RedisArgs,
        *,
        vault_objects_ready: Sequence[pulumi.Resource],
        password_version: pulumi.Input[str] | None = None,
        acl_version: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``vault_objects_ready``: the Redis pods' Vault secrets, policy and role; ``password_version`` and
        ``acl_version``: the KV versions of the password and of the users' hashes (never their values)."""
        super().__init__(names.component_type("RedisSentinel"), name, None, opts)
        r = args.redis
        namespace = ownership.namespace(names.REDIS_NAMESPACE, args.namespaces, parent=self)
        self.release = k8s.helm.v3.Release(
            names.REDIS_RELEASE,
            name=names.REDIS_RELEASE,
            namespace=namespace.metadata.name,
            values=redis_values(args, password_version, acl_version),
            # Roll back a failed upgrade instead of leaving a half-updated Sentinel group.
            atomic=True,
            timeout=r.release_timeout_seconds,
            **chart_args(r.chart),
            # The pods' Vault agent needs its role, policy and secret before the first pod starts. Protected in prod:
            # deleting the release deletes the StatefulSet that holds the event streams.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *vault_objects_ready], protect=r.protect),
        )
        domain = args.cluster.domain
        self.master_address = pulumi.Output.from_input(names.redis_master_address(domain))
        self.sentinel_address = pulumi.Output.from_input(names.sentinel_address(domain))
        self.register_outputs({"masterAddress": self.master_address, "sentinelAddress": self.sentinel_address})
