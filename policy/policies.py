"""The identity tier's guardrails as CrossGuard policies (``pulumi preview --policy-pack policy``).

Each policy is a plain function of a resource (or of the whole stack) and of the stack's facts, so the tests run the
same functions on the program's mocked resources and on hand-written ones. The pack has one input besides the
resources: the stack's configuration, which it loads itself from ``Pulumi.<stack>.yaml`` (the stack's name is in
every URN) through the program's own loader. Its ``environment`` decides which policies are prod's, whatever the
stack is called; its DB layout is what ZITADEL and Redis must run. Names and what "pinned" means come from
``stacks/`` too; nothing the program writes into a resource is there for the pack to read back.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidation,
    StackValidationArgs,
    StackValidationPolicy,
)

from stacks import dblayout, names
from stacks.config import StackConfig
from stacks.credentials import credential_in
from stacks.loader import load
from stacks.names import HELM_RELEASE_TYPE
from stacks.stackfile import path_of, read_stack_config
from stacks.versions import is_exact_version

#: Where Envoy Gateway's chart values configure the ratelimit Deployment it runs.
_RATE_LIMIT_DEPLOYMENT = "config.envoyGateway.provider.kubernetes.rateLimitDeployment"
#: ``maxmemory-policy`` values that never evict a key without a TTL (event streams, cursors).
_SAFE_EVICTION = frozenset({"volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random", "noeviction"})
#: How the name of a Helm values key or of a container's environment variable ends when it holds a credential.
_CREDENTIAL_WORDS = ("password", "passwd", "masterkey", "secret", "token", "dsn")
_SECRET_KEY = re.compile(rf"({'|'.join(_CREDENTIAL_WORDS)})$", re.IGNORECASE)
#: Keys that name where a secret is, not what it is.
_SECRET_REFERENCE_KEYS = frozenset(
    {
        "existingSecret",
        "existingSecretPasswordKey",
        "configSecretName",
        "configSecretKey",
        "masterkeySecretName",
        "tlsSecretName",
        "secretName",
        "envVarsSecret",
        "dbSslCaCrtSecret",
        "dbSslAdminCrtSecret",
        "dbSslUserCrtSecret",
        "serverSslCrtSecret",
        "loginServiceKeySecretName",
    }
)
#: Environment variables that hold a credential (``REDIS_AUTH``, ``REDIS_SENTINEL_AUTH``, ``X_PASSWORD``): as container
#: env entries in Helm values they must come from a Secret (``valueFrom``), never as a ``value``. ``auth`` counts only
#: here: as a values key it names a section (``auth.enabled``), as a variable Redis's password.
_CREDENTIAL_ENV = re.compile(rf"({'|'.join((*_CREDENTIAL_WORDS, 'auth'))})$", re.IGNORECASE)


# --- the stack's facts ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StackFacts:
    """What the pack knows of a stack besides its resources: from the stack's validated configuration."""

    #: Whether prod's policies apply: the configuration's ``environment`` (defaulting to the stack's name) says so.
    is_prod: bool
    #: The Redis DB layout the configuration asks for.
    layout: dblayout.DbLayout

    @staticmethod
    def of(cfg: StackConfig) -> StackFacts:
        return StackFacts(cfg.is_prod, cfg.db_layout)


#: A stack's name → its facts.
FactsOf = Callable[[str], StackFacts]


def stack_files(project_dir: Path) -> FactsOf:
    """Each stack's facts from ``project_dir/Pulumi.<stack>.yaml``, through the loader the program runs (environment
    defaults, rules), read once per stack. A stack whose file is missing or invalid stops the pack with its error."""

    @functools.cache
    def facts(stack: str) -> StackFacts:
        config, secret_keys = read_stack_config(path_of(project_dir, stack))
        return StackFacts.of(load(stack, config, secret_keys))

    return facts


# --- helpers -------------------------------------------------------------------------------------------------------


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::<type>::<name>`` → ``<stack>``."""
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


def chart_of(props: Mapping[str, Any]) -> str:
    """``redis`` or ``zitadel`` from the release's chart reference."""
    return str(props.get("chart", "")).rstrip("/").rsplit("/", 1)[-1]


