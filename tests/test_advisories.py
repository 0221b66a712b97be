"""The advisories table (``stacks/advisories.py``) against the stacks' pins, and the CI check built on it: a prod pin
with a known Critical advisory and no exception in force fails; an expired exception fails; a version the table does
not cover fails; today's prod pins pass on their recorded exceptions."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from stacks import advisories
from stacks.config import StackConfig
from stacks.loader import load
from stacks.stackfile import parse_stack_config
from stacktools import ci
from tests.conftest import PROJECT_DIR, stack_config

TODAY = datetime.date(2026, 12, 5)


_DOMAIN = "    externalDomain: id.blinkchamber.com\n"


def prod_text(zitadel_tag: str | None = None, extra: str = "") -> str:
    """Prod's stack file, with ZITADEL's image tag set in its own zitadel section, and ``extra`` appended."""
    text = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    assert text.count(_DOMAIN) == 1
    if zitadel_tag is not None:
        text = text.replace(_DOMAIN, f"{_DOMAIN}    image:\n      tag: {zitadel_tag}\n")
    return text + extra


def prod_with(zitadel_tag: str | None = None, extra: str = "") -> StackConfig:
    return load("prod", *parse_stack_config(prod_text(zitadel_tag, extra)))


def test_todays_prod_pins_pass_on_their_recorded_exceptions() -> None:
    assert advisories.check(stack_config("prod"), TODAY) == []
    # What the exceptions cover: ZITADEL 4.13.0's four Critical advisories; Redis runs a patched build and needs none.
    excepted = {(e.component, e.version): set(e.advisories) for e in advisories.EXCEPTIONS}
    assert excepted == {
        ("zitadel", "4.13.0"): {
            "GHSA-45f2-5q3r-xgg6",
            "GHSA-738m-7888-jfv8",
            "GHSA-pq2q-2c6r-75c4",
            "GHSA-g8gj-gq47-xgf4",
        },
    }
    assert all(e.reason and e.expires > TODAY for e in advisories.EXCEPTIONS)


def test_a_critical_without_an_exception_fails() -> None:
    # ZITADEL 4.14.0 still has the four Critical advisories, and the exceptions name 4.13.0 only: a new pin needs a
    # new decision.
    problems = advisories.check(prod_with("v4.14.0"), TODAY)
    assert problems == [
        f"prod: zitadel.image.tag = v4.14.0: {ghsa} (Critical, fixed in {fixed}) has no recorded exception: "
        "upgrade, or "
        "record one in stacks/advisories.py with its reason and expiry"
        for ghsa, fixed in (
            ("GHSA-45f2-5q3r-xgg6", "4.16.2"),
            ("GHSA-738m-7888-jfv8", "4.16.2"),
            ("GHSA-pq2q-2c6r-75c4", "4.17.1"),
            ("GHSA-g8gj-gq47-xgf4", "4.17.3"),
        )
    ]


def test_an_expired_exception_fails() -> None:
    problems = advisories.check(stack_config("prod"), datetime.date(2027, 2, 1))
    assert len(problems) == 8  # ZITADEL's four, for its image and its login's
    assert problems[0] == (
        "prod: zitadel.image.tag = v4.13.0: the exception for GHSA-45f2-5q3r-xgg6 (Critical, fixed in 4.16.2) expired "
        "on 2027-01-31: upgrade, or decide again and record a new expiry"
    )


_BITNAMI_821 = (
    "  blinkchamber-identity:redis:\n    images:\n"
    "      redis:\n        registry: docker.io\n        repository: bitnamilegacy/redis\n"
    "        tag: 8.2.1-debian-12-r0\n"
    "      sentinel:\n        registry: docker.io\n        repository: bitnamilegacy/redis-sentinel\n"
    "        tag: 8.2.1-debian-12-r0\n"
)


def test_bitnamis_last_redis_fails_prods_check() -> None:
    """Bitnami's frozen 8.2.1 (RediShell, CVSS 10) is no longer excepted: a prod stack back on it fails CI."""
    problems = advisories.check(prod_with(extra=_BITNAMI_821), TODAY)
    assert problems[0] == (
        "prod: redis.images.redis.tag = 8.2.1-debian-12-r0: CVE-2025-49844 (Critical, fixed in 8.2.2) has no recorded "
        "exception: upgrade, or record one in stacks/advisories.py with its reason and expiry"
    )
    assert {p.split(" = ")[0] for p in problems} == {"prod: redis.images.redis.tag", "prod: redis.images.sentinel.tag"}


