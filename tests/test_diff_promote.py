"""``diff`` between stacks and revisions, and ``promote`` on temporary copies of the stack files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.config import StackConfig
from stacks.loader import load
from stacks.stackfile import read_stack_config
from stacks.versions import version_key
from stacktools import mocked
from stacktools.diff import diff_plans
from stacktools.plan import Plan, describe, plan_stack
from stacktools.promote import TRAIN, Promotion, PromotionError, promote, train_of, unpinned
from tests.conftest import PROJECT_DIR, stack_config

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
    assert out.startswith("Comparing dev → prod\n\n")
    # What promoting changes, as README's configuration table sets it apart per stack.
    for line in (
        '~ inputs.values.replica.podAntiAffinityPreset: "soft" → "hard"',
        "+min-replicas-to-write 1",
        "~ inputs.values.zitadel.configmapConfig.ExternalSecure: false → true",
        "~ inputs.values.replicaCount: 1 → 2",
        '~ inputs.address: "http://vault.vault.svc.cluster.local:8200" → "https://vault.blinkchamber.internal:8200"',
        "  - random:index/randomPassword:RandomPassword::postgres-admin-password",  # prod has no bundled Postgres
        "  - vault:index/authBackend:AuthBackend::kubernetes",  # and uses the existing auth backend
        # Each stack's Kubernetes provider has its own cluster identity: from one to the other is a replacement.
        "  +/- pulumi:providers:kubernetes::kubernetes\n"
        '      ~ inputs.clusterIdentifier: "dev" → "prod" (forces replacement)',
    ):
        assert line in out, line
    masterkey = out.split("~ random:index/randomPassword:RandomPassword::zitadel-masterkey\n", 1)[1]
    assert masterkey.startswith("      ~ protect: false → true\n")
    # zitadelUrl, and redisDbLayout: dev keeps the login-state caches on Redis (DBs 6, 7), prod on Postgres.
    # Prod adds what dev leaves off (observability's Prometheus objects).
    summary = r"\nPlan: \d+ to add, [1-9]\d* to change, 1 to replace, [1-9]\d* to delete, 2 outputs changed\.\n$"
    assert re.search(summary, out)


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
    # ZITADEL's circuit breaker follows the Sentinel timings: 3 s + election 1 s + relabel 2 s + 2 s.
    breaker = "inputs.values.zitadel.configmapConfig.Caches.Connectors.Redis.CircuitBreaker.Timeout"
    assert f'~ {breaker}: "10s" → "8s"' in result.stdout
    assert "Plan: 0 to add, 2 to change, 0 to delete." in result.stdout
    worktrees = subprocess.run(
        ["git", "-C", str(git_project), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert len(worktrees.strip().splitlines()) == 1  # the temporary worktree is gone


def test_a_stack_new_in_the_change_is_all_additions(git_project: Path) -> None:
    (git_project / "Pulumi.staging.yaml").write_text(
        "config:\n  blinkchamber-identity:environment: dev\n  blinkchamber-identity:vault:\n    namePrefix: staging\n"
    )
    result = cli("diff", "--base", "HEAD", "staging", cwd=git_project)
    assert result.returncode == 1, result.stderr
    added = len(plan_stack("staging", git_project).resources)
    assert f"Plan: {added} to add, 0 to change, 0 to delete" in result.stdout
    assert "  + kubernetes:helm.sh/v3:Release::redis" in result.stdout


def test_diff_usage_errors() -> None:
    assert cli("diff", "dev").returncode == 2
    assert "exactly one stack" in cli("diff", "--base", "HEAD", "dev", "prod").stderr


# --- a moved resource: replaced, unless an alias names its old URN ------------------------------------------------

#: Two components and a password; ``{password}`` declares the password.
_MOVES_PROGRAM = """
import pulumi
import pulumi_random as random

