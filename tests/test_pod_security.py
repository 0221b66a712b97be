"""Every pod the real charts render passes Pod Security "restricted" and sizes every container; the namespaces
enforce it; and each check of the standard catches a pod that breaks it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from pulumi_policy import ResourceValidationArgs

from policy import policies as pack
from stacks.defaults import deep_merge
from stacks.loader import StackConfigError, load
from stacks.names import HELM_RELEASE_TYPE
from stacks.stackfile import read_stack_config
from stacktools import mocked
from stacktools.plan import mask
from tests import pss, rendering
from tests.conftest import PROJECT_DIR
from tests.policy_inputs import options, stack_facts
from tests.rendering import pod_templates, rendered

INJECT = "vault.hashicorp.com/"
PSA = "pod-security.kubernetes.io/"

#: The pods each release runs (literals from the charts' templates and the stack's intent).
PODS = {
    ("dev", "redis"): ["StatefulSet/redis-node"],
    ("prod", "redis"): ["StatefulSet/redis-node"],
    ("dev", "zitadel"): [
        "Deployment/zitadel",
        "Deployment/zitadel-login",
        "Job/zitadel-cleanup",
        "Job/zitadel-init",
        "Job/zitadel-setup",
        "StatefulSet/zitadel-postgresql",
    ],
    ("prod", "zitadel"): [
        "Deployment/zitadel",
        "Deployment/zitadel-login",
        "Job/zitadel-cleanup",
        "Job/zitadel-init",
        "Job/zitadel-setup",
    ],
}
# The gateway chart's controller and certgen job; the proxies and ratelimit pods its controller creates at run time
# are checked in test_edge.
for _stack in ("dev", "prod"):
    PODS[(_stack, "eg")] = ["Deployment/envoy-gateway", "Job/eg-gateway-helm-certgen"]
RELEASE_CASES = sorted(PODS)


def pods(stack: str, release: str) -> dict[str, dict[str, Any]]:
    return dict(pod_templates(rendered(stack, release)))


# --- a stand-in for the Vault Agent Injector -------------------------------------------------------------------------


def inject_vault_agent(original: Mapping[str, Any]) -> dict[str, Any]:
    """The pod as the Vault Agent Injector admits it: a stand-in for vault-k8s v1.7.6's mutation (no cluster here).

    What it adds, from ``agent-inject/agent``: the ``vault-agent-init`` container (``container_init_sidecar.go``),
    first with ``agent-init-first``, with the default resources (``container_sidecar.go`` L19-22) and, unless
    ``agent-set-security-context`` is false, ``securityContext()`` (``container_sidecar.go`` L230-246): runAsUser
    from ``agent-run-as-user`` (default 100, ``agent.go`` L23), runAsGroup from ``agent-run-as-group`` (default
    1000), runAsNonRoot unless either is 0, read-only root, drop ALL, no privilege escalation, and no seccomp
    profile; the ``vault-agent`` sidecar unless ``agent-pre-populate-only``; memory emptyDirs for its files.
    """
    pod: dict[str, Any] = copy.deepcopy(dict(original))
    annotations = pod.get("metadata", {}).get("annotations") or {}
    if annotations.get(INJECT + "agent-inject") != "true":
        return pod
    if INJECT + "agent-json-patch" in annotations or INJECT + "agent-init-json-patch" in annotations:
        raise NotImplementedError("the stand-in does not apply JSON patches to the agent containers")
    if sized := sorted(k for k in annotations if k.startswith((INJECT + "agent-requests-", INJECT + "agent-limits-"))):
        raise NotImplementedError(f"the stand-in gives the agent containers only default resources, not {sized}")
    spec = pod["spec"]
    uid = int(annotations.get(INJECT + "agent-run-as-user", "100"))
    gid = int(annotations.get(INJECT + "agent-run-as-group", "1000"))
    if annotations.get(INJECT + "agent-run-as-same-user") == "true":
        uid = int(spec["containers"][0]["securityContext"]["runAsUser"])

    def agent(name: str) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": name,
            "image": "hashicorp/vault",
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
            "volumeMounts": [{"name": "vault-secrets", "mountPath": "/vault/secrets"}],
        }
        if annotations.get(INJECT + "agent-set-security-context", "true") == "true":
            container["securityContext"] = {
                "runAsUser": uid,
                "runAsGroup": gid,
                "runAsNonRoot": uid != 0 and gid != 0,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "allowPrivilegeEscalation": False,
            }
        return container

    init = agent("vault-agent-init")
    existing = list(spec.get("initContainers") or [])
    first = annotations.get(INJECT + "agent-init-first") == "true"
    spec["initContainers"] = [init, *existing] if first else [*existing, init]
    if annotations.get(INJECT + "agent-pre-populate-only") != "true":
        spec["containers"] = [*spec["containers"], agent("vault-agent")]
    spec["volumes"] = [
        *(spec.get("volumes") or []),
        {"name": "home-init", "emptyDir": {"medium": "Memory"}},
        {"name": "vault-secrets", "emptyDir": {"medium": "Memory"}},
    ]
    return pod


# --- the rendered pods pass -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "release"), RELEASE_CASES)
def test_every_rendered_pod_passes_restricted(stack: str, release: str) -> None:
    found = pods(stack, release)
    assert sorted(found) == PODS[(stack, release)]
    for label, pod in found.items():
        assert [str(v) for v in pss.violations(label, pod)] == []


@pytest.mark.parametrize(("stack", "release"), RELEASE_CASES)
def test_every_pod_passes_with_the_injected_vault_agent(stack: str, release: str) -> None:
    injected = {label: inject_vault_agent(pod) for label, pod in pods(stack, release).items()}
    with_agent = sorted(
        label
        for label, pod in injected.items()
        if any(c["name"] == "vault-agent-init" for c in pod["spec"].get("initContainers", []))
    )
    expected = {
        "redis": ["StatefulSet/redis-node"],
        "zitadel": ["Deployment/zitadel", "Job/zitadel-init", "Job/zitadel-setup"],
        "eg": [],
    }
    assert with_agent == expected[release]
    for label, pod in injected.items():
        assert [str(v) for v in pss.violations(label, pod)] == []


@pytest.mark.parametrize(("stack", "release"), RELEASE_CASES)
def test_pod_level_settings_cover_the_injected_containers(stack: str, release: str) -> None:
    for label, pod in pods(stack, release).items():
        context = pod["spec"]["securityContext"]
        if label == "StatefulSet/zitadel-postgresql":
            continue  # no Vault agent; every container of the subchart sets both itself
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert context["runAsNonRoot"] is True, label


def test_without_pod_level_seccomp_the_injected_agent_fails() -> None:
    # The agent sets no seccomp profile of its own: the pod-level one is what makes the injected pod pass.
    pod = pods("dev", "redis")["StatefulSet/redis-node"]
    del pod["spec"]["securityContext"]["seccompProfile"]
    found = {(v.check, v.container) for v in pss.violations("redis-node", inject_vault_agent(pod))}
    assert found == {("seccompProfile", "init:vault-agent-init"), ("seccompProfile", "init:copy-redis-password")}


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        ("agent-run-as-user", "0", {("runAsNonRoot", "init:vault-agent-init"), ("runAsUser", "init:vault-agent-init")}),
        ("agent-run-as-group", "0", {("runAsNonRoot", "init:vault-agent-init")}),
        (
            "agent-set-security-context",
            "false",
            {("allowPrivilegeEscalation", "init:vault-agent-init"), ("capabilities", "init:vault-agent-init")},
        ),
    ],
)
def test_injector_annotations_that_would_break_restricted_are_caught(
    annotation: str, value: str, expected: set[tuple[str, str]]
) -> None:
    pod = pods("prod", "zitadel")["Deployment/zitadel"]
    pod["metadata"]["annotations"][INJECT + annotation] = value
    assert {(v.check, v.container) for v in pss.violations("zitadel", inject_vault_agent(pod))} == expected


@pytest.mark.parametrize(
    "annotation",
    ["agent-json-patch", "agent-init-json-patch", "agent-requests-mem", "agent-limits-cpu", "agent-limits-ephemeral"],
)
def test_the_stand_in_refuses_annotations_it_does_not_model(annotation: str) -> None:
    # Resource annotations change what the agent containers request: checked as defaults, they would pass unseen.
    pod = pods("prod", "zitadel")["Deployment/zitadel"]
    pod["metadata"]["annotations"][INJECT + annotation] = "256Mi"
    with pytest.raises(NotImplementedError):
        inject_vault_agent(pod)


@pytest.mark.parametrize(("stack", "release"), RELEASE_CASES)
def test_program_sets_no_injector_annotation_that_changes_the_agents_security(stack: str, release: str) -> None:
    # Each of these changes what securityContext() gives the agent containers (or patches it arbitrarily).
    risky = {
        "agent-run-as-user",
        "agent-run-as-group",
        "agent-run-as-same-user",
        "agent-set-security-context",
        "agent-json-patch",
        "agent-init-json-patch",
    }
    for label, pod in pods(stack, release).items():
        annotations = pod["metadata"].get("annotations") or {}
        assert sorted(k for k in annotations if k.removeprefix(INJECT) in risky) == [], label


# --- each check catches a broken pod --------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def _context(pod: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = _container(pod).setdefault("securityContext", {})
    return context


def _pod_context(pod: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"].setdefault("securityContext", {})
    return context


BROKEN: list[tuple[str, Mutation, set[tuple[str, str | None]]]] = [
    (
        "hostProcess",
        lambda p: _context(p).update(windowsOptions={"hostProcess": True}),
        {("hostProcess", "zitadel")},
    ),
    ("hostNamespaces", lambda p: p["spec"].update(hostNetwork=True), {("hostNamespaces", None)}),
    ("hostNamespaces", lambda p: p["spec"].update(hostPID=True), {("hostNamespaces", None)}),
    ("hostNamespaces", lambda p: p["spec"].update(hostIPC=True), {("hostNamespaces", None)}),
    ("privileged", lambda p: _context(p).update(privileged=True), {("privileged", "zitadel")}),
    (
        "hostPathVolumes",
        lambda p: p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        {("hostPathVolumes", None), ("restrictedVolumes", None)},
    ),
    (
        "hostPorts",
        lambda p: _container(p)["ports"][0].update(hostPort=8080),
        {("hostPorts", "zitadel")},
    ),
    (
        "appArmorProfile",
        lambda p: _context(p).update(appArmorProfile={"type": "Unconfined"}),
        {("appArmorProfile", "zitadel")},
    ),
    (
        "appArmorProfile",
        lambda p: p["metadata"]["annotations"].update(
            {"container.apparmor.security.beta.kubernetes.io/zitadel": "unconfined"}
        ),
        {("appArmorProfile", "zitadel")},
    ),
    (
        "seLinuxOptions",
        lambda p: _pod_context(p).update(seLinuxOptions={"type": "spc_t"}),
        {("seLinuxOptions", None)},
    ),
    (
        "seLinuxOptions",
        lambda p: _context(p).update(seLinuxOptions={"user": "system_u"}),
        {("seLinuxOptions", "zitadel")},
    ),
    ("procMount", lambda p: _context(p).update(procMount="Unmasked"), {("procMount", "zitadel")}),
    (
        "sysctls",
        lambda p: _pod_context(p).update(sysctls=[{"name": "kernel.msgmax", "value": "65536"}]),
        {("sysctls", None)},
    ),
    (
        "hostProbesAndHostLifecycle",
        lambda p: _container(p)["livenessProbe"]["httpGet"].update(host="10.0.0.1"),
        {("hostProbesAndHostLifecycle", "zitadel")},
    ),
    (
        "restrictedVolumes",
        lambda p: p["spec"]["volumes"].append({"name": "nfs", "nfs": {"server": "nfs", "path": "/"}}),
        {("restrictedVolumes", None)},
    ),
    (
        "allowPrivilegeEscalation",
        lambda p: _context(p).pop("allowPrivilegeEscalation"),
        {("allowPrivilegeEscalation", "zitadel")},
    ),
    (
        "runAsNonRoot",
        lambda p: (_pod_context(p).pop("runAsNonRoot"), _context(p).pop("runAsNonRoot")),
        {("runAsNonRoot", "zitadel")},
    ),
    ("runAsNonRoot", lambda p: _context(p).update(runAsNonRoot=False), {("runAsNonRoot", "zitadel")}),
    ("runAsUser", lambda p: _pod_context(p).update(runAsUser=0), {("runAsUser", None)}),
    (
        "seccompProfile",
        lambda p: (_pod_context(p).pop("seccompProfile"), _context(p).pop("seccompProfile")),
        {("seccompProfile", "zitadel")},
    ),
    (
        "seccompProfile",
        lambda p: _pod_context(p).update(seccompProfile={"type": "Unconfined"}),
        {("seccompProfile", None)},
    ),
    ("capabilities", lambda p: _context(p).update(capabilities={}), {("capabilities", "zitadel")}),
    (
        "capabilities",
        lambda p: _context(p)["capabilities"].update(add=["NET_BIND_SERVICE", "CHOWN"]),
        {("capabilities", "zitadel")},
    ),
]


def test_every_check_has_a_broken_case() -> None:
    assert sorted({check for check, _, _ in BROKEN}) == sorted(pss.CHECKS)


@pytest.mark.parametrize(
    ("check", "mutate", "expected"), BROKEN, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BROKEN)]
)
def test_each_check_catches_a_broken_pod(check: str, mutate: Mutation, expected: set[tuple[str, str | None]]) -> None:
    pod = pods("dev", "zitadel")["Deployment/zitadel"]
    assert pss.violations("Deployment/zitadel", pod) == []
    mutate(pod)
    found = pss.violations("Deployment/zitadel", pod)
    assert {(v.check, v.container) for v in found} == expected
    assert all(str(v).startswith("Deployment/zitadel: ") for v in found)


def test_allowed_values_pass() -> None:
    # What the standard allows must not be reported: the checker is not stricter than the admission controller.
    pod = pods("dev", "zitadel")["Deployment/zitadel"]
    _context(pod)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    _context(pod)["seccompProfile"] = {"type": "Localhost", "localhostProfile": "profiles/zitadel.json"}
    _context(pod)["seLinuxOptions"] = {"type": "container_t", "level": "s0:c1,c2"}
    _context(pod)["appArmorProfile"] = {"type": "RuntimeDefault"}
    _context(pod)["procMount"] = "Default"
    _pod_context(pod)["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    pod["spec"]["volumes"].append({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}})
    assert pss.violations("Deployment/zitadel", pod) == []


# --- resources on every container, and the policy pack agrees ------------------------------------------------------


def missing_resources(manifests: list[dict[str, Any]]) -> list[str]:
    """``pod: container: what`` for each rendered container without cpu/memory requests and a memory limit."""
    found = []
    for label, pod in pod_templates(manifests):
        for name, container in rendering.containers(pod["spec"]):
            resources = container.get("resources") or {}
            missing = [
                path
                for section, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory"))
                if not (resources.get(section) or {}).get(key)
                for path in [f"{section}.{key}"]
            ]
            if missing:
                found.append(f"{label}: {name}: {', '.join(missing)}")
    return found


@pytest.mark.parametrize(("stack", "release"), RELEASE_CASES)
def test_every_rendered_container_has_requests_and_a_memory_limit(stack: str, release: str) -> None:
    assert missing_resources(rendered(stack, release)) == []


def pack_findings(release: str, inputs: rendering.ReleaseInputs, values: dict[str, Any]) -> list[str]:
    """What the policy pack's resources policy reports on a release with these values."""
    props = {"chart": inputs.chart.chart, "version": inputs.chart.version, "values": values}
    args = ResourceValidationArgs(
        HELM_RELEASE_TYPE, props, f"urn:pulumi:dev::p::{HELM_RELEASE_TYPE}::{release}", release, options(), None
    )
    found: list[str] = []
    validate, _ = pack.RESOURCE_POLICIES["resources-on-every-container"]

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validate(args, report, stack_facts("dev"))
    return found


