"""Turn a stack's raw Pulumi configuration into a validated ``StackConfig``, or one error listing every violation.

The same function serves ``pulumi up`` (values from the Pulumi runtime) and the offline plan (values read from
``Pulumi.<stack>.yaml``), so both see exactly the same rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from stacks import names, rules
from stacks.config import StackConfig
from stacks.defaults import deep_merge, defaults_for

#: Keys holding objects of the typed configuration.
SECTIONS: Final = ("kubernetes", "vault", "redis", "zitadel", "events", "edge")
#: Keys that may only hold Pulumi secrets, and the ``SecretPresence`` field each sets.
SECRET_KEYS: Final = {
    "vaultToken": "vault_token",
    "postgresDsn": "postgres_dsn",
    # The first instance's admin machine key (JSON) for an existing ZITADEL; unset reads the Secret the chart writes.
    "zitadelAdminKey": "zitadel_admin_key",
}
_KNOWN_KEYS: Final = frozenset({*SECTIONS, *SECRET_KEYS, "environment"})

# What a credential looks like when it is pasted into plain config.
_PLAINTEXT_SECRET_PATTERNS: Final = (
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "a URL with a password"),
    (re.compile(r"(^|\s)password\s*=", re.IGNORECASE), "a connection string with a password"),
    (re.compile(r"^(hv[sbr]\.|s\.)[A-Za-z0-9_-]{20,}$"), "a Vault token"),
)


class StackConfigError(ValueError):
    """An invalid stack configuration: every violation, each as ``stack: key: rule``."""

    def __init__(self, stack: str, violations: list[tuple[str, str]]) -> None:
        self.stack = stack
        self.violations = [f"{stack}: {key}: {rule}" for key, rule in violations]
        count = len(self.violations)
        super().__init__(
            f"stack {stack!r} has {count} configuration error{'s' if count != 1 else ''}:\n  "
            + "\n  ".join(self.violations)
        )


def load(stack: str, raw: Mapping[str, Any], secret_keys: Collection[str] = ()) -> StackConfig:
    """Validate ``raw`` (un-namespaced config keys → values; objects as JSON text or parsed) for ``stack``.

    ``secret_keys`` names the keys Pulumi holds as secrets. Secret values are never read into the model.
    """
    values = {key: _parse(value) for key, value in raw.items()}
    found: list[tuple[str, str]] = []
    found += [(key, "unknown key (is it misspelled?)") for key in sorted(values) if key not in _KNOWN_KEYS]
    for key in SECRET_KEYS:
        if key in values and key not in secret_keys:
            found.append((key, f"must be a Pulumi secret: pulumi config set --secret {key} ..."))
    for key in SECTIONS:
        for path, what in _plaintext_secrets(values.get(key), key):
            found.append((path, f"holds {what} in plain config; use a Pulumi secret or a Vault reference"))

    environment = values.get("environment", stack if stack in ("dev", "prod") else None)
    if environment not in ("dev", "prod"):
        found.append(("environment", f"must be dev or prod (stack {stack!r} has no default), not {environment!r}"))
        raise StackConfigError(stack, found)

    document = deep_merge(defaults_for(environment), {k: v for k, v in values.items() if k in SECTIONS})
    document.update(
        stack=stack,
        environment=environment,
        secrets={field: key in values for key, field in SECRET_KEYS.items()},
    )
    try:
        cfg = StackConfig.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        found += [(_loc(err["loc"]), _message(err)) for err in errors]
        # Still report the rules that only read sections which are themselves valid.
        partial, valid = _valid_sections(document, {str(err["loc"][0]) for err in errors})
        found += rules.violations(partial, valid)
        raise StackConfigError(stack, found) from None
    found += rules.violations(cfg)
    if found:
        raise StackConfigError(stack, found)
    return cfg


def load_from_pulumi() -> StackConfig:
    """The running stack's configuration, from the Pulumi runtime (``pulumi up``/``preview`` or the mocks)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    prefix = f"{names.PROJECT}:"
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw = {key[len(prefix) :]: value for key, value in everything.items() if key.startswith(prefix)}
    secret = {key for key in raw if runtime_config.is_config_secret(prefix + key)}
    secret |= {key[len(prefix) :] for key in runtime_config.get_config_secret_keys_env() if key.startswith(prefix)}
    return load(pulumi.get_stack(), raw, secret)


def _valid_sections(document: Mapping[str, Any], broken: set[str]) -> tuple[StackConfig, frozenset[str]]:
    parts: dict[str, Any] = {}
    for name, field in StackConfig.model_fields.items():
        alias = field.alias or name
        if alias in broken or alias not in document or field.annotation is None:
            continue
        try:
            parts[name] = TypeAdapter(field.annotation).validate_python(document[alias])
        except ValidationError:
            continue
    return StackConfig.model_construct(**parts), frozenset(
        (StackConfig.model_fields[name].alias or name) for name in parts
    )


def _parse(value: Any) -> Any:
    # Pulumi hands structured config to the program as JSON text.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _plaintext_secrets(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _plaintext_secrets(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plaintext_secrets(item, f"{path}[{index}]")
    elif isinstance(value, str):
        for pattern, what in _PLAINTEXT_SECRET_PATTERNS:
            if pattern.search(value):
                yield path, what
                return


def _loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (is it misspelled?)"
    if err["type"] == "missing":
        return "required, and this environment has no default"
    return str(err["msg"])
