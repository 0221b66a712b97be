"""No generated secret appears in plain text: not in Helm values, annotations, config, outputs or the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from stacks import mocked
from stacks.plan import describe, write_plan


def plain_text(value: Any) -> str:
    """Everything in ``value`` that is not wrapped as a Pulumi secret, as text."""
    if rpc.is_rpc_secret(value):
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k} {plain_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(plain_text(v) for v in value)
    return str(value)


def leaks(text: str, recording: mocked.Recording) -> list[str]:
    return [secret for secret in recording.generated_secrets if secret in text]


def test_mocks_generated_the_secrets_under_test(recording: mocked.Recording, stack: str) -> None:
    # redis password and masterkey everywhere; dev adds the bundled Postgres's two passwords.
    assert len(recording.generated_secrets) == (4 if stack == "dev" else 2)


def test_no_secret_in_any_plain_resource_input(recording: mocked.Recording) -> None:
    for resource in recording.resources:
        assert leaks(plain_text(resource.inputs), recording) == [], f"{resource.type} {resource.name}"


def test_no_secret_in_helm_values_annotations_or_config(recording: mocked.Recording) -> None:
    for release in recording.by_type("kubernetes:helm.sh/v3:Release"):
        values = release.inputs["values"]
        assert not rpc.is_rpc_secret(values), "values marked secret would hide the whole document from reviews"
        assert leaks(json.dumps(values), recording) == []


def test_no_secret_in_stack_outputs(recording: mocked.Recording) -> None:
    text = json.dumps({name: out.value for name, out in recording.outputs.items()})
    assert leaks(text, recording) == []


def test_no_secret_in_plan_files(recording: mocked.Recording, tmp_path: Path) -> None:
    write_plan(describe(recording), tmp_path)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert leaks(path.read_text(), recording) == [], path.name


def test_the_leak_check_finds_a_planted_secret(recording: mocked.Recording) -> None:
    planted = {"replica": {"podAnnotations": {"x": recording.generated_secrets[0]}}}
    assert leaks(plain_text(planted), recording) == [recording.generated_secrets[0]]
    wrapped = rpc.wrap_rpc_secret(recording.generated_secrets[0])
    assert leaks(plain_text({"stringData": wrapped}), recording) == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_hold_no_plaintext_credentials(stack: str) -> None:
    text = (Path(__file__).resolve().parent.parent / f"Pulumi.{stack}.yaml").read_text().lower()
    for marker in ("password:", "token:", "masterkey:", "dsn:"):
        assert marker not in text
