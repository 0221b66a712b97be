"""Reading stack files the way the Pulumi engine hands their config to the program."""

from __future__ import annotations

from stacks.stackfile import SECRET, parse_stack_config
from stacktools import mocked
from stacktools.plan import mask
from tests.conftest import PROJECT_DIR, record

STACK = """
config:
  kubernetes:context: prod-cluster
  blinkchamber-identity:postgresDsn:
    secure: v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
  blinkchamber-identity:zitadel:
    externalDomain: id.example
    database:
      dsnFromConfig:
        secure: v1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB
"""


def test_secure_values_become_secret_stand_ins() -> None:
    config, secret_keys = parse_stack_config(STACK)
    assert config["postgresDsn"] == "[secret]"
    assert config["zitadel"]["database"]["dsnFromConfig"] == "[secret]"
    # Pulumi marks the whole key secret when any value inside it is.
    assert secret_keys == {"postgresDsn", "zitadel"}
    # Provider settings of other namespaces are not this program's config.
    assert "kubernetes:context" not in config and "context" not in config


def test_empty_stack_file() -> None:
    assert parse_stack_config("") == ({}, set())
    assert parse_stack_config("config: {}\n") == ({}, set())


def test_vault_token_reaches_the_provider_as_a_secret() -> None:
    config, secret_keys = parse_stack_config((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    recording = mocked.run_program("prod", {**config, "vaultToken": SECRET}, {*secret_keys, "vaultToken"})
    provider = recording.one("pulumi:providers:vault", "vault")
    assert mask(provider.inputs["token"]) == "[secret]"
    assert provider.inputs["address"] == "https://vault.blinkchamber.internal:8200"
    without = record("prod")
    assert "token" not in without.one("pulumi:providers:vault", "vault").inputs
