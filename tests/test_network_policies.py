"""Network policies: the evaluator on hand-made cases, then every flow of the tier under the policies the Redis chart
renders and the program declares for ZITADEL, with the stack's intent as literals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes_validate
import pytest

from stacks.defaults import deep_merge
from stacks.loader import StackConfigError, load
from stacks.stackfile import read_stack_config
from stacktools import mocked
from stacktools.plan import mask
from tests.conftest import PROJECT_DIR, record
from tests.netpol import Cluster, Pod, matches
from tests.rendering import pod_templates, rendered

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def policy(namespace: str, selector: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"p{len(spec)}", "namespace": namespace}, "spec": {"podSelector": selector, **spec}}


# --- the evaluator on small hand-made cases -------------------------------------------------------------------------

A = Pod("a", "ns1", {"app": "a"}, "10.0.0.1")
B = Pod("b", "ns1", {"app": "b"}, "10.0.0.2", ports={"http": 8080})
C = Pod("c", "ns2", {"app": "a"}, "10.0.1.1")
NAMESPACES = {"ns1": {"team": "x"}, "ns2": {"team": "y"}}


def cluster(*policies: dict[str, Any]) -> Cluster:
    return Cluster(policies, NAMESPACES, [A, B, C])


def test_no_policy_allows_everything() -> None:
    assert cluster().allowed(A, B, 80)
    assert cluster().allowed(C, "203.0.113.1", 22)


def test_default_deny_ingress_isolates_only_ingress() -> None:
    deny = policy("ns1", {}, policyTypes=["Ingress"])
    assert not cluster(deny).allowed(A, B, 80)
    assert not cluster(deny).allowed("203.0.113.1", B, 80)
    assert cluster(deny).allowed(B, "203.0.113.1", 443)  # egress is not isolated
    assert cluster(deny).allowed(B, C, 80)  # C's namespace has no policy


def test_policy_types_default_from_the_sections_present() -> None:
    ingress_only = policy("ns1", {"matchLabels": {"app": "b"}}, ingress=[])
    assert not cluster(ingress_only).allowed(A, B, 80)
    assert cluster(ingress_only).allowed(B, A, 80)
    with_egress = policy("ns1", {"matchLabels": {"app": "b"}}, egress=[])
    assert not cluster(with_egress).allowed(B, A, 80)
    assert not cluster(with_egress).allowed(A, B, 80)  # Ingress is always a type


def test_pod_selector_peer_is_its_own_namespace_only() -> None:
    allow_a = policy(
        "ns1", {"matchLabels": {"app": "b"}}, ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]
    )
    assert cluster(allow_a).allowed(A, B, 80)
    assert not cluster(allow_a).allowed(C, B, 80)  # same labels, other namespace


def test_namespace_and_pod_selector_in_one_peer_both_must_match() -> None:
    both = {"namespaceSelector": {"matchLabels": {"team": "y"}}, "podSelector": {"matchLabels": {"app": "z"}}}
    either = [{"namespaceSelector": {"matchLabels": {"team": "y"}}}, {"podSelector": {"matchLabels": {"app": "z"}}}]
    target = {"matchLabels": {"app": "b"}}
    assert not cluster(policy("ns1", target, ingress=[{"from": [both]}])).allowed(C, B, 80)
    assert cluster(policy("ns1", target, ingress=[{"from": either}])).allowed(C, B, 80)
    by_name = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns2"}}}]
    assert cluster(policy("ns1", target, ingress=[{"from": by_name}])).allowed(C, B, 80)


def test_ports_protocols_ranges_and_named_ports() -> None:
    target = {"matchLabels": {"app": "b"}}
    rule = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 8000, "endPort": 8100}, {"port": "http"}]}
    c = cluster(policy("ns1", target, ingress=[rule]))
    assert c.allowed(A, B, 53, "UDP")
    assert not c.allowed(A, B, 53, "TCP")
    assert c.allowed(A, B, 8050)
    assert not c.allowed(A, B, 8101)
    assert c.allowed(A, B, 8080)  # the named port "http"
    assert not cluster(policy("ns1", target, ingress=[{"ports": [{"port": "http"}]}])).allowed(A, B, 9090)


def test_ip_block_with_except() -> None:
    egress = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}]}]
    c = cluster(policy("ns1", {"matchLabels": {"app": "a"}}, policyTypes=["Egress"], egress=egress))
    assert c.allowed(A, "203.0.113.1", 443)
    assert not c.allowed(A, "10.1.2.3", 443)
    assert not c.allowed(A, B, 443)  # a pod address inside the excepted block
    assert not c.allowed(A, "203.0.113.1", 22)


def test_a_flow_needs_egress_at_the_source_and_ingress_at_the_destination() -> None:
    ingress_open = policy("ns1", {"matchLabels": {"app": "b"}}, ingress=[{}])
    egress_closed = policy("ns2", {}, policyTypes=["Egress"])
    assert cluster(ingress_open).allowed(C, B, 80)
    assert not cluster(ingress_open, egress_closed).allowed(C, B, 80)


def test_policies_add_up() -> None:
    deny = policy("ns1", {}, policyTypes=["Ingress"])
    allow = policy("ns1", {"matchLabels": {"app": "b"}}, ingress=[{"from": [{"podSelector": {}}]}])
    assert cluster(deny, allow).allowed(A, B, 80)
    assert not cluster(deny, allow).allowed(B, A, 80)


def test_match_expressions() -> None:
    labels = {"tier": "api", "env": "dev"}
    assert matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "web"]}]}, labels)
    assert not matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["api"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, labels)
    assert not matches(
        {"matchLabels": {"tier": "api"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels
    )
    assert matches({}, labels)


# --- the tier's flows -------------------------------------------------------------------------------------------------

#: Stand-ins for what runs outside the program: an ingress controller of old, cluster DNS, Vault, and strangers.
OUTSIDE = [
    Pod("gateway", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "10.244.9.1"),
    # Another Envoy of the edge namespace, not a proxy of this stack's Gateway.
    Pod("envoy", "envoy-gateway-system", {"app.kubernetes.io/name": "envoy"}, "10.244.9.2"),
    Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.9.3"),
    Pod("vault-0", "vault", {"app.kubernetes.io/name": "vault"}, "10.244.9.4"),
    Pod("curl", "default", {"run": "curl"}, "10.244.9.5"),
    Pod("intruder", "other", {"app.kubernetes.io/name": "zitadel"}, "10.244.9.6"),
]
API_SERVER = "172.20.0.2"  # where kubernetes.default.svc is translated to: a control-plane address, not a pod
PUBLIC = "203.0.113.10"
METADATA = "169.254.169.254"
EXTERNAL_POSTGRES = "10.20.0.5"
#: Stand-ins for the pods Envoy Gateway's controller creates at run time (no render exists), with the labels its
#: v1.9.0 source gives them (proxy/resource.go, ratelimit/resource.go rateLimitLabels).
EDGE_RUNTIME = [
    Pod(
        "envoy-proxy",
        "envoy-gateway-system",
        {
            "app.kubernetes.io/name": "envoy",
            "app.kubernetes.io/component": "proxy",
            "app.kubernetes.io/managed-by": "envoy-gateway",
            "gateway.envoyproxy.io/owning-gateway-name": "identity-edge",
            "gateway.envoyproxy.io/owning-gateway-namespace": "envoy-gateway-system",
        },
        "10.244.3.1",
    ),
    Pod(
        "envoy-ratelimit",
        "envoy-gateway-system",
        {
            "app.kubernetes.io/name": "envoy-ratelimit",
            "app.kubernetes.io/component": "ratelimit",
            "app.kubernetes.io/managed-by": "envoy-gateway",
        },
        "10.244.3.2",
    ),
]


def declared_policies(recording: mocked.Recording) -> list[dict[str, Any]]:
    return [mask(r.inputs) for r in recording.by_type(NETWORK_POLICY)]


def tier(stack: str, recording: mocked.Recording) -> Cluster:
    """The cluster as the stack would leave it: the rendered pods and Redis policy, the declared ZITADEL policies."""
    pods = [*OUTSIDE, *EDGE_RUNTIME]
    # The gateway chart's controller and certgen job, as rendered.
    for index, (label, template) in enumerate(pod_templates(rendered(stack, "eg"))):
        name = label.split("/", 1)[1]
        pods.append(Pod(name, "envoy-gateway-system", template["metadata"]["labels"], f"10.244.4.{index + 1}"))
    redis_templates = dict(pod_templates(rendered(stack, "redis")))
    labels = redis_templates["StatefulSet/redis-node"]["metadata"]["labels"]
    for index in range(3):
        # The kubectl sidecar labels the elected master; the redis-master Service selects it.
        extra = {"isMaster": "true"} if index == 0 else {}
        pods.append(Pod(f"redis-node-{index}", "database", {**labels, **extra}, f"10.244.1.{index + 1}"))
    for index, (label, template) in enumerate(pod_templates(rendered(stack, "zitadel"))):
        name = label.split("/", 1)[1]
        pods.append(Pod(name, "zitadel", template["metadata"]["labels"], f"10.244.2.{index + 1}"))
    chart_policies = [
        m for release in ("redis", "zitadel") for m in rendered(stack, release) if m["kind"] == "NetworkPolicy"
    ]
    namespaces: dict[str, dict[str, str]] = {pod.namespace: {} for pod in pods}
    return Cluster([*chart_policies, *declared_policies(recording)], namespaces, pods)


def test_declared_and_rendered_policies(stack: str, recording: mocked.Recording) -> None:
    def named(namespace: str) -> list[str]:
        policies = declared_policies(recording)
        return sorted(p["metadata"]["name"] for p in policies if p["metadata"]["namespace"] == namespace)

    expected = ["zitadel-backends", "zitadel-default-deny", "zitadel-dns", "zitadel-kube-api", "zitadel-login"]
    expected += ["zitadel-postgresql"] if stack == "dev" else []
    # The event relay's own policies (components/event_relay.py).
    expected += ["event-relay", "zitadel-from-event-relay"]
    # Prod is watched (observability.enabled): Prometheus to ZITADEL, the relay, the proxies and the ratelimit pods.
    watched = stack == "prod"
    expected += ["prometheus-to-event-relay", "prometheus-to-zitadel"] if watched else []
    assert named("zitadel") == sorted([*expected, "zitadel-server"])
    assert named("envoy-gateway-system") == sorted(
        [
            "edge-certgen",
            "edge-controller",
            "edge-default-deny",
            "edge-dns",
            "edge-proxies",
            "edge-rate-limit",
            *(["prometheus-to-envoy-ratelimit", "prometheus-to-identity-edge-proxies"] if watched else []),
        ]
    )
    for declared in declared_policies(recording):
        assert declared["metadata"]["namespace"] in ("zitadel", "envoy-gateway-system")
        kubernetes_validate.validate(declared, "1.30.0", strict=True)  # raises on a misspelled field
    # The Redis chart renders its own; the ZITADEL chart's Postgres subchart would admit anyone on 5432, so it is off.
    assert [m["metadata"]["name"] for m in rendered(stack, "redis") if m["kind"] == "NetworkPolicy"] == ["redis"]
    assert [m for m in rendered(stack, "zitadel") if m["kind"] == "NetworkPolicy"] == []


#: (source, destination, port, protocol) that the tier needs. Pods by name; addresses as strings.
EXPECTED_FLOWS = [
    ("zitadel-login", "zitadel", 8080, "TCP"),  # the login UI calls ZITADEL's API (its init container waits on it)
    ("envoy-proxy", "zitadel", 8080, "TCP"),  # the gateway's proxies: the API, and the JWKS for the claim copy
    ("envoy-proxy", "zitadel-login", 3000, "TCP"),
    ("envoy-proxy", "envoy-ratelimit", 8081, "TCP"),  # the global rate-limit check
    ("envoy-proxy", "envoy-gateway", 18000, "TCP"),  # xDS
    ("envoy-ratelimit", "redis-node-0", 6379, "TCP"),  # counters in DB 0 of the elected master
    ("envoy-ratelimit", "redis-node-2", 26379, "TCP"),  # Sentinel discovery
    ("envoy-ratelimit", "envoy-gateway", 18001, "TCP"),  # its rules, from the controller
    ("envoy-ratelimit", "coredns", 53, "UDP"),
    ("envoy-proxy", "coredns", 53, "UDP"),
    ("envoy-gateway", API_SERVER, 6443, "TCP"),  # the controller watches the API
    ("eg-gateway-helm-certgen", API_SERVER, 443, "TCP"),  # writes the controller's certificates
    ("zitadel", "redis-node-0", 6379, "TCP"),  # the master Service's pod
    ("zitadel", "redis-node-1", 26379, "TCP"),  # a sentinel
    ("zitadel-setup", "redis-node-0", 6379, "TCP"),  # setup starts the cache connectors
    ("zitadel", "vault-0", 8200, "TCP"),
    ("zitadel-init", "vault-0", 8200, "TCP"),
    ("zitadel-setup", "vault-0", 8200, "TCP"),
    ("zitadel", "coredns", 53, "UDP"),
    ("zitadel", "coredns", 53, "TCP"),
    ("zitadel-login", "coredns", 53, "UDP"),
    ("zitadel-setup", API_SERVER, 6443, "TCP"),  # the setup job's secret writers
    ("zitadel-setup", API_SERVER, 443, "TCP"),
    ("zitadel-cleanup", API_SERVER, 443, "TCP"),
    ("zitadel", PUBLIC, 443, "TCP"),  # identity providers
    ("zitadel", PUBLIC, 587, "TCP"),  # mail relay
    ("redis-node-0", "redis-node-1", 6379, "TCP"),  # replication
    ("redis-node-1", "redis-node-0", 6379, "TCP"),
    ("redis-node-2", "redis-node-0", 26379, "TCP"),  # sentinels talk to each other
    ("redis-node-0", "vault-0", 8200, "TCP"),
    ("redis-node-0", "coredns", 53, "UDP"),
    ("redis-node-0", "coredns", 53, "TCP"),
    ("redis-node-0", API_SERVER, 6443, "TCP"),  # the kubectl sidecar moves the master label
]
DENIED_FLOWS = [
    ("intruder", "zitadel", 8080, "TCP"),  # another namespace, even with ZITADEL's labels
    ("curl", "zitadel-login", 3000, "TCP"),
    ("envoy", "zitadel", 8080, "TCP"),  # an Envoy of the edge namespace that is not this Gateway's proxy
    ("gateway", "zitadel", 8080, "TCP"),  # the retired ingress controller's namespace
    ("gateway", "zitadel-login", 3000, "TCP"),
    ("envoy-proxy", "zitadel-setup", 8080, "TCP"),
    ("envoy-proxy", "redis-node-0", 6379, "TCP"),  # only the ratelimit pods reach Redis
    ("envoy-proxy", PUBLIC, 443, "TCP"),  # the proxies reach nothing outside the cluster
    ("envoy-gateway", "redis-node-0", 6379, "TCP"),
    ("envoy-ratelimit", "zitadel", 8080, "TCP"),
    ("envoy-ratelimit", PUBLIC, 443, "TCP"),
    ("envoy-ratelimit", "redis-node-0", 22, "TCP"),
    ("curl", "envoy-ratelimit", 8081, "TCP"),  # only the proxies ask for a decision
    ("curl", "envoy-gateway", 18000, "TCP"),  # nobody else takes the proxies' configuration
    ("zitadel", "envoy-ratelimit", 8081, "TCP"),
    ("envoy", "redis-node-1", 26379, "TCP"),
    ("zitadel", PUBLIC, 22, "TCP"),
    ("zitadel", METADATA, 80, "TCP"),  # the cloud metadata endpoint
    ("zitadel", "10.1.2.3", 443, "TCP"),  # private HTTPS: no detour into the cluster through an IdP URL
    ("zitadel", API_SERVER, 6443, "TCP"),  # only the setup and cleanup jobs need the API
    ("zitadel", "intruder", 8080, "TCP"),
    ("curl", "zitadel-setup", 8080, "TCP"),  # the jobs take no connections
    ("zitadel-login", "redis-node-0", 6379, "TCP"),  # the login UI has no business with Redis
    ("zitadel-login", PUBLIC, 443, "TCP"),
    ("curl", "redis-node-0", 6379, "TCP"),
    ("curl", "redis-node-1", 26379, "TCP"),
    ("gateway", "redis-node-0", 6379, "TCP"),
    ("redis-node-0", PUBLIC, 22, "TCP"),
    ("redis-node-0", "zitadel", 8080, "TCP"),
]


def _flow_id(flow: tuple[str, str, int, str]) -> str:
    return f"{flow[0]}->{flow[1]}:{flow[2]}/{flow[3]}"


def _end(c: Cluster, name: str) -> Pod | str:
    return c.pod(name) if name in c.pods else name


@pytest.mark.parametrize("flow", EXPECTED_FLOWS, ids=_flow_id)
def test_expected_flow_is_allowed(stack: str, recording: mocked.Recording, flow: tuple[str, str, int, str]) -> None:
    c = tier(stack, recording)
    source, destination, port, protocol = flow
    assert c.allowed(_end(c, source), _end(c, destination), port, protocol)


@pytest.mark.parametrize("flow", DENIED_FLOWS, ids=_flow_id)
def test_unexpected_flow_is_denied(stack: str, recording: mocked.Recording, flow: tuple[str, str, int, str]) -> None:
    c = tier(stack, recording)
    source, destination, port, protocol = flow
    assert not c.allowed(_end(c, source), _end(c, destination), port, protocol)


@pytest.mark.parametrize("stack", ["dev"])  # prod runs an external Postgres
def test_bundled_postgres_is_reached_only_by_zitadel(recording: mocked.Recording, stack: str) -> None:
    c = tier(stack, recording)
    postgres = c.pod("zitadel-postgresql")
    for name in ("zitadel", "zitadel-init", "zitadel-setup"):
        assert c.allowed(c.pod(name), postgres, 5432), name
    for name in ("zitadel-login", "zitadel-cleanup", "intruder", "curl", "redis-node-0"):
        assert not c.allowed(c.pod(name), postgres, 5432), name
    assert not c.allowed(postgres, PUBLIC, 443)


@pytest.mark.parametrize("stack", ["prod"])  # dev bundles Postgres
def test_external_postgres_is_reached_at_its_configured_blocks(recording: mocked.Recording, stack: str) -> None:
    c = tier(stack, recording)
    assert c.allowed(c.pod("zitadel-init"), EXTERNAL_POSTGRES, 5432)
    assert c.allowed(c.pod("zitadel"), EXTERNAL_POSTGRES, 5432)
    assert not c.allowed(c.pod("zitadel"), PUBLIC, 5432)
    assert not c.allowed(c.pod("zitadel-login"), EXTERNAL_POSTGRES, 5432)


def test_external_postgres_is_reached_at_its_configured_port() -> None:
    # A pooler in front of the database listens elsewhere than 5432: the egress rule follows postgresPort.
    config, _ = read_stack_config(PROJECT_DIR / "Pulumi.prod.yaml")
    zitadel = deep_merge(config.get("zitadel", {}), {"networkPolicy": {"postgresPort": 6432}})
    c = tier("prod", record("prod", {"zitadel": zitadel}))
    assert c.allowed(c.pod("zitadel"), EXTERNAL_POSTGRES, 6432)
    assert not c.allowed(c.pod("zitadel"), EXTERNAL_POSTGRES, 5432)


@pytest.mark.parametrize("stack", ["prod"])  # dev leaves the API server's addresses at "anywhere"
def test_the_api_server_is_reached_only_at_its_addresses(recording: mocked.Recording, stack: str) -> None:
    # kubernetes.apiServerCidrs holds for every pod that talks to the API, ZITADEL's jobs included.
    c = tier(stack, recording)
    for name in ("zitadel-setup", "zitadel-cleanup", "envoy-gateway", "eg-gateway-helm-certgen", "redis-node-0"):
        assert c.allowed(c.pod(name), API_SERVER, 443), name
        assert not c.allowed(c.pod(name), PUBLIC, 443), name
        assert not c.allowed(c.pod(name), PUBLIC, 6443), name


def test_further_ingress_namespaces_follow_the_config() -> None:
    # A second edge during a migration: its namespace joins the gateway's proxies, which keep their access.
    config, secrets = read_stack_config(PROJECT_DIR / "Pulumi.dev.yaml")
    zitadel = deep_merge(config.get("zitadel", {}), {"networkPolicy": {"ingressNamespaces": ["ingress-nginx"]}})
    c = tier("dev", record("dev", {"zitadel": zitadel}))
    assert c.allowed(c.pod("gateway"), c.pod("zitadel"), 8080)
    assert c.allowed(c.pod("gateway"), c.pod("zitadel-login"), 3000)
    assert c.allowed(c.pod("envoy-proxy"), c.pod("zitadel"), 8080)
    assert not c.allowed(c.pod("envoy"), c.pod("zitadel"), 8080)
    assert load("dev", {**config, "zitadel": zitadel}, secrets).zitadel.network_policy.ingress_namespaces == (
        "ingress-nginx",
    )


@pytest.mark.parametrize(("stack", "port"), [("dev", 8080), ("prod", 10443)])
def test_clients_reach_the_proxies_on_the_listeners_container_port(
    stack: str, port: int, recording: mocked.Recording
) -> None:
    # Listener 8080 (dev) is also the container's port; 443 (prod) becomes 10443 (Envoy Gateway's well-known shift).
    c = tier(stack, recording)
    proxy = c.pod("envoy-proxy")
    assert c.allowed(PUBLIC, proxy, port)
    assert not c.allowed(PUBLIC, proxy, 19001)  # metrics: only from monitoring namespaces, none by default
    assert not c.allowed(PUBLIC, c.pod("envoy-ratelimit"), 8081)
    assert not c.allowed(PUBLIC, c.pod("envoy-gateway"), 18000)


# --- the configuration's rules ---------------------------------------------------------------------------------------


def violations(stack: str, overrides: dict[str, Any]) -> list[str]:
    config, secrets = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    with pytest.raises(StackConfigError) as info:
        load(stack, deep_merge(config, overrides), secrets)
    return info.value.violations


def assert_violation(found: list[str], prefix: str, fragment: str) -> None:
    assert any(v.startswith(prefix) and fragment in v for v in found), found


def test_external_postgres_without_address_blocks() -> None:
    found = violations("prod", {"zitadel": {"networkPolicy": {"postgresCidrs": []}}})
    assert_violation(found, "prod: zitadel.networkPolicy.postgresCidrs: ", "address blocks")


def test_api_server_without_ports() -> None:
    found = violations("dev", {"kubernetes": {"apiServerPorts": []}})
    assert_violation(found, "dev: kubernetes.apiServerPorts: ", "ZITADEL's setup job")


def test_excepted_block_outside_its_cidr() -> None:
    target = {"cidr": "203.0.113.0/24", "except": ["10.0.0.0/8"], "ports": [443]}
    found = violations("dev", {"zitadel": {"networkPolicy": {"externalEgress": [target]}}})
    assert_violation(found, "dev: zitadel.networkPolicy.externalEgress[0].except: ", "10.0.0.0/8 is not inside")


def test_malformed_cidr() -> None:
    found = violations("dev", {"zitadel": {"networkPolicy": {"postgresCidrs": ["10.0.0.1/8"]}}})
    assert_violation(found, "dev: zitadel.networkPolicy.postgresCidrs[0]: ", "not a CIDR block")
