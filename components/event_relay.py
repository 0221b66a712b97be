"""The event relay: the bridge from ZITADEL's Event API into Redis's events DB, and its identity in ZITADEL.

In ZITADEL's namespace (Redis already admits that namespace; ZITADEL's Service is next door): a Deployment of
``events.relay.replicas`` bridges (one active through a lease in Redis, the others standing by), its ServiceAccount,
a metrics Service, a PDB, its ConfigMap (``relay.json``, no secret) and NetworkPolicies. In ZITADEL, through the
``pulumiverse-zitadel`` provider: a machine user with ``IAM_OWNER_VIEWER`` on the instance only (``events.read``)
and its personal access token, which goes to Vault and reaches the pods through the Vault Agent Injector.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault
import pulumiverse_zitadel as zitadel

from components import netpol
from components.isolation import REDIS_LABELS, SERVER_LABELS, ZITADEL_PORT
from components.peers import ClusterNetwork, VaultEndpoint, ZitadelEndpoint
from components.vault_texts import InjectedFile, injector_annotations, secret_value_template
from stacks import names
from stacks.capacity import StreamCaps
from stacks.config import EventsConfig, duration_seconds

#: The image's user (relay/Dockerfile).
RELAY_UID: Final = 10001
LABELS: Final = {
    "app.kubernetes.io/name": names.RELAY_NAME,
    "app.kubernetes.io/instance": names.RELAY_NAME,
    "app.kubernetes.io/component": "bridge",
}
#: How long a dead bridge's lease blocks its standby, and how often the holder renews it.
LEASE_TTL_S: Final = 10.0
LEASE_RENEW_S: Final = 3.0
_RUNTIME_DEFAULT: Final = {"type": "RuntimeDefault"}


@dataclass(frozen=True)
class EventRelayArgs:
    """What the bridge needs: its own configuration section, the ZITADEL it reads, the Redis it writes, its Vault
    agent's login and secrets."""

    events: EventsConfig
    #: The bridge runs in ZITADEL's namespace, beside the Service it reads the Event API from.
    zitadel: ZitadelEndpoint
    #: ``host:port`` of every Sentinel of the Redis set (the list the edge's ratelimit uses too).
    sentinels: tuple[str, ...]
    #: The Vault endpoint the pods' agents reach (egress) and the role they log in with.
    vault: VaultEndpoint
    vault_role: str
    #: The KV v2 API paths the agent renders (the Redis password, the bridge's ZITADEL token), and the name of the
    #: token's secret in the KV mount, which the component writes.
    redis_password_path: str
    token_path: str
    token_secret: str
    cluster: ClusterNetwork
    #: The streams' caps: explicit, or derived from Redis's maxmemory (``StackConfig.stream_caps``).
    stream_caps: StreamCaps


def instance_name(args: EventRelayArgs) -> str:
    """The name in the cursor and dedup keys (prod must set it: a rule); changing it replays every event."""
    return args.events.source.instance or args.zitadel.external_domain


def sentinel_endpoints(sentinels: Sequence[str]) -> list[list[str | int]]:
    """Every Sentinel as ``[host, port]`` (redis-py's Sentinel client)."""
    return [[host, int(port)] for host, port in (address.rsplit(":", 1) for address in sentinels)]


