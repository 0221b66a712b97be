"""What the cluster would run: the pinned charts rendered by Helm's engine with the values the program passes.

Each stack's Helm releases are rendered from the real chart archives (``tests/rendering.py``) and checked as
Kubernetes objects: valid for Kubernetes 1.30, the Redis master Service and the password path, the Vault injector
annotations, ZITADEL loading the Vault-rendered file, and no chart-made password Secret.
"""

from __future__ import annotations

import copy
import posixpath
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pulumi.runtime import rpc

from stacks import names
from stacktools import mocked
from tests import rendering
from tests.conftest import recorded
from tests.rendering import containers, find, kubernetes_errors, labelled, pod_templates, rendered

VAULT = "vault.hashicorp.com/"
K8S_SECRET = "kubernetes:core/v1:Secret"
#: Env var names and Secret keys that would carry a credential in clear.
CREDENTIAL_WORDS = ("PASSWORD", "PASSWD", "DSN", "MASTERKEY", "TOKEN", "SECRET")
#: Where each release's objects live.
NAMESPACES = {"redis": "database", "zitadel": "zitadel"}
#: The pod templates whose pods read a secret from Vault, and so carry the injector's annotations.
VAULT_PODS = {
    "redis": ["StatefulSet/redis-node"],
    "zitadel": ["Deployment/zitadel", "Job/zitadel-init", "Job/zitadel-setup"],
}
REDIS_PASSWORD_PATH = "/opt/bitnami/redis/secrets/redis-password"
ZITADEL_VAULT_CONFIG_ARG = "/zitadel-secret-config-yaml/../vault/secrets/zitadel-secrets.yaml"

release = pytest.mark.parametrize("release", rendering.RELEASES)


def pods(stack: str, release: str) -> dict[str, dict[str, Any]]:
    return dict(pod_templates(rendered(stack, release)))


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(containers(pod["spec"]))[name]


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in c.get("env") or []}


# --- the chart and its values --------------------------------------------------------------------------------------


@release
def test_the_rendered_chart_is_the_pinned_release(stack: str, release: str) -> None:
    inputs = rendering.release_inputs(stack, release)
    archive = rendering.chart_archive(inputs.chart)
    expected = {"redis": ("redis", "23.1.1"), "zitadel": ("zitadel", "9.34.0")}[release]
    assert (archive.name, archive.version) == expected
    assert (inputs.name, inputs.namespace) == (release, NAMESPACES[release])


@release
def test_values_validate_against_the_chart_schema(stack: str, release: str) -> None:
    inputs = rendering.release_inputs(stack, release)
    assert rendering.chart_archive(inputs.chart).schema_errors(inputs.values) == []


# --- valid Kubernetes objects --------------------------------------------------------------------------------------


@release
def test_every_manifest_is_valid_for_kubernetes_1_30(stack: str, release: str) -> None:
    manifests = rendered(stack, release)
    assert manifests
    assert kubernetes_errors(manifests) == []


def test_kubernetes_validation_catches_a_misspelled_field() -> None:
    statefulset = find(rendered("dev", "redis"), "StatefulSet", "redis-node")
    statefulset["spec"]["template"]["spec"]["containers"][0]["envFromm"] = []
    assert kubernetes_errors([statefulset]) == [
        "StatefulSet/redis-node: spec.template.spec.containers.0: "
        "Additional properties are not allowed ('envFromm' was unexpected)"
    ]


@release
def test_kubernetes_validation_catches_a_misspelled_security_context_field(release: str) -> None:
    # The charts copy security contexts into the pods as they are: the values walk leaves them to this check.
    inputs = rendering.release_inputs("dev", release)
    values = copy.deepcopy(inputs.values)
    section = values["replica"] if release == "redis" else values
    section["podSecurityContext"] = {**(section.get("podSecurityContext") or {}), "runAsNonRoott": True}
    broken = rendering.chart_archive(inputs.chart).render(values, name=inputs.name, namespace=inputs.namespace)
    workload = {"redis": "StatefulSet/redis-node", "zitadel": "Deployment/zitadel"}[release]
    assert f"{workload}: spec.template.spec.securityContext: " + (
        "Additional properties are not allowed ('runAsNonRoott' was unexpected)"
    ) in kubernetes_errors(broken.manifests)


@release
def test_every_object_lands_in_the_release_namespace(stack: str, release: str) -> None:
    assert {m["metadata"].get("namespace") for m in rendered(stack, release)} == {NAMESPACES[release]}


# --- Redis: the master Service, Sentinel and the configuration that runs --------------------------------------------