class Box(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("test:index:Box", name, None, opts)

class Crate(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("test:index:Crate", name, None, opts)

box = Box("box")
crate = Crate("crate")
{password}
"""
IN_THE_BOX = 'random.RandomPassword("pw", length=8, opts=pulumi.ResourceOptions(parent=box))'
MOVED = 'random.RandomPassword("pw", length=8{opts})'


def moves_plan(tmp_path: Path, password: str) -> Plan:
    """The plan of ``_MOVES_PROGRAM`` with ``password`` (a run under the same mocks as the stack's)."""
    program = tmp_path / "__main__.py"
    program.write_text(_MOVES_PROGRAM.format(password=password))
    config, secret_keys = read_stack_config(PROJECT_DIR / "Pulumi.dev.yaml")
    return describe(mocked.run_program("dev", config, secret_keys, program=program))


def moved(opts: str = "") -> str:
    return MOVED.format(opts=f", opts=pulumi.ResourceOptions({opts})" if opts else "")


def test_a_resource_moved_out_of_its_component_is_replaced(tmp_path: Path) -> None:
    result = diff_plans(moves_plan(tmp_path, IN_THE_BOX), moves_plan(tmp_path, moved()))
    # Its URN no longer has the component's type: the engine finds no old resource, a new password replaces it.
    assert result.render() == (
        "Comparing dev → dev\n"
        "\n"
        "  +/- random:index/randomPassword:RandomPassword::pw\n"
        '      ~ parent: "test:index:Box::box" → "" (forces replacement)\n'
        "\n"
        "Plan: 0 to add, 0 to change, 1 to replace, 0 to delete.\n"
    )


@pytest.mark.parametrize(
    "alias",
    [
        pytest.param("pulumi.Alias(parent=box)", id="parent"),
        # The form the program uses for the bundled Postgres's passwords.
        pytest.param('pulumi.Alias(parent=pulumi.create_urn("box", "test:index:Box"))', id="parent-urn"),
        pytest.param(
            '"urn:pulumi:dev::blinkchamber-identity::test:index:Box$random:index/randomPassword:RandomPassword::pw"',
            id="urn",
        ),
    ],
)
def test_an_alias_of_its_old_urn_keeps_a_moved_resource(tmp_path: Path, alias: str) -> None:
    new = moves_plan(tmp_path, moved(f"aliases=[{alias}]"))
    assert new.resources["random:index/randomPassword:RandomPassword::pw"]["aliases"] == [
        "urn:pulumi:dev::blinkchamber-identity::test:index:Box$random:index/randomPassword:RandomPassword::pw"
    ]
    result = diff_plans(moves_plan(tmp_path, IN_THE_BOX), new)
    assert result.render() == (
        "Comparing dev → dev\n"
        "\n"
        "  ~ random:index/randomPassword:RandomPassword::pw\n"
        '      ~ parent: "test:index:Box::box" → "" (moved, and an alias names its old URN: the same resource, '
        "not replaced)\n"
        "\n"
        "Plan: 0 to add, 1 to change, 0 to delete.\n"
    )


def test_an_alias_of_another_parent_does_not_keep_it(tmp_path: Path) -> None:
    new = moves_plan(tmp_path, moved("aliases=[pulumi.Alias(parent=crate)]"))
    assert new.resources["random:index/randomPassword:RandomPassword::pw"]["aliases"] == [
        "urn:pulumi:dev::blinkchamber-identity::test:index:Crate$random:index/randomPassword:RandomPassword::pw"
    ]
    result = diff_plans(moves_plan(tmp_path, IN_THE_BOX), new)
    assert [(c.action, c.key, c.lines) for c in result.changes] == [
        (
            "+/-",
            "random:index/randomPassword:RandomPassword::pw",
            ['~ parent: "test:index:Box::box" → "" (forces replacement)'],
        )
    ]
    assert result.summary() == "Plan: 0 to add, 0 to change, 1 to replace, 0 to delete."


#: The password stays in its box; the box moves out of the crate.
_BOX_IN_THE_CRATE = 'box = Box("box", pulumi.ResourceOptions(parent=crate))\n' + IN_THE_BOX
_BOX_OUT = 'box = Box("box"{opts})\n' + IN_THE_BOX


def test_a_child_moves_with_its_parent_and_the_parents_alias(tmp_path: Path) -> None:
    old = moves_plan(tmp_path, _BOX_IN_THE_CRATE)
    dev = "urn:pulumi:dev::blinkchamber-identity::"
    # The engine's URNs: the whole chain of parent types (the mocks' keep only the last).
    pw_urn = dev + "test:index:Crate$test:index:Box$random:index/randomPassword:RandomPassword::pw"
    pw_now = dev + "test:index:Box$random:index/randomPassword:RandomPassword::pw"
    new = moves_plan(tmp_path, _BOX_OUT.format(opts=", pulumi.ResourceOptions(aliases=[pulumi.Alias(parent=crate)])"))
    assert new.resources["test:index:Box::box"]["aliases"] == [dev + "test:index:Crate$test:index:Box::box"]
    assert "aliases" not in new.resources["random:index/randomPassword:RandomPassword::pw"]  # inherited, not its own
    kept = diff_plans(old, new)
    assert kept.render() == (
        "Comparing dev → dev\n"
        "\n"
        "  ~ random:index/randomPassword:RandomPassword::pw\n"
        f'      ~ urn: "{pw_urn}" → "{pw_now}" (its parent moved under an alias, which keeps it the same resource: '
        "not replaced)\n"
        "  ~ test:index:Box::box\n"
        '      ~ parent: "test:index:Crate::crate" → "" (moved, and an alias names its old URN: the same resource, '
        "not replaced)\n"
        "\n"
        "Plan: 0 to add, 2 to change, 0 to delete.\n"
    )
    replaced = diff_plans(old, moves_plan(tmp_path, _BOX_OUT.format(opts="")))
    assert [(c.action, c.key) for c in replaced.changes] == [
        ("+/-", "random:index/randomPassword:RandomPassword::pw"),
        ("+/-", "test:index:Box::box"),
    ]
    assert replaced.changes[0].lines == [f'~ urn: "{pw_urn}" → "{pw_now}" (forces replacement)']


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


#: The release train both stacks run today (README: "A release is its train"): the project's own Redis and Sentinel
#: 8.2.10, Bitnami's frozen other images, ZITADEL's and the relay's by tag; no digest anywhere yet (neither the relay
#: nor the Redis images have a release).
TRAIN_TODAY = {
    "redis.chart.version": "23.1.1",
    "redis.images.redis.registry": "ghcr.io",
    "redis.images.redis.repository": "blinkchamber/redis",
    "redis.images.redis.tag": "8.2.10-debian-12-r0",
    "redis.images.redis.digest": "",
    "redis.images.sentinel.registry": "ghcr.io",
    "redis.images.sentinel.repository": "blinkchamber/redis-sentinel",
    "redis.images.sentinel.tag": "8.2.10-debian-12-r0",
    "redis.images.sentinel.digest": "",
    "redis.images.exporter.registry": "docker.io",
    "redis.images.exporter.repository": "bitnamilegacy/redis-exporter",
    "redis.images.exporter.tag": "1.76.0-debian-12-r0",
    "redis.images.exporter.digest": "",
    "redis.images.kubectl.registry": "docker.io",
    "redis.images.kubectl.repository": "bitnamilegacy/kubectl",
    "redis.images.kubectl.tag": "1.33.4-debian-12-r0",
    "redis.images.kubectl.digest": "",
    "redis.images.osShell.registry": "docker.io",
    "redis.images.osShell.repository": "bitnamilegacy/os-shell",
    "redis.images.osShell.tag": "12-debian-12-r51",
    "redis.images.osShell.digest": "",
    "zitadel.chart.version": "9.34.0",
    "zitadel.image.registry": "ghcr.io",
    "zitadel.image.repository": "zitadel/zitadel",
    "zitadel.image.tag": "v4.13.0",
    "zitadel.image.digest": "",
    "zitadel.loginImage.registry": "ghcr.io",
    "zitadel.loginImage.repository": "zitadel/zitadel-login",
    "zitadel.loginImage.tag": "v4.13.0",
    "zitadel.loginImage.digest": "",
    "zitadel.postgresImage.registry": "docker.io",
    "zitadel.postgresImage.repository": "bitnamilegacy/postgresql",
    "zitadel.postgresImage.tag": "17.6.0",
    "zitadel.postgresImage.digest": "",
    "events.relay.image.registry": "ghcr.io",
    "events.relay.image.repository": "blinkchamber/event-relay",
    "events.relay.image.tag": "0.1.0",
    "events.relay.image.digest": "",
    "edge.chart.version": "v1.9.0",
}
#: What `pulumi up` of prod refuses today, in the loader's words (stack: key: rule): each image the project builds.
RELAY_REFUSED = (
    "prod: events.relay.image.digest: prod deploys the images this project builds by digest "
    "(ghcr.io/blinkchamber/event-relay@sha256:…), and ghcr.io/blinkchamber/event-relay:0.1.0 has none: release it "
    "(./bin/release-image event-relay 0.1.0, or the release workflow), which writes its digest into dev's release "
    "train, then promote dev to prod"
)
REDIS_REFUSED = [
    f"prod: redis.images.{key}.digest: prod deploys the images this project builds by digest "
    f"(ghcr.io/blinkchamber/{name}@sha256:…), and ghcr.io/blinkchamber/{name}:8.2.10-debian-12-r0 has none: release it "
    "(./bin/release-image redis 8.2.10-debian-12-r0, or the release workflow), which writes its digest into dev's "
    "release train, then promote dev to prod"
    for key, name in (("redis", "redis"), ("sentinel", "redis-sentinel"))
]
PROD_REFUSED = [RELAY_REFUSED, *REDIS_REFUSED]


def leaf_paths(tree: Any, path: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [p for key, value in tree.items() for p in leaf_paths(value, f"{path}.{key}" if path else key)]
    return [path]


def test_the_train_is_every_version_a_stack_pins() -> None:
    for stack in ("dev", "prod"):
        cfg = stack_config(stack)
        assert train_of(cfg) == TRAIN_TODAY
        # Found independently of TRAIN: every chart version, and every field of each image, in the typed config.
        dumped = cfg.model_dump(by_alias=True)
        tags = [p for p in leaf_paths(dumped) if p.endswith(".tag")]
        pinned = [p for p in leaf_paths(dumped) if p.endswith(".chart.version")]
        pinned += [
            f"{tag[: -len('.tag')]}.{field}" for tag in tags for field in ("registry", "repository", "tag", "digest")
        ]
        assert sorted(pinned) == sorted(TRAIN)


def test_unpinned_names_each_loose_entry() -> None:
    loose = {**TRAIN_TODAY, "redis.chart.version": "23.x", "zitadel.image.tag": "latest"}
    assert unpinned(loose) == ["redis.chart.version = '23.x'", "zitadel.image.tag = 'latest'"]
    # A version needs an exact version; a tag only needs to name one build.
    assert unpinned({"zitadel.chart.version": "9", "redis.images.osShell.tag": "12"}) == ["zitadel.chart.version = '9'"]
    assert unpinned(TRAIN_TODAY) == []


def test_promotion_reads_like_the_readme(tmp_path: Path) -> None:
    nothing = Promotion("dev", "prod")
    assert not nothing.changed
    assert nothing.render() == "prod already runs dev's release train: nothing to promote.\n"
    moves = {"zitadel.chart.version": ("9.34.0", "9.35.0"), "zitadel.image.tag": ("v4.13.0", "v4.14.0")}
    dry = Promotion("dev", "prod", moves=moves)
    assert dry.changed
    assert dry.render() == (
        "Promoting dev's release train to prod:\n"
        "  ~ zitadel.chart.version: 9.34.0 → 9.35.0\n"
        "  ~ zitadel.image.tag: v4.13.0 → v4.14.0\n"
        "\n"
        "Dry run: nothing written.\n"
    )
    plan = plan_stack("dev")
    written = Promotion("dev", "prod", moves=moves, plan_diff=diff_plans(plan, plan, "prod (now)", "prod (promoted)"))
    written.written = tmp_path / "Pulumi.prod.yaml"
    assert written.render() == (
        "Promoting dev's release train to prod:\n"
        "  ~ zitadel.chart.version: 9.34.0 → 9.35.0\n"
        "  ~ zitadel.image.tag: v4.13.0 → v4.14.0\n"
        "\n"
        "Comparing prod (now) → prod (promoted)\n"
        "\n"
        "No changes.\n"
        "\n"
        "Plan: 0 to add, 0 to change, 0 to delete.\n"
        "\n"
        f"Wrote {tmp_path / 'Pulumi.prod.yaml'}.\n"
    )


#: A stack file as people write one: comments, quotes, lists (of provider settings too), a long line, any order.
HAND_WRITTEN_QA = """# qa: a dev-like stack, hand-written.
config:
  blinkchamber-identity:environment: dev
  blinkchamber-identity:zitadel:
    externalDomain: "qa.blinkchamber.com"  # the public name
    replicas: 2
  blinkchamber-identity:vault:
    address: 'http://vault.vault.svc.cluster.local:8200'
    namePrefix: qa
    audience: 'the audience that the pod tokens of the identity tier carry when they log in to the QA Vault of the tier'
  vault:headers:
    - name: X-Team
      value: identity
  blinkchamber-identity:redis:
    clientNamespaces:
      - relay
      - audit
  kubernetes:context: qa
"""


def test_promotion_edits_only_the_train_in_place(project: Path) -> None:
    (project / "Pulumi.qa.yaml").write_text(HAND_WRITTEN_QA)
    bump_dev(project, "  blinkchamber-identity:redis:\n    chart:\n      version: 23.1.2\n" + NEXT_ZITADEL)
    outcome = promote("dev", "qa", project)
    assert outcome.written == project / "Pulumi.qa.yaml"
    assert list(outcome.moves) == ["redis.chart.version", "zitadel.chart.version", "zitadel.image.tag"]
    # The train lands at the end of its section, and nothing else moves.
    assert (project / "Pulumi.qa.yaml").read_text() == (
        "# qa: a dev-like stack, hand-written.\n"
        "config:\n"
        "  blinkchamber-identity:environment: dev\n"
        "  blinkchamber-identity:zitadel:\n"
        '    externalDomain: "qa.blinkchamber.com"  # the public name\n'
        "    replicas: 2\n"
        "    chart:\n"
        "      version: 9.35.0\n"
        "    image:\n"
        "      tag: v4.14.0\n"
        "  blinkchamber-identity:vault:\n"
        "    address: 'http://vault.vault.svc.cluster.local:8200'\n"
        "    namePrefix: qa\n"
        "    audience: 'the audience that the pod tokens of the identity tier carry when they log in to the QA Vault"
        " of the tier'\n"
        "  vault:headers:\n"
        "    - name: X-Team\n"
        "      value: identity\n"
        "  blinkchamber-identity:redis:\n"
        "    clientNamespaces:\n"
        "      - relay\n"
        "      - audit\n"
        "    chart:\n"
        "      version: 23.1.2\n"
        "  kubernetes:context: qa\n"
    )


def test_promotion_creates_a_missing_section(project: Path) -> None:
    (project / "Pulumi.qa.yaml").write_text(HAND_WRITTEN_QA)
    bump_dev(project, "  blinkchamber-identity:redis:\n    images:\n      osShell:\n        tag: 12-debian-12-r52\n")
    (project / "Pulumi.qa.yaml").write_text(
        HAND_WRITTEN_QA.replace(
            "  blinkchamber-identity:redis:\n    clientNamespaces:\n      - relay\n      - audit\n", ""
        )
    )
    promote("dev", "qa", project)
    text = (project / "Pulumi.qa.yaml").read_text()
    assert text.endswith(
        "  kubernetes:context: qa\n"
        "  blinkchamber-identity:redis:\n    images:\n      osShell:\n        tag: 12-debian-12-r52\n"
    )
    assert stack_config_of(project, "qa").redis.images.os_shell.tag == "12-debian-12-r52"


def stack_config_of(project: Path, stack: str) -> StackConfig:
    return load(stack, *read_stack_config(project / f"Pulumi.{stack}.yaml"))


def test_equal_versions_do_not_move_and_a_newer_one_is_no_downgrade(project: Path) -> None:
    assert not promote("dev", "prod", project).changed
    bump_dev(project, "  blinkchamber-identity:redis:\n    chart:\n      version: 23.1.1\n")
    assert promote("dev", "prod", project, dry_run=True).moves == {}
    (project / "Pulumi.dev.yaml").write_text(
        (project / "Pulumi.dev.yaml").read_text().replace("version: 23.1.1", "version: 23.2.0")
    )
    outcome = promote("dev", "prod", project, dry_run=True)
    assert outcome.moves == {"redis.chart.version": ("23.1.1", "23.2.0")}
    assert outcome.written is None
    assert outcome.plan_diff is not None and outcome.plan_diff.counts == (0, 1, 0)


def test_refusals_name_every_reason(project: Path) -> None:
    bump_dev(
        project,
        "  blinkchamber-identity:redis:\n    chart:\n      version: 23.0.9\n"
        "  blinkchamber-identity:zitadel:\n    image:\n      tag: v4.12.9\n",
    )
    with pytest.raises(PromotionError) as info:
        promote("dev", "prod", project)
    assert str(info.value) == (
        "prod would go backwards (use --allow-downgrade): "
        "redis.chart.version: 23.1.1 → 23.0.9; zitadel.image.tag: v4.13.0 → v4.12.9"
    )
    bump_dev(project, "  blinkchamber-identity:events:\n    db: 5\n")
    with pytest.raises(PromotionError) as info:
        promote("dev", "prod", project)
    assert str(info.value).startswith(
        "refusing to promote from an invalid stack:\nstack 'dev' has 1 configuration error:\n  dev: events.db: "
    )


def test_promotion_into_an_empty_stack_file(project: Path) -> None:
    # Promotion runs either way: here prod's newer train goes back to a dev whose stack file is empty.
    (project / "Pulumi.dev.yaml").write_text("")
    prod = (project / "Pulumi.prod.yaml").read_text()
    section = "  blinkchamber-identity:zitadel:\n"
    (project / "Pulumi.prod.yaml").write_text(prod.replace(section, section + "    chart:\n      version: 9.35.0\n"))
    outcome = promote("prod", "dev", project)
    assert outcome.moves == {"zitadel.chart.version": ("9.34.0", "9.35.0")}
    assert (project / "Pulumi.dev.yaml").read_text() == (
        "config:\n  blinkchamber-identity:zitadel:\n    chart:\n      version: 9.35.0\n"
    )


def test_an_unpinned_train_names_every_loose_version(project: Path) -> None:
    bump_dev(
        project,
        "  blinkchamber-identity:redis:\n    chart:\n      version: 23.x\n"
        "  blinkchamber-identity:zitadel:\n    loginImage:\n      tag: latest\n",
    )
    with pytest.raises(PromotionError) as info:
        promote("dev", "prod", project)
    assert str(info.value) == (
        "dev's release train is not fully pinned: redis.chart.version = '23.x', zitadel.loginImage.tag = 'latest'"
    )


def test_a_target_with_secrets_is_promoted(project: Path) -> None:
    # The target's secret keys stay secrets: its dsnFromConfig DSN is a `secure:` value.
    prod = (
        (project / "Pulumi.prod.yaml")
        .read_text()
        .replace(
            "    ingress:\n", "    database:\n      dsnFromConfig: true\n      dsnVaultSecret: null\n    ingress:\n", 1
        )
    )
    (project / "Pulumi.prod.yaml").write_text(prod + "  blinkchamber-identity:postgresDsn:\n    secure: v1:AAAA\n")
    bump_dev(project, NEXT_ZITADEL)
    assert promote("dev", "prod", project, dry_run=True).moves == {
        "zitadel.chart.version": ("9.34.0", "9.35.0"),
        "zitadel.image.tag": ("v4.13.0", "v4.14.0"),
    }


def test_nothing_to_promote_still_says_what_pulumi_up_refuses(project: Path) -> None:
    """Today dev's train is prod's: no move, but no release of the images the project builds either."""
    promotion = promote("dev", "prod", project, dry_run=True)
    assert promotion.moves == {} and promotion.blockers == PROD_REFUSED
    assert promotion.render() == (
        "prod already runs dev's release train: nothing to promote.\n\n"
        "prod cannot be deployed yet (pulumi up refuses):\n"
        f"  {RELAY_REFUSED}\n  {REDIS_REFUSED[0]}\n  {REDIS_REFUSED[1]}\n"
    )


def test_the_promotion_report_names_both_stacks_and_the_plan_change(project: Path) -> None:
    bump_dev(project, NEXT_ZITADEL)
    report = promote("dev", "prod", project, dry_run=True).render()
    assert report.startswith("Promoting dev's release train to prod:\n  ~ zitadel.chart.version: 9.34.0 → 9.35.0\n")
    assert "\n\nComparing prod (now) → prod (promoted)\n\n  ~ kubernetes:helm.sh/v3:Release::zitadel\n" in report
    # Prod's relay and Redis images still have no released digest: the promotion says what `pulumi up` will refuse.
    assert report.endswith(
        "\nPlan: 0 to add, 1 to change, 0 to delete.\n\n"
        "prod cannot be deployed yet (pulumi up refuses):\n"
        f"  {RELAY_REFUSED}\n  {REDIS_REFUSED[0]}\n  {REDIS_REFUSED[1]}\n\nDry run: nothing written.\n"
    )


def test_a_respelled_version_is_no_downgrade(project: Path) -> None:
    bump_dev(project, "  blinkchamber-identity:zitadel:\n    image:\n      tag: 4.13.0\n")
    assert promote("dev", "prod", project, dry_run=True).moves == {"zitadel.image.tag": ("v4.13.0", "4.13.0")}


def test_refuses_a_promotion_the_target_would_read_differently(project: Path) -> None:
    # Quoted in dev, "13:20" is a string; written plainly, a YAML 1.1 reader (the stack tooling's) sees the number 800.
    bump_dev(project, "  blinkchamber-identity:redis:\n    images:\n      osShell:\n        tag: '13:20'\n")
    before = (project / "Pulumi.prod.yaml").read_text()
    with pytest.raises(PromotionError) as info:
        promote("dev", "prod", project)
    assert str(info.value).startswith(
        "the promoted prod stack would be invalid:\nstack 'prod' has 1 configuration error"
    )
    assert "prod: redis.images.osShell.tag: " in str(info.value)
    assert (project / "Pulumi.prod.yaml").read_text() == before


def test_the_promotion_plans_the_target_project(project: Path) -> None:
    # Both plans come from the project being promoted (its own program), not from this checkout.
    with (project / "__main__.py").open("a") as f:
        f.write('pulumi.export("checkout", "copy")\n')
    bump_dev(project, NEXT_ZITADEL)
    outcome = promote("dev", "prod", project, dry_run=True)
    assert outcome.plan_diff is not None
    assert [change.key for change in outcome.plan_diff.changes] == ["kubernetes:helm.sh/v3:Release::zitadel"]