def _get(tree: Any, path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _values(args: ResourceValidationArgs, chart: str) -> Mapping[str, Any] | None:
    if args.resource_type != HELM_RELEASE_TYPE or chart_of(args.props) != chart:
        return None
    values = args.props.get("values")
    return values if isinstance(values, Mapping) else {}


def plaintext_secrets(value: Any, path: str = "") -> Iterator[str]:
    """Paths in Helm values that hold a credential in plain text."""
    if isinstance(value, Mapping):
        # An env entry (name, value) naming a credential: the value is the credential.
        env_credential = bool(_CREDENTIAL_ENV.search(str(value.get("name", ""))) and value.get("value"))
        if env_credential:
            yield f"{path}.value"
        for key, item in value.items():
            if env_credential and key == "value":
                continue
            child = f"{path}.{key}" if path else str(key)
            # Injector templates name secrets, they hold none.
            is_annotation = str(key).startswith(names.VAULT_INJECT_PREFIX)
            if (
                isinstance(item, str)
                and item
                and not is_annotation
                and key not in _SECRET_REFERENCE_KEYS
                and _SECRET_KEY.search(str(key))
            ):
                yield child
            else:
                yield from plaintext_secrets(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from plaintext_secrets(item, f"{path}[{index}]")
    elif isinstance(value, str) and credential_in(value) is not None:
        yield path


def _missing_resources(resources: Any) -> list[str]:
    resources = resources if isinstance(resources, Mapping) else {}
    missing = [f"requests.{k}" for k in ("cpu", "memory") if not _get(resources, f"requests.{k}")]
    return missing + ([] if _get(resources, "limits.memory") else ["limits.memory"])


def _injector_gaps(annotations: Any, *, job: bool) -> list[str]:
    annotations = annotations if isinstance(annotations, Mapping) else {}
    inject = names.VAULT_INJECT_PREFIX
    gaps = []
    if annotations.get(inject + "agent-inject") != "true":
        gaps.append("agent-inject")
    if not annotations.get(inject + "role"):
        gaps.append("role")
    if not any(k.startswith(inject + "agent-inject-secret-") for k in annotations):
        gaps.append("agent-inject-secret-*")
    if job and annotations.get(inject + "agent-pre-populate-only") != "true":
        gaps.append("agent-pre-populate-only (a Job with the agent sidecar never completes)")
    return gaps


# --- resource policies ---------------------------------------------------------------------------------------------


def redis_auth(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    values = _values(args, names.REDIS_CHART_NAME)
    if values is None:
        return
    if _get(values, "auth.enabled") is not True:
        report("Redis must require a password (auth.enabled: true)", None)
    if _get(values, "auth.sentinel") is not True:
        report("Sentinel must require a password too (auth.sentinel: true)", None)


def redis_sentinel_ha(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    values = _values(args, names.REDIS_CHART_NAME)
    if values is None:
        return
    if _get(values, "architecture") != "replication" or _get(values, "sentinel.enabled") is not True:
        report("Redis must run replication with Sentinel", None)
        return
    if stack.is_prod:
        nodes, quorum = _get(values, "replica.replicaCount", 0), _get(values, "sentinel.quorum", 0)
        if nodes < 3:
            report(f"prod needs at least 3 Redis nodes, has {nodes}", None)
        if quorum < 2:
            report(f"prod needs a Sentinel quorum of at least 2, has {quorum}", None)


def no_plaintext_secrets(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    if args.resource_type != HELM_RELEASE_TYPE:
        return
    for path in plaintext_secrets(args.props.get("values", {})):
        report(f"plaintext credential in Helm values at {path}: deliver it through Vault", None)


def vault_injection(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    redis = _values(args, names.REDIS_CHART_NAME)
    if redis is not None and _get(redis, "auth.usePasswordFileFromSecret") is False:
        for gap in _injector_gaps(_get(redis, "replica.podAnnotations"), job=False):
            report(f"Redis pods read their password from Vault but replica.podAnnotations lacks {gap}", None)
    zitadel = _values(args, names.ZITADEL_CHART_NAME)
    if zitadel is not None and names.VAULT_SECRETS_DIR in str(_get(zitadel, "zitadel.configSecretKey", "")):
        for where, job in (
            ("podAnnotations", False),
            ("setupJob.podAnnotations", True),
            ("initJob.podAnnotations", True),
        ):
            for gap in _injector_gaps(_get(zitadel, where), job=job):
                report(f"ZITADEL reads its config from Vault but {where} lacks {gap}", None)


def container_resources(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    blocks: dict[str, Any] = {}
    redis = _values(args, names.REDIS_CHART_NAME)
    if redis is not None:
        blocks = {f"{s}.resources": _get(redis, f"{s}.resources") for s in ("replica", "sentinel", "kubectl")}
        if _get(redis, "metrics.enabled"):
            blocks["metrics.resources"] = _get(redis, "metrics.resources")
        for index, container in enumerate(_get(redis, "replica.initContainers", []) or []):
            blocks[f"replica.initContainers[{index}].resources"] = container.get("resources")
    zitadel = _values(args, names.ZITADEL_CHART_NAME)
    if zitadel is not None:
        paths = ["resources", "setupJob.resources", "initJob.resources"]
        # Sections the chart renders unless turned off; the login pod brings the wait4x init container.
        if _get(zitadel, "login.enabled", True) is not False:
            paths += ["login.resources", "tools.wait4x.resources"]
        if _get(zitadel, "cleanupJob.enabled", True) is not False:
            paths.append("cleanupJob.resources")
        if _get(zitadel, "postgresql.enabled") is True:
            paths.append("postgresql.primary.resources")
        blocks = {path: _get(zitadel, path) for path in paths}
    gateway = _values(args, names.EDGE_CHART_NAME)
    if gateway is not None:
        paths = ["deployment.envoyGateway.resources", "certgen.job.resources"]
        paths.append(f"{_RATE_LIMIT_DEPLOYMENT}.container.resources")
        blocks = {path: _get(gateway, path) for path in paths}
    for path, resources in blocks.items():
        missing = _missing_resources(resources)
        if missing:
            report(f"{path} must set {', '.join(missing)}", None)


def namespace_pod_security(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    if args.resource_type != names.KUBERNETES_NAMESPACE_TYPE:
        return
    labels = _get(args.props, "metadata.labels", {}) or {}
    for mode in names.POD_SECURITY_MODES:
        label = f"{names.POD_SECURITY_PREFIX}{mode}"
        if labels.get(label) != names.POD_SECURITY_LEVEL:
            report(f"namespace must label {label}: {names.POD_SECURITY_LEVEL}", None)


def pinned_charts(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    if args.resource_type == HELM_RELEASE_TYPE and not is_exact_version(str(args.props.get("version", ""))):
        report(
            f"chart {chart_of(args.props)} must be pinned to an exact version, not {args.props.get('version')!r}", None
        )


def redis_memory_bounded(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    values = _values(args, names.REDIS_CHART_NAME)
    if values is None:
        return
    conf = str(_get(values, "commonConfiguration", ""))
    if not re.search(r"^maxmemory \S+$", conf, flags=re.M):
        report("Redis needs maxmemory below its container's limit: without it the kernel kills it instead", None)
    policy = re.search(r"^maxmemory-policy (\S+)$", conf, flags=re.M)
    if policy is None or policy.group(1) not in _SAFE_EVICTION:
        found = policy.group(1) if policy else "noeviction's default, unset"
        report(f"maxmemory-policy must spare keys without a TTL (volatile-*), not {found}: the event streams", None)


def gateway_rate_limit_on_sentinel(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    values = _values(args, names.EDGE_CHART_NAME)
    if values is None:
        return
    url = str(_get(values, "config.envoyGateway.rateLimit.backend.redis.url", ""))
    master, *sentinels = url.split(",")
    if not master or len(sentinels) < 1:
        report(f"the rate-limit Redis URL must be <master set>,<sentinel>,...: {url!r}", None)
    if any("/" in address for address in sentinels):
        report("no /db on a Sentinel address: radix would send SELECT to a Sentinel (counters live in DB 0)", None)
    env = {e.get("name"): e for e in _get(values, f"{_RATE_LIMIT_DEPLOYMENT}.container.env", []) or []}
    if _get(env, "REDIS_TYPE.value") != "sentinel":
        report("the ratelimit container needs REDIS_TYPE=sentinel for a Sentinel URL", None)
    for variable in ("REDIS_AUTH", "REDIS_SENTINEL_AUTH"):
        if not _get(env, f"{variable}.valueFrom.secretKeyRef.name"):
            report(f"{variable} must come from a Secret (valueFrom.secretKeyRef)", None)


#: (type, name) of every resource that holds or guards the masterkey (ZITADEL reads it from Vault: no Kubernetes
#: Secret holds it).
MASTERKEY_RESOURCES = frozenset(
    {
        (names.RANDOM_PASSWORD_TYPE, names.MASTERKEY_PASSWORD_RESOURCE),
        (names.VAULT_KV_SECRET_TYPE, names.ZITADEL_SECRET_NAME),
    }
)


def masterkey_protected(args: ResourceValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    if (args.resource_type, args.name) in MASTERKEY_RESOURCES and stack.is_prod and not args.opts.protect:
        report("the ZITADEL masterkey must be protected in prod: losing it loses every encrypted record", None)


# --- stack policy --------------------------------------------------------------------------------------------------


def zitadel_caches_on_redis(args: StackValidationArgs, report: ReportViolation, stack: StackFacts) -> None:
    """ZITADEL and Redis run the stack's DB layout (which the configuration's rules keep sound)."""
    releases = {
        chart_of(r.props): r.props.get("values", {}) for r in args.resources if r.resource_type == HELM_RELEASE_TYPE
    }
    zitadel, redis = releases.get(names.ZITADEL_CHART_NAME), releases.get(names.REDIS_CHART_NAME)
    if zitadel is None:
        return
    layout = stack.layout
    caches = _get(zitadel, "zitadel.configmapConfig.Caches", {}) or {}
    if _get(caches, "Connectors.Redis.Enabled") is not True:
        report("ZITADEL's Redis cache connector must be enabled", None)
    for cache in layout.redis_caches:
        if _get(caches, f"{cache}.Connector") != "redis":
            report(f"Caches.{cache}.Connector must be redis", None)
    if redis is None:
        report("ZITADEL's caches need the Redis release in the same stack", None)
        return
    offset = _get(caches, "Connectors.Redis.DBOffset")
    if not isinstance(offset, (int, float)):
        report("Caches.Connectors.Redis.DBOffset must be set: ZITADEL's default of 10 needs 18 databases", None)
    elif int(offset) != layout.cache_db_offset:
        used, planned = dataclasses.replace(layout, cache_db_offset=int(offset)).cache_block, layout.cache_block
        report(
            f"Caches.Connectors.Redis.DBOffset {int(offset)} puts ZITADEL's caches, and its FLUSHDB, in DBs "
            f"{used.start}..{used.stop - 1}, not in the stack's {planned.start}..{planned.stop - 1} "
            f"(zitadel.cache.dbOffset {layout.cache_db_offset})",
            None,
        )
    # What Redis runs: redis.conf's ``databases``, else Redis's own default.
    match = re.search(r"^databases (\d+)$", str(_get(redis, "commonConfiguration", "")), flags=re.M)
    databases = int(match.group(1)) if match else dblayout.DEFAULT_DATABASES
    if databases != layout.databases:
        report(f"Redis runs {databases} databases, not the stack's redis.databases ({layout.databases})", None)


ResourceCheck = Callable[[ResourceValidationArgs, ReportViolation, StackFacts], None]
StackCheck = Callable[[StackValidationArgs, ReportViolation, StackFacts], None]

RESOURCE_POLICIES: dict[str, tuple[ResourceCheck, str]] = {
    "redis-auth-enabled": (redis_auth, "Redis and Sentinel require a password."),
    "redis-sentinel-ha": (
        redis_sentinel_ha,
        "Redis runs replication with Sentinel; a prod environment has >= 3 nodes, quorum >= 2.",
    ),
    "no-plaintext-secrets-in-helm-values": (no_plaintext_secrets, "No credential in plain text in Helm values."),
    "vault-injection-on-secret-readers": (
        vault_injection,
        "Every pod template that reads a secret from Vault carries the injector annotations.",
    ),
    "resources-on-every-container": (
        container_resources,
        "Every container sets CPU/memory requests and a memory limit.",
    ),
    "namespaces-pod-security-restricted": (
        namespace_pod_security,
        "Every namespace enforces, audits and warns at Pod Security Standard restricted.",
    ),
    "chart-versions-pinned": (pinned_charts, "Every Helm release pins an exact chart version."),
    "masterkey-protected-in-prod": (
        masterkey_protected,
        "The ZITADEL masterkey is protected in a prod environment.",
    ),
    "redis-memory-bounded": (
        redis_memory_bounded,
        "Redis has a maxmemory and evicts only keys with a TTL: never an event stream.",
    ),
    "gateway-rate-limit-on-sentinel": (
        gateway_rate_limit_on_sentinel,
        "The gateway's rate limits use every sentinel of the set (no DB suffix), the password from a Secret.",
    ),
}
STACK_POLICIES: dict[str, tuple[StackCheck, str]] = {
    "zitadel-caches-on-redis": (
        zitadel_caches_on_redis,
        "ZITADEL's caches use Redis at the stack's DB offset, and Redis runs the stack's number of databases.",
    ),
}


def policies(facts_of: FactsOf) -> list[Policy]:
    """The pack; each policy gets the facts of the stack its resources belong to (``stack_files`` in a preview)."""
    mandatory = EnforcementLevel.MANDATORY
    found: list[Policy] = [
        ResourceValidationPolicy(
            name=name, description=text, validate=_on_resource(check, facts_of), enforcement_level=mandatory
        )
        for name, (check, text) in RESOURCE_POLICIES.items()
    ]
    found += [
        StackValidationPolicy(
            name=name, description=text, validate=_on_stack(check, facts_of), enforcement_level=mandatory
        )
        for name, (check, text) in STACK_POLICIES.items()
    ]
    return found


def _on_resource(check: ResourceCheck, facts_of: FactsOf) -> ResourceValidation:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        check(args, report, facts_of(stack_of(args.urn)))

    return validate


def _on_stack(check: StackCheck, facts_of: FactsOf) -> StackValidation:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        if args.resources:  # one stack: any resource's URN names it; without resources there is nothing to check
            check(args, report, facts_of(stack_of(args.resources[0].urn)))

    return validate