def test_redis_master_service_selects_the_pod_labelled_master(stack: str) -> None:
    manifests = rendered(stack, "redis")
    service = find(manifests, "Service", "redis-master")
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/instance": "redis",
        "app.kubernetes.io/name": "redis",
        "isMaster": "true",
    }
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(6379, 6379)]
    # Nothing else in the selector: only the label the sidecar moves tells the master from the replicas.
    pod_labels = pods(stack, "redis")["StatefulSet/redis-node"]["metadata"]["labels"]
    assert "isMaster" not in pod_labels
    assert {k: v for k, v in service["spec"]["selector"].items() if k != "isMaster"}.items() <= pod_labels.items()
    sentinel = find(manifests, "Service", "redis")
    assert [(p["name"], p["port"]) for p in sentinel["spec"]["ports"]] == [("tcp-redis", 6379), ("tcp-sentinel", 26379)]


def test_the_kubectl_sidecar_moves_the_master_label_on_failover(stack: str) -> None:
    manifests = rendered(stack, "redis")
    pod = pods(stack, "redis")["StatefulSet/redis-node"]
    sidecar = container(pod, "kubectl-shared")
    assert sidecar["command"] == ["/opt/bitnami/scripts/kubectl-scripts/update-master-label.sh"]
    script = find(manifests, "ConfigMap", "redis-kubectl-scripts")["data"]["update-master-label.sh"]
    assert 'isMaster="true" --overwrite' in script and 'isMaster="false" --overwrite' in script
    # Sentinel runs the reconfig script at the end of a failover; it tells the sidecar the new master.
    sentinel_conf = find(manifests, "ConfigMap", "redis-configuration")["data"]["sentinel.conf"]
    assert (
        "sentinel client-reconfig-script mymaster /opt/bitnami/scripts/start-scripts/push-master-label.sh"
        in sentinel_conf
    )
    # The sidecar patches pod labels with the pod's own token.
    assert pod["spec"]["serviceAccountName"] == "redis"
    assert pod["spec"]["automountServiceAccountToken"] is True
    (rule,) = find(manifests, "Role", "redis")["rules"]
    assert (rule["resources"], sorted(rule["verbs"])) == (["pods"], ["list", "patch"])
    binding = find(manifests, "RoleBinding", "redis")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "redis"}]


def test_sentinel_monitors_the_set_with_the_stack_settings(stack: str) -> None:
    conf = find(rendered(stack, "redis"), "ConfigMap", "redis-configuration")["data"]["sentinel.conf"]
    lines = [line.strip() for line in conf.splitlines()]
    for expected in (
        "sentinel monitor mymaster redis-node-0.redis-headless.database.svc.cluster.local 6379 2",
        "sentinel down-after-milliseconds mymaster 5000",
        "sentinel failover-timeout mymaster 60000",
        "sentinel parallel-syncs mymaster 1",
    ):
        assert expected in lines


def test_redis_and_sentinels_load_the_users_the_vault_agent_renders(stack: str) -> None:
    """README "Redis users": the chart's rendered files name the agent's ACL files, and the chart adds no ACL of its
    own (its auth.acl would put the users, and Sentinel's passwords in plain text, into the ConfigMap)."""
    manifests = rendered(stack, "redis")
    config = find(manifests, "ConfigMap", "redis-configuration")["data"]
    assert [line.strip() for line in config["redis.conf"].splitlines() if line.strip().startswith("aclfile")] == [
        "aclfile /vault/secrets/redis-users.acl"
    ]
    assert config["users.acl"] == ""
    sentinel = [line.strip() for line in config["sentinel.conf"].splitlines()]
    assert "include /vault/secrets/sentinel-users.conf" in sentinel
    assert not any(line.startswith(("user ", "sentinel sentinel-pass")) for line in sentinel)
    # Every container of the node pods sees /vault/secrets: the injector mounts its volume into each one.
    pod = pods(stack, "redis")["StatefulSet/redis-node"]
    assert [name for name, _ in containers(pod["spec"])] == [
        "init:copy-redis-password",
        "redis",
        "sentinel",
        "metrics",
        "kubectl-shared",
    ]


def test_redis_nodes_load_the_replica_and_common_configuration(stack: str) -> None:
    # In Sentinel mode every node starts from start-node.sh, which includes replica.conf and redis.conf, never
    # master.conf: so FLUSHDB (ZITADEL's cache truncate) stays allowed on whichever node is master.
    manifests = rendered(stack, "redis")
    start = find(manifests, "ConfigMap", "redis-scripts")["data"]["start-node.sh"]
    assert 'ARGS+=("--include" "/opt/bitnami/redis/etc/replica.conf")' in start
    assert 'ARGS+=("--include" "/opt/bitnami/redis/etc/redis.conf")' in start
    assert "master.conf" not in start
    config = find(manifests, "ConfigMap", "redis-configuration")["data"]
    renamed = [line for line in config["replica.conf"].splitlines() if line.startswith("rename-command")]
    assert renamed == ['rename-command FLUSHALL ""']
    common = config["redis.conf"].splitlines()
    assert {"databases 16", "appendonly yes", "appendfsync everysec"} <= set(common)


