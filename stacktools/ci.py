"""What the GitHub workflows run: every step's logic is here, tested; the workflows only call it.

python -m stacktools.ci report STACK --base REV --out FILE     plan diff of STACK against REV, as Markdown
python -m stacktools.ci comment --repo OWNER/NAME --pr N FILE… post the reports as one sticky PR comment
python -m stacktools.ci promote SOURCE TARGET --body-out FILE  run the promotion, write the PR body
python -m stacktools.ci open-promotion --repo OWNER/NAME ...   push the promoted stack file, open or update its PR
python -m stacktools.ci vault-login STACK [--preview]          GitHub OIDC → the stack's Vault CI role ($GITHUB_ENV)
python -m stacktools.ci kubeconfig STACK --out FILE            the in-cluster runner's kubeconfig ($GITHUB_ENV)
python -m stacktools.ci release-plan IMAGE --tag TAG            how the release workflow builds IMAGE (step outputs)
python -m stacktools.ci release-push IMAGE --tag TAG --archive F push the scanned OCI archive, output its digest
python -m stacktools.ci release-sign --needs JSON --sbom-dir D  keyless signatures and SBOM attestations (cosign)
python -m stacktools.ci record-release RELEASE --tag T --digests JSON  the release into dev's train (Pulumi.dev.yaml)
python -m stacktools.ci advisories                             fail on a prod pin's Critical advisory without exception
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stacks import advisories, images
from stacks.config import StackConfig
from stacks.loader import StackConfigError, deploy_refusals, load
from stacks.stackfile import path_of, read_stack_config, stacks_in
from stacktools import ci_login, release
from stacktools.diff import SECRET_CHANGE_NOTE, PlanDiff, RevisionError, diff_plans, plan_at_revision
from stacktools.github import (
    COMMENT_MARKER,
    GitHubError,
    PullRequestApi,
    PullRequestChange,
    RestGitHub,
    open_pull_request,
    upsert_comment,
)
from stacktools.mocked import PROJECT_DIR
from stacktools.plan import plan_stack
from stacktools.promote import Promotion, PromotionError, promote

#: GitHub refuses comments above 65536 characters.
COMMENT_LIMIT = 60000
#: The GitHub App installation token the promotion workflow mints (actions/create-github-app-token).
PROMOTION_TOKEN_VARIABLE = "PROMOTION_TOKEN"


def report_markdown(stack: str, result: PlanDiff, blockers: Sequence[str] = ()) -> str:
    secret_changed = any(SECRET_CHANGE_NOTE in line for c in result.changes for line in c.lines)
    flags = " · ⚠️ secret values change" if secret_changed else ""
    flags += " · ⚠️ replaces resources" if result.replacements else ""
    flags += " · ⛔ `pulumi up` refuses" if blockers else ""
    status = result.summary() if result.changed else "No changes."
    refused = "".join(f"- {blocker}\n" for blocker in blockers) + ("\n" if blockers else "")
    return (
        f"### `{stack}`: {status}{flags}\n\n{refused}"
        f"<details><summary>Offline plan diff {result.old} → {result.new}</summary>\n\n"
        f"```diff\n{result.render()}```\n\n</details>\n"
    )


def deploy_blockers(stack: str, project_dir: Path = PROJECT_DIR) -> list[str]:
    """What ``pulumi up`` of ``stack`` would refuse that its plan and preview accept (``stacks.rules.DEPLOY_RULES``)."""
    return deploy_refusals(load(stack, *read_stack_config(path_of(project_dir, stack))))


def stack_report(stack: str, base: str, project_dir: Path = PROJECT_DIR) -> tuple[str, PlanDiff]:
    old = plan_at_revision(stack, base, project_dir)
    result = diff_plans(old, plan_stack(stack, project_dir), f"{stack}@{base}", f"{stack} (this pull request)")
    return report_markdown(stack, result, deploy_blockers(stack, project_dir)), result


def comment_body(reports: Sequence[str], commit: str = "") -> str:
    at = f" at `{commit[:12]}`" if commit else ""
    body = "\n".join(
        [
            COMMENT_MARKER,
            f"## Offline plan{at}",
            "",
            "What each stack would declare, compared with the base branch (no cluster, no Vault; secrets masked).",
            "",
            *reports,
        ]
    )
    if len(body) > COMMENT_LIMIT:
        body = body[:COMMENT_LIMIT] + "\n\n… truncated: the full diffs are in the workflow's artifacts.\n"
    return body


def promotion_body(outcome: Promotion) -> str:
    return "\n".join(
        [
            f"Promotes the release train tested on `{outcome.source}` to `{outcome.target}`.",
            "",
            "| key | from | to |",
            "|---|---|---|",
            *[
                f"| `{path}` | `{old or '(none)'}` | `{new or '(none)'}` |"
                for path, (old, new) in outcome.moves.items()
            ],
            "",
            "```diff",
            outcome.plan_diff.render().rstrip("\n") if outcome.plan_diff else "",
            "```",
            "",
            *(
                [f"**`{outcome.target}` cannot be deployed yet** (`pulumi up` refuses):", ""]
                + [f"- {blocker}" for blocker in outcome.blockers]
                + [""]
                if outcome.blockers
                else []
            ),
            f"Merging deploys `{outcome.target}` after the protected environment's reviewers approve.",
        ]
    )


def stack_config(stack: str, project_dir: Path) -> StackConfig:
    return load(stack, *read_stack_config(path_of(project_dir, stack)))


def _github_output(name: str, value: str) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a") as f:
            if "\n" in value:
                # GitHub's multi-line form; the delimiter cannot occur in a value this program writes.
                f.write(f"{name}<<BLINKCHAMBER_EOF\n{value}\nBLINKCHAMBER_EOF\n")
            else:
                f.write(f"{name}={value}\n")


def _github_env() -> Path:
    target = os.environ.get("GITHUB_ENV")
    if not target:
        raise ci_login.LoginError("GITHUB_ENV is not set: this command hands credentials to a job's later steps")
    return Path(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stacktools.ci", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project-dir", default=str(PROJECT_DIR))
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report")
    report.add_argument("stack")
    report.add_argument("--base", required=True)
    report.add_argument("--out", required=True)
    comment = commands.add_parser("comment")
    comment.add_argument("--repo", required=True)
    comment.add_argument("--pr", type=int, required=True)
    comment.add_argument("--commit", default=os.environ.get("GITHUB_SHA", ""))
    comment.add_argument("reports", nargs="+")
    prom = commands.add_parser("promote")
    prom.add_argument("source")
    prom.add_argument("target")
    prom.add_argument("--body-out", required=True)
    prom.add_argument("--allow-downgrade", action="store_true")
    opener = commands.add_parser("open-promotion", help=f"needs {PROMOTION_TOKEN_VARIABLE}: a GitHub App's token")
    opener.add_argument("--repo", required=True)
    opener.add_argument("--base", required=True)
    opener.add_argument("--branch", required=True)
    opener.add_argument("--title", required=True)
    opener.add_argument("--body", required=True, help="file holding the pull request's body")
    opener.add_argument("files", nargs="+", help="files of the working tree to propose, relative to --project-dir")
    login = commands.add_parser("vault-login", help="needs id-token: write and GITHUB_ENV")
    login.add_argument("stack")
    login.add_argument("--address", help="Vault address (default: the stack's vault.address)")
    login.add_argument("--preview", action="store_true", help="the stack's read-only preview role (vault.ci.preview)")
    login.add_argument(
        "--allow-insecure", action="store_true", help="send the OIDC token to a plain-http Vault that is not loopback"
    )
    kubeconfig = commands.add_parser("kubeconfig", help="on a self-hosted runner in the stack's cluster")
    kubeconfig.add_argument("stack")
    kubeconfig.add_argument("--out", required=True)
    kubeconfig.add_argument("--service-account-dir", default=str(ci_login.SERVICE_ACCOUNT_DIR))
    plan = commands.add_parser("release-plan", help="the build of one release (the release workflow's step outputs)")
    plan.add_argument("image")
    plan.add_argument("--tag", required=True)
    push = commands.add_parser("release-push", help="push the scanned OCI archive unchanged (skopeo); output digest")
    push.add_argument("image")
    push.add_argument("--tag", required=True)
    push.add_argument("--archive", required=True)
    sign = commands.add_parser("release-sign", help="needs id-token: write (keyless cosign)")
    sign.add_argument("--needs", required=True, help="the build jobs' results and outputs: toJSON(needs)")
    sign.add_argument("--sbom-dir", required=True, help="holds sbom-<image>.spdx.json of each build")
    record = commands.add_parser("record-release", help="write a release's tag and digests into dev's train")
    record.add_argument("release")
    record.add_argument("--tag", required=True)
    record.add_argument("--digests", required=True, help='{"<image>": "sha256:…"} (release-sign\'s output)')
    record.add_argument("--body-out", required=True)
    commands.add_parser("advisories", help="every prod stack's pins against stacks/advisories.py")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (
        PromotionError,
        RevisionError,
        StackConfigError,
        FileNotFoundError,
        GitHubError,
        ci_login.LoginError,
        release.ReleaseError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    project_dir = Path(args.project_dir)
    if args.command == "report":
        markdown, result = stack_report(args.stack, args.base, project_dir)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown)
        print(result.render(), end="")
        _github_output("changed", str(result.changed).lower())
        return 0
    if args.command == "comment":
        token = os.environ.get("GITHUB_TOKEN")
        if not token:
            print("error: GITHUB_TOKEN is not set", file=sys.stderr)
            return 2
        body = comment_body([Path(p).read_text() for p in sorted(args.reports)], args.commit)
        api = RestGitHub(token, os.environ.get("GITHUB_API_URL", "https://api.github.com"))
        print(upsert_comment(api, args.repo, args.pr, body))
        return 0
    if args.command == "open-promotion":
        return _open_promotion(args, project_dir)
    if args.command == "vault-login":
        cfg = stack_config(args.stack, project_dir)
        github_env = _github_env()
        address = args.address or cfg.vault.address
        # Checked before the runner is asked for a token: nothing to leak.
        ci_login.require_https(address, allow_insecure=args.allow_insecure)
        jwt = ci_login.github_oidc_token(cfg.vault.ci.audience, os.environ)
        done = ci_login.vault_login(
            cfg,
            jwt,
            address=address,
            cafile=os.environ.get("VAULT_CACERT"),
            preview=args.preview,
            allow_insecure=args.allow_insecure,
        )
        # The mask first: from here on the runner hides the token wherever a later step would print it.
        print(ci_login.export_login(done, github_env))
        print(f"Logged in to {done.address}: policies {', '.join(done.policies)}, valid {done.ttl_seconds}s")
        return 0
    if args.command in _RELEASE_COMMANDS:
        return _RELEASE_COMMANDS[args.command](args, project_dir)
    if args.command == "kubeconfig":
        cfg = stack_config(args.stack, project_dir)
        config = ci_login.in_cluster_kubeconfig(
            cfg, Path(args.service_account_dir), ci_login.api_server_url(os.environ)
        )
        target = os.environ.get("GITHUB_ENV")
        ci_login.write_kubeconfig(config, Path(args.out), Path(target) if target else None)
        print(f"Wrote {args.out}: context {config['current-context']} → {config['clusters'][0]['cluster']['server']}")
        return 0
    outcome = promote(args.source, args.target, project_dir, allow_downgrade=args.allow_downgrade)
    print(outcome.render(), end="")
    Path(args.body_out).write_text(promotion_body(outcome) if outcome.changed else "")
    _github_output("changed", str(outcome.changed).lower())
    return 0


def _release_plan(args: argparse.Namespace, project_dir: Path) -> int:
    outputs = release.build_plan(args.image, args.tag).outputs()
    for name, value in outputs.items():
        _github_output(name, value)
        print(f"{name}: {value}")
    return 0


def _release_push(args: argparse.Namespace, project_dir: Path) -> int:
    plan = release.build_plan(args.image, args.tag)
    archive = Path(args.archive)
    digest = release.push_archive(archive, plan.reference, archive.with_name(archive.name + ".digest"))
    _github_output("digest", digest)
    print(f"Pushed {plan.reference} as {digest}")
    return 0


def _release_sign(args: argparse.Namespace, project_dir: Path) -> int:
    digests = release.built_digests(_json_object(args.needs, "--needs"))
    for name, digest in digests.items():
        image = images.owned_image(name)
        for command in release.sign_commands(image, digest, release.sbom_path(Path(args.sbom_dir), image)):
            release.run_checked(command)
    _github_output("digests", json.dumps(digests, sort_keys=True))
    return 0


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise release.ReleaseError(f"{option} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise release.ReleaseError(f"{option} is no JSON object")
    return value


def _record_release(args: argparse.Namespace, project_dir: Path) -> int:
    digests = {str(k): str(v) for k, v in _json_object(args.digests, "--digests").items()}
    outcome = release.record_release(args.release, args.tag, digests, project_dir)
    print(outcome.render(), end="")
    Path(args.body_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.body_out).write_text(outcome.body())
    _github_output("changed", str(bool(outcome.moves)).lower())
    return 0


def _advisories(args: argparse.Namespace, project_dir: Path) -> int:
    today = datetime.date.today()
    problems: list[str] = []
    for stack in stacks_in(project_dir):
        problems += advisories.check(stack_config(stack, project_dir), today)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"{len(problems)} known Critical advisories of prod pins without an exception in force "
            "(stacks/advisories.py)"
        )
    else:
        print("No prod pin has a known Critical advisory without an exception in force (stacks/advisories.py)")
    return 1 if problems else 0


_RELEASE_COMMANDS = {
    "release-plan": _release_plan,
    "release-push": _release_push,
    "release-sign": _release_sign,
    "record-release": _record_release,
    "advisories": _advisories,
}


def _open_promotion(args: argparse.Namespace, project_dir: Path, api: PullRequestApi | None = None) -> int:
    token = os.environ.get(PROMOTION_TOKEN_VARIABLE)
    if api is None:
        if not token:
            print(
                f"error: {PROMOTION_TOKEN_VARIABLE} is not set: the pull request needs a GitHub App's token "
                "(with GITHUB_TOKEN, GitHub would run no workflow on it)",
                file=sys.stderr,
            )
            return 2
        api = RestGitHub(token, os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    change = PullRequestChange(
        base=args.base,
        branch=args.branch,
        files={path: (project_dir / path).read_bytes() for path in args.files},
        title=args.title,
        body=Path(args.body).read_text(),
        message=args.title,
    )
    outcome, number = open_pull_request(api, args.repo, change)
    print(f"{outcome} pull request #{number}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
