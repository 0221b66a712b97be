"""The real charts rendered for what the program declares, and the pinned upstream artifacts, for the tests.

``rendered(stack, release)`` renders the pinned chart archive with Helm's engine, with exactly the values, release
name, namespace and chart version of the Helm release the program declares under mocks. An artifact that cannot be
had fails the test with one line (where it comes from, ``BLINKCHAMBER_ARTIFACTS``), not a stack trace.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, TypeVar

import kubernetes_validate
import pytest
import yaml

from stacks import names
from stacks.config import Chart
from stacktools.plan import mask
from testbed import artifacts, charts
from tests.conftest import PROJECT_DIR, record

T = TypeVar("T")

RELEASES: Final = (names.REDIS_RELEASE, names.ZITADEL_RELEASE)
#: Kinds whose ``spec.template`` is a pod template (CronJob nests it in ``jobTemplate``, a bare Pod is its own).
_TEMPLATED_KINDS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def _memo(function: Callable[[str, str], T]) -> Callable[[str, str], T]:
    """Cache per (stack, release), except while mutmut maps which tests reach which function (each must run)."""
    results: dict[tuple[str, str], T] = {}

    def memoized(stack: str, release: str) -> T:
        if os.environ.get("MUTANT_UNDER_TEST") == "stats":
            return function(stack, release)
        if (stack, release) not in results:
            results[stack, release] = function(stack, release)
        return results[stack, release]

    return memoized


def available(fetch: Callable[[], T]) -> T:
    """``fetch()``, or the test fails with the artifact's one-line message."""
    try:
        return fetch()
    except artifacts.ArtifactUnavailableError as error:
        message = str(error)
    # Outside the except block: pytest would print the original exception as the failure's context.
    pytest.fail(message, pytrace=False)