def relay_document(args: EventRelayArgs) -> dict[str, Any]:
    """``relay.json``: everything the bridge needs, durations in seconds, credentials only as file paths."""
    e = args.events
    s, p = e.source, e.publishing
    zitadel_host = names.service_host(names.ZITADEL_SERVICE, args.zitadel.namespace, args.cluster.domain)
    return {
        "instance": instance_name(args),
        "zitadel": {
            "url": f"http://{zitadel_host}:{names.ZITADEL_SERVICE_PORT}",
            "instanceHost": args.zitadel.external_domain,
            "tokenFile": f"{names.VAULT_SECRETS_DIR}/{names.RELAY_PAT_INJECT_NAME}",
        },
        "redis": {
            "sentinels": sentinel_endpoints(args.sentinels),
            "masterSet": names.SENTINEL_MASTER_SET,
            "db": e.db,
            # Its own ACL user on Redis and on the sentinels; the file holds that user's password.
            "username": names.REDIS_RELAY_USER,
            "passwordFile": f"{names.VAULT_SECRETS_DIR}/{names.REDIS_INJECT_NAME}",
        },
        "streams": {
            "high": e.streams.high,
            "normal": e.streams.normal,
            "low": e.streams.low,
            "deadLetter": e.streams.dead_letter,
        },
        "source": {
            "pollInterval": duration_seconds(s.poll_interval),
            "clockSkew": duration_seconds(s.clock_skew),
            "pageSize": s.page_size,
            "lookBackWindow": duration_seconds(s.look_back_window),
            "lookBackPeriod": duration_seconds(s.look_back_period),
            "dedupTtl": duration_seconds(s.dedup_ttl),
            "maxEventBytes": s.max_event_bytes,
            "startFrom": s.start_from,
        },
        "publishing": {
            "batchSize": p.batch_size,
            "maxRetries": p.max_retries,
            "retryBackoff": duration_seconds(p.retry_backoff),
            "maxRetryBackoff": duration_seconds(p.max_retry_backoff),
            "requireReplicaAck": p.require_replica_ack,
            "maxStreamLength": args.stream_caps.max_stream_length,
            "deadLetterMaxLength": args.stream_caps.dead_letter_max_length,
            "maxStreamAge": duration_seconds(e.capacity.max_stream_age),
            "trimInterval": duration_seconds(e.capacity.trim_interval),
        },
        "lease": {"ttl": LEASE_TTL_S, "renewEvery": LEASE_RENEW_S},
        "metricsPort": names.RELAY_METRICS_PORT,
        # In the pod: the kubelet's probes and Prometheus come from outside the pod.
        "metricsHost": "0.0.0.0",
    }


def relay_config_text(args: EventRelayArgs) -> str:
    return json.dumps(relay_document(args), indent=2, sort_keys=True) + "\n"


def injected_files(args: EventRelayArgs) -> list[InjectedFile]:
    """The Redis password and the ZITADEL token, each a bare value (no trailing newline)."""
    return [
        InjectedFile(
            name=names.REDIS_INJECT_NAME,
            vault_path=args.redis_password_path,
            template=secret_value_template(args.redis_password_path, names.REDIS_SECRET_KEY),
        ),
        InjectedFile(
            name=names.RELAY_PAT_INJECT_NAME,
            vault_path=args.token_path,
            template=secret_value_template(args.token_path, names.RELAY_SECRET_KEY),
        ),
    ]


def pod_annotations(args: EventRelayArgs, redis_password_version: pulumi.Input[str] | None = None) -> dict[str, Any]:
    """The injector's annotations, the config digest and the Redis password's KV version (never the value): a new
    password rolls the bridges as it rolls Redis and ZITADEL, and the new pods' agents render the new file."""
    annotations: dict[str, Any] = injector_annotations(
        role=args.vault_role, auth_path=args.vault.auth_path, files=injected_files(args)
    )
    # A new relay.json restarts the pods (a ConfigMap change alone would not).
    annotations[names.RELAY_CONFIG_DIGEST_ANNOTATION] = hashlib.sha256(relay_config_text(args).encode()).hexdigest()
    if redis_password_version is not None:
        annotations[names.REDIS_PASSWORD_VERSION_ANNOTATION] = redis_password_version
    return annotations


def network_policies(args: EventRelayArgs) -> list[dict[str, Any]]:
    """The bridge reaches ZITADEL, Redis and its sentinels, Vault and DNS; nothing reaches it but the configured
    Prometheus, on its metrics port (``components/observability.py``). ZITADEL's namespace denies everything else
    already; a second policy lets the bridge into ZITADEL's API."""
    relay = netpol.pods(LABELS)
    server = netpol.pods(SERVER_LABELS)
    namespace = args.zitadel.namespace
    return [
        netpol.policy(
            namespace,
            names.RELAY_NAME,
            relay,
            ingress=[],
            egress=[
                # The pods' port: a policy sees the connection after the Service has translated it.
                {"to": [{"podSelector": server}], "ports": netpol.ports(ZITADEL_PORT)},
                {
                    "to": [netpol.in_namespace(names.REDIS_NAMESPACE, REDIS_LABELS)],
                    "ports": netpol.ports(names.REDIS_PORT, names.SENTINEL_PORT),
                },
                {"to": [netpol.namespace(args.vault.namespace)], "ports": netpol.ports(args.vault.port)},
                netpol.dns_egress(args.cluster.dns_namespace),
            ],
        ),
        netpol.policy(
            namespace,
            f"zitadel-from-{names.RELAY_NAME}",
            server,
            ingress=[{"from": [{"podSelector": relay}], "ports": netpol.ports(ZITADEL_PORT)}],
        ),
    ]


