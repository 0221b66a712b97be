"""Custom resources checked against the OpenAPI v3 schema of their own CRD, as the API server checks them.

The schemas come from the CRDs a chart ships (``charts.Rendered.crds``). Checked: the kind and version are served,
the scope (a namespace exactly when the CRD is namespaced), the name, and the object against ``openAPIV3Schema``
with unknown fields rejected, as ``kubectl apply --validate=strict`` (field validation ``Strict``) rejects them:
every object schema that lists ``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.

Not checked: the CEL rules (``x-kubernetes-validations``), which need Kubernetes' CEL libraries; ``formats``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema

_DNS_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def strict(schema: Any) -> Any:
    """``schema`` with unknown fields forbidden wherever Kubernetes' strict field validation forbids them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@dataclass(frozen=True)
class CrdVersion:
    group: str
    kind: str
    version: str
    namespaced: bool
    schema: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


class CrdSchemas:
    """The served versions of a set of CRDs, by ``(apiVersion, kind)``."""

    def __init__(self, crds: Iterable[Mapping[str, Any]]) -> None:
        self.versions: dict[tuple[str, str], CrdVersion] = {}
        for crd in crds:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", False):
                    continue
                entry = CrdVersion(
                    group=spec["group"],
                    kind=spec["names"]["kind"],
                    version=version["name"],
                    namespaced=spec["scope"] == "Namespaced",
                    schema=version["schema"]["openAPIV3Schema"],
                )
                self.versions[entry.api_version, entry.kind] = entry
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    def schema(self, api_version: str, kind: str) -> dict[str, Any]:
        """The CRD's own schema (a copy) of ``kind`` at ``api_version``."""
        return copy.deepcopy(self.versions[api_version, kind].schema)

    def _validator(self, key: tuple[str, str]) -> jsonschema.protocols.Validator:
        if key not in self._validators:
            # OpenAPI v3.0 schemas follow JSON Schema draft 4 (boolean exclusiveMinimum and friends).
            self._validators[key] = jsonschema.Draft4Validator(strict(self.versions[key].schema))
        return self._validators[key]

    def errors(self, document: Mapping[str, Any]) -> list[str]:
        """``Kind/name: path: message`` for each way ``document`` would be refused; empty when it is accepted."""
        api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
        metadata = document.get("metadata") or {}
        label = f"{kind}/{metadata.get('name', '')}"
        key = (api_version, kind)
        if key not in self.versions:
            return [f"{label}: no served CRD version for {api_version} {kind}"]
        found = list(self._metadata_errors(label, metadata, self.versions[key].namespaced))
        for error in sorted(self._validator(key).iter_errors(dict(document)), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(part) for part in error.absolute_path)
            found.append(f"{label}: {path}: {error.message}")
        return found

    @staticmethod
    def _metadata_errors(label: str, metadata: Mapping[str, Any], namespaced: bool) -> Iterator[str]:
        name = str(metadata.get("name", ""))
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            yield f"{label}: metadata.name: {name!r} is not a DNS subdomain"
        if namespaced and not metadata.get("namespace"):
            yield f"{label}: metadata.namespace: required for a namespaced kind"
        if not namespaced and "namespace" in metadata:
            yield f"{label}: metadata.namespace: set on a cluster-scoped kind"


def subschema(schema: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The schema of the field at ``path`` (``spec.provider.kubernetes``) of an object schema."""
    node: Any = schema
    for part in path.split("."):
        node = node["properties"][part]
    return dict(node)


def subschema_errors(schema: Mapping[str, Any], value: Any) -> list[str]:
    """``path: message`` for ``value`` against a (sub)schema, unknown fields rejected as in ``CrdSchemas``."""
    validator = jsonschema.Draft4Validator(strict(schema))
    return [
        f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]