def test_redis_placement_disruption_and_storage(stack: str) -> None:
    manifests = rendered(stack, "redis")
    statefulset = find(manifests, "StatefulSet", "redis-node")
    assert statefulset["spec"]["replicas"] == 3
    anti_affinity = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    expected_rule = {
        "dev": "preferredDuringSchedulingIgnoredDuringExecution",
        "prod": "requiredDuringSchedulingIgnoredDuringExecution",
    }[stack]
    assert list(anti_affinity) == [expected_rule]
    assert find(manifests, "PodDisruptionBudget", "redis-node")["spec"]["maxUnavailable"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "redis-data"
    assert claim["spec"]["resources"]["requests"]["storage"] == {"dev": "1Gi", "prod": "8Gi"}[stack]


def test_every_redis_object_records_the_db_layout(stack: str) -> None:
    for manifest in rendered(stack, "redis"):
        annotations = manifest["metadata"].get("annotations") or {}
        assert annotations.get(names.EVENTS_DB_ANNOTATION) == "1", labelled(manifest)
        assert annotations.get(names.CACHE_BLOCK_ANNOTATION) == "3-9", labelled(manifest)


def images(manifests: list[dict[str, Any]]) -> set[str]:
    return {c["image"] for _, pod in pod_templates(manifests) for _, c in containers(pod["spec"])}


def floating(image: str) -> bool:
    """No tag or digest (Docker's implicit ``latest``), or ``latest`` itself."""
    name = image.rsplit("/", 1)[-1]
    return "@" not in name and (":" not in name or name.endswith(":latest"))


@pytest.mark.parametrize(
    ("stack", "release"),
    [
        ("dev", "redis"),
        ("prod", "redis"),
        ("dev", "zitadel"),
        ("prod", "zitadel"),
    ],
)
def test_every_image_is_pinned(stack: str, release: str) -> None:
    assert sorted(i for i in images(rendered(stack, release)) if floating(i)) == []


def test_redis_runs_the_projects_own_build_the_rest_bitnamilegacy(stack: str) -> None:
    # Redis and Sentinel: the project's 8.2.10 build. Bitnami moved its public images; the legacy repository keeps the
    # tags this chart version pins for the others.
    pulled = set(images(rendered(stack, "redis")))
    own = {"ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0", "ghcr.io/blinkchamber/redis-sentinel:8.2.10-debian-12-r0"}
    assert own <= pulled
    assert {i.rsplit("/", 1)[0] for i in pulled - own} == {"docker.io/bitnamilegacy"}


def test_floating_tags_are_caught() -> None:
    assert [floating(i) for i in ("a/b", "a/b:latest", "r:5000/a/b", "a/b:1.2", "a/b@sha256:00", "r:5000/a/b:1")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_every_redis_container_has_requests_and_a_memory_limit(stack: str) -> None:
    # A chart section without explicit resources falls back to its resourcesPreset; none may here.
    for label, pod in pod_templates(rendered(stack, "redis")):
        for name, c in containers(pod["spec"]):
            resources = c.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            assert requests.get("cpu") and requests.get("memory") and limits.get("memory"), f"{label} {name}"


def test_redis_peers_on_the_data_ports(stack: str) -> None:
    policy = find(rendered(stack, "redis"), "NetworkPolicy", "redis")
    peers = []
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports") or []}
        if ports & {6379, 26379}:
            assert ports == {6379, 26379}
            peers += [peer for peer in rule.get("from") or [{"anyone": True}]]
    assert peers == [
        {"podSelector": {"matchLabels": {"redis-client": "true"}}},  # the chart's same-namespace client label
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "redis", "app.kubernetes.io/name": "redis"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zitadel"}}},
        # The gateway's ratelimit pods (counters in DB 0), and no other pod of their namespace.
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "ratelimit",
                    "app.kubernetes.io/managed-by": "envoy-gateway",
                    "app.kubernetes.io/name": "envoy-ratelimit",
                }
            },
        },
    ]


# --- Redis: the password from Vault to every process --------------------------------------------------------------


def test_the_password_copy_runs_first_into_the_shared_volume(stack: str) -> None:
    pod = pods(stack, "redis")["StatefulSet/redis-node"]
    annotations = pod["metadata"]["annotations"]
    # agent-init-first: the injector puts vault-agent-init before the chart's init containers.
    assert annotations[f"{VAULT}agent-init-first"] == "true"
    init = pod["spec"]["initContainers"]
    assert init[0]["name"] == "copy-redis-password"
    shell, flags, script = init[0]["command"]
    assert (shell, flags) == ("/bin/sh", "-ec")
    # From the agent's file to where the chart's processes read it (what else the script checks is its own test's).
    assert "/vault/secrets/redis-password" in script and REDIS_PASSWORD_PATH in script
    assert init[0]["volumeMounts"] == [{"mountPath": "/opt/bitnami/redis/secrets", "name": "redis-password"}]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["redis-password"] == {"name": "redis-password", "emptyDir": {}}


