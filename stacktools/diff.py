"""Compare two offline plans the way a Terraform plan reads: ``+`` added, ``-`` removed, ``~`` changed.

``python -m stacks diff dev prod`` compares two stacks (what a promotion would change);
``python -m stacks diff --base main dev`` compares one stack on another git revision with the working tree (what a
pull request changes). Secrets stay ``[secret]``; a changed secret is flagged, never shown. A change the provider
applies by deleting and re-creating the resource is marked ``+/-``, its line ``(forces replacement)``
(``stacktools/replacements.py``). So is a resource whose URN changes (its parent, or a parent's parent, moved): the
engine finds the old resource by URN, then by the new resource's aliases (``aliases`` in the plan), then by the alias
it inherits from a parent found by an alias; found, it is the same resource, else a new one replaces the old.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.names import PROJECT
from stacks.stackfile import SECRET, path_of
from stacktools.mocked import engine_urn
from stacktools.plan import Plan
from stacktools.replacements import forces_replacement

_MISSING = object()
REPLACEMENT_NOTE = "(forces replacement)"
ALIAS_NOTE = "(moved, and an alias names its old URN: the same resource, not replaced)"
INHERITED_NOTE = "(its parent moved under an alias, which keeps it the same resource: not replaced)"
SECRET_CHANGE_NOTE = "(secret value changed)"
_LEAF_LINE = re.compile(r"^([~+-]) (inputs\.\S+?):(?: |$)")


@dataclass(frozen=True)
class Change:
    #: ``+`` added, ``-`` removed, ``~`` changed, ``+/-`` replaced (deleted and created again)
    action: str
    #: ``type::name`` of a resource, or ``output:<name>``
    key: str
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlanDiff:
    old: str
    new: str
    changes: list[Change]

    @property
    def counts(self) -> tuple[int, int, int]:
        """Added, changed in place, deleted (replacements are counted apart)."""
        resources = [c for c in self.changes if not c.key.startswith("output:")]
        return tuple(sum(1 for c in resources if c.action == a) for a in "+~-")  # type: ignore[return-value]

    @property
    def replacements(self) -> int:
        return sum(1 for c in self.changes if c.action == "+/-")

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        add, change, delete = self.counts
        outputs = sum(1 for c in self.changes if c.key.startswith("output:"))
        tail = f", {outputs} output{'s' if outputs != 1 else ''} changed" if outputs else ""
        replace = f"{self.replacements} to replace, " if self.replacements else ""
        return f"Plan: {add} to add, {change} to change, {replace}{delete} to delete{tail}."

    def render(self) -> str:
        lines = [f"Comparing {self.old} → {self.new}", ""]
        if not self.changes:
            lines.append("No changes.")
        for change in self.changes:
            lines.append(f"  {change.action} {change.key}")
            lines += [f"      {line}" for line in change.lines]
        lines += ["", self.summary()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        add, change, delete = self.counts
        return {
            "old": self.old,
            "new": self.new,
            "summary": {"add": add, "change": change, "replace": self.replacements, "delete": delete},
            "changes": [{"action": c.action, "key": c.key, "lines": c.lines} for c in self.changes],
        }


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def value_changes(old: Any, new: Any, path: str) -> Iterator[str]:
    """Lines describing how ``old`` became ``new``, one per changed leaf path."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            yield from value_changes(old.get(key, _MISSING), new.get(key, _MISSING), f"{path}.{key}")
    elif old is _MISSING:
        yield f"+ {path}: {_show(new)}"
    elif new is _MISSING:
        yield f"- {path}: {_show(old)}"
    elif old != new:
        if isinstance(old, str) and isinstance(new, str) and ("\n" in old or "\n" in new):
            yield f"~ {path}:"
            body = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1)
            yield from (f"    {line}" for line in list(body)[2:])
        else:
            yield f"~ {path}: {_show(old)} → {_show(new)}"


