"""The release pipeline of the images the stack builds, offline: the workflow's structure (actionlint runs in
tests/test_workflows.py), the workflow and the train naming the same images, the Dockerfiles' pins, the digest a
release writes into dev's train and the promotion that carries it, and the refusal of an image the project builds
without a digest. No Docker engine runs here: the local release runs against a recorded stand-in of its tools.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from stacks import images, names
from stacks.loader import StackConfigError, load, load_from_pulumi
from stacks.stackfile import parse_stack_config, read_stack_config
from stacktools import ci, release
from stacktools.mocked import pulumi_config_values
from stacktools.plan import mask
from stacktools.promote import TRAIN, promote
from tests.conftest import PROJECT_DIR, record, stack_config
from tests.rendering import chart_archive, containers
from tests.test_diff_promote import PROD_REFUSED, REDIS_REFUSED, RELAY_REFUSED

WORKFLOW = PROJECT_DIR / ".github" / "workflows" / "release.yml"
#: Stand-in digests, made up for the tests (no image has them).
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def workflow() -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def action(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@")[0]


# --- the workflow and the train name the same images -----------------------------------------------------------------

BUILD_JOBS = ("event-relay", "redis", "redis-sentinel")


def test_the_workflow_releases_exactly_the_images_the_project_builds() -> None:
    document = workflow()
    dispatch = document[True]["workflow_dispatch"]["inputs"]  # PyYAML reads the key `on` as True
    assert dispatch["release"]["options"] == list(images.RELEASES) == ["event-relay", "redis"]
    assert dispatch["tag"]["required"] is True
    jobs = document["jobs"]
    assert [image.name for image in images.OWNED_IMAGES] == list(BUILD_JOBS)
    assert list(jobs) == [*BUILD_JOBS, "sign", "record"]
    # Redis and its Sentinel share a version: one release builds both.
    assert [image.name for image in images.release_images("redis")] == ["redis", "redis-sentinel"]
    for name in BUILD_JOBS:
        job = jobs[name]
        assert job["if"] == f"inputs.release == '{images.owned_image(name).release}'"
        runs = [step["run"] for step in steps(job) if "run" in step]
        assert runs == [
            "python -m pip install -r requirements.txt",
            f'python -m stacktools.ci release-plan {name} --tag "$TAG"',
            f'python -m stacktools.ci release-push {name} --tag "$TAG" --archive build/image.oci.tar',
        ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_train_deploys_the_images_the_workflow_pushes(stack: str) -> None:
    """Each image the workflow releases has its config key in the release train (registry, repository, tag, digest)
    and, where the stack runs the project's build, names the repository the workflow pushes to."""
    cfg = stack_config(stack)
    for owned in images.OWNED_IMAGES:
        assert {f"{owned.config_key}.{field}" for field in ("registry", "repository", "tag", "digest")} <= set(TRAIN)
    relay = cfg.events.relay.image
    assert (relay.registry, relay.repository) == ("ghcr.io", "blinkchamber/event-relay")
    assert images.RELAY.reference("0.2.0") == "ghcr.io/blinkchamber/event-relay:0.2.0"
    assert images.REDIS.reference("8.2.10-debian-12-r0") == "ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0"
    assert images.REDIS_SENTINEL.repository == "blinkchamber/redis-sentinel"


# --- what each job may do, and in which order ------------------------------------------------------------------------