def deployment_spec(args: EventRelayArgs, redis_password_version: pulumi.Input[str] | None = None) -> dict[str, Any]:
    r = args.events.relay
    probe = {"port": names.RELAY_METRICS_PORT}
    container = {
        "name": names.RELAY_NAME,
        "image": r.image.reference,
        "args": ["run"],
        "env": [{"name": "RELAY_CONFIG", "value": f"{names.RELAY_CONFIG_DIR}/{names.RELAY_CONFIG_FILE}"}],
        "ports": [{"name": "metrics", "containerPort": names.RELAY_METRICS_PORT, "protocol": "TCP"}],
        # Ready = Redis answers (a standby is ready too: readiness gates rollouts, not leadership).
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": r.resources.as_k8s(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RELAY_UID,
            "runAsGroup": RELAY_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": _RUNTIME_DEFAULT,
        },
        "volumeMounts": [{"name": "config", "mountPath": names.RELAY_CONFIG_DIR, "readOnly": True}],
    }
    return {
        "replicas": r.replicas,
        "selector": {"matchLabels": dict(LABELS)},
        "template": {
            "metadata": {"labels": dict(LABELS), "annotations": pod_annotations(args, redis_password_version)},
            "spec": {
                "serviceAccountName": names.RELAY_SERVICE_ACCOUNT,
                # The Vault Agent Injector logs in with the pod's token.
                "automountServiceAccountToken": True,
                # Pod level, so that the injected Vault agent container is covered as well.
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RELAY_UID,
                    "fsGroup": RELAY_UID,
                    "seccompProfile": _RUNTIME_DEFAULT,
                },
                # SIGTERM lets the active bridge finish its page and release the lease.
                "terminationGracePeriodSeconds": 30,
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": dict(LABELS)},
                                },
                            }
                        ]
                    }
                },
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": names.RELAY_NAME}}],
            },
        },
    }


#: What the read of the admin key's Secret keeps only encrypted in the stack's state: its data, and its metadata too,
#: because the chart's setup job writes the Secret with ``kubectl apply``, whose annotation
#: ``kubectl.kubernetes.io/last-applied-configuration`` repeats the key in plain text.
ADMIN_SECRET_OUTPUTS: Final = ["data", "stringData", "metadata"]


def _admin_key(data: Any) -> str:
    """The admin machine key (JSON) from the data of the Secret the chart's setup job writes."""
    if not data:  # under the offline plan's mocks a read returns nothing
        return ""
    if names.ZITADEL_ADMIN_SECRET_KEY not in data:
        raise ValueError(f"Secret {names.ZITADEL_ADMIN_SECRET} has no key {names.ZITADEL_ADMIN_SECRET_KEY}")
    return base64.b64decode(data[names.ZITADEL_ADMIN_SECRET_KEY]).decode()


def _secret_json(token: pulumi.Input[str]) -> pulumi.Output[str]:
    """The KV v2 document of the token, a Pulumi secret from end to end."""
    document = pulumi.Output.from_input(token).apply(lambda t: json.dumps({names.RELAY_SECRET_KEY: t}))
    return pulumi.Output.secret(document)