def test_redis_processes_read_the_copied_password_file(stack: str) -> None:
    manifests = rendered(stack, "redis")
    pod = pods(stack, "redis")["StatefulSet/redis-node"]
    mounts = {
        name: {m["mountPath"].rstrip("/") for m in c.get("volumeMounts") or [] if m["name"] == "redis-password"}
        for name, c in containers(pod["spec"])
    }
    assert mounts == {
        "init:copy-redis-password": {"/opt/bitnami/redis/secrets"},
        "redis": {"/opt/bitnami/redis/secrets"},
        "sentinel": {"/opt/bitnami/redis/secrets"},
        "metrics": {"/secrets"},
        "kubectl-shared": set(),
    }
    redis, sentinel, metrics = (container(pod, n) for n in ("redis", "sentinel", "metrics"))
    assert env(redis)["REDIS_PASSWORD_FILE"]["value"] == REDIS_PASSWORD_PATH
    assert env(redis)["REDIS_MASTER_PASSWORD_FILE"]["value"] == REDIS_PASSWORD_PATH
    assert env(sentinel)["REDIS_PASSWORD_FILE"]["value"] == REDIS_PASSWORD_PATH
    assert env(metrics)["REDIS_PASSWORD_FILE"]["value"] == "/secrets/redis-password"
    # The start scripts turn the file into Redis's requirepass/masterauth and Sentinel's auth settings.
    assert redis["args"] == ["/opt/bitnami/scripts/start-scripts/start-node.sh"]
    assert sentinel["args"] == ["/opt/bitnami/scripts/start-scripts/start-sentinel.sh"]
    scripts = find(manifests, "ConfigMap", "redis-scripts")["data"]
    read_file = '[[ -f $REDIS_PASSWORD_FILE ]] && export REDIS_PASSWORD="$(< "${REDIS_PASSWORD_FILE}")"'
    assert read_file in scripts["start-node.sh"] and read_file in scripts["start-sentinel.sh"]
    assert 'ARGS+=("--requirepass" "${REDIS_PASSWORD}")' in scripts["start-node.sh"]
    assert 'printf "\\nrequirepass %s" "$REDIS_PASSWORD"' in scripts["start-sentinel.sh"]
    assert metrics["command"][-1].startswith('export REDIS_PASSWORD="$(< $REDIS_PASSWORD_FILE)"')


# --- Vault injector annotations -----------------------------------------------------------------------------------


@release
def test_vault_annotations_on_exactly_the_pods_that_read_vault(stack: str, release: str) -> None:
    injected = [
        label
        for label, pod in pod_templates(rendered(stack, release))
        if (pod["metadata"].get("annotations") or {}).get(f"{VAULT}agent-inject") == "true"
    ]
    assert injected == VAULT_PODS[release]


@release
def test_vault_annotations_name_the_role_and_the_secret(stack: str, release: str) -> None:
    role, inject_name, first_path = {
        "redis": ("redis-role", "redis-password", "secret/data/redis"),
        "zitadel": ("zitadel-role", "zitadel-secrets", "secret/data/redis-users/zitadel"),
    }[release]
    all_pods = pods(stack, release)
    for label in VAULT_PODS[release]:
        annotations = all_pods[label]["metadata"]["annotations"]
        assert annotations[f"{VAULT}role"] == role, label
        assert annotations[f"{VAULT}auth-path"] == "auth/kubernetes", label
        # Init container only: a Job with the agent sidecar would never complete.
        assert annotations[f"{VAULT}agent-pre-populate-only"] == "true", label
        assert annotations[f"{VAULT}agent-inject-secret-{inject_name}"] == first_path, label


def test_redis_template_survives_the_charts_tpl(stack: str) -> None:
    # The Bitnami chart runs pod annotations through tpl: the agent's template must come out as written.
    annotations = pods(stack, "redis")["StatefulSet/redis-node"]["metadata"]["annotations"]
    assert annotations[f"{VAULT}agent-inject-template-redis-password"] == (
        '[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]'
    )
    assert annotations[f"{VAULT}agent-template-left-delim-redis-password"] == "[["
    assert annotations[f"{VAULT}agent-template-right-delim-redis-password"] == "]]"