def test_a_version_the_table_does_not_cover_fails() -> None:
    extra = "  blinkchamber-identity:redis:\n    images:\n      redis:\n        tag: 7.4.6-debian-12-r0\n"
    assert advisories.check(prod_with(extra=extra), TODAY) == [
        "prod: redis.images.redis.tag = 7.4.6-debian-12-r0: stacks/advisories.py does not cover redis 7.4.6 (it covers "
        r"8\.2\.\d+): refresh the table"
    ]


def test_the_patched_redis_has_no_known_advisory() -> None:
    findings = {f.key: f for f in advisories.findings(stack_config("prod"))}
    assert findings["redis.images.redis.tag"].version == "8.2.10"
    assert findings["redis.images.redis.tag"].affecting == ()
    assert findings["redis.images.sentinel.tag"].affecting == ()
    # ... and 8.2.1 has every one of the table's Redis advisories, each fixed after it.
    assert len(next(advisories.findings(prod_with(extra=_BITNAMI_821))).affecting) == 12


def test_dev_is_reported_not_checked() -> None:
    assert advisories.check(stack_config("dev"), datetime.date(2030, 1, 1)) == []


@pytest.mark.parametrize(
    ("version", "affected"),
    [("8.2.1", True), ("8.2.0", True), ("8.2.2", False), ("8.2.10", False), ("8.1.9", False)],
)
def test_affected_is_introduced_up_to_fixed(version: str, affected: bool) -> None:
    (rce,) = [a for a in advisories.REDIS_ADVISORIES if a.id == "CVE-2025-49844"]
    assert rce.affects(version) is affected


def test_every_advisory_has_a_source() -> None:
    for component in advisories.COMPONENTS:
        for advisory in component.advisories:
            assert advisory.source.startswith("https://"), advisory.id
    assert {k for c in advisories.COMPONENTS for k in c.keys} >= {
        "redis.images.redis.tag",
        "redis.images.sentinel.tag",
        "zitadel.image.tag",
        "zitadel.loginImage.tag",
        "events.relay.image.tag",
    }


def test_the_report_names_sources_and_exceptions() -> None:
    text = advisories.render(stack_config("prod"), TODAY)
    assert text.startswith("Advisories for the prod stack (prod), 2026-12-05:\n")
    assert "  redis 8.2.10  (redis.images.redis.tag = 8.2.10-debian-12-r0): no known advisory\n" in text
    assert (
        "    Critical GHSA-g8gj-gq47-xgf4: external-IdP linking before any factor is verified (9.8); fixed in 4.17.3"
        "  [exception until 2027-01-31]\n"
    ) in text
    assert "https://github.com/zitadel/zitadel/security/advisories/GHSA-g8gj-gq47-xgf4" in text
    assert "Exceptions recorded (stacks/advisories.py):\n  zitadel 4.13.0 until 2027-01-31: GHSA-45f2-5q3r-xgg6" in text
    assert "FAIL" not in text


def test_the_cli_prints_every_stack_and_the_ci_command_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "advisories"], cwd=PROJECT_DIR, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Advisories for the dev stack (dev)" in result.stdout
    assert "Advisories for the prod stack (prod)" in result.stdout
    assert ci.main(["advisories"]) == 0


def test_the_ci_command_fails_on_a_broken_prod(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "Pulumi.prod.yaml").write_text(prod_text("v4.14.0"))
    assert ci.main(["--project-dir", str(project), "advisories"]) == 1
    captured = capsys.readouterr()
    assert "prod: zitadel.image.tag = v4.14.0: GHSA-45f2-5q3r-xgg6 (Critical, fixed in 4.16.2)" in captured.err
    assert captured.out == (
        "4 known Critical advisories of prod pins without an exception in force (stacks/advisories.py)\n"
    )
