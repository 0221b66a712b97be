"""The program, its components, the config loader, the offline runner and the policy pack use the Pulumi SDK's public
API only, and the recording still sees what the plan shows.

Public means: imported from a module path each segment of which its parent module exports (``__all__``), a name
that module exports, and no ``_private`` attribute. Anything else may change in any SDK release.
"""

from __future__ import annotations

import ast
import importlib
import re
import secrets
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pulumi
import pytest

from stacks import names
from stacks.config import StackConfig
from stacks.loader import StackConfigError, load_from_pulumi
from stacks.stackfile import parse_stack_config
from stacktools import mocked
from tests.conftest import PROJECT_DIR, recorded

#: The modules held to the rule, relative to the project: the program and everything that runs it.
CHECKED: tuple[str, ...] = (
    "__main__.py",
    *sorted(
        str(path.relative_to(PROJECT_DIR))
        for package in ("components", "stacks", "stacktools", "policy")
        for path in (PROJECT_DIR / package).glob("*.py")
    ),
)


def _exports(module: ModuleType, name: str) -> bool:
    exported = getattr(module, "__all__", None)
    return not name.startswith("_") and (exported is None or name in exported)


def _public_module(path: str) -> tuple[ModuleType | None, str | None]:
    """The module at ``pulumi.a.b`` if each segment is exported by its parent; else the first segment that is not."""
    parts = path.split(".")
    module = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], start=1):
        if not _exports(module, part):
            return None, f"{'.'.join(parts[: index + 1])} is not in {module.__name__}'s public API"
        module = importlib.import_module(".".join(parts[: index + 1]))
    return module, None


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``a.b.c`` as (``a``, [``b``, ``c``]); None when the chain does not start at a name."""
    attrs: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        attrs.insert(0, current.attr)
        current = current.value
    return (current.id, attrs) if isinstance(current, ast.Name) else None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[str]:
    """Every use of a non-public part of the Pulumi SDK in ``source``, as ``line N: what``."""
    tree = ast.parse(source)
    found: list[str] = []
    #: Local names bound to Pulumi modules → the module's path.
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "pulumi":
                    continue
                module, problem = _public_module(alias.name)
                if problem is not None:
                    found.append(f"line {node.lineno}: {problem}")
                modules[alias.asname or "pulumi"] = alias.name if alias.asname else "pulumi"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pulumi" and node.level == 0:
            assert node.module is not None
            module, problem = _public_module(node.module)
            if module is None:
                found.append(f"line {node.lineno}: {problem}")
                continue
            for alias in node.names:
                if not _exports(module, alias.name):
                    found.append(f"line {node.lineno}: {node.module}.{alias.name} is not in its public API")
                elif isinstance(getattr(module, alias.name, None), ModuleType):
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain is not None and chain[0] in modules:
                found += _attribute_problems(node.lineno, modules[chain[0]], chain[1])
            if _private(node.attr) and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: private attribute {node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"line {node.lineno}: private attribute {node.args[1].value}")
    return sorted(set(found), key=lambda line: (int(line.split(":")[0].split()[1]), line))


def _attribute_problems(line: int, path: str, attrs: list[str]) -> list[str]:
    """``module.a.b``: while the chain names modules, each step must be exported by the module before it."""
    module: object = importlib.import_module(path)
    for attr in attrs:
        if not isinstance(module, ModuleType):
            break  # past the SDK's modules: an object's attributes, held to the private-name rule only
        if not _exports(module, attr):
            return [f"line {line}: {module.__name__}.{attr} is not in its public API"]
        module = getattr(module, attr, None)
    return []


@pytest.mark.parametrize("path", CHECKED)
def test_uses_only_the_public_sdk(path: str) -> None:
    assert private_uses((PROJECT_DIR / path).read_text()) == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "from pulumi.runtime.sync_await import _sync_await\n",
            ["line 1: pulumi.runtime.sync_await is not in pulumi.runtime's public API"],
        ),
        (
            "from pulumi.runtime import Mocks, mocks\n\nclass M(mocks.MockMonitor): ...\n",
            ["line 1: pulumi.runtime.mocks is not in its public API"],
        ),
        (
            "import pulumi\n\nroot = pulumi.runtime.settings.get_root_resource()\n",
            ["line 3: pulumi.runtime.settings is not in its public API"],
        ),
        (
            "import pulumi.runtime.stack\n",
            ["line 1: pulumi.runtime.stack is not in pulumi.runtime's public API"],
        ),
        (
            "from pulumi import runtime\n\nvalue = runtime.config.CONFIG\n",
            ["line 3: pulumi.runtime.config is not in its public API"],
        ),
        (
            "import pulumi\n\nprotect = resource._protect or getattr(resource, '_childResources')\n",
            ["line 3: private attribute _childResources", "line 3: private attribute _protect"],
        ),
    ],
    ids=[
        "private-module",
        "module-not-exported",
        "attribute-path",
        "import-module",
        "config-internals",
        "private-attr",
    ],
)
def test_the_check_catches_private_sdk_uses(snippet: str, expected: list[str]) -> None:
    assert private_uses(snippet) == expected


def test_the_check_passes_public_uses() -> None:
    snippet = (
        "import pulumi\nfrom pulumi.runtime import MockResourceArgs, Mocks\n\n"
        "pulumi.runtime.set_mocks(mocks, project='p', stack='s')\n"
        "pulumi.runtime.register_stack_transformation(observe)\n"
        "value: pulumi.Output[str] = pulumi.Output.from_input(pulumi.Config('p').get('k'))\n"
        "self._own = 1\n"
    )
    assert private_uses(snippet) == []


def test_the_rule_runs_on_the_sdk_the_requirements_pin() -> None:
    pins = re.findall(r"^pulumi==(\S+)$", (PROJECT_DIR / "requirements.txt").read_text(), re.MULTILINE)
    assert pins == [version("pulumi")]


# --- what the recording sees, from where the public API shows it ---------------------------------------------------

PROD = "urn:pulumi:prod::blinkchamber-identity::"


def test_the_recording_sees_each_option() -> None:
    prod = recorded("prod")
    # No parent given: the stack.
    assert (
        prod.one("pulumi:providers:vault", "vault").parent == PROD + "pulumi:pulumi:Stack::blinkchamber-identity-prod"
    )
    # The provider a component's ``providers`` hands its children, as the engine's reference (URN and ID).
    assert (
        prod.one("kubernetes:core/v1:Namespace", "database").provider
        == PROD + "pulumi:pulumi:Stack$pulumi:providers:kubernetes::kubernetes::kubernetes-id"
    )
    redis_password = prod.one("random:index/randomPassword:RandomPassword", "redis-password")
    assert redis_password.provider == ""
    # Its URN under its component, its inputs (README: redis.passwordLength 48), no alias.
    assert redis_password.urn == (
        PROD + "blinkchamber:identity:VaultAccess$random:index/randomPassword:RandomPassword::redis-password"
    )
    assert redis_password.inputs["length"] == 48
    assert redis_password.aliases == []
    # Dependencies that come only from the inputs: the secret holds the password's result.
    assert prod.one("vault:kv/secretV2:SecretV2", "redis").dependencies == [
        PROD + "blinkchamber:identity:VaultAccess$random:index/randomPassword:RandomPassword::redis-password"
    ]
    # ... and on a resource the program reads (the admin key Secret the ZITADEL chart writes) rather than declares.
    assert prod.one("pulumi:providers:zitadel", "zitadel").dependencies == [
        PROD + "blinkchamber:identity:EventRelay$kubernetes:core/v1:Secret::zitadel-admin-key",
        PROD + "blinkchamber:identity:Zitadel$kubernetes:helm.sh/v3:Release::zitadel",
    ]
    assert [r.name for r in prod.by_type("kubernetes:core/v1:Secret") if r.name == "zitadel-admin-key"] == []
    # protect: prod keeps ZITADEL's masterkey; the Redis password can be regenerated.
    assert prod.one("random:index/randomPassword:RandomPassword", "zitadel-masterkey").protect is True
    assert prod.one("random:index/randomPassword:RandomPassword", "redis-password").protect is False
    # retainOnDelete: dev creates the CI login backend in a Vault other stacks share.
    dev = recorded("dev")
    assert dev.one("vault:jwt/authBackend:AuthBackend", "github-actions").retain_on_delete is True
    assert dev.one("vault:jwt/authBackendRole:AuthBackendRole", "ci-deploy").retain_on_delete is False
    # aliases: the bundled Postgres's password keeps the URN it had under the Vault component.
    assert dev.one("random:index/randomPassword:RandomPassword", "postgres-admin-password").aliases == [
        "urn:pulumi:dev::blinkchamber-identity::blinkchamber:identity:VaultAccess"
        "$random:index/randomPassword:RandomPassword::postgres-admin-password"
    ]


#: A program with what the stack's own does not show: protect inherited from a component, a dependency on a
#: component (the engine waits for its children), and on a child's Output.
_OPTIONS_PROGRAM = """
import pulumi
import pulumi_random as random