def test_zitadel_template_renders_its_secrets_file(stack: str) -> None:
    dsn_path = "secret/data/zitadel-database"  # dev writes its generated DSN there, prod reads an existing one
    for label in VAULT_PODS["zitadel"]:
        annotations = pods(stack, "zitadel")[label]["metadata"]["annotations"]
        assert annotations[f"{VAULT}agent-inject-file-zitadel-secrets"] == "zitadel-secrets.yaml", label
        template = annotations[f"{VAULT}agent-inject-template-zitadel-secrets"]
        password = '{{ with secret "secret/data/redis-users/zitadel" }}{{ .Data.data.password | toJSON }}{{ end }}'
        assert password in template
        assert f'{{{{ with secret "{dsn_path}" }}}}{{{{ .Data.data.dsn | toJSON }}}}{{{{ end }}}}' in template


@release
def test_injected_pods_run_as_the_service_account_vault_binds(
    stack: str, release: str, recording: mocked.Recording
) -> None:
    manifests = rendered(stack, release)
    account = {"redis": "redis", "zitadel": "zitadel"}[release]
    role = recording.one("vault:kubernetes/authBackendRole:AuthBackendRole", f"{release}-role").inputs
    assert (role["boundServiceAccountNames"], role["boundServiceAccountNamespaces"]) == (
        [account],
        [NAMESPACES[release]],
    )
    service_account = find(manifests, "ServiceAccount", account)
    for label in VAULT_PODS[release]:
        spec = pods(stack, release)[label]["spec"]
        assert spec["serviceAccountName"] == account, label
        # The agent logs in with the pod's token: the pod must get one.
        mounted = spec.get("automountServiceAccountToken", service_account.get("automountServiceAccountToken", True))
        assert mounted is True, label


# --- ZITADEL: the Vault-rendered configuration --------------------------------------------------------------------


def config_args(args: list[str]) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]


def test_zitadel_loads_the_vault_rendered_file(stack: str) -> None:
    zitadel_pods = pods(stack, "zitadel")
    for label, name in (
        ("Deployment/zitadel", "zitadel"),
        ("Job/zitadel-init", "zitadel-init"),
        ("Job/zitadel-setup", "zitadel-setup"),
    ):
        pod = zitadel_pods[label]
        c = container(pod, name)
        # The Vault file comes last: its Redis password and DSN win over the ConfigMap.
        assert config_args(c["args"]) == ["/config/zitadel-config-yaml", ZITADEL_VAULT_CONFIG_ARG], label
        assert posixpath.normpath(ZITADEL_VAULT_CONFIG_ARG) == "/vault/secrets/zitadel-secrets.yaml"
        # The path walks out of the anchor Secret's mount point; the anchor must be mounted exactly there.
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["zitadel-secret-config-yaml"] == "/zitadel-secret-config-yaml", label
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["zitadel-secret-config-yaml"]["secret"]["secretName"] == "zitadel-vault-config-anchor"
    setup = container(zitadel_pods["Job/zitadel-setup"], "zitadel-setup")
    steps = [setup["args"][i + 1] for i, arg in enumerate(setup["args"][:-1]) if arg == "--steps"]
    assert steps == [
        "/config/zitadel-config-yaml",
        ZITADEL_VAULT_CONFIG_ARG,
        "/vault/secrets/zitadel-first-instance.yaml",
    ]


# --- ZITADEL: the masterkey from Vault, as a file -----------------------------------------------------------------

MASTERKEY_FILE = "/vault/secrets/zitadel-masterkey"


def masterkey_source(args: list[str]) -> tuple[str, str]:
    """Where ZITADEL v4.13 takes its masterkey from with these args (cmd/key/masterkey.go): pflag keeps a flag's last
    value, and ZITADEL refuses anything but exactly one of --masterkey, --masterkeyFile (-m), --masterkeyFromEnv."""
    from_env, path, value = False, "", ""
    index = 0
    while index < len(args):
        name, has_value, inline = args[index].partition("=")
        if name == "--masterkeyFromEnv":
            from_env = inline.lower() in ("1", "t", "true") if has_value else True
        elif name in ("--masterkeyFile", "-m", "--masterkey"):
            given = inline if has_value else args[index + 1]
            index += 0 if has_value else 1
            path, value = (given, value) if name != "--masterkey" else (path, given)
        index += 1
    sources = [("env", "ZITADEL_MASTERKEY")] if from_env else []
    sources += [("file", path)] if path else []
    sources += [("argument", value)] if value else []
    if len(sources) != 1:
        raise ValueError(f"masterkey must either be provided by file path, value or environment variable: {sources}")
    return sources[0]


def test_the_masterkey_source_follows_the_flags_last_value() -> None:
    assert masterkey_source(["start", "--masterkeyFromEnv"]) == ("env", "ZITADEL_MASTERKEY")
    assert masterkey_source(["setup", "--masterkeyFromEnv", "--masterkeyFromEnv=false", "-m", "/k"]) == ("file", "/k")
    with pytest.raises(ValueError):
        masterkey_source(["setup", "--masterkeyFromEnv", "--masterkeyFile", "/k"])
    with pytest.raises(ValueError):
        masterkey_source(["start"])


