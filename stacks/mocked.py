"""Run the Pulumi program under the SDK's mocks and record what it declares.

No engine, cluster, Vault or Pulumi account: the program's resources are recorded with their type, name, parent,
dependencies, options and inputs. Secret inputs stay wrapped as Pulumi secrets, so callers can mask them.
The offline plan and the tests both run the program through ``run_program``.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from stacks import names

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Stand-in for a secret config value the offline plan cannot decrypt.
UNDECRYPTED = "[secret]"


def mock_secret_value(resource_name: str) -> str:
    """The value a mocked random resource produces: unique per resource, so a leak is easy to find."""
    return "mockSecret" + hashlib.sha256(resource_name.encode()).hexdigest()[:30]


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    parent: str
    dependencies: list[str]
    protect: bool
    provider: str
    inputs: dict[str, Any]
    retain_on_delete: bool = False


@dataclass
class StackOutput:
    value: Any
    secret: bool


@dataclass
class Recording:
    stack: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, StackOutput] = field(default_factory=dict)
    #: Values the mocks generated for random secrets: none of them may appear in plain text anywhere.
    generated_secrets: list[str] = field(default_factory=list)

    def by_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> RecordedResource:
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} resources of type {type_} named {name}")
        return found[0]


#: What a secret written by the program reads back as, first version (the provider reads KV v2 metadata after writing).
MOCK_KV_METADATA: dict[str, str] = {"version": "1", "destroyed": "false", "deletion_time": "", "created_time": ""}
_SUBKEYS = "vault:kv/getSecretSubkeysV2:getSecretSubkeysV2"


class _Mocks(pulumi_mocks.Mocks):
    def __init__(self, recording: Recording, vault_subkeys: Mapping[str, Collection[str]]) -> None:
        self.recording = recording
        #: ``<mount>/<name>`` → the keys of a Vault secret the stack reads but does not write.
        self.vault_subkeys = vault_subkeys

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            value = mock_secret_value(args.name)
            self.recording.generated_secrets.append(value)
            state["result"] = value
        if args.typ == "vault:kv/secretV2:SecretV2":
            state["metadata"] = dict(MOCK_KV_METADATA)
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == _SUBKEYS:
            keys = self.vault_subkeys.get(f"{args.args.get('mount')}/{args.args.get('name')}")
            # A missing secret: the provider fails the read; here the answer simply has no subkeys.
            return ({"dataJson": json.dumps(dict.fromkeys(sorted(keys)))} if keys is not None else {}), []
        return {}, []


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.recording = mocks.recording

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.recording.resources.append(
                RecordedResource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    dependencies=sorted(set(request.dependencies)),
                    protect=bool(request.protect),
                    provider=request.provider,
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    retain_on_delete=bool(request.retainOnDelete),
                )
            )
        return response


def pulumi_config_values(values: Mapping[str, Any]) -> dict[str, str]:
    """Config as the Pulumi engine hands it to a program: namespaced keys, objects as JSON text."""
    return {
        f"{names.PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
    }


def run_program(
    stack: str,
    config: Mapping[str, Any],
    secret_keys: Collection[str] = (),
    program: Path = PROJECT_DIR / "__main__.py",
    recording: Recording | None = None,
    vault_subkeys: Mapping[str, Collection[str]] | None = None,
) -> Recording:
    """Run ``program`` for ``stack`` with ``config`` (un-namespaced keys) under mocks; return what it declared.

    Raises what the program raises (a ``StackConfigError`` for an invalid configuration); pass ``recording`` to
    see what was declared before that. ``vault_subkeys`` (``<mount>/<name>`` → keys) is what the Vault holds beyond
    the program's own secrets; by default what the stack's prerequisites say (its external DSN secret and key).
    """
    recording = recording if recording is not None else Recording(stack=stack)
    if vault_subkeys is None:
        vault_subkeys = _prerequisite_subkeys(stack, config, secret_keys)
    mocks = _Mocks(recording, vault_subkeys)
    # A fresh root stack resource: set_mocks keeps the previous run's, and with it that run's exported outputs.
    pulumi.runtime.reset_options(project=names.PROJECT, stack=stack)
    pulumi.runtime.set_mocks(mocks, project=names.PROJECT, stack=stack, preview=False, monitor=_RecordingMonitor(mocks))
    pulumi.runtime.set_all_config(
        pulumi_config_values(config), secret_keys=[f"{names.PROJECT}:{key}" for key in secret_keys]
    )
    if str(program.parent) not in sys.path:
        sys.path.insert(0, str(program.parent))

    async def outputs() -> None:
        root = get_root_resource()
        exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
        for key, value in exported.items():
            output = pulumi.Output.from_input(value)
            recording.outputs[key] = StackOutput(value=await output.future(), secret=await output.is_secret())

    def body() -> Any:
        runpy.run_path(str(program), run_name="__main__")
        return outputs()

    _sync_await(run_pulumi_func(body))
    return recording


def _prerequisite_subkeys(
    stack: str, config: Mapping[str, Any], secret_keys: Collection[str]
) -> dict[str, Collection[str]]:
    """The secrets a stack reads but does not write, as its README prerequisites have them in Vault."""
    from stacks.loader import StackConfigError, load

    try:
        vault_names = names.VaultNames.of(load(stack, config, secret_keys))
    except StackConfigError:
        return {}  # the program itself reports the configuration's errors
    if vault_names.external_database is None:
        return {}
    secret, key = vault_names.external_database
    return {f"{vault_names.kv_mount}/{secret}": [key]}
