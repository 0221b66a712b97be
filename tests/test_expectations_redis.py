"""Redis as each stack deploys it: every decision-bearing Helm value and process setting, as a literal per stack.

The values come from README's configuration table and architecture section; the password copy runs for real.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from components import redis_settings
from components.redis import redis_values
from components.wiring import redis_args
from stacks import names
from stacks.config import StackConfig
from tests.conftest import stack_config
from tests.expectations import ABSENT, Contains, Row, both, mismatches, resources

INJECT = "replica.podAnnotations"
COPY = "replica.initContainers[0]"
#: AOF every second, no RDB; maxmemory 70 % of the container's memory limit (256Mi, 1Gi) with volatile-lru eviction;
#: prod refuses writes without a replica at most 10 s behind; the users from the Vault agent's ACL file.
REDIS_CONF_DEV = (
    'databases 16\nappendonly yes\nappendfsync everysec\nsave ""\nmaxmemory 179mb\nmaxmemory-policy volatile-lru\n'
    "aclfile /vault/secrets/redis-users.acl\n"
)
REDIS_CONF_PROD = (
    'databases 16\nappendonly yes\nappendfsync everysec\nsave ""\nmaxmemory 716mb\nmaxmemory-policy volatile-lru\n'
    "min-replicas-to-write 1\nmin-replicas-max-lag 10\naclfile /vault/secrets/redis-users.acl\n"
)
#: The users' files read only the hashes: one KV secret, rendered in tpl-safe delimiters, failing on a missing hash.
ACL_FILES = ("redis-users.acl", "sentinel-users.conf")

VALUES: list[Row] = [
    # Images: Redis and Sentinel are the project's own 8.2.10 build (no release yet, so no digest), so the chart's
    # guard against images that are not Bitnami's is off; the chart's other images are Bitnami's legacy ones.
    both("global.security.allowInsecureImages", True),
    both("image.registry", "ghcr.io"),
    both("image.repository", "blinkchamber/redis"),
    both("image.tag", "8.2.10-debian-12-r0"),
    both("image.digest", ABSENT),
    both("sentinel.image.registry", "ghcr.io"),
    both("sentinel.image.repository", "blinkchamber/redis-sentinel"),
    both("sentinel.image.tag", "8.2.10-debian-12-r0"),
    both("metrics.image.registry", "docker.io"),
    both("metrics.image.repository", "bitnamilegacy/redis-exporter"),
    both("metrics.image.tag", "1.76.0-debian-12-r0"),
    both("kubectl.image.repository", "bitnamilegacy/kubectl"),
    both("kubectl.image.tag", "1.33.4-debian-12-r0"),
    both("volumePermissions.image.repository", "bitnamilegacy/os-shell"),
    both("volumePermissions.image.tag", "12-debian-12-r51"),
    both("sysctl.image.tag", "12-debian-12-r51"),
    # The DB layout on every object: events in DB 1, ZITADEL's cache block 3..9.
    both('commonAnnotations["blinkchamber.io/events-db"]', "1"),
    both('commonAnnotations["blinkchamber.io/zitadel-cache-dbs"]', "3-9"),
    # Replication with Sentinel, three nodes, quorum 2, the stack's timings.
    both("architecture", "replication"),
    both("replica.replicaCount", 3),
    both("sentinel.enabled", True),
    both("sentinel.masterSet", "mymaster"),
    both("sentinel.quorum", 2),
    both("sentinel.downAfterMilliseconds", 5000),
    both("sentinel.failoverTimeout", 60000),
    both("sentinel.parallelSyncs", 1),
    both("sentinel.masterService.enabled", True),
    both("rbac.create", True),
    both("serviceAccount.create", True),
    both("serviceAccount.name", "redis"),
    ("commonConfiguration", REDIS_CONF_DEV, REDIS_CONF_PROD),
    both("replica.disableCommands", ["FLUSHALL"]),
    # Auth on Redis and Sentinel; the password is a file the Vault agent renders, never a chart Secret or a value.
    both("auth.enabled", True),
    both("auth.sentinel", True),
    both("auth.usePasswordFiles", True),
    both("auth.usePasswordFileFromSecret", False),
    both("auth.password", ABSENT),
    both("auth.existingSecret", ABSENT),
    both("replica.automountServiceAccountToken", True),
    both(f'{INJECT}["vault.hashicorp.com/agent-inject"]', "true"),
    both(f'{INJECT}["vault.hashicorp.com/role"]', "redis-role"),
    both(f'{INJECT}["vault.hashicorp.com/auth-path"]', "auth/kubernetes"),
    both(f'{INJECT}["vault.hashicorp.com/agent-init-first"]', "true"),
    both(f'{INJECT}["vault.hashicorp.com/agent-pre-populate-only"]', "true"),
    both(f'{INJECT}["vault.hashicorp.com/agent-inject-secret-redis-password"]', "secret/data/redis"),
    both(
        f'{INJECT}["vault.hashicorp.com/agent-inject-template-redis-password"]',
        '[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]',
    ),
    *(both(f'{INJECT}["vault.hashicorp.com/agent-inject-secret-{n}"]', "secret/data/redis-acl") for n in ACL_FILES),
    *(both(f'{INJECT}["vault.hashicorp.com/error-on-missing-key-{name}"]', "true") for name in ACL_FILES),
    *(both(f'{INJECT}["vault.hashicorp.com/agent-template-left-delim-{name}"]', "[[") for name in ACL_FILES),
    # The clients' users on the sentinels; the chart's own requirepass stays default's.
    both("sentinel.configuration", "include /vault/secrets/sentinel-users.conf\n"),
    both(f'{INJECT}["vault.hashicorp.com/agent-template-left-delim-redis-password"]', "[["),
    both(f'{INJECT}["vault.hashicorp.com/agent-template-right-delim-redis-password"]', "]]"),
    both(f"{COPY}.name", "copy-redis-password"),
    both(f"{COPY}.image", "ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0"),
    both(f"{COPY}.volumeMounts", [{"name": "redis-password", "mountPath": "/opt/bitnami/redis/secrets"}]),
    both(f"{COPY}.securityContext.runAsUser", 1001),
    both(f"{COPY}.securityContext.runAsGroup", 1001),
    both(f"{COPY}.securityContext.runAsNonRoot", True),
    both(f"{COPY}.securityContext.readOnlyRootFilesystem", True),
    both(f"{COPY}.securityContext.allowPrivilegeEscalation", False),
    both(f"{COPY}.securityContext.capabilities", {"drop": ["ALL"]}),
    both("replica.initContainers[1]", ABSENT),
    # Placement, persistence and disruption.
    ("replica.podAntiAffinityPreset", "soft", "hard"),
    ("replica.persistence", {"enabled": True, "size": "1Gi"}, {"enabled": True, "size": "8Gi"}),
    both("replica.pdb", {"create": True, "maxUnavailable": 1}),
    both("metrics.enabled", True),
    # Sizing: requests and a memory limit everywhere, no CPU limit.
    ("replica.resources", resources("50m", "128Mi", "256Mi"), resources("250m", "512Mi", "1Gi")),
    ("sentinel.resources", resources("20m", "64Mi", "128Mi"), resources("50m", "64Mi", "128Mi")),
    ("metrics.resources", resources("10m", "32Mi", "64Mi"), resources("20m", "32Mi", "64Mi")),
    both("kubectl.resources", resources("10m", "32Mi", "64Mi")),
    both(f"{COPY}.resources", resources("10m", "16Mi", "32Mi")),
    # Network: only ZITADEL's namespace reaches Redis and Sentinel; Redis reaches only Vault and the Kubernetes API.
    both("networkPolicy.enabled", True),
    both("networkPolicy.allowExternal", False),
    both("networkPolicy.allowExternalEgress", False),
    both(
        "networkPolicy.extraIngress[0].ports", [{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"}]
    ),
    both(
        "networkPolicy.extraIngress[0].from",
        Contains({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zitadel"}}}),
    ),
    both("networkPolicy.extraIngress[1]", ABSENT),
    both(
        "networkPolicy.extraEgress",
        Contains(
            {
                "ports": [{"port": 8200, "protocol": "TCP"}],
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
            }
        ),
    ),
    # The API server only at its addresses (kubernetes.apiServerCidrs): prod's stack file narrows them.
    (
        "networkPolicy.extraEgress",
        Contains(
            {
                "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            }
        ),
        Contains(
            {
                "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                "to": [
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                    {"ipBlock": {"cidr": "172.16.0.0/12"}},
                    {"ipBlock": {"cidr": "192.168.0.0/16"}},
                ],
            }
        ),
    ),
]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_redis_values(stack: str) -> None:
    assert mismatches(redis_values(redis_args(stack_config(stack))), VALUES, stack) == []


def test_only_bitnamis_own_images_keep_the_image_guard_on() -> None:
    cfg = stack_config("prod")
    images = cfg.redis.images
    bitnami = names.BITNAMI_REGISTRY
    own_redis = {"redis": "bitnamilegacy/redis", "sentinel": "bitnamilegacy/redis-sentinel"}
    legacy = images.model_copy(
        update={
            key: getattr(images, key).model_copy(update={"registry": bitnami, "repository": repository})
            for key, repository in own_redis.items()
        }
    )
    on_bitnami = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"images": legacy})})
    assert redis_values(redis_args(on_bitnami))["global"]["security"]["allowInsecureImages"] is False
    mirrored = legacy.model_copy(update={"kubectl": legacy.kubectl.model_copy(update={"registry": "mirror.example"})})
    mirror = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"images": mirrored})})
    values = redis_values(redis_args(mirror))
    assert values["global"]["security"]["allowInsecureImages"] is True
    assert values["kubectl"]["image"]["registry"] == "mirror.example"
    assert values["image"]["registry"] == "docker.io"


def with_redis(cfg: StackConfig, **changes: object) -> StackConfig:
    return cfg.model_copy(update={"redis": cfg.redis.model_copy(update=changes)})


def test_stack_knobs_reach_the_values() -> None:
    cfg = stack_config("dev")
    persistence = cfg.redis.persistence.model_copy(update={"storage_class": "fast-ssd", "appendfsync": "always"})
    tuned = with_redis(cfg, persistence=persistence, client_namespaces=("event-relay",), metrics=False)
    values = redis_values(redis_args(tuned))
    assert values["replica"]["persistence"] == {"enabled": True, "size": "1Gi", "storageClass": "fast-ssd"}
    assert values["commonConfiguration"].startswith('databases 16\nappendonly yes\nappendfsync always\nsave ""\n')
    assert values["metrics"]["enabled"] is False
    (ingress,) = values["networkPolicy"]["extraIngress"]
    assert ingress["from"][:2] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zitadel"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "event-relay"}}},
    ]


# --- the settings the processes run with (the chart's and the test bed's one source) --------------------------------


@pytest.mark.parametrize(
    ("stack", "directives"),
    [
        (
            "dev",
            [
                ("databases", "16"),
                ("appendonly", "yes"),
                ("appendfsync", "everysec"),
                ("save", '""'),
                ("maxmemory", "179mb"),
                ("maxmemory-policy", "volatile-lru"),
            ],
        ),
        (
            "prod",
            [
                ("databases", "16"),
                ("appendonly", "yes"),
                ("appendfsync", "everysec"),
                ("save", '""'),
                ("maxmemory", "716mb"),
                ("maxmemory-policy", "volatile-lru"),
                ("min-replicas-to-write", "1"),
                ("min-replicas-max-lag", "10"),
            ],
        ),
    ],
)
def test_redis_directives(stack: str, directives: list[tuple[str, str]]) -> None:
    assert redis_settings.redis_directives(stack_config(stack).redis) == directives


def test_redis_directives_follow_the_knobs() -> None:
    cfg = stack_config("prod")
    persistence = cfg.redis.persistence.model_copy(update={"enabled": False})
    tuned = with_redis(
        cfg, persistence=persistence, allow_data_loss_on_restart=True, min_replicas_to_write=2, min_replicas_max_lag=3
    )
    assert redis_settings.redis_directives(tuned.redis) == [
        ("databases", "16"),
        ("appendonly", "no"),
        ("save", '""'),
        ("maxmemory", "716mb"),
        ("maxmemory-policy", "volatile-lru"),
        ("min-replicas-to-write", "2"),
        ("min-replicas-max-lag", "3"),
    ]
    assert redis_settings.redis_conf_text(tuned.redis) == (
        'databases 16\nappendonly no\nsave ""\nmaxmemory 716mb\nmaxmemory-policy volatile-lru\n'
        "min-replicas-to-write 2\nmin-replicas-max-lag 3\n"
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_sentinel_settings(stack: str) -> None:
    assert redis_settings.sentinel_settings(stack_config(stack).redis) == redis_settings.SentinelSettings(
        master_set="mymaster", quorum=2, down_after_milliseconds=5000, failover_timeout=60000, parallel_syncs=1
    )


def test_sentinel_settings_follow_the_knobs() -> None:
    tuned = with_redis(
        stack_config("prod"),
        nodes=5,
        quorum=3,
        down_after_milliseconds=3000,
        failover_timeout=30000,
        parallel_syncs=2,
    )
    assert redis_settings.sentinel_settings(tuned.redis) == redis_settings.SentinelSettings(
        master_set="mymaster", quorum=3, down_after_milliseconds=3000, failover_timeout=30000, parallel_syncs=2
    )
    values = redis_values(redis_args(tuned))["sentinel"]
    assert (values["quorum"], values["downAfterMilliseconds"], values["failoverTimeout"], values["parallelSyncs"]) == (
        3,
        3000,
        30000,
        2,
    )


def test_only_flushall_is_disabled() -> None:
    # FLUSHDB stays: ZITADEL truncates a cache with it.
    assert names.REDIS_DISABLED_COMMANDS == ("FLUSHALL",)  # what the test bed's processes run with
    assert redis_values(redis_args(stack_config("prod")))["replica"]["disableCommands"] == ["FLUSHALL"]


# --- the password copy, run for real -------------------------------------------------------------------------------

SOURCE = "/vault/secrets/redis-password"
TARGET = "/opt/bitnami/redis/secrets/redis-password"


def run_copy(tmp_path: Path, rendered: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The init container's command with its two paths moved under ``tmp_path``, run by the real shell."""
    command = redis_values(redis_args(stack_config("prod")))["replica"]["initContainers"][0]["command"]
    source, target = tmp_path / "agent" / "redis-password", tmp_path / "shared" / "redis-password"
    source.parent.mkdir()
    target.parent.mkdir()
    source.write_text(rendered)
    script = command[-1]
    assert SOURCE in script and TARGET in script
    script = script.replace(SOURCE, str(source)).replace(TARGET, str(target))
    result = subprocess.run([*command[:-1], script], capture_output=True, text=True, check=False)
    return result, target


def test_password_copy_leaves_a_file_only_its_owner_can_read(tmp_path: Path) -> None:
    password = os.urandom(24).hex()[:48]
    result, target = run_copy(tmp_path, password)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == password
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert password not in result.stdout + result.stderr


def test_password_copy_fails_closed_on_an_unrendered_template(tmp_path: Path) -> None:
    template = '[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]'
    result, target = run_copy(tmp_path, template)
    assert result.returncode != 0
    assert not target.exists()
