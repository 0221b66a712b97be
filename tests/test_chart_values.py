"""The Helm values the program produces, checked against the real charts in ../shared/reference."""

from __future__ import annotations

from typing import Any

import pytest

from components.redis import redis_values
from components.zitadel import zitadel_values
from stacks import mocked
from stacks.config import StackConfig
from stacks.plan import describe, helm_values
from tests import reference

#: Paths whose contents another document owns; every other key must exist in the chart's values.yaml.
FREE_FORM = {
    "redis": frozenset(),
    "zitadel": frozenset(
        {
            # ZITADEL's own configuration: checked key by key against zitadel/defaults.yaml (test_zitadel_config).
            "zitadel.configmapConfig",
            # Values of the bundled Bitnami PostgreSQL subchart, which values.yaml documents only in part.
            "postgresql.auth.existingSecret",
            "postgresql.image",
        }
    ),
}


def produced_values(recording: mocked.Recording) -> dict[str, Any]:
    return helm_values(describe(recording))


def test_program_sets_values_for_both_charts(recording: mocked.Recording) -> None:
    assert sorted(produced_values(recording)) == ["redis", "zitadel"]


@pytest.mark.parametrize("release", ["redis", "zitadel"])
def test_values_validate_against_chart_schema(recording: mocked.Recording, release: str) -> None:
    values = produced_values(recording)[release]
    assert reference.schema_errors(release, values) == []


@pytest.mark.parametrize("release", ["redis", "zitadel"])
def test_every_key_path_exists_in_chart_values(recording: mocked.Recording, release: str) -> None:
    values = produced_values(recording)[release]
    unknown = list(reference.unknown_key_paths(values, reference.chart_values(release), FREE_FORM[release]))
    assert unknown == []


def test_key_path_check_catches_misspellings(cfg: StackConfig) -> None:
    # The Redis schema alone accepts this (it restricts no keys); the values.yaml walk does not.
    values = redis_values(cfg)
    values["sentinel"]["downAfterMiliseconds"] = 5000
    values["replica"]["podAnotations"] = {}
    assert reference.schema_errors("redis", values) == []
    assert list(reference.unknown_key_paths(values, reference.chart_values("redis"))) == [
        "replica.podAnotations",
        "sentinel.downAfterMiliseconds",
    ]


def test_zitadel_schema_resolves_kubernetes_definitions_offline(cfg: StackConfig) -> None:
    # resources is a $ref into the Kubernetes definitions: a wrong type must be caught through that reference.
    values = zitadel_values(cfg)
    values["resources"] = {"limits": ["512Mi"]}
    assert any(error.startswith("resources.limits") for error in reference.schema_errors("zitadel", values))


def test_redis_schema_catches_wrong_types(cfg: StackConfig) -> None:
    values = redis_values(cfg)
    values["sentinel"]["quorum"] = "two"
    assert any(error.startswith("sentinel.quorum") for error in reference.schema_errors("redis", values))


def test_every_preset_container_has_explicit_resources(cfg: StackConfig) -> None:
    # A chart section with a resourcesPreset falls back to that preset (nano: 192Mi) unless resources is set.
    chart = reference.chart_values("redis")
    values = redis_values(cfg)
    sections = {path.rsplit(".", 1)[0] for path in reference.key_paths(chart) if path.endswith(".resourcesPreset")}
    enabled = {"replica", "sentinel", "metrics"}  # volumePermissions and sysctl stay off
    for section in sorted(sections & enabled):
        resources = values[section]["resources"]
        assert resources["requests"]["memory"] and resources["limits"]["memory"], section
        assert "resourcesPreset" not in values[section]
    assert values["kubectl"]["resources"]["limits"]["memory"]
    for container in values["replica"]["initContainers"]:
        assert container["resources"]["limits"]["memory"], container["name"]
