"""Cross-field rules of a stack configuration. Each returns ``(config key, rule)`` pairs for what it finds broken."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from stacks.config import Resources, StackConfig, duration_seconds
from stacks.names import REDIS_NAMESPACE
from stacks.versions import is_exact_version, is_pinned_tag

Violation = tuple[str, str]


def _sentinel_quorum(cfg: StackConfig) -> Iterator[Violation]:
    r = cfg.redis
    if r.quorum > r.nodes:
        yield "redis.quorum", f"quorum {r.quorum} must be <= redis.nodes ({r.nodes})"
    if r.quorum <= r.nodes // 2:
        yield (
            "redis.quorum",
            f"quorum {r.quorum} must be a majority of redis.nodes ({r.nodes}): at least {r.nodes // 2 + 1}",
        )
    if r.min_replicas_to_write > r.nodes - 1:
        yield (
            "redis.minReplicasToWrite",
            f"{r.min_replicas_to_write} replicas can never be connected with redis.nodes {r.nodes} "
            f"(at most {r.nodes - 1}): every write would be refused",
        )


def _db_layout(cfg: StackConfig) -> Iterator[Violation]:
    yield from cfg.db_layout.violations()


def _persistence(cfg: StackConfig) -> Iterator[Violation]:
    r = cfg.redis
    if not r.persistence.enabled and not r.allow_data_loss_on_restart:
        yield (
            "redis.persistence.enabled",
            "Sentinel without persistence loses every write on all nodes when the master restarts before "
            "down-after expires; keep it on or set redis.allowDataLossOnRestart: true",
        )
    if cfg.is_prod and r.allow_data_loss_on_restart:
        yield "redis.allowDataLossOnRestart", "prod may not opt into data loss on restart"
    if cfg.is_prod and not r.persistence.enabled:
        yield "redis.persistence.enabled", "prod requires persistence"


def _events(cfg: StackConfig) -> Iterator[Violation]:
    streams = cfg.events.streams.model_dump(by_alias=True)
    seen: dict[str, str] = {}
    for key, name in streams.items():
        if name in seen:
            yield f"events.streams.{key}", f"stream {name!r} is also events.streams.{seen[name]}"
        seen.setdefault(name, key)
    publishing = cfg.events.publishing
    if duration_seconds(publishing.retry_backoff) > duration_seconds(publishing.max_retry_backoff):
        yield (
            "events.publishing.retryBackoff",
            f"{publishing.retry_backoff} exceeds events.publishing.maxRetryBackoff ({publishing.max_retry_backoff})",
        )


def _prod_sizing(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    if cfg.redis.nodes < 3:
        yield "redis.nodes", f"prod requires at least 3 nodes (has {cfg.redis.nodes})"


def _prod_pinned(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    for key, chart in (("redis.chart.version", cfg.redis.chart), ("zitadel.chart.version", cfg.zitadel.chart)):
        if not is_exact_version(chart.version):
            yield key, f"prod requires an exact chart version, not {chart.version!r}"
    images = {f"redis.images.{k}": v for k, v in cfg.redis.images}
    images["zitadel.image"] = cfg.zitadel.image
    images["zitadel.loginImage"] = cfg.zitadel.login_image
    for key, image in images.items():
        if not is_pinned_tag(image.tag):
            yield f"{_camel_path(key)}.tag", f"prod requires a pinned image tag, not {image.tag!r}"


def _prod_resources(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    groups: dict[str, dict[str, Resources]] = {
        "redis.resources": dict(cfg.redis.resources),
        "zitadel.resources": dict(cfg.zitadel.resources),
    }
    for prefix, containers in groups.items():
        for name, res in containers.items():
            missing = [
                path
                for path, value in (
                    ("requests.cpu", res.requests.cpu),
                    ("requests.memory", res.requests.memory),
                    ("limits.memory", res.limits.memory),
                )
                if value is None
            ]
            if missing:
                yield f"{prefix}.{_camel(name)}", f"prod requires explicit resources: {', '.join(missing)} not set"


def _database(cfg: StackConfig) -> Iterator[Violation]:
    db = cfg.zitadel.database
    if db.mode == "bundled":
        if cfg.is_prod:
            yield "zitadel.database.mode", "prod requires an external Postgres (mode: external with a DSN reference)"
        if db.dsn_vault_secret or db.dsn_from_config:
            yield "zitadel.database", "a DSN reference is only used with mode: external"
        return
    if bool(db.dsn_vault_secret) == db.dsn_from_config:
        yield (
            "zitadel.database",
            "mode: external needs exactly one DSN reference: dsnVaultSecret (an existing Vault secret) "
            "or dsnFromConfig: true (the postgresDsn Pulumi secret)",
        )
    if db.dsn_from_config and not cfg.secrets.postgres_dsn:
        yield "postgresDsn", "dsnFromConfig is set but the stack has no postgresDsn secret (pulumi config set --secret)"


def _prod_tls(cfg: StackConfig) -> Iterator[Violation]:
    if not cfg.is_prod:
        return
    z = cfg.zitadel
    if not z.external_secure:
        yield "zitadel.externalSecure", "prod requires TLS towards clients (externalSecure: true)"
    if not z.ingress.enabled or not z.ingress.tls_secret_name:
        yield "zitadel.ingress.tlsSecretName", "prod requires an ingress with a TLS certificate secret"
    if not cfg.vault.address.startswith("https://"):
        yield "vault.address", f"prod requires TLS to Vault (https://), not {cfg.vault.address!r}"


def _prod_masterkey(cfg: StackConfig) -> Iterator[Violation]:
    if cfg.is_prod and not cfg.zitadel.protect_masterkey:
        yield (
            "zitadel.protectMasterkey",
            "prod requires protect on the masterkey: losing it loses every encrypted record",
        )


def _namespaces(cfg: StackConfig) -> Iterator[Violation]:
    if cfg.zitadel.namespace == REDIS_NAMESPACE:
        yield "zitadel.namespace", f"ZITADEL needs its own namespace, not Redis's {REDIS_NAMESPACE!r}"


#: Each rule with the config sections it reads, so that rules can still run when another section is invalid.
RULES: tuple[tuple[Callable[[StackConfig], Iterator[Violation]], frozenset[str]], ...] = (
    (_sentinel_quorum, frozenset({"redis"})),
    (_db_layout, frozenset({"redis", "zitadel", "events"})),
    (_persistence, frozenset({"redis"})),
    (_events, frozenset({"events"})),
    (_prod_sizing, frozenset({"redis"})),
    (_prod_pinned, frozenset({"redis", "zitadel"})),
    (_prod_resources, frozenset({"redis", "zitadel"})),
    (_database, frozenset({"zitadel"})),
    (_prod_tls, frozenset({"zitadel", "vault"})),
    (_prod_masterkey, frozenset({"zitadel"})),
    (_namespaces, frozenset({"zitadel"})),
)


def violations(cfg: StackConfig, valid_sections: frozenset[str] | None = None) -> list[Violation]:
    """Every broken rule; with ``valid_sections``, only the rules that read nothing but those sections."""
    return [v for rule, sections in RULES if valid_sections is None or sections <= valid_sections for v in rule(cfg)]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _camel_path(path: str) -> str:
    return ".".join(_camel(p) for p in path.split("."))
