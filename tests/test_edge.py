"""The edge: Envoy Gateway's release, the Gateway API objects and policies under Pulumi mocks, every custom resource
validated against the CRDs of the pinned chart, ZITADEL's rendered routes, and the edge's configuration rules."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pulumi.runtime import rpc

from stacks.defaults import deep_merge, defaults_for
from stacks.loader import StackConfigError, load
from stacks.stackfile import read_stack_config
from stacktools import mocked
from stacktools.plan import describe, mask
from testbed import crds
from tests import pss, rendering
from tests.conftest import PROJECT_DIR, record, stack_config
from tests.rendering import find, pod_templates, rendered

RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
EG = "kubernetes:gateway.envoyproxy.io/v1alpha1:"
GW = "kubernetes:gateway.networking.k8s.io/v1:"
#: Every custom resource the program declares: (type, name, namespace).
CUSTOM_RESOURCES = [
    (EG + "BackendTrafficPolicy", "zitadel-rate-limits", "zitadel"),
    (EG + "ClientTrafficPolicy", "identity-edge-clients", "envoy-gateway-system"),
    (EG + "EnvoyPatchPolicy", "identity-edge-client-networks", "envoy-gateway-system"),
    (EG + "EnvoyProxy", "identity-edge", "envoy-gateway-system"),
    (EG + "SecurityPolicy", "zitadel-jwt-claims", "zitadel"),
    (GW + "Gateway", "identity-edge", "envoy-gateway-system"),
    (GW + "GatewayClass", "envoy-gateway", None),
]
SENTINELS = [f"redis-node-{i}.redis-headless.database.svc.cluster.local:26379" for i in range(3)]
SENTINEL_URL = "mymaster," + ",".join(SENTINELS)
#: Where Envoy Gateway's controller reads its configuration, and the block that configures the ratelimit pods.
RATE_LIMIT_DEPLOYMENT = ("config", "envoyGateway", "provider", "kubernetes", "rateLimitDeployment")
#: ``user:password`` of the ratelimit pods' own Redis user (README "Redis users").
SECRET_REF = {"secretKeyRef": {"name": "ratelimit-redis", "key": "auth"}}
CREDENTIAL_PATTERN = (
    r"(?:/oauth/v2/token|/oidc/v1|/v2/sessions|/zitadel\.session\.v2\.SessionService|/ui/v2/login/password"
    r"|/ui/v2/login/otp|/ui/login/password|/ui/login/mfa/verify)(?:[/?].*)?"
)


def values(recording: mocked.Recording) -> dict[str, Any]:
    found: dict[str, Any] = mask(recording.one(RELEASE, "eg").inputs["values"])
    return found


def rate_limit_deployment(tree: dict[str, Any]) -> dict[str, Any]:
    node: Any = tree
    for part in RATE_LIMIT_DEPLOYMENT:
        node = node[part]
    found: dict[str, Any] = node
    return found


def document(recording: mocked.Recording, type_: str, name: str) -> dict[str, Any]:
    inputs = mask(recording.one(type_, name).inputs)
    return {key: inputs[key] for key in ("apiVersion", "kind", "metadata", "spec")}


def spec(recording: mocked.Recording, type_: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = document(recording, type_, name)["spec"]
    return found


# --- the Envoy Gateway release ---------------------------------------------------------------------------------------


def test_the_gateway_release_is_the_pinned_chart(recording: mocked.Recording) -> None:
    inputs = recording.one(RELEASE, "eg").inputs
    assert (inputs["chart"], inputs["version"], inputs["name"], inputs["namespace"]) == (
        "oci://docker.io/envoyproxy/gateway-helm",
        "v1.9.0",
        "eg",
        "envoy-gateway-system",
    )
    assert "repositoryOpts" not in inputs  # an OCI reference carries its registry


def test_rate_limits_run_on_every_sentinel_without_a_db(recording: mocked.Recording) -> None:
    # EnvoyPatchPolicy on: the per-/64 buckets need it.
    assert values(recording)["config"]["envoyGateway"]["extensionApis"] == {"enableEnvoyPatchPolicy": True}
    assert values(recording)["config"]["envoyGateway"]["rateLimit"] == {
        "backend": {"type": "Redis", "redis": {"url": SENTINEL_URL}},
        # Default fail open: traffic passes while Redis or the ratelimit pods cannot answer.
        "failClosed": False,
        "timeout": "20ms",
    }
    assert "/" not in SENTINEL_URL


def test_the_ratelimit_container_speaks_sentinel_with_the_password_from_a_secret(
    recording: mocked.Recording, stack: str
) -> None:
    deployment = rate_limit_deployment(values(recording))
    assert deployment["container"]["env"] == [
        {"name": "REDIS_TYPE", "value": "sentinel"},
        {"name": "REDIS_AUTH", "valueFrom": SECRET_REF},
        {"name": "REDIS_SENTINEL_AUTH", "valueFrom": SECRET_REF},
        {"name": "CACHE_KEY_PREFIX", "value": "rl:"},
        {"name": "EXPIRATION_JITTER_MAX_SECONDS", "value": "10"},
        {"name": "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION", "value": "true"},
    ]
    assert deployment["replicas"] == {"dev": 1, "prod": 2}[stack]
    assert (
        deployment["container"]["resources"]
        == {
            "dev": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
            "prod": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        }[stack]
    )


def test_the_password_is_one_secret_in_the_gateway_namespace_and_nowhere_in_plain(recording: mocked.Recording) -> None:
    password = mocked.mock_secret_value("redis-ratelimit-password")
    secrets = [r for r in recording.by_type(SECRET) if r.name == "ratelimit-redis"]
    assert len(secrets) == 1
    inputs = mask(secrets[0].inputs)
    assert inputs["metadata"] == {"name": "ratelimit-redis", "namespace": "envoy-gateway-system"}
    assert inputs["stringData"] == "[secret]"
    # Its own user, in the form envoyproxy/ratelimit reads REDIS_AUTH and REDIS_SENTINEL_AUTH: never the chart's.
    data = secrets[0].inputs["stringData"]
    assert (rpc.unwrap_rpc_secret(data) if rpc.is_rpc_secret(data) else data) == {"auth": f"ratelimit:{password}"}
    plan = describe(recording)
    assert password not in yaml.safe_dump(plan.to_json())
    assert password not in str(recording.one(RELEASE, "eg").inputs)


def test_a_rotated_password_rolls_the_ratelimit_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    def annotation(recording: mocked.Recording) -> str:
        pod = rate_limit_deployment(values(recording))["pod"]
        digest: str = pod["annotations"]["blinkchamber.io/redis-password-sha256"]
        return digest

    before = record("dev")
    # The first 64 bits of SHA-256 over the (mock) password: a new password, a new pod template.
    password = mocked.mock_secret_value("redis-ratelimit-password")
    assert annotation(before) == "65c8e0f038eaff51"
    assert annotation(before) == hashlib.sha256(password.encode()).hexdigest()[:16]
    monkeypatch.setattr(mocked, "mock_secret_value", lambda name: "rotated" + name)
    after = record("dev")
    assert annotation(after) == hashlib.sha256(b"rotatedredis-ratelimit-password").hexdigest()[:16]
    assert annotation(after) != annotation(before)


def test_the_gateway_chart_renders_the_controller_with_our_rate_limit_config(stack: str) -> None:
    manifests = rendered(stack, "eg")
    config = yaml.safe_load(find(manifests, "ConfigMap", "envoy-gateway-config")["data"]["envoy-gateway.yaml"])
    assert config["rateLimit"]["backend"]["redis"]["url"] == SENTINEL_URL
    assert config["extensionApis"] == {"enableEnvoyPatchPolicy": True}
    deployment = rate_limit_deployment({"config": {"envoyGateway": config}})
    # The chart's own ratelimit image survives the merge with our values.
    assert deployment["container"]["image"] == "docker.io/envoyproxy/ratelimit:17b1956c"
    assert [e["name"] for e in deployment["container"]["env"]][:3] == [
        "REDIS_TYPE",
        "REDIS_AUTH",
        "REDIS_SENTINEL_AUTH",
    ]
    assert [m["kind"] for m in manifests if m["kind"] == "MutatingWebhookConfiguration"] == []
    assert [m for m in manifests if m["kind"] == "Secret"] == []
    namespaced = [m for m in manifests if "namespace" in m["metadata"]]
    assert {m["metadata"]["namespace"] for m in namespaced} == {"envoy-gateway-system"}
    assert rendering.kubernetes_errors(manifests) == []


def test_the_rate_limit_deployment_block_is_what_envoy_gateway_reads(stack: str, schemas: crds.CrdSchemas) -> None:
    # provider.kubernetes.rateLimitDeployment is a KubernetesDeploymentSpec (api/v1alpha1/envoygateway_types.go
    # L407), the type of EnvoyProxy's envoyDeployment: the CRD's schema of that field checks ours.
    config = yaml.safe_load(
        find(rendered(stack, "eg"), "ConfigMap", "envoy-gateway-config")["data"]["envoy-gateway.yaml"]
    )
    schema = crds.subschema(
        schemas.schema("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"), "spec.provider.kubernetes.envoyDeployment"
    )
    block = rate_limit_deployment({"config": {"envoyGateway": config}})
    assert crds.subschema_errors(schema, block) == []
    broken = copy.deepcopy(block)
    broken["container"]["env"][1]["valueFrom"]["secretKeyref"] = broken["container"]["env"][1]["valueFrom"].pop(
        "secretKeyRef"
    )
    assert crds.subschema_errors(schema, broken) == [
        "container.env.1.valueFrom: Additional properties are not allowed ('secretKeyref' was unexpected)"
    ]
    # The RateLimit type's fields (envoygateway_types.go L654-676): backend, timeout, failClosed, telemetry.
    assert set(config["rateLimit"]) <= {"backend", "timeout", "failClosed", "telemetry"}


# --- custom resources: declared after their CRDs, valid against them ------------------------------------------------


@pytest.fixture(scope="module")
def schemas() -> crds.CrdSchemas:
    # The chart the release train pins (the same file as artifacts.ENVOY_GATEWAY_CHART's, from the mirror or cache).
    archive = rendering.chart_archive(stack_config("dev").edge.chart)
    return crds.CrdSchemas(archive.render({}, name="eg", namespace="envoy-gateway-system").crds)


def declared(recording: mocked.Recording) -> Iterator[dict[str, Any]]:
    for type_, name, _ in CUSTOM_RESOURCES:
        yield document(recording, type_, name)


def test_the_program_declares_these_custom_resources(recording: mocked.Recording) -> None:
    found = sorted(
        (r.type, r.name, mask(r.inputs)["metadata"].get("namespace"))
        for r in recording.resources
        if r.type.startswith((EG, GW))
    )
    assert found == CUSTOM_RESOURCES


def test_every_custom_resource_waits_for_the_release_with_its_crds(recording: mocked.Recording) -> None:
    release = recording.one(RELEASE, "eg").urn
    for type_, name, _ in CUSTOM_RESOURCES:
        assert release in recording.one(type_, name).dependencies, name
    # The policies on ZITADEL's routes live in its namespace; ZITADEL's routes need the Gateway API CRDs.
    zitadel_namespace = recording.one("kubernetes:core/v1:Namespace", "zitadel").urn
    for type_, name, namespace in CUSTOM_RESOURCES:
        if namespace == "zitadel":
            assert zitadel_namespace in recording.one(type_, name).dependencies, name
    assert release in recording.one(RELEASE, "zitadel").dependencies
    gateway = recording.one(GW + "Gateway", "identity-edge")
    assert recording.one(GW + "GatewayClass", "envoy-gateway").urn in gateway.dependencies


def test_every_custom_resource_validates_against_its_crd(recording: mocked.Recording, schemas: crds.CrdSchemas) -> None:
    for resource in declared(recording):
        assert schemas.errors(resource) == [], resource["kind"]


def test_zitadels_rendered_routes_validate_against_their_crds(stack: str, schemas: crds.CrdSchemas) -> None:
    routes = [m for m in rendered(stack, "zitadel") if m["apiVersion"].startswith("gateway.networking.k8s.io/")]
    assert sorted(f"{m['kind']}/{m['metadata']['name']}" for m in routes) == [
        "GRPCRoute/zitadel-grpc",
        "HTTPRoute/zitadel",
        "HTTPRoute/zitadel-login",
    ]
    for route in routes:
        assert schemas.errors(route) == []


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        (
            "BackendTrafficPolicy",
            lambda d: d["spec"]["rateLimit"]["global"]["rules"][0]["limit"].update(unit="Minutes"),
            "spec.rateLimit.global.rules.0.limit.unit: 'Minutes' is not one of",
        ),
        (
            "BackendTrafficPolicy",
            lambda d: d["spec"]["rateLimit"]["global"]["rules"][0].update(shadowmode=True),
            "spec.rateLimit.global.rules.0: Additional properties are not allowed ('shadowmode' was unexpected)",
        ),
        (
            "Gateway",
            lambda d: d["spec"]["listeners"][0].pop("port"),
            "spec.listeners.0: 'port' is a required property",
        ),
        (
            "GatewayClass",
            lambda d: d["metadata"].update(namespace="envoy-gateway-system"),
            "metadata.namespace: set on a cluster-scoped kind",
        ),
        (
            "SecurityPolicy",
            lambda d: d["spec"]["jwt"]["providers"][0]["claimToHeaders"][0].pop("header"),
            "spec.jwt.providers.0.claimToHeaders.0: 'header' is a required property",
        ),
        (
            "EnvoyPatchPolicy",
            lambda d: d["spec"]["jsonPatches"][0]["operation"].update(op="rewrite"),
            "spec.jsonPatches.0.operation.op: 'rewrite' is not one of",
        ),
        (
            "EnvoyPatchPolicy",
            lambda d: d["spec"]["jsonPatches"][0].update(type="type.googleapis.com/envoy.config.route.v3.Route"),
            "spec.jsonPatches.0.type: 'type.googleapis.com/envoy.config.route.v3.Route' is not one of",
        ),
    ],
)
def test_crd_validation_catches_a_broken_resource(
    recording: mocked.Recording, schemas: crds.CrdSchemas, kind: str, change: Any, expected: str
) -> None:
    (resource,) = [d for d in declared(recording) if d["kind"] == kind]
    broken = copy.deepcopy(resource)
    change(broken)
    assert any(expected in error for error in schemas.errors(broken)), schemas.errors(broken)


# --- what the policies say -------------------------------------------------------------------------------------------


def per_ip(requests: int, cidr: str, **selector: Any) -> dict[str, Any]:
    return {
        "clientSelectors": [{**selector, "sourceCIDR": {"type": "Distinct", "value": cidr}}],
        "limit": {"requests": requests, "unit": "Minute"},
        "shared": True,
        "shadowMode": False,
    }


def per_header(requests: int, header: str) -> dict[str, Any]:
    return {
        "clientSelectors": [{"headers": [{"name": header, "type": "Distinct"}]}],
        "limit": {"requests": requests, "unit": "Minute"},
        "shared": True,
        "shadowMode": False,
    }


def test_the_rate_limit_rules(recording: mocked.Recording) -> None:
    credentials = {"path": {"type": "RegularExpression", "value": CREDENTIAL_PATTERN}}
    assert spec(recording, EG + "BackendTrafficPolicy", "zitadel-rate-limits") == {
        "targetRefs": [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "zitadel"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "zitadel-grpc"},
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "zitadel-login"},
        ],
        "rateLimit": {
            "global": {
                "rules": [
                    per_ip(1200, "0.0.0.0/0"),
                    per_ip(1200, "::/0"),
                    per_ip(60, "0.0.0.0/0", **credentials),
                    per_ip(60, "::/0", **credentials),
                    per_header(1200, "x-rl-sub"),
                    per_header(6000, "x-rl-org"),
                ]
            }
        },
    }


#: The Distinct ``remote_address`` actions of IPv6 ``sourceCIDR`` rules, as Envoy Gateway v1.9.0 writes them into the
#: listener's RouteConfiguration (proto field names: ``internal/xds/translator/jsonpatch.go`` marshals with them).
IPV6_DISTINCT_VALUES = (
    "$..actions[?(@.remote_address_match.descriptor_key == 'remote_address' && "
    "@.remote_address_match.address_matcher.ranges[0].address_prefix =~ ':')].remote_address_match.descriptor_value"
)


def test_ipv6_clients_are_counted_per_64(recording: mocked.Recording, stack: str) -> None:
    listener = {"dev": "http", "prod": "https"}[stack]
    assert spec(recording, EG + "EnvoyPatchPolicy", "identity-edge-client-networks") == {
        "type": "JSONPatch",
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "identity-edge"},
        "jsonPatches": [
            {
                "type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": f"envoy-gateway-system/identity-edge/{listener}",
                "operation": {
                    "op": "replace",
                    "jsonPath": IPV6_DISTINCT_VALUES,
                    "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(64)%",
                },
            }
        ],
    }
    # After the Gateway whose xDS it patches.
    patch = recording.one(EG + "EnvoyPatchPolicy", "identity-edge-client-networks")
    assert recording.one(GW + "Gateway", "identity-edge").urn in patch.dependencies


def test_an_ipv4_network_length_adds_its_own_patch() -> None:
    recording = record("dev", {"edge": {"rateLimit": {"ipv4PrefixLength": 24}}})
    patches = spec(recording, EG + "EnvoyPatchPolicy", "identity-edge-client-networks")["jsonPatches"]
    assert [(p["operation"]["jsonPath"], p["operation"]["value"]) for p in patches] == [
        (
            "$..actions[?(@.remote_address_match.descriptor_key == 'remote_address' && "
            "@.remote_address_match.address_matcher.ranges[0].address_prefix =~ '^[0-9.]+$')]"
            ".remote_address_match.descriptor_value",
            "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(24)%",
        ),
        (IPV6_DISTINCT_VALUES, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(64)%"),
    ]


def test_full_length_buckets_need_no_patch_and_no_patch_api() -> None:
    recording = record("dev", {"edge": {"rateLimit": {"ipv6PrefixLength": 128}}})
    assert [r for r in recording.resources if r.type == EG + "EnvoyPatchPolicy"] == []
    assert "extensionApis" not in values(recording)["config"]["envoyGateway"]


@pytest.mark.parametrize(
    ("family", "address", "selected"),
    [(6, "::", True), (6, "2001:db8::", True), (4, "0.0.0.0", True), (4, "::", False), (6, "0.0.0.0", False)],
)
def test_the_family_filters_select_their_own_ranges(family: int, address: str, selected: bool) -> None:
    # ojg (Envoy Gateway's JSONPath library) evaluates =~ with Go's regexp.MatchString: a search, like re.search.
    pattern = {4: "^[0-9.]+$", 6: ":"}[family]
    assert (re.search(pattern, address) is not None) == selected


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/oauth/v2/token", True),
        ("/oauth/v2/token?grant_type=client_credentials", True),
        ("/oauth/v2/tokens", False),
        ("/oauth/v2/authorize", False),
        ("/oidc/v1/userinfo", True),
        ("/v2/sessions/3129", True),
        ("/v2/sessionsX", False),
        ("/zitadel.session.v2.SessionService/SetSession", True),
        ("/zitadelXsession.v2.SessionService/SetSession", False),  # the dots are literal
        ("/ui/v2/login/password", True),
        ("/ui/v2/login/passwordless", False),
        ("/ui/v2/login/loginname", False),
        ("/ui/login/mfa/verify", True),
    ],
)
def test_the_credential_pattern_matches_whole_paths(path: str, matches: bool) -> None:
    # Envoy matches a RegularExpression path against the whole ":path" (query included), RE2 full match.
    assert (re.fullmatch(CREDENTIAL_PATTERN, path) is not None) == matches


def test_the_jwt_claims_reach_headers_and_nothing_is_rejected(recording: mocked.Recording, stack: str) -> None:
    domain = {"dev": "localhost", "prod": "id.blinkchamber.com"}[stack]
    issuer = {"dev": "http://localhost:8080", "prod": "https://id.blinkchamber.com"}[stack]
    assert spec(recording, EG + "SecurityPolicy", "zitadel-jwt-claims") == {
        "targetRefs": [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "zitadel"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "zitadel-grpc"},
        ],
        "jwt": {
            # Anonymous requests, opaque tokens and PATs pass: the gateway only reads claims, ZITADEL authenticates.
            "failOpen": True,
            "providers": [
                {
                    "name": "zitadel",
                    "issuer": issuer,
                    "remoteJWKS": {
                        "uri": f"http://{domain}/oauth/v2/keys",
                        "backendRefs": [{"group": "", "kind": "Service", "name": "zitadel", "port": 8080}],
                    },
                    "claimToHeaders": [
                        {"claim": "sub", "header": "x-rl-sub"},
                        {"claim": "urn:zitadel:iam:user:resourceowner:id", "header": "x-rl-org"},
                    ],
                }
            ],
        },
    }


def test_client_sent_claim_headers_are_removed_and_the_client_address_is_trusted_as_configured(
    recording: mocked.Recording,
) -> None:
    assert spec(recording, EG + "ClientTrafficPolicy", "identity-edge-clients") == {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "identity-edge"}],
        "clientIPDetection": {"xForwardedFor": {"numTrustedHops": 0}},
        "headers": {"earlyRequestHeaders": {"remove": ["x-rl-sub", "x-rl-org"]}},
    }


def test_the_gateway_listener(recording: mocked.Recording, stack: str) -> None:
    allowed = {
        "namespaces": {"from": "Selector", "selector": {"matchLabels": {"kubernetes.io/metadata.name": "zitadel"}}},
        "kinds": [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
        ],
    }
    listener = {
        "dev": {"name": "http", "protocol": "HTTP", "port": 8080, "hostname": "localhost", "allowedRoutes": allowed},
        "prod": {
            "name": "https",
            "protocol": "HTTPS",
            "port": 443,
            "hostname": "id.blinkchamber.com",
            "allowedRoutes": allowed,
            "tls": {
                "mode": "Terminate",
                "certificateRefs": [{"group": "", "kind": "Secret", "name": "id-blinkchamber-com-tls"}],
            },
        },
    }[stack]
    assert spec(recording, GW + "Gateway", "identity-edge") == {
        "gatewayClassName": "envoy-gateway",
        "listeners": [listener],
    }
    assert spec(recording, GW + "GatewayClass", "envoy-gateway") == {
        "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
        "parametersRef": {
            "group": "gateway.envoyproxy.io",
            "kind": "EnvoyProxy",
            "name": "identity-edge",
            "namespace": "envoy-gateway-system",
        },
    }


def test_zitadel_has_no_ingress_and_its_routes_attach_to_the_gateway(stack: str) -> None:
    manifests = rendered(stack, "zitadel")
    assert [m for m in manifests if m["kind"] == "Ingress"] == []
    section = {"dev": "http", "prod": "https"}[stack]
    domain = {"dev": "localhost", "prod": "id.blinkchamber.com"}[stack]
    parent = [{"name": "identity-edge", "namespace": "envoy-gateway-system", "sectionName": section}]
    api = find(manifests, "HTTPRoute", "zitadel")["spec"]
    grpc = find(manifests, "GRPCRoute", "zitadel-grpc")["spec"]
    login = find(manifests, "HTTPRoute", "zitadel-login")["spec"]
    for route in (api, grpc, login):
        assert (route["parentRefs"], route["hostnames"]) == (parent, [domain])
    assert api["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "zitadel", "port": 8080}],
        }
    ]
    assert grpc["rules"] == [{"backendRefs": [{"name": "zitadel", "port": 8080}]}]
    assert login["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/ui/v2/login"}}],
            "backendRefs": [{"name": "zitadel-login", "port": 3000}],
        }
    ]


# --- the pods Envoy Gateway creates at run time ----------------------------------------------------------------------


def runtime_pods(recording: mocked.Recording) -> dict[str, dict[str, Any]]:
    """Stand-ins for the ratelimit and proxy pods as Envoy Gateway v1.9.0's controller builds them (no render exists):
    its default security contexts (``internal/infrastructure/kubernetes/ratelimit/testdata/deployments/default.yaml``,
    ``.../proxy/testdata/deployments/default.yaml``) with the resources the program gives them."""

    def context(uid: int) -> dict[str, Any]:
        return {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": uid,
            "runAsNonRoot": True,
            "runAsUser": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    limit = rate_limit_deployment(values(recording))
    proxy = spec(recording, EG + "EnvoyProxy", "identity-edge")["provider"]["kubernetes"]["envoyDeployment"]
    (shutdown,) = proxy["patch"]["value"]["spec"]["template"]["spec"]["containers"]
    return {
        "Deployment/envoy-ratelimit": {
            "metadata": {"annotations": limit["pod"]["annotations"]},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "envoy-ratelimit",
                        "env": limit["container"]["env"],
                        "resources": limit["container"]["resources"],
                        "securityContext": context(65534),
                    }
                ],
                "volumes": [{"name": "certs", "secret": {"secretName": "envoy-rate-limit"}}],
            },
        },
        "Deployment/envoy-identity-edge": {
            "metadata": {},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {"name": "envoy", "resources": proxy["container"]["resources"], "securityContext": context(65532)},
                    {"name": shutdown["name"], "resources": shutdown["resources"], "securityContext": context(65532)},
                ],
            },
        },
    }


def test_the_runtime_pods_pass_restricted_and_are_sized(recording: mocked.Recording) -> None:
    for label, pod in runtime_pods(recording).items():
        assert [str(v) for v in pss.violations(label, pod)] == []
        for container in pod["spec"]["containers"]:
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], label
            assert resources["limits"]["memory"], label


def test_the_shutdown_manager_patch_names_envoy_gateways_container(recording: mocked.Recording) -> None:
    # A strategic merge patch matches containers by name; the proxy Deployment names it so in v1.9.0.
    proxy = spec(recording, EG + "EnvoyProxy", "identity-edge")["provider"]["kubernetes"]
    containers = proxy["envoyDeployment"]["patch"]["value"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["shutdown-manager"]
    assert proxy["envoyService"] == {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}


# --- the configuration's rules ---------------------------------------------------------------------------------------


def violations(stack: str, overrides: dict[str, Any]) -> list[str]:
    config, secrets = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    with pytest.raises(StackConfigError) as info:
        load(stack, deep_merge(config, overrides), secrets)
    return info.value.violations


def rules(*changes: dict[str, Any]) -> dict[str, Any]:
    """The default rules with the first ones replaced field by field."""
    base = copy.deepcopy(defaults_for("dev")["edge"]["rateLimit"]["rules"])
    for index, change in enumerate(changes):
        base[index] = {**base[index], **change}
    return {"edge": {"rateLimit": {"rules": base}}}


@pytest.mark.parametrize(
    ("stack", "overrides", "expected"),
    [
        (
            "prod",
            {"edge": {"listener": {"tlsSecretName": None}}},
            "prod: edge.listener.tlsSecretName: prod requires TLS at the gateway: an HTTPS listener with its "
            "certificate",
        ),
        (
            "prod",
            rules({"shadowMode": True}),
            "prod: edge.rateLimit.rules: prod requires an enforced per-client-IP rule over every request "
            "(perClientIp, no paths or headers, shadowMode off)",
        ),
        (
            "prod",
            rules({"paths": ["/oauth/v2/token"]}),
            "prod: edge.rateLimit.rules: prod requires an enforced per-client-IP rule over every request "
            "(perClientIp, no paths or headers, shadowMode off)",
        ),
        (
            "dev",
            rules({}, {"name": "per-client-ip"}),
            "dev: edge.rateLimit.rules[1].name: 'per-client-ip' is also edge.rateLimit.rules[0]",
        ),
        (
            "dev",
            rules({"perHeaders": ["authorization"]}),
            "dev: edge.rateLimit.rules[0].perHeaders: authorization carries credentials: keyed on it, they would "
            "become Redis key names",
        ),
        (
            "dev",
            {"edge": {"jwt": {"enabled": False}}},
            "dev: edge.rateLimit.rules[2].perHeaders: rule 'per-user' keys on x-rl-sub, which only a verified JWT "
            "claim sets, and edge.jwt.enabled is false",
        ),
        (
            "dev",
            rules({}, {}, {}, {"perHeaders": ["x-zitadel-orgid"]}),
            "dev: edge.rateLimit.rules[3].perHeaders: rule 'per-organization' keys on x-zitadel-orgid, which the "
            "client sends: only headers the gateway writes from a verified JWT claim (edge.jwt.claimHeaders: "
            "x-rl-sub, x-rl-org)",
        ),
        (
            "dev",
            {"edge": {"jwt": {"claimHeaders": [{"claim": "sub", "header": "x-zitadel-orgid"}]}}},
            "dev: edge.jwt.claimHeaders[0].header: x-zitadel-orgid: the gateway removes client copies of claim "
            "headers, and ZITADEL reads this one",
        ),
        (
            "dev",
            {
                "edge": {
                    "jwt": {
                        "claimHeaders": [
                            {"claim": "sub", "header": "x-rl-sub"},
                            {"claim": "email", "header": "x-rl-sub"},
                        ]
                    }
                }
            },
            "dev: edge.jwt.claimHeaders: two claims are copied to the same header",
        ),
        (
            "dev",
            {"edge": {"namespace": "zitadel"}},
            "dev: edge.namespace: the gateway needs its own namespace, not zitadel.namespace 'zitadel'",
        ),
        (
            "dev",
            {"edge": {"rateLimit": {"clientCidrs": []}}},
            "dev: edge.rateLimit.clientCidrs: rule 'per-client-ip' is per client IP: it needs an address range",
        ),
        (
            "dev",
            {"events": {"db": 0}},
            "dev: events.db: events DB 0 holds the edge's rate-limit counters (Sentinel-mode ratelimit cannot "
            "select another DB)",
        ),
        (
            "dev",
            {"redis": {"resources": {"redis": {"limits": {"memory": None}}}}},
            "dev: redis.resources.redis.limits.memory: maxmemory derives from the redis container's memory limit "
            "(redis.maxmemoryPercent): set one",
        ),
    ],
)
def test_a_broken_edge_config_is_refused(stack: str, overrides: dict[str, Any], expected: str) -> None:
    assert expected in violations(stack, overrides)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"edge": {"rateLimit": {"expirationJitterMaxSeconds": 300}}}, "edge.rateLimit.expirationJitterMaxSeconds"),
        ({"edge": {"rateLimit": {"timeout": "20"}}}, "edge.rateLimit.timeout"),
        (rules({"paths": ["/oauth/(v2)"]}), "edge.rateLimit.rules[0].paths[0]"),
        (rules({"perHeaders": ["X-Zitadel-OrgID"]}), "edge.rateLimit.rules[0].perHeaders[0]"),
        (rules({"unit": "Minutes"}), "edge.rateLimit.rules[0].unit"),
        ({"edge": {"rateLimit": {"keyPrefix": "rl"}}}, "edge.rateLimit.keyPrefix"),
        ({"edge": {"rateLimit": {"ipv6PrefixLength": 129}}}, "edge.rateLimit.ipv6PrefixLength"),
        ({"edge": {"rateLimit": {"ipv4PrefixLength": 8}}}, "edge.rateLimit.ipv4PrefixLength"),
    ],
)
def test_a_malformed_edge_value_is_refused(overrides: dict[str, Any], key: str) -> None:
    assert any(v.startswith(f"dev: {key}: ") for v in violations("dev", overrides)), violations("dev", overrides)


def test_the_stacks_pass_the_edge_rules() -> None:
    for stack in ("dev", "prod"):
        config, secrets = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
        assert load(stack, config, secrets).edge.chart.version == "v1.9.0"


def test_pod_templates_of_the_chart_are_the_controller_and_certgen(stack: str) -> None:
    assert sorted(label for label, _ in pod_templates(rendered(stack, "eg"))) == [
        "Deployment/envoy-gateway",
        "Job/eg-gateway-helm-certgen",
    ]