def test_only_the_signing_job_can_mint_an_oidc_token() -> None:
    document = workflow()
    assert document["permissions"] == {"contents": "read"}
    jobs = document["jobs"]
    for name in BUILD_JOBS:
        assert jobs[name]["permissions"] == {"contents": "read", "packages": "write"}
    assert jobs["sign"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert "permissions" not in jobs["record"]  # the workflow's read-only token; the App's token opens the PR
    assert [name for name, job in jobs.items() if job.get("permissions", {}).get("id-token")] == ["sign"]


@pytest.mark.parametrize("name", BUILD_JOBS)
def test_a_build_is_scanned_before_it_is_pushed_and_the_scanned_archive_is_pushed(name: str) -> None:
    job = workflow()["jobs"][name]
    order = [action(step) or step["run"].split(" --")[0] for step in steps(job)]
    build = order.index("docker/build-push-action")
    sbom, scan = order.index("anchore/sbom-action"), order.index("anchore/scan-action")
    push = order.index(f"python -m stacktools.ci release-push {name}")
    assert build < sbom < scan < order.index("docker/login-action") < push
    (built,) = [s for s in steps(job) if action(s) == "docker/build-push-action"]
    assert built["with"]["outputs"] == "type=oci,dest=build/image.oci.tar" and "push" not in built["with"]
    (sbom_step,) = [s for s in steps(job) if action(s) == "anchore/sbom-action"]
    assert sbom_step["with"]["image"] == "oci-archive:build/image.oci.tar"
    assert sbom_step["with"]["output-file"] == "build/sbom.spdx.json"
    # The artifact the signing job attests, under the name release-sign reads.
    assert sbom_step["with"]["artifact-name"] == release.sbom_path(Path(), images.owned_image(name)).name
    (scan_step,) = [s for s in steps(job) if action(s) == "anchore/scan-action"]
    assert scan_step["with"] == {
        "sbom": "build/sbom.spdx.json",
        "severity-cutoff": "high",
        "only-fixed": True,
        "fail-build": True,
        "output-format": "table",
    }
    assert release.SCAN_SEVERITY == "high"  # the local release's bar is the same
    # The inputs reach the shell through the environment, never spliced into a command line.
    for step in steps(job):
        assert "${{" not in str(step.get("run", "")), step


@pytest.mark.parametrize("name", ["redis", "redis-sentinel"])
def test_the_redis_builds_check_out_bitnamis_sources_at_the_pinned_commit(name: str) -> None:
    job = workflow()["jobs"][name]
    (upstream,) = [s for s in steps(job) if action(s) == "actions/checkout" and "with" in s]
    assert upstream["with"] == {
        "repository": "${{ steps.plan.outputs.upstream-repository }}",
        "ref": "${{ steps.plan.outputs.upstream-commit }}",
        "path": release.UPSTREAM_DIR,
        "sparse-checkout": "${{ steps.plan.outputs.upstream-path }}",
        "persist-credentials": False,
    }


def test_the_build_plan_pins_the_upstream_commit_and_the_redis_source(tmp_path: Path, monkeypatch: Any) -> None:
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert ci.main(["release-plan", "redis-sentinel", "--tag", "8.2.10-debian-12-r0"]) == 0
    text = output.read_text()
    assert "reference=ghcr.io/blinkchamber/redis-sentinel:8.2.10-debian-12-r0\n" in text
    assert "upstream-repository=bitnami/containers\n" in text
    assert "upstream-commit=05d158924b7e30687e958a1b5c03b0437c7cbadc\n" in text
    assert "upstream-path=bitnami/redis-sentinel/8.2/debian-12\n" in text
    assert "context=build/upstream/bitnami/redis-sentinel/8.2/debian-12\n" in text
    assert (
        "build-args<<BLINKCHAMBER_EOF\n"
        "REDIS_VERSION=8.2.10\n"
        "REDIS_SOURCE_URL=https://github.com/redis/redis/archive/refs/tags/8.2.10.tar.gz\n"
        "REDIS_SOURCE_SHA256=d6de0ec3bce8eeba13ecbd7478dd56fb87a4bbe8ec832dd876892a86ac1a55ec\n"
        "BLINKCHAMBER_EOF\n"
    ) in text


@pytest.mark.parametrize(
    ("name", "tag", "problem"),
    [
        ("event-relay", "latest", "'latest' is no release tag of event-relay"),
        ("redis", "8.2.1-debian-12-r0", "'8.2.1-debian-12-r0' is no release tag of redis"),
        ("redis", "8.2.10", "'8.2.10' is no release tag of redis"),
        ("postgresql", "17.6.0", "'postgresql' is no image this project builds"),
    ],
)
def test_a_release_tag_must_name_what_is_built(name: str, tag: str, problem: str) -> None:
    with pytest.raises(release.ReleaseError, match=re.escape(problem)):
        release.build_plan(name, tag)


def test_the_signing_job_signs_each_built_digest_and_attests_its_sbom() -> None:
    job = workflow()["jobs"]["sign"]
    assert job["needs"] == list(BUILD_JOBS)
    (signing,) = [s for s in steps(job) if "run" in s and "release-sign" in s["run"]]
    assert signing["env"] == {"NEEDS": "${{ toJSON(needs) }}"}
    assert signing["run"] == 'python -m stacktools.ci release-sign --needs "$NEEDS" --sbom-dir build/sboms'
    (sboms,) = [s for s in steps(job) if action(s) == "actions/download-artifact"]
    assert sboms["with"] == {"pattern": "sbom-*", "merge-multiple": True, "path": "build/sboms/"}
    assert "sigstore/cosign-installer" in [action(s) for s in steps(job)]
    # The needs context of a Redis release: its two jobs ran, the relay's was skipped.
    needs = {
        "event-relay": {"result": "skipped", "outputs": {}},
        "redis": {"result": "success", "outputs": {"digest": DIGEST}},
        "redis-sentinel": {"result": "success", "outputs": {"digest": OTHER_DIGEST}},
    }
    assert release.built_digests(needs) == {"redis": DIGEST, "redis-sentinel": OTHER_DIGEST}
    with pytest.raises(release.ReleaseError, match="the redis job succeeded without a digest"):
        release.built_digests({**needs, "redis": {"result": "success", "outputs": {}}})
    with pytest.raises(release.ReleaseError, match="no build job succeeded"):
        release.built_digests({"event-relay": {"result": "skipped", "outputs": {}}})
    assert release.sign_commands(images.REDIS, DIGEST, Path("build/sbom.spdx.json")) == [
        ["cosign", "sign", "--yes", f"ghcr.io/blinkchamber/redis@{DIGEST}"],
        [
            "cosign",
            "attest",
            "--yes",
            "--type",
            "spdxjson",
            "--predicate",
            "build/sbom.spdx.json",
            f"ghcr.io/blinkchamber/redis@{DIGEST}",
        ],
    ]


def test_the_record_job_proposes_the_digest_with_the_apps_token() -> None:
    job = workflow()["jobs"]["record"]
    assert job["needs"] == ["sign"]
    (recording,) = [s for s in steps(job) if "record-release" in str(s.get("run", ""))]
    assert recording["env"]["DIGESTS"] == "${{ needs.sign.outputs.digests }}"
    (opener,) = [s for s in steps(job) if "open-promotion" in str(s.get("run", ""))]
    assert opener["env"]["PROMOTION_TOKEN"] == "${{ steps.app-token.outputs.token }}"
    assert opener["run"].endswith("--body build/release.md Pulumi.dev.yaml")


# --- the Dockerfiles' pins -------------------------------------------------------------------------------------------


def test_the_relay_base_image_is_pinned_by_digest() -> None:
    dockerfile = (PROJECT_DIR / "relay" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)$", dockerfile, flags=re.M)
    assert base == (
        "docker.io/library/python:3.11.16-slim-bookworm"
        "@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f"
    )


@pytest.mark.parametrize("owned", [images.REDIS, images.REDIS_SENTINEL], ids=lambda image: image.name)
def test_the_redis_dockerfiles_pin_their_base_and_take_the_source_from_the_plan(owned: images.OwnedImage) -> None:
    dockerfile = (PROJECT_DIR / owned.dockerfile).read_text()
    assert re.findall(r"^ARG DEBIAN_IMAGE=(\S+)$", dockerfile, flags=re.M) == [
        "docker.io/library/debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241"
    ]
    assert re.findall(r"^FROM (\S+)", dockerfile, flags=re.M) == ["${DEBIAN_IMAGE}", "${DEBIAN_IMAGE}"]
    # The build arguments have no default: stacks/images.py is their one home.
    for name, _ in owned.build_args:
        assert f"ARG {name}\n" in dockerfile and f"ARG {name}=" not in dockerfile
    assert "sha256sum -c -" in dockerfile and "BUILD_WITH_MODULES=no" in dockerfile
    # Bitnami's scripts from the build context (the pinned upstream directory), and its entry point.
    assert "COPY prebuildfs /\n" in dockerfile and "COPY rootfs /\n" in dockerfile
    app = owned.name
    assert f'ENTRYPOINT [ "/opt/bitnami/scripts/{app}/entrypoint.sh" ]' in dockerfile
    assert f"RUN /opt/bitnami/scripts/{app}/postunpack.sh" in dockerfile
    assert "USER 1001\n" in dockerfile


def test_the_pinned_sources_are_exact() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", images.BITNAMI_COMMIT)
    assert re.fullmatch(r"[0-9a-f]{64}", images.REDIS_SOURCE_SHA256)
    assert images.REDIS_VERSION == "8.2.10"


# --- an image the project builds, without a digest, is refused ---------------------------------------------------


_EVENTS = f"  {names.PROJECT}:events:\n"


_REDIS_DIGESTS = (
    f"  {names.PROJECT}:redis:\n    images:\n"
    f"      redis:\n        digest: {DIGEST}\n      sentinel:\n        digest: {OTHER_DIGEST}\n"
)


def prod_text(relay_digest: bool = False, extra: str = "", *, redis_digests: bool = False) -> str:
    """Prod's stack file, its relay image given a digest (inside its own events section), its Redis images given
    theirs (a redis section: prod's file has none), and ``extra`` appended."""
    text = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    assert text.count(_EVENTS) == 1 and f"{names.PROJECT}:redis:" not in text
    if relay_digest:
        text = text.replace(_EVENTS, f"{_EVENTS}    relay:\n      image:\n        digest: {DIGEST}\n")
    return text + (_REDIS_DIGESTS if redis_digests else "") + extra


def prod_config(
    relay_digest: bool = False, extra: str = "", *, redis_digests: bool = False
) -> tuple[dict[str, Any], set[str]]:
    return parse_stack_config(prod_text(relay_digest, extra, redis_digests=redis_digests))


def test_pulumi_up_refuses_each_image_the_project_builds_without_a_digest() -> None:
    load("prod", *prod_config())  # the plan, a preview, a promotion: prod loads
    with pytest.raises(StackConfigError) as refused:
        load("prod", *prod_config(), deploying=True)
    assert refused.value.violations == PROD_REFUSED
    with pytest.raises(StackConfigError) as relay_only:
        load("prod", *prod_config(redis_digests=True), deploying=True)
    assert relay_only.value.violations == [RELAY_REFUSED]


def test_digests_let_it_deploy_and_the_pods_pull_by_digest() -> None:
    cfg = load("prod", *prod_config(relay_digest=True, redis_digests=True), deploying=True)
    assert cfg.events.relay.image.reference == f"ghcr.io/blinkchamber/event-relay@{DIGEST}"
    assert cfg.redis.images.redis.reference == f"ghcr.io/blinkchamber/redis@{DIGEST}"
    assert cfg.redis.images.sentinel.reference == f"ghcr.io/blinkchamber/redis-sentinel@{OTHER_DIGEST}"


def _redis_images(repository_of: dict[str, str], digest: str | None) -> str:
    lines = [f"  {names.PROJECT}:redis:\n    images:\n"]
    for key, repository in repository_of.items():
        lines.append(f"      {key}:\n        registry: ghcr.io\n        repository: {repository}\n")
        lines.append("        tag: 8.2.10-debian-12-r0\n" + (f"        digest: {digest}\n" if digest else ""))
    return "".join(lines)


OWN_REDIS = {"redis": "blinkchamber/redis", "sentinel": "blinkchamber/redis-sentinel"}
#: A third party's Redis images (Bitnami's frozen ones, which prod's advisories check refuses on their own grounds).
BITNAMI_REDIS = (
    f"  {names.PROJECT}:redis:\n    images:\n"
    "      redis:\n        registry: docker.io\n        repository: bitnamilegacy/redis\n"
    "      sentinel:\n        registry: docker.io\n        repository: bitnamilegacy/redis-sentinel\n"
)


def test_own_redis_images_deploy_with_digests_a_third_partys_without() -> None:
    load("prod", *prod_config(True, _redis_images(OWN_REDIS, DIGEST)), deploying=True)
    # Another image (Bitnami's, here) is no build of this project: no digest asked for; the advisories check judges it.
    load("prod", *prod_config(True, BITNAMI_REDIS), deploying=True)
    with pytest.raises(StackConfigError) as refused:
        load("prod", *prod_config(True, _redis_images(OWN_REDIS, None)), deploying=True)
    assert refused.value.violations == REDIS_REFUSED


def test_every_stack_needs_the_digests_and_only_a_deployed_relay_its_own() -> None:
    relay_off = f"{_EVENTS}    relay:\n      enabled: false\n"
    load("prod", *parse_stack_config(prod_text(redis_digests=True).replace(_EVENTS, relay_off)), deploying=True)
    dev_text = (PROJECT_DIR / "Pulumi.dev.yaml").read_text()
    assert load("dev", *parse_stack_config(dev_text)).redis.images.redis.reference == (
        "ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0"
    )
    # Dev is the release train itself: nothing to promote, the release writes the digests there.
    with pytest.raises(StackConfigError) as refused:
        load("dev", *parse_stack_config(dev_text), deploying=True)
    assert refused.value.violations == [
        "dev: events.relay.image.digest: dev deploys the images this project builds by digest "
        "(ghcr.io/blinkchamber/event-relay@sha256:…), and ghcr.io/blinkchamber/event-relay:0.1.0 has none: release it "
        "(./bin/release-image event-relay 0.1.0, or the release workflow), which writes its digest into dev's release "
        "train",
        "dev: redis.images.redis.digest: dev deploys the images this project builds by digest "
        "(ghcr.io/blinkchamber/redis@sha256:…), and ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0 has none: release "
        "it (./bin/release-image redis 8.2.10-debian-12-r0, or the release workflow), which writes its digest into "
        "dev's release train",
        "dev: redis.images.sentinel.digest: dev deploys the images this project builds by digest "
        "(ghcr.io/blinkchamber/redis-sentinel@sha256:…), and ghcr.io/blinkchamber/redis-sentinel:8.2.10-debian-12-r0 "
        "has none: release it (./bin/release-image redis 8.2.10-debian-12-r0, or the release workflow), which writes "
        "its digest into dev's release train",
    ]


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    """Load prod as the engine runs the program: the project directory set, ``preview`` as given."""

    def run(relay_digest: bool, *, preview: bool) -> Any:
        text = prod_text(relay_digest, redis_digests=True)
        (tmp_path / "Pulumi.prod.yaml").write_text(text)
        config, secret_keys = parse_stack_config(text)
        pulumi.runtime.reset_options(project=names.PROJECT, stack="prod", root_directory=str(tmp_path), preview=preview)
        pulumi.runtime.set_all_config(pulumi_config_values(config), [f"{names.PROJECT}:{k}" for k in secret_keys])
        return load_from_pulumi()

    try:
        yield run
    finally:
        pulumi.runtime.set_all_config({}, [])
        pulumi.runtime.reset_options()


def test_the_engine_refuses_pulumi_up_not_the_preview(engine: Any) -> None:
    assert engine(False, preview=True).stack == "prod"
    with pytest.raises(StackConfigError) as refused:
        engine(False, preview=False)
    assert refused.value.violations == [RELAY_REFUSED]
    assert engine(True, preview=False).events.relay.image.digest == DIGEST


def test_the_offline_runner_plans_prod_without_a_digest() -> None:
    # Under mocks there is no project directory: the offline plan is never a deploy.
    relay = record("prod").one("kubernetes:apps/v1:Deployment", names.RELAY_NAME)
    (container,) = mask(relay.inputs)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/blinkchamber/event-relay:0.1.0"


def test_a_digest_reaches_the_rendered_redis_pods() -> None:
    """The Bitnami chart pulls ``registry/repository@digest`` when the values carry one (its common helper)."""
    cfg = stack_config("prod")
    images_json = json.dumps(
        {
            key: {"registry": "ghcr.io", "repository": repository, "tag": "8.2.10-debian-12-r0", "digest": digest}
            for (key, repository), digest in zip(OWN_REDIS.items(), (DIGEST, OTHER_DIGEST), strict=True)
        }
    )
    recording = record("prod", {"redis": json.dumps({"images": json.loads(images_json)})})
    inputs = mask(recording.one(names.HELM_RELEASE_TYPE, names.REDIS_RELEASE).inputs)
    assert inputs["values"]["image"]["digest"] == DIGEST
    manifests = (
        chart_archive(cfg.redis.chart)
        .render(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])
        .manifests
    )
    (statefulset,) = [m for m in manifests if m["kind"] == "StatefulSet"]
    pulled = {name: c["image"] for name, c in containers(statefulset["spec"]["template"]["spec"])}
    assert pulled["redis"] == f"ghcr.io/blinkchamber/redis@{DIGEST}"
    assert pulled["sentinel"] == f"ghcr.io/blinkchamber/redis-sentinel@{OTHER_DIGEST}"
    assert pulled["init:copy-redis-password"] == f"ghcr.io/blinkchamber/redis@{DIGEST}"


