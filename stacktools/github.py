"""The GitHub REST calls the workflows make: the sticky plan comment, and the promotion's branch and pull request.

Both take the API as a ``Protocol``, so the tests run them against an in-memory GitHub. ``RestGitHub`` is the real
one (urllib, the token as a bearer).

The promotion pull request is opened with a GitHub App installation token, never the workflow's ``GITHUB_TOKEN``:
GitHub does not start workflows for events that token causes, so a pull request opened with it would get no plan
comment and no checks.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stacks import names

#: Identifies the one comment this program keeps up to date on a pull request.
COMMENT_MARKER = f"<!-- {names.PROJECT}:offline-plan -->"


class GitHubApi(Protocol):
    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]: ...

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict[str, Any]: ...

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]: ...


class PullRequestApi(Protocol):
    """Branches, file contents and pull requests of one repository."""

    def get_branch_sha(self, repo: str, branch: str) -> str | None: ...

    def set_branch(self, repo: str, branch: str, sha: str, *, create: bool) -> None: ...

    def get_file(self, repo: str, path: str, ref: str) -> tuple[str, bytes] | None: ...

    def put_file(self, repo: str, path: str, *, branch: str, content: bytes, message: str, sha: str | None) -> None: ...

    def find_open_pull(self, repo: str, head: str, base: str) -> dict[str, Any] | None: ...

    def create_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> dict[str, Any]: ...

    def update_pull(self, repo: str, number: int, *, title: str, body: str) -> dict[str, Any]: ...


class GitHubError(RuntimeError):
    pass


class RestGitHub:
    """GitHub's REST API with one token (``GITHUB_TOKEN`` for comments, the App's token for the promotion)."""

    def __init__(self, token: str, api_url: str = "https://api.github.com") -> None:
        self.token, self.api_url = token, api_url.rstrip("/")

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
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
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise GitHubError(f"{method} {path}: {error.code} {error.read()[:300]!r}") from None

    # --- issue comments -------------------------------------------------------------------------------------------

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        comments: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self._call("GET", f"/repos/{repo}/issues/{number}/comments?per_page=100&page={page}") or []
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

    # --- branches, files, pull requests ---------------------------------------------------------------------------

    def get_branch_sha(self, repo: str, branch: str) -> str | None:
        ref = self._call("GET", f"/repos/{repo}/git/ref/heads/{urllib.parse.quote(branch)}")
        return str(ref["object"]["sha"]) if ref else None

    def set_branch(self, repo: str, branch: str, sha: str, *, create: bool) -> None:
        if create:
            self._call("POST", f"/repos/{repo}/git/refs", {"ref": f"refs/heads/{branch}", "sha": sha})
        else:
            self._call(
                "PATCH", f"/repos/{repo}/git/refs/heads/{urllib.parse.quote(branch)}", {"sha": sha, "force": True}
            )

    def get_file(self, repo: str, path: str, ref: str) -> tuple[str, bytes] | None:
        found = self._call("GET", f"/repos/{repo}/contents/{urllib.parse.quote(path)}?ref={urllib.parse.quote(ref)}")
        return (str(found["sha"]), base64.b64decode(found["content"])) if found else None

    def put_file(self, repo: str, path: str, *, branch: str, content: bytes, message: str, sha: str | None) -> None:
        payload = {"message": message, "content": base64.b64encode(content).decode(), "branch": branch}
        self._call(
            "PUT", f"/repos/{repo}/contents/{urllib.parse.quote(path)}", {**payload, **({"sha": sha} if sha else {})}
        )

    def find_open_pull(self, repo: str, head: str, base: str) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"state": "open", "head": head, "base": base})
        pulls = self._call("GET", f"/repos/{repo}/pulls?{query}") or []
        return dict(pulls[0]) if pulls else None

    def create_pull(self, repo: str, *, head: str, base: str, title: str, body: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/repos/{repo}/pulls", {"head": head, "base": base, "title": title, "body": body}
        )
        return result

    def update_pull(self, repo: str, number: int, *, title: str, body: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/repos/{repo}/pulls/{number}", {"title": title, "body": body})
        return result


def upsert_comment(api: GitHubApi, repo: str, number: int, body: str) -> str:
    """Replace this program's comment on the pull request, or create it; returns ``updated`` or ``created``."""
    ours = [c for c in api.list_issue_comments(repo, number) if COMMENT_MARKER in (c.get("body") or "")]
    if ours:
        api.update_issue_comment(repo, int(ours[0]["id"]), body)
        return "updated"
    api.create_issue_comment(repo, number, body)
    return "created"


@dataclass(frozen=True)
class PullRequestChange:
    """What to propose: files (path → new content) on ``branch``, reset to ``base`` first."""

    base: str
    branch: str
    files: Mapping[str, bytes]
    title: str
    body: str
    message: str


def open_pull_request(api: PullRequestApi, repo: str, change: PullRequestChange) -> tuple[str, int]:
    """Put the files on the branch (reset onto the base: the change is recomputed from it each run) and open its pull
    request, or update the one already open; returns (``created`` or ``updated``, the pull request's number)."""
    base_sha = api.get_branch_sha(repo, change.base)
    if base_sha is None:
        raise GitHubError(f"{repo} has no branch {change.base!r}")
    api.set_branch(repo, change.branch, base_sha, create=api.get_branch_sha(repo, change.branch) is None)
    for path, content in sorted(change.files.items()):
        existing = api.get_file(repo, path, change.branch)
        if existing is not None and existing[1] == content:
            continue
        api.put_file(
            repo,
            path,
            branch=change.branch,
            content=content,
            message=change.message,
            sha=existing[0] if existing else None,
        )
    owner = repo.split("/", 1)[0]
    pull = api.find_open_pull(repo, f"{owner}:{change.branch}", change.base)
    if pull is not None:
        api.update_pull(repo, int(pull["number"]), title=change.title, body=change.body)
        return "updated", int(pull["number"])
    created = api.create_pull(repo, head=change.branch, base=change.base, title=change.title, body=change.body)
    return "created", int(created["number"])
