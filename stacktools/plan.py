"""The offline plan: what a stack would declare, as a deterministic, secret-masked description.

``python -m stacks plan STACK`` runs the program under mocks (``stacktools/mocked.py``) with the config of
``Pulumi.STACK.yaml`` and writes under ``build/STACK/``: ``plan.json`` (machines), ``plan.txt`` (people),
each Helm release's values as YAML and each Vault policy as HCL.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc

from stacks.names import HELM_RELEASE_TYPE, VAULT_POLICY_TYPE
from stacks.stackfile import SECRET, path_of, read_stack_config
from stacktools import mocked

UNKNOWN = "[unknown]"


def mask(value: Any) -> Any:
    """``value`` with every Pulumi secret replaced by ``[secret]`` and every unknown by ``[unknown]``."""
    if rpc.is_rpc_secret(value):
        return SECRET
    if value is rpc.UNKNOWN or value == rpc.UNKNOWN:
        return UNKNOWN
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}  # a Helm values file (``valueYamlFiles``), as a reviewer reads it
    if isinstance(value, Mapping):
        return {str(k): mask(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [mask(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the RPC layer carries every number as a double
    return value


def secret_fingerprints(value: Any, path: str = "") -> dict[str, str]:
    """Path → short hash of each secret in ``value``, so that a diff can say a secret changed without showing it.

    Under the mocks a secret holds a stand-in (a mock random value, an undecrypted config marker, or a value
    derived from those), never a real credential, so its hash reveals nothing.
    """
    if rpc.is_rpc_secret(value):
        raw = json.dumps(rpc.unwrap_rpc_secret(value), sort_keys=True, default=str)
        return {path: hashlib.sha256(raw.encode()).hexdigest()[:16]}
    found: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            found.update(secret_fingerprints(item, f"{path}.{key}" if path else str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.update(secret_fingerprints(item, f"{path}[{index}]"))
    return found


def resource_key(type_: str, name: str) -> str:
    return f"{type_}::{name}"


@dataclass(frozen=True)
class Plan:
    stack: str
    resources: dict[str, dict[str, Any]]
    outputs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "resources": self.resources, "outputs": self.outputs}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Plan:
        data = copy.deepcopy(dict(data))
        return Plan(stack=data["stack"], resources=dict(data["resources"]), outputs=dict(data["outputs"]))


def moves(resource: mocked.RecordedResource) -> list[str]:
    """The aliases that keep the resource's type and name: the old URNs of a move from another parent or stack.

    An alias of another type or name (the Kubernetes SDK gives each resource its API's former versions) stands for a
    resource with another key in the plan, which a diff shows as removed and added whatever the alias says.
    """
    return [urn for urn in resource.aliases if _type_and_name(urn) == (resource.type, resource.name)]


def _type_and_name(urn: str) -> tuple[str, str]:
    parts = urn.split("::", 3)
    return (parts[2].rsplit("$", 1)[-1], parts[3]) if len(parts) == 4 else ("", "")


def describe(recording: mocked.Recording) -> Plan:
    by_urn = {r.urn: resource_key(r.type, r.name) for r in recording.resources}
    resources: dict[str, dict[str, Any]] = {}
    for r in recording.resources:
        key = resource_key(r.type, r.name)
        resources[key] = {
            "type": r.type,
            "name": r.name,
            "parent": by_urn.get(r.parent, ""),
            "dependsOn": sorted(by_urn[d] for d in r.dependencies if d in by_urn),
            "protect": r.protect,
            "retainOnDelete": r.retain_on_delete,
            "inputs": mask(r.inputs),
            "secrets": secret_fingerprints(r.inputs),
        }
        if aliases := moves(r):  # only then: the other resources' plans stay as they were
            resources[key]["aliases"] = aliases
    outputs = {name: SECRET if out.secret else mask(out.value) for name, out in sorted(recording.outputs.items())}
    return Plan(stack=recording.stack, resources=dict(sorted(resources.items())), outputs=outputs)


def plan_stack(stack: str, project_dir: Path = mocked.PROJECT_DIR) -> Plan:
    return plan_config(stack, *read_stack_config(path_of(project_dir, stack)), project_dir)


def plan_config(
    stack: str, config: Mapping[str, Any], secret_keys: Collection[str], project_dir: Path = mocked.PROJECT_DIR
) -> Plan:
    """The plan of ``stack`` with the given config instead of its stack file's."""
    return describe(mocked.run_program(stack, config, secret_keys, program=project_dir / "__main__.py"))


# --- rendering -----------------------------------------------------------------------------------------------------


def helm_values(plan: Plan) -> dict[str, Any]:
    """Release name → its Helm values."""
    return {
        res["name"]: res["inputs"].get("values", {})
        for res in plan.resources.values()
        if res["type"] == HELM_RELEASE_TYPE
    }


def vault_policies(plan: Plan) -> dict[str, str]:
    """Policy name → HCL."""
    return {
        res["inputs"].get("name", res["name"]): res["inputs"].get("policy", "")
        for res in plan.resources.values()
        if res["type"] == VAULT_POLICY_TYPE
    }


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (configuration files, templates) as literal blocks, the way a reviewer reads them."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockStyleDumper.add_representer(str, _str_representer)


def values_yaml(values: Any) -> str:
    return yaml.dump(values, Dumper=_BlockStyleDumper, sort_keys=True, default_flow_style=False, width=120)


def _summary(res: Mapping[str, Any], files: Mapping[str, str]) -> str:
    inputs = res["inputs"]
    if res["type"] == HELM_RELEASE_TYPE:
        chart = f"chart {inputs.get('chart')} {inputs.get('version')} in namespace {inputs.get('namespace')}"
        return f"{chart}, values {files.get(res['name'], '')}"
    if res["type"] == VAULT_POLICY_TYPE:
        return f"HCL {files.get('policy:' + res['name'], '')}"
    parts = []
    for key, value in inputs.items():
        if isinstance(value, (dict, list)):
            shown = _short(value)
        else:
            shown = json.dumps(value) if not isinstance(value, str) else value
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 90 else text[:87] + "..."


def render_tree(plan: Plan, files: Mapping[str, str] | None = None) -> str:
    files = files or {}
    children: dict[str, list[str]] = {}
    for key, res in plan.resources.items():
        children.setdefault(res["parent"], []).append(key)
    lines = [f"Plan for stack {plan.stack}: {len(plan.resources)} resources", ""]

    def walk(parent: str, depth: int) -> None:
        for key in sorted(children.get(parent, []), key=lambda k: (plan.resources[k]["type"], k)):
            res = plan.resources[key]
            pad = "    " * depth
            flags = " [protect]" if res["protect"] else ""
            flags += " [retain on delete]" if res.get("retainOnDelete") else ""
            lines.append(f"{pad}+ {res['type']} {res['name']}{flags}")
            summary = _summary(res, files)
            if summary:
                lines.append(f"{pad}      {summary}")
            lines.extend(f"{pad}      alias of: {urn}" for urn in res.get("aliases", []))
            if res["dependsOn"]:
                deps = ", ".join(d.split("::")[0].rsplit(":", 1)[-1] + " " + d.split("::")[1] for d in res["dependsOn"])
                lines.append(f"{pad}      after: {deps}")
            walk(key, depth + 1)

    roots = {res["parent"] for res in plan.resources.values()} - set(plan.resources)
    for root in sorted(roots):
        walk(root, 0)
    lines += ["", "Outputs:"]
    lines += [f"    {name}: {json.dumps(value, sort_keys=True)}" for name, value in plan.outputs.items()]
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    """A path as a reviewer would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def write_plan(plan: Plan, out_dir: Path) -> dict[str, str]:
    """Write the plan's files under ``out_dir``; return a map of what was written (for the tree)."""
    (out_dir / "helm").mkdir(parents=True, exist_ok=True)
    (out_dir / "vault").mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for release, values in helm_values(plan).items():
        path = out_dir / "helm" / f"{release}.values.yaml"
        path.write_text(values_yaml(values))
        files[release] = _shown(path)
    for policy, hcl in vault_policies(plan).items():
        path = out_dir / "vault" / f"{policy}.hcl"
        path.write_text(hcl)
        files["policy:" + policy] = _shown(path)
    (out_dir / "plan.json").write_text(json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n")
    tree = render_tree(plan, files)
    (out_dir / "plan.txt").write_text(tree)
    return files