# --- a release is one train entry; one promotion carries it to prod ---------------------------------------------------


def test_a_release_writes_its_digest_into_devs_train_and_one_promotion_carries_it(project: Path) -> None:
    before = (project / "Pulumi.dev.yaml").read_text()
    outcome = release.record_release("event-relay", "0.2.0", {"event-relay": DIGEST}, project)
    assert outcome.moves == {
        "events.relay.image.tag": ("0.1.0", "0.2.0"),
        "events.relay.image.digest": ("", DIGEST),
    }
    after = (project / "Pulumi.dev.yaml").read_text()
    assert after.startswith(before.split("config:")[0])  # the file's comments stay
    dev = load("dev", *read_stack_config(project / "Pulumi.dev.yaml"))
    assert dev.events.relay.image.reference == f"ghcr.io/blinkchamber/event-relay@{DIGEST}"
    again = release.record_release("event-relay", "0.2.0", {"event-relay": DIGEST}, project)
    assert again.moves == {}  # twice: nothing more
    promotion = promote("dev", "prod", project)
    assert promotion.moves == outcome.moves and promotion.blockers == REDIS_REFUSED
    # The Redis images' first release, promoted: nothing left that prod's `pulumi up` refuses.
    release.record_release("redis", "8.2.10-debian-12-r0", {"redis": DIGEST, "redis-sentinel": OTHER_DIGEST}, project)
    assert promote("dev", "prod", project).blockers == []
    load("prod", *read_stack_config(project / "Pulumi.prod.yaml"), deploying=True)


