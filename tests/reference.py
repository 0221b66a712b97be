"""The upstream reference data in ``../shared/reference``: chart schemas, chart values, ZITADEL's defaults."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REFERENCE_DIR = Path(
    os.environ.get("BLINKCHAMBER_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference")
)
CHARTS = {"redis": "bitnami-redis", "zitadel": "zitadel-chart"}
#: What the ZITADEL schema's remote ``$ref``s point at, and the offline copy kubernetes-validate ships.
K8S_DEFINITIONS_URL = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.30.0/_definitions.json"
K8S_DEFINITIONS_FILE = (
    Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.30.0-local" / "_definitions.json"
)


def reference_file(*parts: str) -> Path:
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"reference data missing: {path} (set BLINKCHAMBER_REFERENCE to shared/reference)")
    return path


@cache
def chart_values(release: str) -> dict[str, Any]:
    """The chart's own values.yaml."""
    return dict(yaml.safe_load(reference_file(CHARTS[release], "values.yaml").read_text()))


@cache
def zitadel_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load(reference_file("zitadel", "defaults.yaml").read_text()))


@cache
def _k8s_definitions() -> Resource[Any]:
    contents = json.loads(K8S_DEFINITIONS_FILE.read_text())
    # The offline copy names its section $defs where the chart's pointers say definitions; and its own $id would
    # re-base its internal #/$defs references onto an address nobody serves.
    contents.pop("$id", None)
    contents["definitions"] = contents["$defs"]
    return DRAFT202012.create_resource(contents)


def _retrieve(uri: str) -> Resource[Any]:
    if uri == K8S_DEFINITIONS_URL:
        return _k8s_definitions()
    raise LookupError(f"schema reference {uri} is not available offline")


@cache
def chart_validator(release: str) -> jsonschema.protocols.Validator:
    schema = json.loads(reference_file(CHARTS[release], "values.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, registry=Registry(retrieve=_retrieve))  # type: ignore[call-arg]


def schema_errors(release: str, values: Mapping[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in chart_validator(release).iter_errors(values)
    ]


def unknown_key_paths(
    values: Any, reference: Any, free_form: frozenset[str] = frozenset(), path: str = ""
) -> Iterator[str]:
    """Key paths of ``values`` that ``reference`` (a chart's values.yaml) does not have.

    An empty map or list in the reference is a free-form map or a list of Kubernetes objects (the schema checks
    those); ``free_form`` names further paths whose contents belong to someone else.
    """
    if path in free_form:
        return
    if isinstance(values, Mapping):
        if not isinstance(reference, Mapping) or not reference:
            if reference is None or reference == {}:
                return
            yield f"{path} (a map where the chart has {type(reference).__name__})"
            return
        for key, value in values.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in reference:
                if child not in free_form:
                    yield child
                continue
            yield from unknown_key_paths(value, reference[key], free_form, child)
    elif isinstance(values, list) and isinstance(reference, list) and reference:
        item_keys: dict[str, Any] = {}
        for item in reference:
            if isinstance(item, Mapping):
                item_keys.update(item)
        for index, value in enumerate(values):
            yield from unknown_key_paths(value, item_keys or None, free_form, f"{path}[{index}]")


def key_paths(tree: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """Every leaf key path of a nested mapping."""
    for key, value in tree.items():
        child = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping) and value:
            yield from key_paths(value, child)
        else:
            yield child