def test_zitadel_reads_its_masterkey_from_the_vault_agent_file(stack: str) -> None:
    zitadel_pods = pods(stack, "zitadel")
    for label, name in (("Deployment/zitadel", "zitadel"), ("Job/zitadel-setup", "zitadel-setup")):
        pod = zitadel_pods[label]
        c = container(pod, name)
        assert masterkey_source(c["args"]) == ("file", MASTERKEY_FILE), label
        annotations = pod["metadata"]["annotations"]
        assert annotations[f"{VAULT}agent-inject-template-zitadel-masterkey"] == (
            '{{- with secret "secret/data/zitadel" -}}{{ .Data.data.masterkey }}{{- end }}'
        ), label
        assert annotations[f"{VAULT}error-on-missing-key-zitadel-masterkey"] == "true", label
        assert f"{VAULT}agent-inject-file-zitadel-masterkey" not in annotations, label  # the file is its name
    # The server reads no masterkey env at all; the setup job's (the chart hard-codes it) names a Secret whose value
    # is not one: ZITADEL refuses a masterkey that is not 32 bytes.
    assert "ZITADEL_MASTERKEY" not in env(container(zitadel_pods["Deployment/zitadel"], "zitadel"))
    setup_env = env(container(zitadel_pods["Job/zitadel-setup"], "zitadel-setup"))
    assert setup_env["ZITADEL_MASTERKEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "zitadel-vault-config-anchor", "key": "masterkey"}
    }
    anchor = rpc.unwrap_rpc_secret(recorded(stack).one(K8S_SECRET, "zitadel-vault-config-anchor").inputs["stringData"])
    assert anchor["masterkey"] == "unused: ZITADEL reads its masterkey from the Vault agent's file (--masterkeyFile)"
    assert len(anchor["masterkey"].encode()) != 32
    # The init job only creates the database: no masterkey there.
    init = zitadel_pods["Job/zitadel-init"]["metadata"]["annotations"]
    assert not [a for a in init if "masterkey" in a]
    assert masterkey_source_free(container(zitadel_pods["Job/zitadel-init"], "zitadel-init")["args"])


def masterkey_source_free(args: list[str]) -> bool:
    return not [a for a in args if a.startswith(("--masterkey", "-m"))]


def test_the_post_renderer_is_what_moves_the_servers_masterkey_to_the_file(stack: str) -> None:
    inputs = rendering.release_inputs(stack, "zitadel")
    assert inputs.postrender == "bin/zitadel-postrender"
    plain = rendering.chart_archive(inputs.chart).render(
        inputs.helm_values(), name=inputs.name, namespace=inputs.namespace
    )
    deployment = find(plain.manifests, "Deployment", "zitadel")
    # Helm 3 post-renders the release's manifests, not its hooks: the Deployment must not be one.
    assert not rendering.is_hook(deployment)
    server = container(deployment["spec"]["template"], "zitadel")
    assert masterkey_source(server["args"]) == ("env", "ZITADEL_MASTERKEY")  # what chart 9.34.0 renders
    assert env(server)["ZITADEL_MASTERKEY"]["valueFrom"]["secretKeyRef"]["name"] == "zitadel-vault-config-anchor"
    after = find(rendering.post_rendered(plain.manifests, inputs.postrender), "Deployment", "zitadel")
    assert masterkey_source(container(after["spec"]["template"], "zitadel")["args"]) == ("file", MASTERKEY_FILE)
    # Nothing else of the release changes.
    others = [m for m in plain.manifests if labelled(m) != "Deployment/zitadel"]
    assert [m for m in rendered(stack, "zitadel") if labelled(m) != "Deployment/zitadel"] == others


def test_the_post_renderer_refuses_a_deployment_it_was_not_written_for() -> None:
    manifests = rendered("dev", "zitadel")
    server = container(find(manifests, "Deployment", "zitadel")["spec"]["template"], "zitadel")
    server["args"].remove("--masterkeyFile")  # as if a chart version rendered something else
    with pytest.raises(AssertionError, match="expected one --masterkeyFromEnv and one ZITADEL_MASTERKEY env"):
        rendering.post_rendered(manifests, "bin/zitadel-postrender")


# --- ZITADEL: the first instance's owner ----------------------------------------------------------------------------


