"""The Prometheus Operator's CRD schemas (``monitoring.coreos.com/v1``), for checking the objects the stack declares.

The schemas come from a pinned registry package, since neither the chart mirror nor this repository holds the
operator's CRDs: ``cloudcoil-models-prometheus-operator`` 0.80.1.0 (requirements.txt), whose models cloudcoil
generates from the CRDs of prometheus-operator v0.80.1 (its version is the upstream one plus a build number). Each
model's JSON schema (properties, required fields, enums, patterns, as the CRD's ``openAPIV3Schema`` states them) is
turned back into a CRD document and checked as ``testbed/crds.py`` checks any custom resource: served kind and
version, scope, unknown fields rejected. Optional fields come out of pydantic as "X or null"; Kubernetes has no null
field, so the check takes X alone (which also keeps the error's path exact).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from testbed import crds

GROUP: Final = "monitoring.coreos.com"
VERSION: Final = "v1"
#: The package's models module and the kinds the stack declares.
_MODELS: Final = "cloudcoil.models.prometheus_operator.v1"
KINDS: Final = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
_NULL: Final = {"type": "null"}


def _without_null(schema: Any) -> Any:
    """``schema`` with every ``anyOf: [X, null]`` replaced by X (keeping the field's description)."""
    if isinstance(schema, list):
        return [_without_null(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: _without_null(value) for key, value in schema.items()}
    options = result.get("anyOf")
    if isinstance(options, list) and _NULL in options:
        rest = [option for option in options if option != _NULL]
        del result["anyOf"]
        result.pop("default", None)
        if len(rest) == 1:
            result.update(rest[0])
        else:
            result["anyOf"] = rest
    return result


def crd_document(kind: str) -> dict[str, Any]:
    """A CRD of ``kind`` as the package's model describes it (namespaced, ``v1`` served)."""
    model = getattr(importlib.import_module(_MODELS), kind)
    schema = _without_null(model.model_json_schema(by_alias=True))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": GROUP,
            "names": {"kind": kind},
            "scope": "Namespaced",
            "versions": [{"name": VERSION, "served": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


@cache
def schemas() -> crds.CrdSchemas:
    """The ServiceMonitor, PodMonitor and PrometheusRule schemas."""
    return crds.CrdSchemas([crd_document(kind) for kind in KINDS])