def _drop(values: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    node: Any = values
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[leaf]


#: (release, values path, what the render then lacks; None where the chart falls back to a resources preset).
DROPPED: list[tuple[str, str, list[str] | None]] = [
    (
        "redis",
        "kubectl.resources",
        ["StatefulSet/redis-node: kubectl-shared: requests.cpu, requests.memory, limits.memory"],
    ),
    (
        "redis",
        "replica.initContainers.0.resources",
        ["StatefulSet/redis-node: init:copy-redis-password: requests.cpu, requests.memory, limits.memory"],
    ),
    ("redis", "replica.resources", None),
    ("redis", "sentinel.resources", None),
    ("redis", "metrics.resources", None),
    ("zitadel", "resources", ["Deployment/zitadel: zitadel: requests.cpu, requests.memory, limits.memory"]),
    (
        "zitadel",
        "login.resources",
        ["Deployment/zitadel-login: zitadel-login: requests.cpu, requests.memory, limits.memory"],
    ),
    (
        "zitadel",
        "tools.wait4x.resources",
        ["Deployment/zitadel-login: init:wait-for-zitadel: requests.cpu, requests.memory, limits.memory"],
    ),
    (
        "zitadel",
        "cleanupJob.resources",
        ["Job/zitadel-cleanup: zitadel-cleanup: requests.cpu, requests.memory, limits.memory"],
    ),
    ("zitadel", "initJob.resources", ["Job/zitadel-init: zitadel-init: requests.cpu, requests.memory, limits.memory"]),
    (
        "zitadel",
        "setupJob.resources",
        [
            f"Job/zitadel-setup: {name}: requests.cpu, requests.memory, limits.memory"
            for name in ("zitadel-setup", "zitadel-machinekey", "zitadel-machine-pat", "zitadel-login-client-pat")
        ],
    ),
    ("zitadel", "postgresql.primary.resources", None),
    # The controller's chart values carry their own defaults (a 1Gi limit): the render hides the gap, the pack not.
    ("eg", "deployment.envoyGateway.resources", None),
    (
        "eg",
        "certgen.job.resources",
        ["Job/eg-gateway-helm-certgen: envoy-gateway-certgen: requests.cpu, requests.memory, limits.memory"],
    ),
]


@pytest.mark.parametrize(("release", "path", "render_lacks"), DROPPED, ids=[f"{r}:{p}" for r, p, _ in DROPPED])
def test_a_container_without_resources_is_reported_by_the_render_and_the_pack(
    release: str, path: str, render_lacks: list[str] | None
) -> None:
    inputs = rendering.release_inputs("dev", release)
    assert pack_findings(release, inputs, inputs.values) == []
    values = copy.deepcopy(inputs.values)
    _drop(values, path)
    manifests = rendering.chart_archive(inputs.chart).render(values, name=inputs.name, namespace=inputs.namespace)
    pack_path = path.replace(".0.", "[0].")
    assert pack_findings(release, inputs, values) == [
        f"{pack_path} must set requests.cpu, requests.memory, limits.memory"
    ]
    if render_lacks is None:
        # A Bitnami section falls back to its resourcesPreset: sized by the chart, not by the stack. The pack
        # requires the stack's own figures, so it still reports the gap the render hides.
        assert missing_resources(manifests.manifests) == []
    else:
        assert missing_resources(manifests.manifests) == render_lacks


# --- the namespaces enforce it --------------------------------------------------------------------------------------


def test_program_namespaces_enforce_restricted(recording: mocked.Recording) -> None:
    namespaces = {
        r.name: mask(r.inputs)["metadata"].get("labels", {}) for r in recording.by_type("kubernetes:core/v1:Namespace")
    }
    assert sorted(namespaces) == ["database", "envoy-gateway-system", "zitadel"]
    for name, labels in namespaces.items():
        assert {k: v for k, v in labels.items() if k.startswith(PSA)} == {
            PSA + "enforce": "restricted",
            PSA + "enforce-version": "v1.30",
            PSA + "audit": "restricted",
            PSA + "audit-version": "latest",
            PSA + "warn": "restricted",
            PSA + "warn-version": "latest",
        }, name


def _config_violations(stack: str, overrides: dict[str, Any]) -> list[str]:
    config, secrets = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    with pytest.raises(StackConfigError) as info:
        load(stack, deep_merge(config, overrides), secrets)
    return info.value.violations


def test_pod_security_version_is_a_minor_version_or_latest() -> None:
    (found,) = _config_violations("dev", {"kubernetes": {"podSecurityVersion": "1.30"}})
    assert found.startswith("dev: kubernetes.podSecurityVersion: ")
    assert load("dev", {"kubernetes": {"podSecurityVersion": "latest"}}).kubernetes.pod_security_version == "latest"


def test_bundled_postgres_needs_its_resources() -> None:
    found = _config_violations("dev", {"zitadel": {"resources": {"postgres": None}}})
    assert found == ["dev: zitadel.resources.postgres: the bundled Postgres needs requests and a memory limit"]
