"""The Helm values the program produces, checked against the pinned charts' own values.yaml and schema.

What the values do once rendered is in ``test_render``; this module keeps what the render cannot say: a key the
chart does not know is silently ignored by Helm, so every key must exist in the chart's values.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from components.redis import redis_values
from components.wiring import redis_args, zitadel_args
from components.zitadel import zitadel_values
from stacks.config import StackConfig
from stacktools import mocked
from stacktools.plan import describe, helm_values
from testbed.charts import unknown_key_paths
from tests.rendering import chart_archive

#: Paths whose contents another document owns; every other key must exist in the chart's default values (its
#: values.yaml, with the bundled PostgreSQL subchart's under ``postgresql``).
FREE_FORM = {
    "redis": frozenset(),
    # ZITADEL's own configuration: checked key by key against its defaults.yaml (test_zitadel_config).
    "zitadel": frozenset({"zitadel.configmapConfig"}),
    # Envoy Gateway's own configuration file: checked against its API types and CRD schemas (test_edge).
    "eg": frozenset({"config.envoyGateway"}),
}

#: Kubernetes objects the charts copy into the pods as they are (Bitnami drops only its ``enabled`` switch):
#: values.yaml shows a few of their fields, the Kubernetes schema knows them all, and test_render checks the
#: rendered pods against it strictly, which catches a misspelled field there.
PASSED_THROUGH = frozenset({"podSecurityContext", "containerSecurityContext", "securityContext"})


def passed_through(values: Mapping[str, Any], path: str = "") -> Iterator[str]:
    for key, value in values.items():
        child = f"{path}.{key}" if path else str(key)
        if key in PASSED_THROUGH:
            yield child
        elif isinstance(value, Mapping):
            yield from passed_through(value, child)


def produced_values(recording: mocked.Recording) -> dict[str, Any]:
    return helm_values(describe(recording))


def test_program_sets_values_for_both_charts(recording: mocked.Recording) -> None:
    assert sorted(produced_values(recording)) == ["eg", "redis", "zitadel"]


@pytest.mark.parametrize("release", ["redis", "zitadel", "eg"])
def test_every_key_path_exists_in_chart_values(recording: mocked.Recording, cfg: StackConfig, release: str) -> None:
    values = produced_values(recording)[release]
    chart = chart_archive({"redis": cfg.redis.chart, "zitadel": cfg.zitadel.chart, "eg": cfg.edge.chart}[release])
    free_form = FREE_FORM[release] | set(passed_through(values))
    assert list(unknown_key_paths(values, chart.defaults, free_form)) == []


def test_key_path_check_catches_misspellings(cfg: StackConfig) -> None:
    # The Redis schema alone accepts this (it restricts no keys); the values.yaml walk does not.
    chart = chart_archive(cfg.redis.chart)
    values = redis_values(redis_args(cfg))
    values["sentinel"]["downAfterMiliseconds"] = 5000
    values["replica"]["podAnotations"] = {}
    assert chart.schema_errors(values) == []
    assert list(unknown_key_paths(values, chart.defaults, frozenset(passed_through(values)))) == [
        "replica.podAnotations",
        "sentinel.downAfterMiliseconds",
    ]


def test_zitadel_schema_resolves_kubernetes_definitions_offline(cfg: StackConfig) -> None:
    # resources is a $ref into the Kubernetes definitions: a wrong type must be caught through that reference.
    values = zitadel_values(zitadel_args(cfg))
    values["resources"] = {"limits": ["512Mi"]}
    errors = chart_archive(cfg.zitadel.chart).schema_errors(values)
    assert any(error.startswith("resources.limits") for error in errors)


def test_redis_schema_catches_wrong_types(cfg: StackConfig) -> None:
    values = redis_values(redis_args(cfg))
    values["sentinel"]["quorum"] = "two"
    assert any(error.startswith("sentinel.quorum") for error in chart_archive(cfg.redis.chart).schema_errors(values))