class Box(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("test:index:Box", name, None, opts)
        self.inner = random.RandomPassword(name + "-inner", length=8, opts=pulumi.ResourceOptions(parent=self))

box = Box("box", pulumi.ResourceOptions(protect=True))
random.RandomString(
    "after", length=4, keepers={"from": box.inner.result},
    opts=pulumi.ResourceOptions(depends_on=[box], retain_on_delete=True),
)
"""


def test_the_recording_resolves_options_as_the_engine_receives_them(tmp_path: Path) -> None:
    (tmp_path / "__main__.py").write_text(_OPTIONS_PROGRAM)
    config, secret_keys = parse_stack_config((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    recording = mocked.run_program("dev", config, secret_keys, program=tmp_path / "__main__.py")
    dev = "urn:pulumi:dev::blinkchamber-identity::"
    inner = recording.one("random:index/randomPassword:RandomPassword", "box-inner")
    assert (inner.parent, inner.protect) == (dev + "pulumi:pulumi:Stack$test:index:Box::box", True)
    after = recording.one("random:index/randomString:RandomString", "after")
    assert (after.protect, after.retain_on_delete) == (False, True)
    assert after.dependencies == [dev + "test:index:Box$random:index/randomPassword:RandomPassword::box-inner"]


# --- the loader under the engine: pulumi.Config per key, the stack file for the rest --------------------------------


@pytest.fixture
def engine_config(tmp_path: Path) -> Iterator[Callable[[str], StackConfig]]:
    """Load ``prod`` the way ``pulumi preview`` runs the program: config from the runtime, the project's directory
    set (``pulumi up`` adds the deploy rules: tests/test_release.py)."""

    def load(extra: str) -> StackConfig:
        text = (PROJECT_DIR / "Pulumi.prod.yaml").read_text() + extra
        (tmp_path / "Pulumi.prod.yaml").write_text(text)
        config, secret_keys = parse_stack_config(text)  # the engine decrypts; the stand-in is as good here
        pulumi.runtime.reset_options(project=names.PROJECT, stack="prod", root_directory=str(tmp_path), preview=True)
        pulumi.runtime.set_all_config(
            mocked.pulumi_config_values(config), [f"{names.PROJECT}:{key}" for key in secret_keys]
        )
        return load_from_pulumi()

    try:
        yield load
    finally:
        pulumi.runtime.set_all_config({}, [])
        pulumi.runtime.reset_options()


def test_the_engine_path_loads_the_stack_file(engine_config: Callable[[str], StackConfig]) -> None:
    cfg = engine_config(f"  {names.PROJECT}:postgresDsn:\n    secure: v1:{secrets.token_urlsafe(24)}\n")
    assert (cfg.stack, cfg.environment, cfg.kubernetes.context) == ("prod", "prod", "blinkchamber-prod")
    assert cfg.secrets.postgres_dsn is True
    assert cfg.secrets.zitadel_admin_key is False


def test_the_engine_path_refuses_what_only_the_stack_file_shows(engine_config: Callable[[str], StackConfig]) -> None:
    with pytest.raises(StackConfigError) as refused:
        engine_config(
            f"  {names.PROJECT}:vaultToken: hvs.{secrets.token_urlsafe(24)}\n"  # pasted, not set with --secret
            f"  {names.PROJECT}:redisSentinel: {{}}\n"  # not a key of this program
        )
    assert refused.value.violations == [
        "prod: redisSentinel: unknown key (is it misspelled?)",
        "prod: vaultToken: must be a Pulumi secret: pulumi config set --secret vaultToken ...",
    ]


def test_the_engine_path_without_a_stack_file_takes_the_runtime_config(tmp_path: Path) -> None:
    # `pulumi stack init dev` writes no stack file until a key is set: the environment defaults then apply.
    pulumi.runtime.reset_options(project=names.PROJECT, stack="dev", root_directory=str(tmp_path), preview=True)
    try:
        pulumi.runtime.set_all_config({}, [])
        cfg = load_from_pulumi()
        # `pulumi up` of those defaults: the images the project builds have no released digest yet.
        pulumi.runtime.reset_options(project=names.PROJECT, stack="dev", root_directory=str(tmp_path), preview=False)
        with pytest.raises(StackConfigError) as refused:
            load_from_pulumi()
    finally:
        pulumi.runtime.reset_options()
    assert (cfg.stack, cfg.environment, cfg.redis.quorum) == ("dev", "dev", 2)
    assert [v.split(": ", 2)[1] for v in refused.value.violations] == [
        "events.relay.image.digest",
        "redis.images.redis.digest",
        "redis.images.sentinel.digest",
    ]
