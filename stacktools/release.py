"""Releasing an image this project builds (``stacks/images.py``): build, SBOM, scan, push, keyless signature, and the
release-train entry — the pushed tag and digest written into dev's stack file, from where promotion carries them.

``.github/workflows/release.yml`` runs these one step at a time around its build, SBOM and scan actions
(``python -m stacktools.ci release-plan|release-push|release-sign|record-release``); ``./bin/release-image`` runs the
whole release on a machine with a Docker engine:

    python -m stacktools.release RELEASE TAG [--no-push]      (RELEASE: event-relay, or redis with its sentinel)

What was scanned is what is pushed: the build writes an OCI archive, the SBOM and the scan read that archive, and
the push copies it unchanged (``skopeo copy``), so the digest recorded is the digest of the scanned image.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ruamel.yaml.comments import CommentedMap

from stacks import images
from stacks.images import OwnedImage
from stacks.loader import StackConfigError, deploy_refusals, load
from stacks.names import TRAIN_STACK
from stacks.stackfile import parse_stack_config, path_of, read_stack_config
from stacktools.mocked import PROJECT_DIR
from stacktools.promote import refusal_lines, set_path, stack_yaml, train_of

#: Where an upstream build context is checked out, relative to the project (ignored by git: build/).
UPSTREAM_DIR: Final = "build/upstream"
#: Where the local release keeps its archive, SBOM and digest.
WORK_DIR: Final = "build/release"
#: The scan's bar, the same in the workflow (anchore/scan-action) and here (grype): Critical or High with a fix.
SCAN_SEVERITY: Final = "high"
#: The tools a local release runs, each with what it does there.
LOCAL_TOOLS: Final = {
    "docker": "builds the image (buildx) into an OCI archive",
    "syft": "writes the SBOM",
    "grype": "scans it",
    "skopeo": "pushes the scanned archive",
    "cosign": "signs the pushed digest and attests the SBOM",
    "git": "checks out an upstream build context",
}


class ReleaseError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildPlan:
    """How one release of one image is built: what the workflow's build step and the local release pass."""

    image: OwnedImage
    tag: str

    @property
    def reference(self) -> str:
        return self.image.reference(self.tag)

    @property
    def context(self) -> str:
        upstream = self.image.upstream
        return "." if upstream is None else f"{UPSTREAM_DIR}/{upstream.path}"

    @property
    def build_args(self) -> list[str]:
        return [f"{name}={value}" for name, value in self.image.build_args]

    def outputs(self) -> dict[str, str]:
        """The workflow step's outputs (``steps.plan.outputs.*``)."""
        upstream = self.image.upstream
        return {
            "reference": self.reference,
            "dockerfile": self.image.dockerfile,
            "context": self.context,
            "build-args": "\n".join(self.build_args),
            "upstream-repository": upstream.repository if upstream else "",
            "upstream-commit": upstream.commit if upstream else "",
            "upstream-path": upstream.path if upstream else "",
        }


def build_plan(name: str, tag: str) -> BuildPlan:
    try:
        image = images.owned_image(name)
    except KeyError as exc:
        raise ReleaseError(str(exc.args[0])) from None
    problem = image.tag_problem(tag)
    if problem is not None:
        raise ReleaseError(problem)
    return BuildPlan(image, tag)


Runner = Callable[[Sequence[str]], None]


def run_checked(command: Sequence[str]) -> None:
    """Run one tool, its output streaming to the terminal; a failure stops the release."""
    print("+ " + " ".join(command), flush=True)
    result = subprocess.run(list(command), check=False)
    if result.returncode != 0:
        raise ReleaseError(f"{command[0]} failed (exit {result.returncode}): {' '.join(command)}")


def read_digest(path: Path) -> str:
    digest = path.read_text().strip() if path.exists() else ""
    if not re.fullmatch(images.DIGEST_PATTERN, digest):
        raise ReleaseError(f"{path} holds no image digest (sha256:<64 hex>): {digest[:80]!r}")
    return digest


def push_archive(archive: Path, reference: str, digest_file: Path, run: Runner = run_checked) -> str:
    """Copy the scanned OCI archive to the registry unchanged; the digest it was pushed under."""
    digest_file.unlink(missing_ok=True)
    run(["skopeo", "copy", "--digestfile", str(digest_file), f"oci-archive:{archive}", f"docker://{reference}"])
    return read_digest(digest_file)


def sign_commands(image: OwnedImage, digest: str, sbom: Path) -> list[list[str]]:
    """Keyless signatures of the pushed digest (in CI: the job's GitHub OIDC identity), the SBOM as an attestation."""
    pinned = f"{images.REGISTRY}/{image.repository}@{digest}"
    return [
        ["cosign", "sign", "--yes", pinned],
        ["cosign", "attest", "--yes", "--type", "spdxjson", "--predicate", str(sbom), pinned],
    ]


