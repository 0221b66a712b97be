"""What the GitHub workflows run: every step's logic is here, tested; the workflows only call it.

python -m stacks.ci report STACK --base REV --out FILE     plan diff of STACK against REV, as Markdown
python -m stacks.ci comment --repo OWNER/NAME --pr N FILE… post the reports as one sticky PR comment
python -m stacks.ci promote SOURCE TARGET --body-out FILE  run the promotion, write the PR body
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from stacks.diff import PlanDiff, RevisionError, diff_plans, plan_at_revision
from stacks.loader import StackConfigError
from stacks.mocked import PROJECT_DIR
from stacks.plan import plan_stack
from stacks.promote import Promotion, PromotionError, promote

#: Identifies the one comment this program keeps up to date on a pull request.
COMMENT_MARKER = "<!-- blinkchamber-identity:offline-plan -->"
SECRET_CHANGE = "(secret value changed)"
#: GitHub refuses comments above 65536 characters.
COMMENT_LIMIT = 60000


def report_markdown(stack: str, result: PlanDiff) -> str:
    secret_changed = any(SECRET_CHANGE in line for c in result.changes for line in c.lines)
    flags = " · ⚠️ secret values change" if secret_changed else ""
    status = result.summary() if result.changed else "No changes."
    return (
        f"### `{stack}`: {status}{flags}\n\n"
        f"<details><summary>Offline plan diff {result.old} → {result.new}</summary>\n\n"
        f"```diff\n{result.render()}```\n\n</details>\n"
    )


def stack_report(stack: str, base: str, project_dir: Path = PROJECT_DIR) -> tuple[str, PlanDiff]:
    old = plan_at_revision(stack, base, project_dir)
    result = diff_plans(old, plan_stack(stack, project_dir), f"{stack}@{base}", f"{stack} (this pull request)")
    return report_markdown(stack, result), result


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


class GitHubApi(Protocol):
    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]: ...

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict[str, Any]: ...

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]: ...


class RestGitHub:
    """The three GitHub REST calls the sticky comment needs (``GITHUB_TOKEN`` of the workflow)."""

    def __init__(self, token: str, api_url: str = "https://api.github.com") -> None:
        self.token, self.api_url = token, api_url.rstrip("/")

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_url}{path}",
            method=method,
            data=json.dumps(payload).encode() if payload is not None else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        comments: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self._call("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}")
            comments += batch
            if len(batch) < 100:
                return comments
            page += 1

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body})
        return result

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/repos/{repo}/issues/comments/{comment_id}", {"body": body})
        return result


def upsert_comment(api: GitHubApi, repo: str, number: int, body: str) -> str:
    """Replace this program's comment on the pull request, or create it; returns ``updated`` or ``created``."""
    ours = [c for c in api.list_issue_comments(repo, number) if COMMENT_MARKER in (c.get("body") or "")]
    if ours:
        api.update_issue_comment(repo, int(ours[0]["id"]), body)
        return "updated"
    api.create_issue_comment(repo, number, body)
    return "created"


def promotion_body(outcome: Promotion) -> str:
    return "\n".join(
        [
            f"Promotes the release train tested on `{outcome.source}` to `{outcome.target}`.",
            "",
            "| key | from | to |",
            "|---|---|---|",
            *[f"| `{path}` | `{old}` | `{new}` |" for path, (old, new) in outcome.moves.items()],
            "",
            "```diff",
            outcome.plan_diff.render().rstrip("\n") if outcome.plan_diff else "",
            "```",
            "",
            f"Merging deploys `{outcome.target}` after the protected environment's reviewers approve.",
        ]
    )


def _github_output(name: str, value: str) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a") as f:
            f.write(f"{name}={value}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stacks.ci", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (PromotionError, RevisionError, StackConfigError, FileNotFoundError) as exc:
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
    outcome = promote(args.source, args.target, project_dir, allow_downgrade=args.allow_downgrade)
    print(outcome.render(), end="")
    Path(args.body_out).write_text(promotion_body(outcome) if outcome.changed else "")
    _github_output("changed", str(outcome.changed).lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