class EventRelay(pulumi.ComponentResource):
    """The relay's identity in ZITADEL and Vault, and its Kubernetes objects."""

    def __init__(
        self,
        name: str,
        args: EventRelayArgs,
        *,
        vault_provider: vault.Provider,
        kv_mount: pulumi.Input[str],
        admin_key: pulumi.Output[str] | None,
        redis_password_version: pulumi.Input[str] | None,
        zitadel_release: pulumi.CustomResource,
        vault_objects_ready: Sequence[pulumi.Resource],
        redis_ready: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``admin_key``: the first instance's admin machine key, when the stack's configuration holds one (else the
        Secret the chart's setup job writes is read); ``vault_objects_ready``: the bridge's Vault policy and role;
        ``redis_ready``: the Redis release."""
        super().__init__(names.component_type("EventRelay"), name, None, opts)
        namespace = args.zitadel.namespace
        child = pulumi.ResourceOptions(parent=self)

        # --- identity in ZITADEL ------------------------------------------------------------------------------------
        if admin_key is None:
            # Read after the release: its setup job writes the Secret. Its ID is unknown until the release exists,
            # so a first preview skips the read instead of failing on a Secret that is not there yet.
            admin_secret = k8s.core.v1.Secret.get(
                "zitadel-admin-key",
                pulumi.Output.all(zitadel_release.id).apply(lambda _: f"{namespace}/{names.ZITADEL_ADMIN_SECRET}"),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[zitadel_release], additional_secret_outputs=ADMIN_SECRET_OUTPUTS
                ),
            )
            admin_key = pulumi.Output.secret(admin_secret.data.apply(_admin_key))
        api = args.events.relay.admin_api
        z = args.zitadel
        provider = zitadel.Provider(
            "zitadel",
            domain=api.domain or z.external_domain,
            port=str(api.port or z.external_port),
            insecure=api.insecure if api.insecure is not None else not z.external_secure,
            jwt_profile_json=admin_key,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[zitadel_release]),
        )
        in_zitadel = pulumi.ResourceOptions(parent=self, provider=provider)
        user = zitadel.MachineUser(
            names.RELAY_MACHINE_USER,
            user_name=names.RELAY_MACHINE_USER,
            name="Event relay",
            description="Reads the instance's events (Event API) into Redis; IAM_OWNER_VIEWER only",
            access_token_type="ACCESS_TOKEN_TYPE_BEARER",
            opts=in_zitadel,
        )
        member = zitadel.InstanceMember(
            names.RELAY_MACHINE_USER, user_id=user.id, roles=[names.RELAY_ZITADEL_ROLE], opts=in_zitadel
        )
        token = zitadel.PersonalAccessToken(
            names.RELAY_MACHINE_USER,
            user_id=user.id,
            org_id=cast(pulumi.Output[str], user.org_id),
            opts=pulumi.ResourceOptions.merge(in_zitadel, pulumi.ResourceOptions(depends_on=[member])),
        )
        token_secret = vault.kv.SecretV2(
            names.RELAY_SECRET_NAME,
            mount=kv_mount,
            name=args.token_secret,
            data_json=_secret_json(token.token),
            opts=pulumi.ResourceOptions(parent=self, provider=vault_provider),
        )

        # --- Kubernetes -----------------------------------------------------------------------------------------------

        def meta(object_name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=namespace, labels=dict(LABELS))

        account = k8s.core.v1.ServiceAccount(
            names.RELAY_SERVICE_ACCOUNT,
            metadata=meta(names.RELAY_SERVICE_ACCOUNT),
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[zitadel_release]),
        )
        config_map = k8s.core.v1.ConfigMap(
            names.RELAY_NAME,
            metadata=meta(names.RELAY_NAME),
            data={names.RELAY_CONFIG_FILE: relay_config_text(args)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[zitadel_release]),
        )
        policies = netpol.declare(
            network_policies(args), namespace, pulumi.ResourceOptions(parent=self, depends_on=[zitadel_release])
        )
        self.deployment = k8s.apps.v1.Deployment(
            names.RELAY_NAME,
            metadata=meta(names.RELAY_NAME),
            spec=cast(Any, deployment_spec(args, redis_password_version)),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    account,
                    config_map,
                    *policies,
                    token_secret,
                    *vault_objects_ready,
                    zitadel_release,
                    *redis_ready,
                ],
            ),
        )
        k8s.core.v1.Service(
            names.RELAY_NAME,
            metadata=meta(names.RELAY_NAME),
            spec=cast(
                Any,
                {
                    "selector": dict(LABELS),
                    "ports": [{"name": "metrics", "port": names.RELAY_METRICS_PORT, "targetPort": "metrics"}],
                },
            ),
            opts=child,
        )
        if args.events.relay.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(
                names.RELAY_NAME,
                metadata=meta(names.RELAY_NAME),
                spec=cast(Any, {"minAvailable": 1, "selector": {"matchLabels": dict(LABELS)}}),
                opts=child,
            )
        self.register_outputs({"machineUser": names.RELAY_MACHINE_USER, "instance": instance_name(args)})