@dataclass
class Release:
    """One release written into dev's train: its images, each with the digest it was pushed under."""

    name: str
    tag: str
    digests: dict[str, str]
    stack_file: Path
    #: Train entry → (before, after), for what changed.
    moves: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: What ``pulumi up`` of the stack would still refuse with this release in it (another image never released).
    blockers: list[str] = field(default_factory=list)

    def render(self) -> str:
        pushed = ", ".join(f"{images.owned_image(n).reference(self.tag)}@{d}" for n, d in self.digests.items())
        lines = [f"Release {self.name} {self.tag} into {TRAIN_STACK}'s release train ({pushed}):"]
        lines += [f"  ~ {path}: {old or '(none)'} → {new}" for path, (old, new) in self.moves.items()]
        lines.append(f"Wrote {self.stack_file}." if self.moves else "  already there: nothing written.")
        if self.blockers:
            lines += refusal_lines(TRAIN_STACK, self.blockers)
        return "\n".join(lines) + "\n"

    def body(self) -> str:
        """The pull request's body: what the train gets, and what comes next."""
        built = ", ".join(f"`{images.owned_image(name).dockerfile}`" for name in self.digests)
        return "\n".join(
            [
                f"Releases `{self.name}` `{self.tag}` into `{TRAIN_STACK}`'s release train, by digest:",
                "",
                "| key | from | to |",
                "|---|---|---|",
                *[f"| `{path}` | `{old or '(none)'}` | `{new}` |" for path, (old, new) in self.moves.items()],
                "",
                f"Built from {built}, scanned (no Critical or High vulnerability with a fix), signed keylessly by the "
                "release workflow and attested with its SBOM. "
                + (
                    f"Merging deploys `{TRAIN_STACK}`; the **promote dev to prod** workflow then carries the digests "
                    "to prod."
                    if not self.blockers
                    else f"`{TRAIN_STACK}` still cannot be deployed after merging (`pulumi up` refuses, its deploy "
                    "job fails until the release named below is merged too):"
                ),
                *([""] + [f"- {blocker}" for blocker in self.blockers] if self.blockers else []),
            ]
        )


def record_release(
    name: str, tag: str, digests: Mapping[str, str], project_dir: Path = PROJECT_DIR, stack: str = TRAIN_STACK
) -> Release:
    """Write a release into ``stack``'s stack file (each image's registry, repository, tag, digest), its comments
    kept; every image of the release needs its digest, and the stack must still load."""
    try:
        owned = images.release_images(name)
    except KeyError as exc:
        raise ReleaseError(str(exc.args[0])) from None
    if sorted(digests) != sorted(image.name for image in owned):
        raise ReleaseError(
            f"release {name} is {', '.join(i.name for i in owned)}: digests given for {', '.join(digests) or 'none'}"
        )
    wanted: dict[str, str] = {}
    for image in owned:
        problem = image.tag_problem(tag)
        if problem is not None:
            raise ReleaseError(problem)
        digest = digests[image.name]
        if not re.fullmatch(images.DIGEST_PATTERN, digest):
            raise ReleaseError(f"{digest!r} is no image digest (sha256:<64 hex>)")
        wanted |= {
            f"{image.config_key}.registry": images.REGISTRY,
            f"{image.config_key}.repository": image.repository,
            f"{image.config_key}.tag": tag,
            f"{image.config_key}.digest": digest,
        }
    stack_file = path_of(project_dir, stack)
    current_cfg = load(stack, *read_stack_config(stack_file))
    current = train_of(current_cfg)
    release = Release(name, tag, {image.name: digests[image.name] for image in owned}, stack_file)
    release.moves = {path: (current[path], value) for path, value in wanted.items() if current[path] != value}
    if not release.moves:
        release.blockers = deploy_refusals(current_cfg)
        return release
    yaml = stack_yaml()
    document = yaml.load(stack_file.read_text()) or CommentedMap()
    for path in release.moves:
        set_path(document, path, wanted[path])
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    text = buffer.getvalue()
    try:
        release.blockers = deploy_refusals(load(stack, *parse_stack_config(text)))
    except StackConfigError as exc:
        raise ReleaseError(f"the {stack} stack with this release would be invalid:\n{exc}") from None
    stack_file.write_text(text)
    return release