def test_the_first_instance_admin_gets_no_personal_access_token(stack: str) -> None:
    manifests = rendered(stack, "zitadel")
    config = yaml.safe_load(find(manifests, "ConfigMap", "zitadel-config-yaml")["data"]["zitadel-config-yaml"])
    machine = config["FirstInstance"]["Org"]["Machine"]
    # ZITADEL makes a PAT for the admin exactly when Pat is there (internal/command/instance.go SetUpInstance).
    assert sorted(machine) == ["Machine", "MachineKey"]
    assert machine["Machine"]["Username"] == "iam-admin"
    setup = pods(stack, "zitadel")["Job/zitadel-setup"]
    names_ = [name for name, _ in containers(setup["spec"])]
    # The chart's machine key writer stays (Secret iam-admin); its PAT writer (Secret iam-admin-pat) is gone.
    assert names_ == ["zitadel-setup", "zitadel-machinekey", "zitadel-login-client-pat"]
    assert "ZITADEL_FIRSTINSTANCE_PATPATH" not in env(container(setup, "zitadel-setup"))


def test_without_the_nulls_file_the_chart_makes_the_admin_a_pat() -> None:
    inputs = rendering.release_inputs("dev", "zitadel")
    assert inputs.value_files == (
        {"zitadel": {"configmapConfig": {"FirstInstance": {"Org": {"Machine": {"Pat": None}}}}}},
    )
    values_only = rendering.chart_archive(inputs.chart).render(inputs.values, name=inputs.name, namespace="zitadel")
    setup = dict(pod_templates(values_only.manifests))["Job/zitadel-setup"]
    assert "zitadel-machine-pat" in [name for name, _ in containers(setup["spec"])]


def test_the_setup_job_dates_the_admin_key_from_its_own_steps_file(stack: str) -> None:
    setup_pod = pods(stack, "zitadel")["Job/zitadel-setup"]
    setup = container(setup_pod, "zitadel-setup")
    steps = [setup["args"][i + 1] for i, arg in enumerate(setup["args"][:-1]) if arg == "--steps"]
    # Last: its ExpirationDate wins over the chart's 2029 default in the ConfigMap.
    assert steps[-1] == "/vault/secrets/zitadel-first-instance.yaml"
    annotations = setup_pod["metadata"]["annotations"]
    assert annotations[f"{VAULT}agent-inject-file-zitadel-first-instance"] == "zitadel-first-instance.yaml"
    assert annotations[f"{VAULT}agent-inject-template-zitadel-first-instance"] == (
        "FirstInstance:\n  Org:\n    Machine:\n      MachineKey:\n        ExpirationDate: "
        '"{{ sprig_dateInZone "2006-01-02T15:04:05Z07:00" (sprig_now | sprig_dateModify "+24h") "UTC" }}"\n'
    )
    # It reads no secret: no path to declare.
    assert f"{VAULT}agent-inject-secret-zitadel-first-instance" not in annotations
    for label in ("Deployment/zitadel", "Job/zitadel-init"):
        assert (
            f"{VAULT}agent-inject-template-zitadel-first-instance"
            not in pods(stack, "zitadel")[label]["metadata"]["annotations"]
        ), label


def test_zitadel_config_map_points_the_caches_at_the_master_service(stack: str) -> None:
    config_map = find(rendered(stack, "zitadel"), "ConfigMap", "zitadel-config-yaml")
    config = yaml.safe_load(config_map["data"]["zitadel-config-yaml"])
    redis = config["Caches"]["Connectors"]["Redis"]
    assert (redis["Enabled"], redis["Addr"], redis["DBOffset"]) == (
        True,
        "redis-master.database.svc.cluster.local:6379",
        2,
    )
    assert "Password" not in redis
    assert [config["Caches"][c]["Connector"] for c in ("Instance", "Milestones", "Organization")] == ["redis"] * 3
    assert "DSN" not in config.get("Database", {}).get("Postgres", {})


# --- no credential in what the charts render ----------------------------------------------------------------------


def credential_like(key: str) -> bool:
    return any(word in key.upper().replace("-", "_") for word in CREDENTIAL_WORDS)


def password_secrets(manifests: list[dict[str, Any]]) -> list[str]:
    """``Secret/name: key`` for every credential-like key of every Secret the chart renders."""
    return [
        f"{labelled(m)}: {key}"
        for m in manifests
        if m["kind"] == "Secret"
        for key in sorted({**(m.get("data") or {}), **(m.get("stringData") or {})})
        if credential_like(key)
    ]


@release
def test_the_charts_render_no_secret(stack: str, release: str) -> None:
    # Every Secret these pods read is made by the program (or by ZITADEL's setup job at run time).
    manifests = rendered(stack, release)
    assert [labelled(m) for m in manifests if m["kind"] == "Secret"] == []
    assert password_secrets(manifests) == []


def test_password_secret_check_catches_a_chart_made_password() -> None:
    # The chart's own password Secret, as the values would produce it with a password in them.
    inputs = rendering.release_inputs("dev", "redis")
    values = dict(inputs.values)
    values["auth"] = {**values["auth"], "usePasswordFileFromSecret": True, "password": secrets.token_urlsafe(24)}
    broken = rendering.chart_archive(inputs.chart).render(values, name=inputs.name, namespace=inputs.namespace)
    assert password_secrets(broken.manifests) == ["Secret/redis: redis-password"]


