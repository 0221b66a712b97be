"""Run the Pulumi program under the SDK's mocks and record what it declares.

No engine, cluster, Vault or Pulumi account: the program's resources are recorded with their type, name, parent,
dependencies, options and inputs. Secret inputs stay wrapped as Pulumi secrets, so callers can mask them.
The offline plan and the tests both run the program through ``run_program``.

Only the SDK's public API: the mocks (``pulumi.runtime.Mocks``), a stack transformation and ``pulumi.Output``.
The mocks' ``new_resource`` sees what reaches the engine of each resource: type, name, inputs and provider reference.
The rest of the recording comes from a stack transformation, which sees each resource as the program declares it
(its options and its inputs before they resolve); ``_Declarations`` completes that the way the SDK does before it
registers the resource, and turns its aliases into the old URNs they stand for, as the engine does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import runpy
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

from stacks import names
from stacks.config import StackConfig
from stacks.loader import load

PROJECT_DIR = Path(__file__).resolve().parent.parent


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
    #: The old URNs its aliases stand for, in the engine's form (``engine_urn``): under one of them the engine takes
    #: the resource in the stack's state for this one instead of replacing it.
    aliases: list[str] = field(default_factory=list)


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


ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def engine_urn(stack: str, project: str, parent_urn: str, type_: str, name: str) -> str:
    """A resource's URN as the engine builds it: its parent's type chain, ``$``, its type; nothing for the stack.

    ``parent_urn`` is ``""`` for a resource at the top of the stack. The mocks' URNs are not these: they keep only the
    parent's last type, and the stack's type above a top-level resource's.
    """
    if parent_urn and len(parent_urn.split("::")) < 4:
        raise ValueError(f"not a URN: {parent_urn!r}")  # the engine refuses it too
    if not parent_urn or parent_urn.split("::")[2] == ROOT_STACK_TYPE:
        return f"urn:pulumi:{stack}::{project}::{type_}::{name}"
    return f"{parent_urn[: parent_urn.rfind('::')]}${type_}::{name}"


@dataclass(frozen=True)
class _Alias:
    """An alias as the engine receives it: an old URN, or what differs from the resource (``None``: its own)."""

    urn: str | None = None
    name: str | None = None
    type: str | None = None
    stack: str | None = None
    project: str | None = None
    #: The old parent: a resource or its URN; ``""`` none (the stack); ``None`` the resource's own.
    parent: pulumi.Resource | str | None = None


def _given(value: Any) -> bool:
    """Whether an ``Alias`` field was set: ``...`` means the resource's own (``None`` too, but for the parent)."""
    return value is not None and value is not Ellipsis


def _alias(alias: Any) -> pulumi.Output[_Alias]:
    """``alias`` (a ``pulumi.Alias`` or a URN) with its inputs resolved."""
    if not isinstance(alias, pulumi.Alias):
        urn: pulumi.Output[str] = pulumi.Output.from_input(alias)
        return urn.apply(lambda value: _Alias(urn=value))
    parent: Any = alias.parent
    # Not given: the resource's own parent; None (``pulumi.ROOT_STACK_RESOURCE``): none, the stack.
    parent = None if parent is Ellipsis else "" if parent is None else parent
    fields = pulumi.Output.all(
        None if isinstance(parent, pulumi.Resource) else parent,
        alias.stack if _given(alias.stack) else None,
        alias.project if _given(alias.project) else None,
    )
    return fields.apply(
        lambda values: _Alias(
            name=alias.name if _given(alias.name) else None,
            type=alias.type_ if _given(alias.type_) else None,
            stack=values[1] or None,
            project=values[2] or None,
            parent=parent if isinstance(parent, pulumi.Resource) else values[0],
        )
    )


class _Mocks(Mocks):
    def __init__(self, recording: Recording, vault_subkeys: Mapping[str, Collection[str]]) -> None:
        self.recording = recording
        #: ``<mount>/<name>`` → the keys of a Vault secret the stack reads but does not write.
        self.vault_subkeys = vault_subkeys
        #: Every registration and read, in the order the engine would receive them.
        self.received: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.received.append(args)
        state = dict(args.inputs)
        if args.typ == names.RANDOM_PASSWORD_TYPE:
            value = mock_secret_value(args.name)
            self.recording.generated_secrets.append(value)
            state["result"] = value
        if args.typ == names.VAULT_KV_SECRET_TYPE:
            state["metadata"] = dict(MOCK_KV_METADATA)
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == _SUBKEYS:
            keys = self.vault_subkeys.get(f"{args.args.get('mount')}/{args.args.get('name')}")
            # A missing secret: the provider fails the read; here the answer simply has no subkeys.
            return ({"dataJson": json.dumps(dict.fromkeys(sorted(keys)))} if keys is not None else {}), []
        return {}, []