@dataclass(frozen=True)
class ReleaseInputs:
    """What the program passes to Helm for one release."""

    chart: artifacts.ChartRef
    name: str
    namespace: str
    values: dict[str, Any]
    #: The ``valueYamlFiles``, parsed: under ``values`` (the provider merges ``values`` over them), with their nulls.
    value_files: tuple[dict[str, Any], ...] = ()
    #: The ``postrender`` command (a path in the project), or "".
    postrender: str = ""

    def helm_values(self) -> dict[str, Any]:
        """The values Helm receives: each file's, then ``values`` over them (the provider's ``mergeMaps``)."""
        merged: dict[str, Any] = {}
        for layer in (*self.value_files, self.values):
            merged = _merge(merged, layer)
        return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, maps merged key by key, a null kept (Helm then drops the chart's default)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@_memo
def release_inputs(stack: str, release: str) -> ReleaseInputs:
    """The inputs of the Helm release whose Pulumi resource name is ``release``, in ``stack``'s recording."""
    resource = record(stack).one(names.HELM_RELEASE_TYPE, release)
    # mask: numbers come back from the RPC layer as doubles; a secret would show up as "[secret]" in the render.
    inputs = mask(resource.inputs)
    files = inputs.get("valueYamlFiles") or []
    if files and not inputs.get("allowNullValues"):
        raise AssertionError(f"{release}: values files without allowNullValues lose their nulls in the provider")
    return ReleaseInputs(
        chart=artifacts.ChartRef(
            chart=inputs["chart"],
            version=inputs["version"],
            repository=inputs.get("repositoryOpts", {}).get("repo", ""),
        ),
        name=inputs["name"],
        namespace=inputs["namespace"],
        values=inputs.get("values", {}),
        value_files=tuple(dict(yaml.safe_load(f["text"])) for f in files),
        postrender=inputs.get("postrender", ""),
    )


def chart_archive(chart: Chart | artifacts.ChartRef) -> charts.ChartArchive:
    """A pinned chart archive (``cfg.redis.chart``, ``cfg.zitadel.chart``), fetched or cached, loaded."""
    ref = chart if isinstance(chart, artifacts.ChartRef) else artifacts.ChartRef.of(chart)
    return charts.load(available(lambda: artifacts.chart_archive(ref)))


#: Marks a hook: Helm 3 (the Kubernetes provider's) post-renders a release's manifests, not its hooks.
HOOK_ANNOTATION: Final = "helm.sh/hook"


def is_hook(manifest: dict[str, Any]) -> bool:
    return HOOK_ANNOTATION in ((manifest.get("metadata") or {}).get("annotations") or {})


def post_rendered(manifests: list[dict[str, Any]], command: str) -> list[dict[str, Any]]:
    """``manifests`` after the release's post-renderer, run as the provider runs it: the project's executable, the
    release's manifests (not its hooks) on stdin, a YAML stream on stdout; hooks stay as rendered, in place."""
    applied = [m for m in manifests if not is_hook(m)]
    result = subprocess.run(
        [str(PROJECT_DIR / command)],
        input=yaml.safe_dump_all(applied, explicit_start=True),
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}): {result.stderr.strip()}")
    rendered = iter(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return [m if is_hook(m) else next(rendered) for m in manifests]


@_memo
def _render(stack: str, release: str) -> charts.Rendered:
    inputs = release_inputs(stack, release)
    rendered = chart_archive(inputs.chart).render(inputs.helm_values(), name=inputs.name, namespace=inputs.namespace)
    if not inputs.postrender:
        return rendered
    return charts.Rendered(manifests=post_rendered(rendered.manifests, inputs.postrender), crds=rendered.crds)


def rendered(stack: str, release: str) -> list[dict[str, Any]]:
    """Every manifest the real chart renders for ``release`` in ``stack`` (hooks included; CRDs not).

    A fresh copy on each call: a test may change what it gets without touching the next test's render.
    """
    return copy.deepcopy(_render(stack, release).manifests)


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one manifest of ``kind`` named ``name``."""
    found = [m for m in manifests if m.get("kind") == kind and m.get("metadata", {}).get("name") == name]
    if len(found) != 1:
        present = sorted(f"{m.get('kind')}/{m.get('metadata', {}).get('name')}" for m in manifests)
        raise LookupError(f"{len(found)} manifests {kind}/{name}; rendered: {present}")
    return found[0]


def pod_templates(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``("Kind/name", {metadata, spec})`` for every pod the manifests would run."""
    found: list[tuple[str, dict[str, Any]]] = []
    for manifest in manifests:
        kind = manifest.get("kind", "")
        label = f"{kind}/{manifest.get('metadata', {}).get('name', '')}"
        if kind in _TEMPLATED_KINDS:
            found.append((label, manifest["spec"]["template"]))
        elif kind == "CronJob":
            found.append((label, manifest["spec"]["jobTemplate"]["spec"]["template"]))
        elif kind == "Pod":
            found.append((label, {"metadata": manifest.get("metadata", {}), "spec": manifest["spec"]}))
    return found


def containers(pod_spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``("init:<name>", c)`` for each init container, then ``("<name>", c)`` for each container, in order."""
    return [(f"init:{c['name']}", c) for c in pod_spec.get("initContainers") or []] + [
        (c["name"], c) for c in pod_spec.get("containers") or []
    ]


@cache
def zitadel_defaults(ref: str) -> dict[str, Any]:
    """ZITADEL's ``cmd/defaults.yaml`` at ``ref`` (``artifacts.zitadel_defaults_ref(cfg.zitadel.image)``)."""
    return dict(yaml.safe_load(available(lambda: artifacts.zitadel_defaults(ref)).read_text()))


def labelled(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


#: API groups of custom resources: ZITADEL's Gateway API routes (test_edge checks them against their CRDs) and the
#: Redis chart's ServiceMonitor (test_observability does).
CUSTOM_RESOURCE_GROUPS = ("gateway.networking.k8s.io/", "gateway.envoyproxy.io/", "monitoring.coreos.com/")


def kubernetes_errors(manifests: list[dict[str, Any]]) -> list[str]:
    """Each manifest against Kubernetes 1.30's schema, strictly (unknown fields too); custom resources skipped."""
    errors = []
    for manifest in manifests:
        if manifest["apiVersion"].startswith(CUSTOM_RESOURCE_GROUPS):
            continue
        try:
            kubernetes_validate.validate(manifest, "1.30.0", strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.absolute_path)
            errors.append(f"{labelled(manifest)}: {path}: {error.message}")
    return errors