def built_digests(needs: Mapping[str, Any]) -> dict[str, str]:
    """The digests the release workflow's build jobs pushed, from its ``needs`` context (``toJSON(needs)``): each
    job that ran is named after its image; the others were skipped."""
    digests: dict[str, str] = {}
    for job, need in needs.items():
        if need.get("result") != "success":
            continue
        image = images.owned_image(job)
        digest = str(need.get("outputs", {}).get("digest", ""))
        if not re.fullmatch(images.DIGEST_PATTERN, digest):
            raise ReleaseError(f"the {job} job succeeded without a digest: {digest[:80]!r}")
        digests[image.name] = digest
    if not digests:
        raise ReleaseError("no build job succeeded: nothing to sign")
    return digests


def sbom_path(sbom_dir: Path, image: OwnedImage) -> Path:
    return sbom_dir / f"sbom-{image.name}.spdx.json"


def checkout_upstream(plan: BuildPlan, project_dir: Path, run: Runner = run_checked) -> None:
    """The upstream build context at its pinned commit, only its directory (a sparse, shallow checkout)."""
    upstream = plan.image.upstream
    if upstream is None:
        return
    target = project_dir / UPSTREAM_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    git = ["git", "-C", str(target)]
    run([*git, "init", "--quiet"])
    run([*git, "remote", "add", "origin", f"https://github.com/{upstream.repository}.git"])
    run([*git, "sparse-checkout", "set", upstream.path])
    run([*git, "fetch", "--quiet", "--depth", "1", "origin", upstream.commit])
    run([*git, "checkout", "--quiet", upstream.commit])


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    return [f"{tool} ({what})" for tool, what in LOCAL_TOOLS.items() if which(tool) is None]


def require_docker_engine(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> None:
    try:
        result = run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        result = subprocess.CompletedProcess(["docker"], 127, "", "docker: not found")
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no answer"]
        raise ReleaseError(
            f"no Docker engine answers here ({reason[0]}): a local release builds with one. Where there is none, run "
            "the release workflow (.github/workflows/release.yml, Actions → release images)"
        )


def local_release(
    name: str,
    tag: str,
    project_dir: Path = PROJECT_DIR,
    *,
    push: bool = True,
    run: Runner = run_checked,
) -> Release | None:
    """The whole release, as the workflow does it: every image built and scanned before any is pushed;
    ``push=False`` stops after the scans."""
    try:
        owned = images.release_images(name)
    except KeyError as exc:
        raise ReleaseError(str(exc.args[0])) from None
    plans = [build_plan(image.name, tag) for image in owned]
    archives: dict[str, tuple[Path, Path]] = {}
    for plan in plans:
        work = project_dir / WORK_DIR / plan.image.name
        work.mkdir(parents=True, exist_ok=True)
        archive, sbom = work / "image.oci.tar", sbom_path(work, plan.image)
        checkout_upstream(plan, project_dir, run)
        build = ["docker", "buildx", "build", "--file", str(project_dir / plan.image.dockerfile)]
        build += [arg for value in plan.build_args for arg in ("--build-arg", value)]
        build += ["--tag", plan.reference, "--provenance=false"]
        build += ["--output", f"type=oci,dest={archive}", str(project_dir / plan.context)]
        run(build)
        run(["syft", "scan", f"oci-archive:{archive}", "--output", f"spdx-json={sbom}"])
        run(["grype", f"sbom:{sbom}", "--fail-on", SCAN_SEVERITY, "--only-fixed"])
        archives[plan.image.name] = (archive, sbom)
    if not push:
        print(f"Built and scanned {', '.join(p.reference for p in plans)}; not pushed (--no-push).")
        return None
    digests: dict[str, str] = {}
    for plan in plans:
        archive, sbom = archives[plan.image.name]
        digests[plan.image.name] = push_archive(archive, plan.reference, archive.with_name("digest"), run)
        for command in sign_commands(plan.image, digests[plan.image.name], sbom):
            run(command)
    return record_release(name, tag, digests, project_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/release-image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("release", choices=images.RELEASES, help="event-relay, or redis (with its sentinel)")
    parser.add_argument("tag", help="the release tag: the relay's version (0.2.0), Redis's 8.2.10-debian-12-r0")
    parser.add_argument("--no-push", action="store_true", help="build, SBOM and scan only")
    parser.add_argument("--project-dir", default=str(PROJECT_DIR))
    args = parser.parse_args(argv)
    try:
        for image in images.release_images(args.release):
            build_plan(image.name, args.tag)  # a wrong tag is refused before anything runs
        require_docker_engine()
        missing = missing_tools()
        if missing:
            raise ReleaseError("a local release needs " + ", ".join(missing) + " on PATH")
        release = local_release(args.release, args.tag, Path(args.project_dir), push=not args.no_push)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if release is not None:
        print(release.render(), end="")
        print(f"Commit {os.path.relpath(release.stack_file)} and open a pull request; merging deploys dev.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
