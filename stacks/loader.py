"""Turn a stack's raw Pulumi configuration into a validated ``StackConfig``, or one error listing every violation.

The same function serves ``pulumi up`` (values from the Pulumi runtime) and the offline plan (values read from
``Pulumi.<stack>.yaml``), so both see exactly the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeGuard, get_args

from pydantic import TypeAdapter, ValidationError

from stacks import names, rules
from stacks.config import Environment, SecretPresence, StackConfig
from stacks.credentials import credential_in
from stacks.defaults import deep_merge, defaults_for
from stacks.stackfile import SECRET, path_of, read_stack_config

#: ``StackConfig`` fields that are no object of the stack file: set by the loader, or (``environment``) a plain key.
_NOT_SECTIONS: Final = frozenset({"stack", "environment", "secrets"})
#: Keys holding objects of the typed configuration.
SECTIONS: Final = tuple(
    field.alias or name for name, field in StackConfig.model_fields.items() if name not in _NOT_SECTIONS
)
#: Keys that may only hold Pulumi secrets: the Vault provider's token (only the program reads it) and those whose
#: presence the model records (``SecretPresence``).
SECRET_KEYS: Final = (names.VAULT_TOKEN_KEY, names.POSTGRES_DSN_KEY, names.ZITADEL_ADMIN_KEY_KEY)
_KNOWN_KEYS: Final = frozenset({*SECTIONS, *SECRET_KEYS, "environment"})
#: The environments a stack can be, each with its defaults and rules.
ENVIRONMENTS: Final[tuple[Environment, ...]] = get_args(Environment)


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


def load(
    stack: str, raw: Mapping[str, Any], secret_keys: Collection[str] = (), *, deploying: bool = False
) -> StackConfig:
    """Validate ``raw`` (un-namespaced config keys → values; objects as JSON text or parsed) for ``stack``.

    ``secret_keys`` names the keys Pulumi holds as secrets. Secret values are never read into the model.
    ``deploying`` (``pulumi up``) applies the deploy rules too (``stacks.rules.DEPLOY_RULES``).
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

    environment = values.get("environment", stack if stack in ENVIRONMENTS else None)
    if not _is_environment(environment):
        expected = " or ".join(ENVIRONMENTS)
        found.append(("environment", f"must be {expected} (stack {stack!r} has no default), not {environment!r}"))
        raise StackConfigError(stack, found)

    document = deep_merge(defaults_for(environment), {k: v for k, v in values.items() if k in SECTIONS})
    document.update(
        stack=stack,
        environment=environment,
        secrets={name: (field.alias or name) in values for name, field in SecretPresence.model_fields.items()},
    )
    try:
        cfg = StackConfig.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        found += [(_loc(err["loc"]), _message(err)) for err in errors]
        # Still report the rules that only read sections which are themselves valid.
        partial, valid = _valid_sections(document, {str(err["loc"][0]) for err in errors})
        found += rules.violations(partial, valid, deploying=deploying)
        raise StackConfigError(stack, found) from None
    found += rules.violations(cfg, deploying=deploying)
    if found:
        raise StackConfigError(stack, found)
    return cfg


def deploy_refusals(cfg: StackConfig) -> list[str]:
    """What ``pulumi up`` of a loaded stack would refuse that its plan, preview and promotion accept (the deploy
    rules), in the loader's words (``stack: key: rule``)."""
    found = [violation for rule, _sections in rules.DEPLOY_RULES for violation in rule(cfg)]
    return StackConfigError(cfg.stack, found).violations


def load_from_pulumi() -> StackConfig:
    """The running stack's configuration, from the Pulumi runtime (``pulumi up``/``preview`` or the mocks)."""
    import pulumi

    stack = pulumi.get_stack()
    config = pulumi.Config(names.PROJECT)
    raw = {key: value for key in ("environment", *SECTIONS) if (value := config.get(key)) is not None}
    # Only whether a secret is set: its value stays a Pulumi secret, out of the model.
    raw |= {key: SECRET for key in SECRET_KEYS if config.get_secret(key) is not None}
    plain: set[str] = set()
    # pulumi.Config reads the keys it is asked for and cannot say whether a value was set with --secret: the keys
    # the stack file sets beyond these, and which it holds in plain text, come from the stack file itself. Under the
    # mocks there is no project directory: the offline runner checks the config it is given with ``load`` first.
    # A stack without config has no stack file yet: then there is nothing beyond what pulumi.Config returned.
    root = pulumi.get_root_directory()
    stack_file = path_of(Path(root), stack) if root is not None else None
    if stack_file is not None and stack_file.exists():
        written, secret_keys = read_stack_config(stack_file)
        raw |= {key: value for key, value in written.items() if key not in raw}
        plain = set(written) - secret_keys
    # ``pulumi up`` deploys; a preview does not, nor the offline runner (mocks, no project directory).
    deploying = root is not None and not pulumi.runtime.is_dry_run()
    return load(stack, raw, set(raw) - plain, deploying=deploying)


def _is_environment(value: object) -> TypeGuard[Environment]:
    return value in ENVIRONMENTS


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
    elif isinstance(value, str) and (what := credential_in(value)) is not None:
        yield path, what


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