@dataclass(eq=False)
class _Declared:
    """A resource as its constructor saw it; ``urn`` and ``parent_urn`` once they resolve."""

    resource: pulumi.Resource
    type: str
    name: str
    #: ``opts.parent``: ``None`` for the stack.
    parent: pulumi.Resource | None
    #: Reads an existing resource (``opts.id``/``opts.urn``): the engine registers nothing.
    read: bool
    #: ``protect`` as the SDK resolves it: the resource's own, else its parent's.
    protect: bool | None
    retain_on_delete: bool
    urn: str = ""
    parent_urn: str = ""
    #: The resources its inputs and ``depends_on`` name, components not yet expanded; complete when the run ends.
    uses: set[pulumi.Resource] = field(default_factory=set)
    #: ``opts.aliases``, resolved once the run ends.
    aliases: list[_Alias] = field(default_factory=list)

    def locate(self, parent: pulumi.Resource | None) -> pulumi.Output[None] | None:
        urn: pulumi.Output[str] | None = getattr(self.resource, "urn", None)
        if urn is None or parent is None:
            return None  # its constructor failed after the transformation: nothing was registered
        return pulumi.Output.all(urn, parent.urn).apply(self._located)

    def _located(self, urns: list[str]) -> None:
        self.urn, self.parent_urn = urns


class _Declarations:
    """What the mocks do not show: parent, dependencies, protect and retainOnDelete, from a stack transformation.

    The engine's request carries them resolved; here they are resolved the way the SDK resolves them before it sends
    it: the parent defaults to the stack, ``protect`` is inherited from the parent, and the dependencies are
    ``depends_on`` plus the resources behind the inputs (their Outputs and resource references), a component
    standing for its children. One member used here is not in the SDK's documentation, ``Output.resources()``:
    nothing public says which resources an Output came from, and the plan shows those implicit dependencies
    (``dependsOn``). ``run_program`` reads another: the root stack resource's ``outputs``.
    """

    def __init__(self) -> None:
        self.declared: list[_Declared] = []
        self.children: dict[pulumi.Resource, list[pulumi.Resource]] = {}
        self.protect: dict[pulumi.Resource, bool | None] = {}

    def observe(self, args: pulumi.ResourceTransformationArgs) -> None:
        opts = args.opts
        parent = opts.parent
        protect = opts.protect if opts.protect is not None or parent is None else self.protect.get(parent)
        entry = _Declared(
            resource=args.resource,
            type=args.type_,
            name=args.name,
            parent=parent,
            read=opts.id is not None or opts.urn is not None,
            protect=protect,
            retain_on_delete=bool(opts.retain_on_delete),
        )
        self.declared.append(entry)
        self.protect[args.resource] = protect
        if parent is not None:
            self.children.setdefault(parent, []).append(args.resource)
        self._follow(entry, [args.props, opts.depends_on])
        if opts.aliases:
            pulumi.Output.all(*(_alias(alias) for alias in opts.aliases)).apply(entry.aliases.extend)
        # The resource has a URN once its constructor has returned; an Output's callback runs after that.
        pulumi.Output.from_input(parent or pulumi.runtime.get_root_resource()).apply(entry.locate)

    def _follow(self, entry: _Declared, value: Any) -> None:
        """Add to ``entry.uses`` the resources ``value`` names, now and once its Outputs resolve."""
        outputs: list[pulumi.Output[Any]] = []
        _references(value, outputs, entry.uses, set())
        for output in outputs:
            behind: pulumi.Output[set[pulumi.Resource]] = pulumi.Output.from_input(output.resources())
            behind.apply(entry.uses.update)
            output.apply(lambda resolved: self._follow(entry, resolved), True)

    def expand(self, resource: pulumi.Resource) -> Iterator[pulumi.Resource]:
        """The resources a dependency on ``resource`` waits for: a component (all of ours run in this process) stands
        for its children, recursively; a custom resource for itself."""
        pending = [resource]
        while pending:
            current = pending.pop()
            if isinstance(current, pulumi.ComponentResource):
                pending.extend(self.children.get(current, []))
            else:
                yield current

    def record(self, received: list[MockResourceArgs], recording: Recording) -> None:
        """Pair each registration the mocks received with its declaration (by type and name, in order)."""
        urns = {d.resource: d.urn for d in self.declared if d.urn}
        engine_urns = self.engine_urns(recording.stack)
        waiting: dict[tuple[str, str], list[_Declared]] = {}
        for entry in self.declared:
            if entry.urn and not entry.read:
                waiting.setdefault((entry.type, entry.name), []).append(entry)
        for args in received:
            queue = waiting.get((args.typ, args.name))
            if not queue:
                continue  # a read
            entry = queue.pop(0)
            dependencies = {urns.get(r, "") for used in entry.uses for r in self.expand(used)} - {""}
            aliases = {self.old_urn(entry, alias, engine_urns, recording.stack) for alias in entry.aliases}
            recording.resources.append(
                RecordedResource(
                    urn=entry.urn,
                    type=args.typ,
                    name=args.name,
                    parent=entry.parent_urn,
                    dependencies=sorted(dependencies),
                    protect=bool(entry.protect),
                    provider=args.provider or "",
                    inputs=args.inputs,
                    retain_on_delete=entry.retain_on_delete,
                    aliases=sorted(aliases),
                )
            )

    def engine_urns(self, stack: str) -> dict[pulumi.Resource, str]:
        """Each declared resource's URN as the engine builds it (a parent is declared before its children)."""
        urns: dict[pulumi.Resource, str] = {}
        for entry in self.declared:
            parent_urn = urns.get(entry.parent, "") if entry.parent is not None else ""
            urns[entry.resource] = engine_urn(stack, names.PROJECT, parent_urn, entry.type, entry.name)
        return urns

    @staticmethod
    def old_urn(entry: _Declared, alias: _Alias, urns: Mapping[pulumi.Resource, str], stack: str) -> str:
        """The URN ``alias`` stands for, as the engine collapses an alias (a field not given: the resource's own).

        Not followed: an old parent that itself moved under an alias (the engine would take the parent's old URN),
        and the aliases a child inherits from its parent's; the diff looks at the parent for the latter.
        """
        if alias.urn is not None:
            return alias.urn
        if alias.parent is None:
            parent_urn = urns.get(entry.parent, "") if entry.parent is not None else ""
        elif isinstance(alias.parent, pulumi.Resource):
            parent_urn = urns.get(alias.parent, "")
        else:
            parent_urn = alias.parent
        return engine_urn(
            alias.stack or stack,
            alias.project or names.PROJECT,
            parent_urn,
            alias.type or entry.type,
            alias.name or entry.name,
        )


