"""A chart archive rendered by Helm's own engine (helm-python, Helm v4's Go library), and its values checked.

Helm validates values against each chart's ``values.schema.json`` before it renders, and ZITADEL's schema points at
Kubernetes definitions on the network. So the render runs on the chart with its schemas removed, and the values are
validated separately here with jsonschema, the remote definitions resolved offline from ``kubernetes-validate``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Final

import helm_python
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_FILE: Final = "values.schema.json"
#: libyaml's loader when PyYAML has it: CRDs run to megabytes.
_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: What the ZITADEL schema's remote ``$ref``s point at, and the offline copy kubernetes-validate ships.
K8S_DEFINITIONS_URL: Final = (
    "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.30.0/_definitions.json"
)
K8S_DEFINITIONS_FILE: Final = (
    Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.30.0-local" / "_definitions.json"
)


@dataclass(frozen=True)
class Rendered:
    #: Every object the templates render (hooks included), in template order; empty documents dropped.
    manifests: list[dict[str, Any]]
    #: The objects under ``crds/`` of the chart and its subcharts, which Helm installs before the rest.
    crds: list[dict[str, Any]]


def _without_schemas(archive: bytes) -> bytes:
    """The chart archive with every ``values.schema.json`` removed, in packaged subcharts too."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as source,
        tarfile.open(fileobj=out, mode="w:gz") as target,
    ):
        for member in source:
            path = PurePosixPath(member.name)
            if path.name == SCHEMA_FILE:
                continue
            data = source.extractfile(member) if member.isfile() else None
            if data is None:
                target.addfile(member)
                continue
            content = data.read()
            if path.suffix == ".tgz" and path.parent.name == "charts":
                content = _without_schemas(content)
                member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    return out.getvalue()


def _top_chart_file(archive: bytes, name: str) -> bytes | None:
    """A file at the top of the chart (``<chart>/<name>``), not a subchart's."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) == 2 and parts[1] == name and member.isfile():
                data = tar.extractfile(member)
                return data.read() if data else None
    return None


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _composed_values(archive: bytes) -> dict[str, Any]:
    """values.yaml of the top chart over each subchart's composed values (directories or packaged ``.tgz``)."""
    files: dict[PurePosixPath, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[PurePosixPath(member.name)] = data.read()

    def compose(root: PurePosixPath) -> dict[str, Any]:
        values: dict[str, Any] = dict(yaml.safe_load(files.get(root / "values.yaml", b"")) or {})
        subcharts: dict[str, dict[str, Any]] = {}
        for path, content in files.items():
            if path.parent == root / "charts" and path.suffix == ".tgz":
                name = str(yaml.safe_load(_top_chart_file(content, "Chart.yaml") or b"{}")["name"])
                subcharts[name] = _composed_values(content)
            elif path.name == "Chart.yaml" and path.parent.parent == root / "charts":
                subcharts[path.parent.name] = compose(path.parent)
        for name, sub in subcharts.items():
            values[name] = _deep_merge(sub, values.get(name) or {})
        return values

    (top,) = {path.parts[0] for path in files}
    return compose(PurePosixPath(top))


class ChartArchive:
    """A chart archive: its own ``values.yaml`` and ``values.schema.json``, and a renderer without schemas.

    ``values`` is the top chart's values.yaml as written (comments aside); ``defaults`` adds the subcharts'.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        archive = path.read_bytes()
        self._archive = archive
        self._chart = helm_python.Chart.load_archive(_without_schemas(archive))
        values = _top_chart_file(archive, "values.yaml")
        self.values: dict[str, Any] = dict(yaml.safe_load(values) or {}) if values else {}
        schema = _top_chart_file(archive, SCHEMA_FILE)
        self.schema: dict[str, Any] | None = json.loads(schema) if schema else None

    @property
    def defaults(self) -> dict[str, Any]:
        """The default values Helm composes: values.yaml with each subchart's under its name (``postgresql``).

        Read from the files rather than from Helm, whose coalescing drops keys that default to null.
        """
        return _composed_values(self._archive)

    @property
    def name(self) -> str:
        return self._chart.name

    @property
    def version(self) -> str:
        return self._chart.version

    def render(self, values: Mapping[str, Any], *, name: str, namespace: str) -> Rendered:
        """What ``helm install`` would apply for ``values`` as release ``name`` in ``namespace``."""
        # A fresh chart per render: Helm's dependency processing prunes the subcharts a render disables from the chart
        # it renders, so one render without the bundled Postgres would drop it from every later render.
        chart = helm_python.Chart.load_archive(_without_schemas(self._archive))
        templates = chart.render(dict(values), name=name, namespace=namespace, is_install=True)
        manifests = [
            doc
            for path, text in templates.items()
            if PurePosixPath(path).suffix in {".yaml", ".yml"}  # NOTES.txt is printed, not applied
            for doc in yaml.load_all(text, Loader=_LOADER)
            if doc
        ]
        crds = [doc for crd in self._chart.crds for doc in yaml.load_all(crd["data"], Loader=_LOADER) if doc]
        return Rendered(manifests=manifests, crds=crds)

    def schema_errors(self, values: Mapping[str, Any]) -> list[str]:
        """``path: message`` for every way ``values`` break the chart's own ``values.schema.json``."""
        if self.schema is None:
            return []
        return [
            f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in _validator(json.dumps(self.schema, sort_keys=True)).iter_errors(values)
        ]


@cache
def load(path: Path) -> ChartArchive:
    return ChartArchive(path)


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
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, registry=Registry(retrieve=_retrieve))  # type: ignore[call-arg]


# --- values trees --------------------------------------------------------------------------------------------------


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