def test_a_redis_release_moves_both_digests_and_a_rebuild_both_tags(project: Path) -> None:
    digests = {"redis": DIGEST, "redis-sentinel": OTHER_DIGEST}
    outcome = release.record_release("redis", "8.2.10-debian-12-r0", digests, project)
    assert outcome.moves == {
        "redis.images.redis.digest": ("", DIGEST),
        "redis.images.sentinel.digest": ("", OTHER_DIGEST),
    }
    promotion = promote("dev", "prod", project, dry_run=True)
    assert promotion.moves == outcome.moves
    assert promotion.blockers == [RELAY_REFUSED]  # the relay is still unreleased
    assert f"  ~ redis.images.redis.digest: (none) → {DIGEST}\n" in promotion.render()
    assert f"| `redis.images.redis.digest` | `(none)` | `{DIGEST}` |" in ci.promotion_body(promotion)
    assert f"- {RELAY_REFUSED}" in ci.promotion_body(promotion)
    rebuilt = release.record_release(
        "redis", "8.2.10-debian-12-r1", {"redis": OTHER_DIGEST, "redis-sentinel": DIGEST}, project
    )
    assert rebuilt.moves == {
        "redis.images.redis.tag": ("8.2.10-debian-12-r0", "8.2.10-debian-12-r1"),
        "redis.images.redis.digest": (DIGEST, OTHER_DIGEST),
        "redis.images.sentinel.tag": ("8.2.10-debian-12-r0", "8.2.10-debian-12-r1"),
        "redis.images.sentinel.digest": (OTHER_DIGEST, DIGEST),
    }


