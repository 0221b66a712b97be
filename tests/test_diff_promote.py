"""``diff`` between stacks and revisions, and ``promote`` on temporary copies of the stack files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stacks.diff import diff_plans
from stacks.plan import Plan, plan_stack
from stacks.promote import TRAIN, PromotionError, promote
from stacks.versions import version_key
from tests.conftest import PROJECT_DIR

PROD_COMMENT = "# The KV v2 mount"


def cli(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stacks", *args], cwd=cwd, capture_output=True, text=True, check=False)


def bump_dev(project: Path, body: str) -> None:
    with (project / "Pulumi.dev.yaml").open("a") as f:
        f.write(body)


NEXT_ZITADEL = """  blinkchamber-identity:zitadel:
    chart:
      version: 9.35.0
    image:
      tag: v4.14.0
"""


# --- diff ----------------------------------------------------------------------------------------------------------


def test_diff_of_a_stack_with_itself_is_empty() -> None:
    plan = plan_stack("dev")
    result = diff_plans(plan, plan)
    assert not result.changed
    assert result.summary() == "Plan: 0 to add, 0 to change, 0 to delete."


def test_diff_dev_prod_reads_like_a_terraform_plan() -> None:
    result = cli("diff", "dev", "prod")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.startswith("Comparing dev → prod")
    assert "  - vault:index/mount:Mount::kv" in out  # prod uses an existing mount
    assert '~ inputs.values.replica.podAntiAffinityPreset: "soft" → "hard"' in out
    assert "+min-replicas-to-write 1" in out
    assert "~ protect: false → true" in out
    assert out.rstrip().endswith("Plan: 0 to add, 9 to change, 7 to delete, 1 output changed.")


def test_secret_changes_are_flagged_not_shown() -> None:
    old = plan_stack("dev")
    new = Plan.from_json(old.to_json())
    secret = new.resources["vault:kv/secretV2:SecretV2::redis"]
    secret["secrets"] = {"dataJson": "0" * 16}
    result = diff_plans(old, new)
    (change,) = result.changes
    assert change.lines == ["~ inputs.dataJson: [secret] (secret value changed)"]
    assert "mockSecret" not in result.render()


def test_diff_against_a_git_revision(git_project: Path) -> None:
    with (git_project / "Pulumi.dev.yaml").open("a") as f:
        f.write("  blinkchamber-identity:redis:\n    downAfterMilliseconds: 3000\n")
    result = cli("diff", "--base", "HEAD", "dev", cwd=git_project)
    assert result.returncode == 1, result.stderr
    assert "Comparing dev@HEAD → dev (working tree)" in result.stdout
    assert "~ inputs.values.sentinel.downAfterMilliseconds: 5000 → 3000" in result.stdout
    assert "Plan: 0 to add, 1 to change, 0 to delete." in result.stdout
    worktrees = subprocess.run(
        ["git", "-C", str(git_project), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert len(worktrees.strip().splitlines()) == 1  # the temporary worktree is gone


def test_a_stack_new_in_the_change_is_all_additions(git_project: Path) -> None:
    (git_project / "Pulumi.staging.yaml").write_text("config:\n  blinkchamber-identity:environment: dev\n")
    result = cli("diff", "--base", "HEAD", "staging", cwd=git_project)
    assert result.returncode == 1, result.stderr
    assert "Plan: 26 to add, 0 to change, 0 to delete" in result.stdout
    assert "  + kubernetes:helm.sh/v3:Release::redis" in result.stdout


def test_diff_usage_errors() -> None:
    assert cli("diff", "dev").returncode == 2
    assert "exactly one stack" in cli("diff", "--base", "HEAD", "dev", "prod").stderr


# --- promote -------------------------------------------------------------------------------------------------------


def test_promote_copies_only_the_train_and_keeps_comments(project: Path) -> None:
    bump_dev(project, NEXT_ZITADEL)
    before = (project / "Pulumi.prod.yaml").read_text()
    outcome = promote("dev", "prod", project)
    after = (project / "Pulumi.prod.yaml").read_text()
    assert outcome.moves == {"zitadel.chart.version": ("9.34.0", "9.35.0"), "zitadel.image.tag": ("v4.13.0", "v4.14.0")}
    assert outcome.plan_diff is not None and outcome.plan_diff.counts == (0, 1, 0)
    # Comments, order and everything outside the train stay.
    assert after.startswith(before.split("config:")[0])
    assert PROD_COMMENT in after
    assert after.index("externalDomain: id.blinkchamber.com") < after.index("version: 9.35.0")
    assert "tlsSecretName: id-blinkchamber-com-tls" in after


def test_promote_is_idempotent(project: Path) -> None:
    bump_dev(project, NEXT_ZITADEL)
    promote("dev", "prod", project)
    once = (project / "Pulumi.prod.yaml").read_text()
    again = promote("dev", "prod", project)
    assert not again.changed
    assert (project / "Pulumi.prod.yaml").read_text() == once


def test_dry_run_writes_nothing(project: Path) -> None:
    bump_dev(project, NEXT_ZITADEL)
    before = (project / "Pulumi.prod.yaml").read_text()
    result = cli("--project-dir", str(project), "promote", "dev", "prod", "--dry-run")
    assert result.returncode == 1, result.stderr
    assert "~ zitadel.image.tag: v4.13.0 → v4.14.0" in result.stdout
    assert "Dry run: nothing written." in result.stdout
    assert (project / "Pulumi.prod.yaml").read_text() == before


def test_refuses_an_unpinned_train(project: Path) -> None:
    bump_dev(project, "  blinkchamber-identity:redis:\n    images:\n      redis:\n        tag: latest\n")
    with pytest.raises(PromotionError, match=r"not fully pinned: redis\.images\.redis\.tag = 'latest'"):
        promote("dev", "prod", project)


def test_refuses_going_backwards(project: Path) -> None:
    bump_dev(project, "  blinkchamber-identity:redis:\n    chart:\n      version: 23.0.9\n")
    before = (project / "Pulumi.prod.yaml").read_text()
    with pytest.raises(PromotionError, match=r"backwards .*redis\.chart\.version: 23\.1\.1 → 23\.0\.9"):
        promote("dev", "prod", project)
    assert (project / "Pulumi.prod.yaml").read_text() == before
    assert promote("dev", "prod", project, allow_downgrade=True).moves["redis.chart.version"] == ("23.1.1", "23.0.9")


def test_refuses_an_invalid_source(project: Path) -> None:
    bump_dev(project, "  blinkchamber-identity:redis:\n    quorum: 1\n")
    result = cli("--project-dir", str(project), "promote", "dev", "prod")
    assert result.returncode == 2
    assert "refusing to promote from an invalid stack" in result.stderr and "dev: redis.quorum" in result.stderr


def test_version_order() -> None:
    assert version_key("8.2.1-debian-12-r0") < version_key("8.2.1-debian-12-r1") < version_key("8.2.2-debian-12-r0")
    assert version_key("v4.13.0") < version_key("v4.14.0") and version_key("9.34.0") < version_key("10.0.0")


def test_train_names_every_version_of_a_release() -> None:
    assert {p.split(".")[0] for p in TRAIN} == {"redis", "zitadel"}
    assert sum(p.endswith(".version") for p in TRAIN) == 2