def _resource_lines(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines = list(value_changes(old["inputs"], new["inputs"], "inputs"))
    for attribute in ("parent", "protect"):
        lines += value_changes(old.get(attribute), new.get(attribute), attribute)
    # Plans made before retainOnDelete was recorded have none: the same as false.
    lines += value_changes(old.get("retainOnDelete", False), new.get("retainOnDelete", False), "retainOnDelete")
    before, after = set(old.get("dependsOn", [])), set(new.get("dependsOn", []))
    lines += [f"- dependsOn: {dep}" for dep in sorted(before - after)]
    lines += [f"+ dependsOn: {dep}" for dep in sorted(after - before)]
    old_secrets, new_secrets = old.get("secrets", {}), new.get("secrets", {})
    for path in sorted(set(old_secrets) | set(new_secrets)):
        if old_secrets.get(path) != new_secrets.get(path) and path in old_secrets and path in new_secrets:
            lines.append(f"~ inputs.{path}: {SECRET} {SECRET_CHANGE_NOTE}")
    return lines


class _Identities:
    """Whether the engine takes a resource of ``old`` for the one with the same key in ``new``.

    Both URNs are built in ``new``'s stack: comparing two stacks (``diff dev prod``) asks what the same change would
    do within one.
    """

    def __init__(self, old: Plan, new: Plan) -> None:
        self.old, self.new = old, new
        self._found: dict[str, str | None] = {}

    def urn(self, plan: Plan, key: str) -> str:
        res = plan.resources[key]
        parent = res["parent"]
        parent_urn = self.urn(plan, parent) if parent in plan.resources else ""
        return engine_urn(self.new.stack, PROJECT, parent_urn, res["type"], res["name"])

    def moved(self, key: str) -> tuple[str, str] | None:
        """The old and new URNs of a resource in both plans whose URN changed; None when it did not."""
        before, after = self.urn(self.old, key), self.urn(self.new, key)
        return (before, after) if before != after else None

    def kept_by(self, key: str) -> str | None:
        """For a resource in both plans: how the engine finds its old state (``""`` by URN, or a note); None if not."""
        if key not in self._found:
            self._found[key] = self._kept_by(key)
        return self._found[key]

    def _kept_by(self, key: str) -> str | None:
        urns = self.moved(key)
        if urns is None:
            return ""
        if urns[0] in self.new.resources[key].get("aliases", []):
            return ALIAS_NOTE
        # A resource the engine found by an alias (its own or inherited) gives each child that alias's URN as parent:
        # the child's own URN under its parent's old one.
        res, parent = self.new.resources[key], self.new.resources[key]["parent"]
        if parent in self.old.resources and parent in self.new.resources and self.kept_by(parent):
            inherited = engine_urn(self.new.stack, PROJECT, self.urn(self.old, parent), res["type"], res["name"])
            if inherited == urns[0]:
                return INHERITED_NOTE
        return None


def _identity_lines(identities: _Identities, key: str, lines: list[str]) -> tuple[list[str], bool]:
    """``lines`` with the move of a resource whose URN changed explained; whether the move replaces it."""
    urns = identities.moved(key)
    if urns is None:
        return lines, False
    kept = identities.kept_by(key)
    note = kept or REPLACEMENT_NOTE
    parent = next((i for i, line in enumerate(lines) if line.startswith("~ parent: ")), None)
    if parent is None:  # a parent's parent moved
        return [f"~ urn: {_show(urns[0])} → {_show(urns[1])} {note}", *lines], kept is None
    return [f"{line} {note}" if i == parent else line for i, line in enumerate(lines)], kept is None


def diff_plans(old: Plan, new: Plan, old_name: str | None = None, new_name: str | None = None) -> PlanDiff:
    changes: list[Change] = []
    identities = _Identities(old, new)
    for key in sorted(set(old.resources) | set(new.resources)):
        before, after = old.resources.get(key), new.resources.get(key)
        if before is None and after is not None:
            changes.append(Change("+", key, list(value_changes({}, after["inputs"], "inputs"))))
        elif after is None and before is not None:
            changes.append(Change("-", key))
        elif before is not None and after is not None:
            found = _resource_lines(before, after)
            marked = [_mark_replacement(after["type"], line) for line in found]
            lines, moved_away = _identity_lines(identities, key, marked)
            if lines:
                changes.append(Change("+/-" if moved_away or marked != found else "~", key, lines))
    for name in sorted(set(old.outputs) | set(new.outputs)):
        lines = list(value_changes(old.outputs.get(name, _MISSING), new.outputs.get(name, _MISSING), name))
        if lines:
            changes.append(Change("~", f"output:{name}", lines))
    return PlanDiff(old_name or old.stack, new_name or new.stack, changes)


def _mark_replacement(type_: str, line: str) -> str:
    leaf = _LEAF_LINE.match(line)
    if leaf and forces_replacement(type_, leaf.group(2), leaf.group(1)):
        return f"{line} {REPLACEMENT_NOTE}"
    return line


# --- plans from another git revision -------------------------------------------------------------------------------


class RevisionError(RuntimeError):
    pass


def _git(project_dir: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RevisionError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def plan_at_revision(stack: str, revision: str, project_dir: Path) -> Plan:
    """The stack's plan as the code and stack files of ``revision`` produce it (in a temporary worktree)."""
    commit = _git(project_dir, "rev-parse", "--verify", f"{revision}^{{commit}}")
    top = Path(_git(project_dir, "rev-parse", "--show-toplevel"))
    subdir = project_dir.resolve().relative_to(top.resolve())
    with tempfile.TemporaryDirectory(prefix="stacks-base-") as tmp:
        worktree = Path(tmp) / "base"
        _git(project_dir, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
        try:
            base_dir = worktree / subdir
            if not path_of(base_dir, stack).exists():
                # The stack is new in this change: everything in it is an addition.
                return Plan(stack=stack, resources={}, outputs={})
            result = subprocess.run(
                [sys.executable, "-m", "stacks", "plan", stack, "--json", "--out", str(Path(tmp) / "out")],
                cwd=base_dir,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RevisionError(f"plan of {stack} at {revision} failed:\n{result.stderr.strip()}")
            return Plan.from_json(json.loads(result.stdout))
        finally:
            _git(project_dir, "worktree", "remove", "--force", str(worktree))