def test_a_promotion_of_a_train_without_a_digest_removes_prods(project: Path) -> None:
    (project / "Pulumi.prod.yaml").write_text(prod_text(relay_digest=True))
    promotion = promote("dev", "prod", project, allow_downgrade=True)
    assert promotion.moves == {"events.relay.image.digest": (DIGEST, "")}
    assert "digest" not in (project / "Pulumi.prod.yaml").read_text()
    assert promotion.blockers == PROD_REFUSED


def test_a_release_refuses_a_malformed_or_missing_digest(project: Path) -> None:
    with pytest.raises(release.ReleaseError, match="'sha256:abc' is no image digest"):
        release.record_release("event-relay", "0.2.0", {"event-relay": "sha256:abc"}, project)
    with pytest.raises(release.ReleaseError, match=r"release redis is redis, redis-sentinel: digests given for redis$"):
        release.record_release("redis", "8.2.10-debian-12-r0", {"redis": DIGEST}, project)


def test_the_record_command_writes_the_pull_requests_body(project: Path, tmp_path: Path) -> None:
    body = tmp_path / "release.md"
    digests = json.dumps({"event-relay": DIGEST})
    args = ["--project-dir", str(project), "record-release", "event-relay", "--tag", "0.2.0", "--digests", digests]
    assert ci.main([*args, "--body-out", str(body)]) == 0
    text = body.read_text()
    assert f"| `events.relay.image.digest` | `(none)` | `{DIGEST}` |" in text
    assert "| `events.relay.image.tag` | `0.1.0` | `0.2.0` |" in text
    # The Redis images have no release yet: merging this one alone does not make dev deployable, and the body says so.
    assert text.endswith(
        "`dev` still cannot be deployed after merging (`pulumi up` refuses, its deploy job fails until the release "
        "named below is merged too):\n\n"
        "- dev: redis.images.redis.digest: dev deploys the images this project builds by digest "
        "(ghcr.io/blinkchamber/redis@sha256:…), and ghcr.io/blinkchamber/redis:8.2.10-debian-12-r0 has none: release "
        "it (./bin/release-image redis 8.2.10-debian-12-r0, or the release workflow), which writes its digest into "
        "dev's release train\n"
        "- dev: redis.images.sentinel.digest: dev deploys the images this project builds by digest "
        "(ghcr.io/blinkchamber/redis-sentinel@sha256:…), and ghcr.io/blinkchamber/redis-sentinel:8.2.10-debian-12-r0 "
        "has none: release it (./bin/release-image redis 8.2.10-debian-12-r0, or the release workflow), which writes "
        "its digest into dev's release train"
    )
    redis = {"redis": DIGEST, "redis-sentinel": OTHER_DIGEST}
    args = ["--project-dir", str(project), "record-release", "redis", "--tag", "8.2.10-debian-12-r0"]
    assert ci.main([*args, "--digests", json.dumps(redis), "--body-out", str(body)]) == 0
    assert body.read_text().endswith(
        "Merging deploys `dev`; the **promote dev to prod** workflow then carries the digests to prod."
    )