def referenced_secrets(pod_spec: dict[str, Any]) -> Iterator[str]:
    for volume in pod_spec.get("volumes") or []:
        if "secret" in volume:
            yield volume["secret"]["secretName"]
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                yield source["secret"]["name"]
    for _, c in containers(pod_spec):
        for item in c.get("env") or []:
            if ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                yield ref["name"]
        for source in c.get("envFrom") or []:
            if ref := source.get("secretRef"):
                yield ref["name"]


@release
def test_every_secret_a_pod_reads_is_made_by_the_program(stack: str, release: str, recording: mocked.Recording) -> None:
    read = {name for _, pod in pod_templates(rendered(stack, release)) for name in referenced_secrets(pod["spec"])}
    # No masterkey Secret: the setup job's chart-made env names the anchor, whose value is no masterkey.
    zitadel = {"zitadel-vault-config-anchor", "login-client"}
    expected = {
        ("dev", "redis"): set(),
        ("prod", "redis"): set(),
        ("dev", "zitadel"): {*zitadel, "zitadel-postgresql-auth"},  # the bundled Postgres's passwords
        ("prod", "zitadel"): zitadel,
    }[stack, release]
    assert read == expected
    declared = {
        r.inputs["metadata"]["name"]
        for r in recording.by_type(K8S_SECRET)
        if r.inputs["metadata"].get("namespace") == NAMESPACES[release]
    }
    # login-client holds a token ZITADEL's setup job creates at run time (kubectl in the job's sidecar).
    assert read - {"login-client"} <= declared


def secret_keys_read(manifests: list[dict[str, Any]], secret: str) -> set[str]:
    """The keys of ``secret`` the pods read: as ``secretKeyRef``s, or as files of a volume of the whole Secret."""
    keys: set[str] = set()
    for _, pod in pod_templates(manifests):
        volumes = {
            v["name"] for v in pod["spec"].get("volumes") or [] if (v.get("secret") or {}).get("secretName") == secret
        }
        for _, c in containers(pod["spec"]):
            mounts = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts") or [] if m["name"] in volumes]
            for item in c.get("env") or []:
                if (ref := (item.get("valueFrom") or {}).get("secretKeyRef")) and ref["name"] == secret:
                    keys.add(ref["key"])
                value = item.get("value") or ""
                keys |= {posixpath.relpath(value, mount) for mount in mounts if value.startswith(f"{mount}/")}
    return keys


def test_the_bundled_postgres_finds_every_password_it_reads() -> None:
    # The subchart's superuser, and the chart's application user ("zitadel"): its image refuses to start without a
    # password for that user, though ZITADEL itself connects as the superuser.
    read = secret_keys_read(rendered("dev", "zitadel"), names.ZITADEL_POSTGRES_AUTH_SECRET)
    assert read == {"postgres-password", "password"}
    string_data = recorded("dev").one(K8S_SECRET, names.ZITADEL_POSTGRES_AUTH_SECRET).inputs["stringData"]
    assert read == set(rpc.unwrap_rpc_secret(string_data))


def test_a_password_key_the_postgres_reads_and_no_secret_holds_is_caught() -> None:
    declared = {"postgres-password"}  # as if the application user's password were dropped
    assert secret_keys_read(rendered("dev", "zitadel"), names.ZITADEL_POSTGRES_AUTH_SECRET) - declared == {"password"}


@release
def test_no_container_gets_a_credential_in_plain_env(stack: str, release: str) -> None:
    for label, pod in pod_templates(rendered(stack, release)):
        for name, c in containers(pod["spec"]):
            for item in c.get("env") or []:
                if not credential_like(item["name"]) or "value" not in item:
                    continue
                where = f"{label} {name} {item['name']}"
                if item["name"] == "ALLOW_EMPTY_PASSWORD":
                    assert item["value"] == "no", where
                else:  # only file paths, never the credential itself
                    assert item["name"].endswith(("_FILE", "_PATH")) and item["value"].startswith("/"), where


def test_each_render_starts_from_the_pinned_chart() -> None:
    # Helm prunes the subcharts a render disables from the chart object it renders: prod (no bundled Postgres)
    # rendered first must not take the Postgres away from dev's render.
    def postgres(stack: str) -> list[str]:
        inputs = rendering.release_inputs(stack, names.ZITADEL_RELEASE)
        archive = rendering.chart_archive(inputs.chart)
        manifests = archive.render(inputs.values, name=inputs.name, namespace=inputs.namespace).manifests
        return sorted(m["kind"] for m in manifests if m["metadata"]["name"] == "zitadel-postgresql")

    assert postgres("prod") == []
    assert postgres("dev") == ["PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]
