"""Vault policies (parsed as HCL) and the injector annotations that deliver the secrets to the pods."""

from __future__ import annotations

from typing import Any

import hcl2

from components.redis import redis_values
from components.zitadel import zitadel_values
from stacks import mocked, names
from stacks.config import StackConfig
from stacks.plan import describe, vault_policies

INJECT = "vault.hashicorp.com/"


def grants(hcl: str) -> dict[str, list[str]]:
    """Path → capabilities, from the parsed HCL (python-hcl2 keeps the quotes of string literals)."""
    parsed: dict[str, Any] = hcl2.loads(hcl)
    assert set(parsed) == {"path"}, f"only path blocks expected, got {sorted(parsed)}"
    found: dict[str, list[str]] = {}
    for block in parsed["path"]:
        for raw_path, body in block.items():
            body = {k: v for k, v in body.items() if k != "__is_block__"}
            assert set(body) == {"capabilities"}, body
            found[raw_path.strip('"')] = [c.strip('"') for c in body["capabilities"]]
    return found


def test_policies_grant_only_read_on_exactly_the_paths_needed(recording: mocked.Recording, cfg: StackConfig) -> None:
    policies = vault_policies(describe(recording))
    database = "secret/data/zitadel-database"
    assert grants(policies["redis-read"]) == {"secret/data/redis": ["read"]}
    assert grants(policies["zitadel-read"]) == {"secret/data/redis": ["read"], database: ["read"]}
    # Nobody may read the masterkey through Vault: it reaches ZITADEL as a Kubernetes Secret.
    assert not any("secret/data/zitadel" in grants(p) for p in policies.values())


def test_grant_parser_rejects_a_wider_policy() -> None:
    hcl = 'path "secret/data/redis" {\n  capabilities = ["read", "list"]\n}\n'
    assert grants(hcl) == {"secret/data/redis": ["read", "list"]}
    assert grants(hcl) != {"secret/data/redis": ["read"]}


def test_redis_pods_receive_the_password_through_the_injector(cfg: StackConfig) -> None:
    replica = redis_values(cfg)["replica"]
    annotations = replica["podAnnotations"]
    assert annotations[INJECT + "agent-inject"] == "true"
    assert annotations[INJECT + "role"] == "redis-role"
    # vault-agent-init must run before the chart's init containers copy its file.
    assert annotations[INJECT + "agent-init-first"] == "true"
    assert annotations[INJECT + "agent-pre-populate-only"] == "true"
    assert annotations[INJECT + "agent-inject-secret-redis-password"] == "secret/data/redis"
    template = annotations[INJECT + "agent-inject-template-redis-password"]
    assert template == '[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]'
    # The chart runs pod annotations through Helm's tpl: no Go-template braces may reach it.
    assert not any("{{" in value for value in annotations.values())
    assert annotations[INJECT + "agent-template-left-delim-redis-password"] == "[["
    assert annotations[INJECT + "agent-template-right-delim-redis-password"] == "]]"
    # The injector rejects pods without a service-account token.
    assert replica["automountServiceAccountToken"] is True


def test_password_copy_lands_where_the_chart_reads_it(cfg: StackConfig) -> None:
    values = redis_values(cfg)
    assert values["auth"]["usePasswordFiles"] is True and values["auth"]["usePasswordFileFromSecret"] is False
    (copy,) = values["replica"]["initContainers"]
    script = copy["command"][-1]
    assert "cp /vault/secrets/redis-password /opt/bitnami/redis/secrets/redis-password" in script
    assert copy["volumeMounts"] == [{"name": "redis-password", "mountPath": "/opt/bitnami/redis/secrets"}]
    assert copy["image"] == cfg.redis.images.redis.reference


def test_zitadel_pods_and_jobs_render_the_config_fragment(cfg: StackConfig) -> None:
    values = zitadel_values(cfg)
    for where in (values["podAnnotations"], values["setupJob"]["podAnnotations"], values["initJob"]["podAnnotations"]):
        assert where[INJECT + "role"] == "zitadel-role"
        # A Job with the agent sidecar never completes.
        assert where[INJECT + "agent-pre-populate-only"] == "true"
        assert where[INJECT + f"agent-inject-file-{names.ZITADEL_INJECT_NAME}"] == "zitadel-secrets.yaml"
    # The chart passes --config /zitadel-secret-config-yaml/<key>; the key walks to the agent's file.
    zitadel = values["zitadel"]
    assert (
        f"{names.ZITADEL_CONFIG_MOUNT}/{zitadel['configSecretKey']}".replace("/zitadel-secret-config-yaml/..", "")
        == "/vault/secrets/zitadel-secrets.yaml"
    )
    assert zitadel["configSecretName"] == names.ZITADEL_CONFIG_ANCHOR_SECRET
    assert zitadel["masterkeySecretName"] == names.ZITADEL_MASTERKEY_SECRET
    assert "masterkey" not in zitadel or not zitadel.get("masterkey")


def test_auth_path_follows_the_stack(cfg: StackConfig) -> None:
    moved = cfg.model_copy(update={"vault": cfg.vault.model_copy(update={"kubernetes_auth_path": "k8s-prod"})})
    assert redis_values(moved)["replica"]["podAnnotations"][INJECT + "auth-path"] == "auth/k8s-prod"
    assert zitadel_values(moved)["podAnnotations"][INJECT + "auth-path"] == "auth/k8s-prod"
