"""From a stack's configuration to each component's arguments.

The one module of the package that reads ``StackConfig``: every component takes only its typed arguments (its own
configuration section and what it must know of its neighbours). ``__main__.py`` composes the components with these;
the tests build the same arguments for the plain values functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pulumi

from components import alerts, redis_acl
from components.ci_access import CiAccessArgs
from components.edge import EdgeArgs, ZitadelRoutePoliciesArgs
from components.edge_objects import GatewayListener
from components.event_relay import EventRelayArgs
from components.observability import ObservabilityArgs
from components.ownership import ClusterTarget, NamespacePolicy
from components.peers import ClusterNetwork, PrometheusScraper, VaultEndpoint, ZitadelEndpoint
from components.redis import RedisArgs
from components.redis_acl import RedisUser
from components.vault import VAULT_ACCESS_TYPE, VaultAccessArgs, pod_roles
from components.zitadel import VaultValue, ZitadelArgs
from components.zitadel_database import BundledPostgresArgs
from stacks import names
from stacks.config import StackConfig

#: The Vault component's name: part of the URN of every resource under it.
VAULT_ACCESS: Final = "vault"


def cluster_target(cfg: StackConfig) -> ClusterTarget:
    """The kubeconfig context and the provider's identity (unset: the stack's name)."""
    return ClusterTarget(cfg.kubernetes.context, cfg.kubernetes.cluster_identifier or cfg.stack)


def namespace_policy(cfg: StackConfig) -> NamespacePolicy:
    k = cfg.kubernetes
    return NamespacePolicy(cluster_target(cfg), k.adopt_namespaces, k.protect_namespaces, k.pod_security_version)


def cluster_network(cfg: StackConfig) -> ClusterNetwork:
    k = cfg.kubernetes
    return ClusterNetwork(k.cluster_domain, k.dns_namespace, k.api_server_cidrs, k.api_server_ports)


def vault_endpoint(cfg: StackConfig) -> VaultEndpoint:
    return VaultEndpoint(cfg.vault.namespace, cfg.vault.port, cfg.vault.kubernetes_auth_path)


def zitadel_endpoint(cfg: StackConfig) -> ZitadelEndpoint:
    z = cfg.zitadel
    return ZitadelEndpoint(z.namespace, z.external_domain, z.external_port, z.external_secure, z.public_url)


def sentinels(cfg: StackConfig) -> tuple[str, ...]:
    return tuple(names.sentinel_addresses(cfg.kubernetes.cluster_domain, cfg.redis.nodes))


def vault_access_args(cfg: StackConfig) -> VaultAccessArgs:
    vault_names = names.VaultNames.of(cfg)
    pods = pod_roles(vault_names, zitadel_namespace=cfg.zitadel.namespace, relay=cfg.events.relay.enabled)
    users = tuple(user.name for user in redis_users(cfg))
    return VaultAccessArgs(
        cfg.vault, vault_names, pods, cfg.redis.password_length, cfg.zitadel.protect_masterkey, users
    )


def ci_access_args(cfg: StackConfig) -> CiAccessArgs:
    access = vault_access_args(cfg)
    n = access.names
    written = [
        n.redis_secret,
        n.redis_acl_secret,
        *(n.redis_user_secret(user) for user in access.redis_users),
        n.masterkey_secret,
    ]
    if cfg.zitadel.database.dsn_written_by_stack:
        written.append(n.database_secret)
    if cfg.events.relay.enabled:
        written.append(n.relay_secret)
    return CiAccessArgs(cfg.vault, n, access.pods, tuple(written))


def redis_users(cfg: StackConfig) -> tuple[RedisUser, ...]:
    """The Redis ACL users of the stack's clients: their keys follow the stream names and the counters' prefix.
    Without the relay there are no events: no bridge user and no consumer user."""
    s = cfg.events.streams
    users = redis_acl.client_users((s.high, s.normal, s.low, s.dead_letter), cfg.edge.rate_limit.key_prefix)
    without_events = {names.REDIS_RELAY_USER, names.REDIS_CONSUMER_USER}
    return tuple(u for u in users if cfg.events.relay.enabled or u.name not in without_events)


def redis_args(cfg: StackConfig) -> RedisArgs:
    n = names.VaultNames.of(cfg)
    return RedisArgs(
        redis=cfg.redis,
        client_namespaces=(cfg.zitadel.namespace, *cfg.redis.client_namespaces),
        rate_limit_namespace=cfg.edge.namespace,
        vault=vault_endpoint(cfg),
        vault_role=n.redis_role,
        password_path=n.redis_path,
        acl_path=n.redis_acl_path,
        users=redis_users(cfg),
        exporter_password_path=n.redis_user_path(names.REDIS_EXPORTER_USER),
        cluster=cluster_network(cfg),
        db_layout=cfg.db_layout,
        namespaces=namespace_policy(cfg),
        prometheus=prometheus_scraper(cfg),
        event_streams=event_streams(cfg),
    )


def event_streams(cfg: StackConfig) -> tuple[str, ...]:
    """The streams the Redis exporter reports on for the alerts (the dead letter last); none without the relay."""
    s = cfg.events.streams
    return (s.high, s.normal, s.low, s.dead_letter) if cfg.events.relay.enabled else ()


def bundled_postgres_args(cfg: StackConfig) -> BundledPostgresArgs | None:
    """``None`` unless the stack bundles Postgres (dev)."""
    if not cfg.zitadel.database.bundled:
        return None
    return BundledPostgresArgs(cfg.zitadel.namespace, cfg.kubernetes.cluster_domain)


def former_postgres_parent() -> pulumi.Output[str]:
    """The URN under which existing stacks hold the bundled Postgres's passwords: the Vault component's."""
    return pulumi.create_urn(VAULT_ACCESS, VAULT_ACCESS_TYPE)


def zitadel_args(cfg: StackConfig) -> ZitadelArgs:
    n = names.VaultNames.of(cfg)
    return ZitadelArgs(
        zitadel=cfg.zitadel,
        redis_password=VaultValue(n.redis_user_path(names.REDIS_ZITADEL_USER), names.REDIS_SECRET_KEY),
        database_dsn=VaultValue(n.database_path, n.database_key),
        masterkey=VaultValue(n.masterkey_path, names.ZITADEL_MASTERKEY_VAULT_KEY),
        vault=vault_endpoint(cfg),
        vault_role=n.zitadel_role,
        redis_master_address=names.redis_master_address(cfg.kubernetes.cluster_domain),
        breaker_timeout=cfg.breaker_timeout,
        gateway=GatewayListener.of(cfg.edge),
        cluster=cluster_network(cfg),
        namespaces=namespace_policy(cfg),
    )


def edge_args(cfg: StackConfig) -> EdgeArgs:
    return EdgeArgs(cfg.edge, zitadel_endpoint(cfg), sentinels(cfg), cluster_network(cfg), namespace_policy(cfg))


def zitadel_route_policies_args(cfg: StackConfig) -> ZitadelRoutePoliciesArgs:
    return ZitadelRoutePoliciesArgs(cfg.edge, zitadel_endpoint(cfg))


def event_relay_args(cfg: StackConfig) -> EventRelayArgs:
    n = names.VaultNames.of(cfg)
    return EventRelayArgs(
        events=cfg.events,
        zitadel=zitadel_endpoint(cfg),
        sentinels=sentinels(cfg),
        vault=vault_endpoint(cfg),
        vault_role=n.relay_role,
        redis_password_path=n.redis_user_path(names.REDIS_RELAY_USER),
        token_path=n.relay_token_path,
        token_secret=n.relay_secret,
        cluster=cluster_network(cfg),
        stream_caps=cfg.stream_caps,
    )


def prometheus_scraper(cfg: StackConfig) -> PrometheusScraper:
    """The Prometheus that scrapes the tier: the one source every metrics port admits (``observability.prometheus``),
    and whether the stack declares the Operator's objects for it."""
    o = cfg.observability
    p = o.prometheus
    return PrometheusScraper(
        namespace=p.namespace,
        pod_labels=tuple(sorted(p.pod_labels.items())),
        selector_labels=tuple(sorted(p.selector_labels.items())),
        scrape_interval=p.scrape_interval,
        monitors=o.enabled,
    )


