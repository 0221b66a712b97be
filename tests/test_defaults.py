"""Each default has one home: the environment tables (``stacks/defaults.py``) or the model's field, never both.

A field default the tables always override never takes effect, yet reads like the stack's value (Sentinel's
60000/180000 did); a knob set by the tables for one environment and by its field default for the other has its
values in two files. So: a key the tables set has no field default (``None``, "unset", excepted).
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from stacks.config import Environment, StackConfig
from stacks.defaults import defaults_for
from stacks.loader import load


def _model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``Model``, ``Model | None``), or None for anything else (lists included)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        found = [m for m in map(_model, get_args(annotation)) if m is not None]
        return found[0] if found else None
    return None


def doubly_defaulted(model: type[BaseModel], table: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """Keys ``table`` sets whose field in ``model`` has a default of its own (other than None), with that default."""
    fields = {(field.alias or name): field for name, field in model.model_fields.items()}
    for key, value in table.items():
        field = fields[key]
        where = f"{path}.{key}" if path else key
        default = field.get_default(call_default_factory=True)
        if default is not PydanticUndefined and default is not None:
            yield f"{where} (field default {default!r})"
        inner = _model(field.annotation)
        if inner is not None and isinstance(value, Mapping):
            yield from doubly_defaulted(inner, value, where)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_no_key_of_the_environment_tables_has_a_field_default(environment: Environment) -> None:
    assert list(doubly_defaulted(StackConfig, defaults_for(environment))) == []


def test_a_field_default_under_a_table_key_is_found() -> None:
    # What the check reports for defaults the tables shadow: a plain field, a nested one, one inside a value type.
    table = {
        "kubernetes": {"clusterDomain": "cluster.local"},
        "redis": {"nodes": 3, "persistence": {"enabled": True}},
        "zitadel": {"namespace": "zitadel", "image": {"tag": "v1"}},
        "edge": {"rateLimit": {"failClosed": True}},
    }
    assert list(doubly_defaulted(StackConfig, table)) == [
        "kubernetes.clusterDomain (field default 'cluster.local')",
        "redis.nodes (field default 3)",
        "redis.persistence.enabled (field default True)",
        "zitadel.namespace (field default 'zitadel')",
        "edge.rateLimit.failClosed (field default False)",
    ]
    # None means "unset": a table may name a value there for one environment (prod's DSN secret).
    assert list(doubly_defaulted(StackConfig, {"zitadel": {"database": {"dsnVaultSecret": "x"}}})) == []


@pytest.mark.parametrize(
    ("environment", "key", "expected"),
    [
        # Values the tables own, per environment (README, the configuration table).
        ("dev", ("redis", "down_after_milliseconds"), 5000),
        ("prod", ("redis", "down_after_milliseconds"), 5000),
        ("dev", ("redis", "failover_timeout"), 60000),
        ("prod", ("redis", "failover_timeout"), 60000),
        ("dev", ("redis", "protect"), False),
        ("prod", ("redis", "protect"), True),
        ("dev", ("kubernetes", "protect_namespaces"), False),
        ("prod", ("kubernetes", "protect_namespaces"), True),
        ("dev", ("zitadel", "cache", "session_cache_connector"), "redis"),
        ("prod", ("zitadel", "cache", "session_cache_connector"), "postgres"),
        ("dev", ("edge", "proxy_replicas"), 1),
        ("prod", ("edge", "proxy_replicas"), 2),
        # Values the fields own, the same everywhere.
        ("dev", ("redis", "nodes"), 3),
        ("prod", ("redis", "nodes"), 3),
        ("prod", ("redis", "min_replicas_max_lag"), 10),
        ("prod", ("redis", "persistence", "appendfsync"), "everysec"),
        ("dev", ("events", "relay", "replicas"), 2),
        ("prod", ("kubernetes", "cluster_domain"), "cluster.local"),
    ],
)
def test_a_stack_without_a_stack_file_gets_each_default(
    environment: str, key: tuple[str, ...], expected: object
) -> None:
    # A stack of another name: nothing but its environment.
    raw: dict[str, Any] = {"environment": environment}
    if environment == "prod":
        raw |= {
            "kubernetes": {"context": "c", "apiServerCidrs": ["10.0.0.0/8"]},
            "vault": {"address": "https://vault.example:8200"},
            "zitadel": {"externalDomain": "id.example"},
            "edge": {"listener": {"tlsSecretName": "id-tls"}},
            "events": {"source": {"instance": "id.example"}},
        }
    node: Any = load("other", raw)
    for part in key:
        node = getattr(node, part)
    assert node == expected