def _references(value: Any, outputs: list[pulumi.Output[Any]], resources: set[pulumi.Resource], seen: set[int]) -> None:
    """The Outputs and resources in an input, through lists, dicts and input types (what the SDK serializes)."""
    if isinstance(value, pulumi.Output):
        outputs.append(value)
    elif isinstance(value, pulumi.Resource):
        resources.add(value)
    elif value is None or isinstance(value, (str, bytes, int, float, type)) or id(value) in seen:
        return
    elif inspect.isawaitable(value):
        outputs.append(pulumi.Output.from_input(value))
    else:
        seen.add(id(value))
        if isinstance(value, Mapping):
            items: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            items = vars(value).values() if hasattr(value, "__dict__") else ()
        for item in items:
            _references(item, outputs, resources, seen)


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
    # Checked here as the program checks its stack file under ``pulumi up``: with no project directory (below), it
    # reads the config through pulumi.Config alone, which tells neither unknown keys nor secrets set in plain text.
    cfg = load(stack, config, secret_keys)
    if vault_subkeys is None:
        vault_subkeys = _prerequisite_subkeys(cfg)
    mocks = _Mocks(recording, vault_subkeys)
    declarations = _Declarations()
    # A fresh root stack resource: set_mocks keeps the previous run's, and with it that run's exported outputs.
    pulumi.runtime.reset_options(project=names.PROJECT, stack=stack, root_directory=None)
    pulumi.runtime.set_mocks(mocks, project=names.PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(
        pulumi_config_values(config), secret_keys=[f"{names.PROJECT}:{key}" for key in secret_keys]
    )
    pulumi.runtime.register_stack_transformation(declarations.observe)
    if str(program.parent) not in sys.path:
        sys.path.insert(0, str(program.parent))

    outputs: dict[str, StackOutput] = {}
    exported: list[str] = []

    def body() -> pulumi.Output[list[None]]:
        runpy.run_path(str(program), run_name="__main__")
        # Undocumented, like ``Output.resources()``: nothing public lists what ``pulumi.export`` recorded.
        values: dict[str, Any] = getattr(pulumi.runtime.get_root_resource(), "outputs", {})
        exported.extend(values)
        return pulumi.Output.all(*(_read(value, outputs, name) for name, value in values.items()))

    try:
        pulumi.runtime.test(body)()  # type: ignore[no-untyped-call]
    finally:
        declarations.record(mocks.received, recording)
    recording.outputs.update((name, outputs[name]) for name in exported)  # in the program's order
    return recording


def _read(value: Any, into: dict[str, StackOutput], name: str) -> pulumi.Output[None]:
    """A stack output's value and whether it is secret, into ``into[name]``."""
    output = pulumi.Output.from_input(value)

    def store(resolved: list[Any]) -> None:
        value, secret = resolved
        into[name] = StackOutput(value=None if pulumi.contains_unknowns(value) else value, secret=bool(secret))

    secret: pulumi.Output[bool] = pulumi.Output.from_input(output.is_secret())
    return pulumi.Output.all(output, secret).apply(store, True)


def _prerequisite_subkeys(cfg: StackConfig) -> dict[str, Collection[str]]:
    """The secrets a stack reads but does not write, as its README prerequisites have them in Vault."""
    vault_names = names.VaultNames.of(cfg)
    if vault_names.external_database is None:
        return {}
    secret, key = vault_names.external_database
    return {f"{vault_names.kv_mount}/{secret}": [key]}