def alert_args(cfg: StackConfig) -> alerts.AlertArgs:
    a = cfg.observability.alerts
    return alerts.AlertArgs(
        relay_enabled=cfg.events.relay.enabled,
        zitadel_namespace=cfg.zitadel.namespace,
        edge_namespace=cfg.edge.namespace,
        events_db=cfg.events.db,
        streams=cfg.events.streams,
        stream_caps=cfg.stream_caps,
        source=cfg.events.source,
        redis=cfg.redis,
        fail_closed=cfg.edge.rate_limit.fail_closed,
        alerts=a,
        runbook_base=alerts.runbook_base(a.runbook_url, cfg.vault.ci.repository),
    )


def alert_rule_groups(cfg: StackConfig) -> tuple[Mapping[str, object], ...]:
    """The PrometheusRule's ``spec.groups``: the alerts of ``components/alerts.py`` with the stack's thresholds."""
    return tuple(alerts.alert_groups(alert_args(cfg)))


def observability_args(cfg: StackConfig) -> ObservabilityArgs:
    d = cfg.observability.dashboards
    return ObservabilityArgs(
        prometheus=prometheus_scraper(cfg),
        zitadel_namespace=cfg.zitadel.namespace,
        edge_namespace=cfg.edge.namespace,
        relay=cfg.events.relay.enabled,
        rule_groups=alert_rule_groups(cfg),
        dashboards_namespace=d.namespace,
        dashboards_label=tuple(sorted(d.label.items())),
    )