# --- bin/release-image -----------------------------------------------------------------------------------------------


class Tools:
    """A stand-in for docker, syft, grype, skopeo, cosign and git: records each command; ``fail`` makes one fail."""

    def __init__(self, fail: str = "") -> None:
        self.commands: list[list[str]] = []
        self.fail = fail

    def __call__(self, command: Sequence[str]) -> None:
        self.commands.append(list(command))
        if command[0] == self.fail:
            raise release.ReleaseError(f"{command[0]} failed (exit 1)")
        if command[:2] == ["skopeo", "copy"]:
            Path(command[command.index("--digestfile") + 1]).write_text(DIGEST + "\n")

    def tools(self) -> list[str]:
        return [command[0] for command in self.commands]


def test_the_local_release_runs_the_pipelines_steps_in_order(project: Path) -> None:
    tools = Tools()
    outcome = release.local_release("redis", "8.2.10-debian-12-r0", project, run=tools)
    # Both images built and scanned before either is pushed; then each pushed, signed and attested.
    built = ["git"] * 5 + ["docker", "syft", "grype"]
    assert tools.tools() == built * 2 + ["skopeo", "cosign", "cosign"] * 2
    checkout = [c[3:] for c in tools.commands[:5]]
    assert checkout[1] == ["remote", "add", "origin", "https://github.com/bitnami/containers.git"]
    assert checkout[2] == ["sparse-checkout", "set", "bitnami/redis/8.2/debian-12"]
    assert checkout[3][-1] == checkout[4][-1] == images.BITNAMI_COMMIT
    build = tools.commands[5]
    assert build[:3] == ["docker", "buildx", "build"] and build[-1] == str(
        project / "build/upstream/bitnami/redis/8.2/debian-12"
    )
    assert "REDIS_SOURCE_SHA256=" + images.REDIS_SOURCE_SHA256 in build
    assert tools.commands[7] == [
        "grype",
        f"sbom:{project}/build/release/redis/sbom-redis.spdx.json",
        "--fail-on",
        "high",
        "--only-fixed",
    ]
    assert tools.commands[10][3:] == ["sparse-checkout", "set", "bitnami/redis-sentinel/8.2/debian-12"]
    assert outcome is not None
    assert outcome.digests == {"redis": DIGEST, "redis-sentinel": DIGEST}
    assert outcome.moves["redis.images.sentinel.digest"] == ("", DIGEST)


