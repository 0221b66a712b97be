"""``python -m stacks plan``: the offline plan a reviewer reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from stacktools.plan import plan_stack
from tests.conftest import PROJECT_DIR


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stacks", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )


def test_plan_writes_values_policies_and_a_tree(tmp_path: Path) -> None:
    result = run_cli("plan", "dev", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    # The header counts what the plan lists, and the tree and the JSON plan list the same resources.
    assert result.stdout.startswith(f"Plan for stack dev: {len(plan['resources'])} resources\n")
    assert plan["stack"] == "dev"
    for key in plan["resources"]:
        urn_type, _, name = key.partition("::")
        assert f"+ {urn_type} {name}" in result.stdout, key
    assert "+ kubernetes:helm.sh/v3:Release redis" in result.stdout
    assert "dataJson=[secret]" in result.stdout
    redis = yaml.safe_load((tmp_path / "helm" / "redis.values.yaml").read_text())
    assert redis["sentinel"]["quorum"] == 2
    assert (tmp_path / "vault" / "redis-read.hcl").read_text().startswith('path "secret/data/redis"')


def test_plan_is_the_same_in_every_process(tmp_path: Path) -> None:
    # Separate processes with different string hashing: no set or dict order may leak into the plan a PR shows.
    plans = []
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "stacks", "plan", "prod", "--json", "--out", str(tmp_path / seed)],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        plans.append(result.stdout)
    assert plans[0] == plans[1]
    assert json.loads(plans[0]) == json.loads(json.dumps(plan_stack("prod").to_json()))


def test_plan_json_output(tmp_path: Path) -> None:
    result = run_cli("plan", "prod", "--json", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    masterkey = plan["resources"]["vault:kv/secretV2:SecretV2::zitadel"]
    assert masterkey["protect"] is True and masterkey["inputs"]["dataJson"] == "[secret]"
    # The Helm values file of the ZITADEL release (its nulls), as text a reviewer reads.
    zitadel = plan["resources"]["kubernetes:helm.sh/v3:Release::zitadel"]["inputs"]
    nulls = "zitadel:\n  configmapConfig:\n    FirstInstance:\n      Org:\n        Machine:\n          Pat: null\n"
    assert zitadel["valueYamlFiles"] == [{"text": nulls}]


def test_invalid_stack_fails_with_the_rule(tmp_path: Path) -> None:
    bad = tmp_path / "project"
    bad.mkdir()
    for name in ("__main__.py", "Pulumi.yaml"):
        (bad / name).write_text((PROJECT_DIR / name).read_text())
    (bad / "Pulumi.prod.yaml").write_text("config:\n  blinkchamber-identity:redis:\n    quorum: 1\n")
    result = run_cli("--project-dir", str(bad), "plan", "prod", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "prod: redis.quorum: quorum 1 must be a majority" in result.stderr
    assert "prod: vault.address: required" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_stack() -> None:
    result = run_cli("plan", "staging")
    assert result.returncode == 2 and "no stack file Pulumi.staging.yaml" in result.stderr
