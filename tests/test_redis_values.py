"""Behaviour of the Redis values builder that the schema cannot see: network policy, placement, images, layout."""

from __future__ import annotations

from components.redis import redis_values
from stacks import names
from stacks.config import StackConfig
from tests.conftest import stack_config


def with_redis(cfg: StackConfig, **changes: object) -> StackConfig:
    return cfg.model_copy(update={"redis": cfg.redis.model_copy(update=changes)})


def test_network_policy_admits_only_zitadel_and_listed_clients(cfg: StackConfig) -> None:
    policy = redis_values(with_redis(cfg, client_namespaces=("event-relay",)))["networkPolicy"]
    assert policy["allowExternal"] is False and policy["allowExternalEgress"] is False
    (ingress,) = policy["extraIngress"]
    allowed = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in ingress["from"]]
    assert allowed == [cfg.zitadel.namespace, "event-relay"]
    assert {p["port"] for p in ingress["ports"]} == {names.REDIS_PORT, names.SENTINEL_PORT}


def test_network_policy_lets_the_agent_reach_vault_and_the_sidecar_reach_the_api(cfg: StackConfig) -> None:
    vault_rule, api_rule = redis_values(cfg)["networkPolicy"]["extraEgress"]
    assert vault_rule["ports"] == [{"port": cfg.vault.port, "protocol": "TCP"}]
    assert vault_rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}]
    assert [p["port"] for p in api_rule["ports"]] == [443, 6443]


def test_prod_spreads_nodes_and_keeps_a_pdb() -> None:
    dev, prod = redis_values(stack_config("dev")), redis_values(stack_config("prod"))
    assert (dev["replica"]["podAntiAffinityPreset"], prod["replica"]["podAntiAffinityPreset"]) == ("soft", "hard")
    assert prod["replica"]["pdb"] == {"create": True, "maxUnavailable": 1}
    assert prod["replica"]["persistence"] == {"enabled": True, "size": "8Gi"}


def test_images_come_from_bitnamilegacy_and_a_mirror_is_allowed(cfg: StackConfig) -> None:
    values = redis_values(cfg)
    repositories = [
        values["image"]["repository"],
        values["sentinel"]["image"]["repository"],
        values["metrics"]["image"]["repository"],
        values["kubectl"]["image"]["repository"],
        values["volumePermissions"]["image"]["repository"],
    ]
    assert all(r.startswith("bitnamilegacy/") for r in repositories)
    assert values["global"]["security"]["allowInsecureImages"] is False
    images = cfg.redis.images
    mirrored = images.model_copy(update={"redis": images.redis.model_copy(update={"registry": "mirror.example"})})
    values = redis_values(with_redis(cfg, images=mirrored))
    assert values["image"]["registry"] == "mirror.example"
    assert values["global"]["security"]["allowInsecureImages"] is True  # the chart's image guard fails otherwise


def test_master_service_and_its_prerequisites(cfg: StackConfig) -> None:
    values = redis_values(cfg)
    assert values["sentinel"]["masterService"] == {"enabled": True}
    assert values["rbac"]["create"] is True and values["serviceAccount"]["create"] is True
    assert values["replica"]["automountServiceAccountToken"] is True
    assert values["replica"]["disableCommands"] == ["FLUSHALL"]


def test_layout_annotations(cfg: StackConfig) -> None:
    annotations = redis_values(cfg)["commonAnnotations"]
    assert annotations == {names.EVENTS_DB_ANNOTATION: "1", names.CACHE_BLOCK_ANNOTATION: "3-9"}


def test_persistence_off_turns_aof_off(cfg: StackConfig) -> None:
    off = with_redis(
        cfg, persistence=cfg.redis.persistence.model_copy(update={"enabled": False}), allow_data_loss_on_restart=True
    )
    values = redis_values(off)
    assert values["replica"]["persistence"]["enabled"] is False
    assert "appendonly no" in values["commonConfiguration"].splitlines()