def test_a_failed_scan_pushes_nothing_and_records_nothing(project: Path) -> None:
    before = (project / "Pulumi.dev.yaml").read_text()
    tools = Tools(fail="grype")
    with pytest.raises(release.ReleaseError, match="grype failed"):
        release.local_release("event-relay", "0.2.0", project, run=tools)
    assert tools.tools() == ["docker", "syft", "grype"]
    assert (project / "Pulumi.dev.yaml").read_text() == before


def test_release_image_refuses_without_a_docker_engine(tmp_path: Path) -> None:
    """A machine without Docker (here: no docker on PATH): the command says so and names the workflow."""
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stacktools.release", "event-relay", "0.2.0", "--project-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_DIR,
        env={"PATH": str(empty)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: no Docker engine answers here (docker: not found): ")
    assert result.stderr.rstrip().endswith(
        "a local release builds with one. Where there is none, run the release workflow "
        "(.github/workflows/release.yml, Actions → release images)"
    )
    assert not (tmp_path / "build").exists()


def test_bin_release_image_is_the_module() -> None:
    script = (PROJECT_DIR / "bin" / "release-image").read_text()
    assert script.rstrip().endswith('exec "$VENV/bin/python" -m stacktools.release "$@"')
    assert subprocess.run(["bash", "-n", str(PROJECT_DIR / "bin" / "release-image")], check=False).returncode == 0
