"""Every pinned component, the advisories known to affect it (with their sources), and the exceptions recorded for
them: ``./bin/stacks advisories [STACK]`` prints it per stack, and CI fails when a prod pin has a known Critical
advisory without an exception in force (``check``; ``python -m stacktools.ci advisories``).

The table is written by hand from the upstream advisories (README, "Supply chain": how to refresh it). A component
version outside the lines the table was written for (``covers``) is reported as unknown, never as clean.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from stacks.config import StackConfig
from stacks.versions import version_key

Severity = Literal["Critical", "High", "Moderate", "Low"]

_REDIS_NOTES: Final = (
    "https://github.com/redis/docs/blob/main/content/operate/oss_and_stack/stack-with-enterprise/release-notes/"
    "redisce/redisos-8.2-release-notes.md"
)
_ZITADEL_ADVISORY: Final = "https://github.com/zitadel/zitadel/security/advisories/"


@dataclass(frozen=True)
class Advisory:
    id: str
    severity: Severity
    summary: str
    #: Affected: ``introduced`` <= version < ``fixed``, on the line the component's table covers.
    introduced: str
    fixed: str
    source: str
    #: What was and was not checked against the source.
    note: str = ""

    def affects(self, version: str) -> bool:
        return version_key(self.introduced) <= version_key(version) < version_key(self.fixed)


@dataclass(frozen=True)
class Component:
    name: str
    #: The config keys that pin it (an image tag or a chart version): each is reported on its own.
    keys: tuple[str, ...]
    #: The versions its advisories were written for (a regular expression on the version).
    covers: str
    advisories: tuple[Advisory, ...] = ()
    #: Context for a reader: what the pin is, why no advisory is listed.
    note: str = ""


@dataclass(frozen=True)
class AdvisoryException:
    """A known advisory a stack may run with until ``expires``, and why."""

    component: str
    #: The exact version it is accepted for: a new pin needs a new decision.
    version: str
    advisories: tuple[str, ...]
    reason: str
    expires: datetime.date


#: An advisory known only by its identifier and fixed release (from the release notes), its vendor page not yet read.
_RESEARCH_ONLY: Final = "known by its identifier and fixed release only; the vendor page not yet read"


def _redis(id_: str, severity: Severity, summary: str, fixed: str, note: str = "") -> Advisory:
    return Advisory(id_, severity, summary, "8.2.0", fixed, _REDIS_NOTES, note)


#: How the ZITADEL rows were checked.
_VENDOR_PAGES: Final = "the vendor page's range and rating, read through a summary of the pages (2026-10-05)"


def _zitadel(id_: str, severity: Severity, summary: str, fixed: str, note: str = _VENDOR_PAGES) -> Advisory:
    return Advisory(
        id_,
        severity,
        summary,
        "4.0.0",
        fixed,
        _ZITADEL_ADVISORY + id_,
        note,
    )


#: Rated from the release notes' "may lead to remote code execution": the advisories' own scores were not read.
_RCE_UNSCORED: Final = "severity rated here from the release notes (remote code execution); its CVSS not read"

REDIS_ADVISORIES: Final = (
    _redis("CVE-2025-49844", "Critical", "Lua use-after-free ('RediShell'): remote code execution, CVSS 10", "8.2.2"),
    _redis("CVE-2025-46817", "High", "Lua integer overflow, potential remote code execution", "8.2.2"),
    _redis("CVE-2025-46818", "Moderate", "a Lua script can run in the context of another user", "8.2.2"),
    _redis("CVE-2025-46819", "Moderate", "Lua out-of-bounds read", "8.2.2"),
    _redis("CVE-2025-62507", "High", "XACKDEL stack overflow, potential remote code execution", "8.2.3"),
    _redis(
        "REDIS-8.2.5-CRLF",
        "Moderate",
        "\\r\\n injected into an error reply changes what a connection reads (no CVE named)",
        "8.2.5",
        "severity rated here; the release notes name no CVE",
    ),
    _redis(
        "CVE-2026-23479",
        "High",
        "use-after-free in the unblock-client flow, remote code execution",
        "8.2.6",
        _RCE_UNSCORED,
    ),
    _redis("CVE-2026-25243", "High", "invalid memory access in RESTORE, remote code execution", "8.2.6", _RCE_UNSCORED),
    _redis("CVE-2026-23631", "High", "Lua use-after-free, remote code execution", "8.2.6", _RCE_UNSCORED),
    _redis(
        "CVE-2026-25588",
        "High",
        "invalid memory access in RESTORE (Time Series module), remote code execution",
        "8.2.6",
        _RCE_UNSCORED + "; the module is not built into this project's images",
    ),
    _redis(
        "CVE-2026-25589",
        "High",
        "invalid memory access in RESTORE (probabilistic module), remote code execution",
        "8.2.6",
        _RCE_UNSCORED + "; the module is not built into this project's images",
    ),
    Advisory(
        "REDIS-8.2.8-STREAM-RESTORE",
        "High",
        "stream RESTORE use-after-free",
        "8.2.0",
        "8.2.8",
        "https://github.com/docker-library/official-images/pull/21922",
        _RESEARCH_ONLY,
    ),
)

ZITADEL_ADVISORIES: Final = (
    _zitadel("GHSA-rxvx-hhpj-q6px", "High", "its details not read here", "4.15.0", _RESEARCH_ONLY),
    _zitadel("GHSA-xqxv-4jc2-x56x", "High", "its details not read here", "4.15.2", _RESEARCH_ONLY),
    _zitadel("GHSA-5wcj-9wj4-j65h", "High", "stored XSS via the default redirect URI in Login V2", "4.15.3"),
    _zitadel("GHSA-vrh8-c9cm-wh8v", "High", "OAuth2 token-exchange privilege escalation", "4.15.3"),
    _zitadel(
        "GHSA-45f2-5q3r-xgg6", "Critical", "passkey enrollment on an identify-only session: account takeover", "4.16.2"
    ),
    _zitadel("GHSA-738m-7888-jfv8", "Critical", "account pre-hijacking via a forged external-IdP callback", "4.16.2"),
    _zitadel(
        "GHSA-pq2q-2c6r-75c4", "Critical", "cross-organization account takeover via enrollment codes (9.6)", "4.17.1"
    ),
    _zitadel("GHSA-3gwm-5wx8-4gm6", "High", "OTP-Email/OTP-SMS return-code bypass in Login V2 (8.1)", "4.17.1"),
    _zitadel("GHSA-72q5-mv5c-vxv4", "High", "MFA enrollment and phone overwrite before the password (8.2)", "4.17.1"),
    _zitadel("GHSA-558c-v5wc-9w4q", "High", "users of deactivated organizations can log in (Login V2)", "4.17.1"),
    _zitadel("GHSA-g8gj-gq47-xgf4", "Critical", "external-IdP linking before any factor is verified (9.8)", "4.17.3"),
    _zitadel("GHSA-jh3m-cr2x-qp88", "High", "forgeable IdP intent tokens (7.7)", "4.17.3"),
    _zitadel("GHSA-4hgj-wm6c-q7p2", "High", "rename any user, admins included (8.2); skip 4.18.0", "4.19.1"),
    _zitadel(
        "GHSA-jh92-5mrj-p2w2",
        "High",
        "predictable session IDs, unsigned session cookies (8.1); the fix needs ZITADEL_SESSION_COOKIE_SECRET",
        "4.19.2",
    ),
    _zitadel("GHSA-x4c7-fpcx-w9q6", "High", "SAML identity-provider confusion (8.7)", "4.19.2"),
)

_FROZEN: Final = (
    "bitnamilegacy: frozen since 2025-08-28, its Debian packages get no updates; no advisory of its own recorded"
)

COMPONENTS: Final = (
    Component("redis", ("redis.images.redis.tag",), r"8\.2\.\d+", REDIS_ADVISORIES),
    Component(
        "redis-sentinel",
        ("redis.images.sentinel.tag",),
        r"8\.2\.\d+",
        REDIS_ADVISORIES,
        "the same redis-server binary in sentinel mode: its advisories listed in full",
    ),
    Component("redis-exporter", ("redis.images.exporter.tag",), r".+", note=_FROZEN),
    Component("kubectl", ("redis.images.kubectl.tag",), r".+", note=_FROZEN),
    Component("os-shell", ("redis.images.osShell.tag",), r".+", note=_FROZEN + "; only the chart's disabled init jobs"),
    Component("redis chart", ("redis.chart.version",), r".+", note="Bitnami's last public chart; it pins Redis 8.2.1"),
    Component("zitadel", ("zitadel.image.tag", "zitadel.loginImage.tag"), r"4\.\d+\.\d+", ZITADEL_ADVISORIES),
    Component("zitadel chart", ("zitadel.chart.version",), r".+", note="9.34.0 installs ZITADEL v4.13.0"),
    Component("postgresql", ("zitadel.postgresImage.tag",), r".+", note=_FROZEN + "; dev's bundled Postgres only"),
    Component("envoy gateway", ("edge.chart.version",), r".+", note="newer 1.9 patches exist; their notes unread"),
    Component(
        "event-relay",
        ("events.relay.image.tag",),
        r".+",
        note="built here: the release pipeline's scan refuses Critical and High with a fix",
    ),
)

#: Exceptions in force. Each names what blocks the upgrade; an expired one fails CI until it is decided again.
EXCEPTIONS: Final = (
    AdvisoryException(
        "zitadel",
        "4.13.0",
        ("GHSA-45f2-5q3r-xgg6", "GHSA-738m-7888-jfv8", "GHSA-pq2q-2c6r-75c4", "GHSA-g8gj-gq47-xgf4"),
        "the fixed releases (4.16.2 and later; all known advisories: 4.19.2) ship with chart 10.x, whose release "
        "the offline chart mirror does not hold: it holds chart 9.34.0 (v4.13.0), packaged from the chart source "
        "that already carries 10.x's template changes (no wait-for-postgres init containers, no CockroachDB, the "
        "DSN option), which the stack handles. Upgrading needs chart 10.x and the release's cmd/defaults.yaml in "
        "the mirror, and ZITADEL_SESSION_COOKIE_SECRET on every Login replica for 4.19.2. Meanwhile the edge "
        "rate-limits the credential endpoints per client address.",
        datetime.date(2027, 1, 31),
    ),
)


def version_of(value: str) -> str:
    """The component version in a tag or chart version (``8.2.1-debian-12-r0`` → ``8.2.1``, ``v4.13.0`` →
    ``4.13.0``); the value itself when it holds none."""
    match = re.search(r"\d+\.\d+\.\d+", value)
    return match.group(0) if match else value


def _config_value(cfg: StackConfig, key: str) -> str:
    node: object = cfg.model_dump(by_alias=True)
    for part in key.split("."):
        assert isinstance(node, Mapping), key
        node = node[part]
    return str(node)


@dataclass(frozen=True)
class Finding:
    component: Component
    key: str
    pinned: str
    version: str
    #: The advisories affecting it, each with the exception in force for it (None: none).
    affecting: tuple[tuple[Advisory, AdvisoryException | None], ...]
    covered: bool


def findings(cfg: StackConfig, exceptions: tuple[AdvisoryException, ...] = EXCEPTIONS) -> Iterator[Finding]:
    for component in COMPONENTS:
        for key in component.keys:
            pinned = _config_value(cfg, key)
            version = version_of(pinned)
            covered = re.fullmatch(component.covers, version) is not None
            affecting = tuple(
                (advisory, _exception_for(component, version, advisory, exceptions))
                for advisory in component.advisories
                if covered and advisory.affects(version)
            )
            yield Finding(component, key, pinned, version, affecting, covered)


def _exception_for(
    component: Component, version: str, advisory: Advisory, exceptions: tuple[AdvisoryException, ...]
) -> AdvisoryException | None:
    for exception in exceptions:
        if (exception.component, exception.version) == (
            component.name,
            version,
        ) and advisory.id in exception.advisories:
            return exception
    return None


def check(cfg: StackConfig, today: datetime.date, exceptions: tuple[AdvisoryException, ...] = EXCEPTIONS) -> list[str]:
    """What a prod stack may not run: a known Critical advisory without an exception in force, or a version the table
    does not cover (it could have any). Empty for a dev stack."""
    if not cfg.is_prod:
        return []
    problems = []
    for finding in findings(cfg, exceptions):
        where = f"{cfg.stack}: {finding.key} = {finding.pinned}"
        if not finding.covered:
            problems.append(
                f"{where}: stacks/advisories.py does not cover {finding.component.name} {finding.version} "
                f"(it covers {finding.component.covers}): refresh the table"
            )
        for advisory, exception in finding.affecting:
            if advisory.severity != "Critical":
                continue
            if exception is None:
                problems.append(
                    f"{where}: {advisory.id} (Critical, fixed in {advisory.fixed}) has no recorded exception: "
                    "upgrade, or record one in stacks/advisories.py with its reason and expiry"
                )
            elif exception.expires < today:
                problems.append(
                    f"{where}: the exception for {advisory.id} (Critical, fixed in {advisory.fixed}) expired on "
                    f"{exception.expires.isoformat()}: upgrade, or decide again and record a new expiry"
                )
    return problems


def render(cfg: StackConfig, today: datetime.date, exceptions: tuple[AdvisoryException, ...] = EXCEPTIONS) -> str:
    """The stack's pins and what is known against each, for a reader."""
    lines = [f"Advisories for the {cfg.stack} stack ({cfg.environment}), {today.isoformat()}:", ""]
    for finding in findings(cfg, exceptions):
        head = f"{finding.component.name} {finding.version}  ({finding.key} = {finding.pinned})"
        if not finding.covered:
            lines.append(f"? {head}: not covered by the table ({finding.component.covers})")
        elif not finding.affecting:
            note = f": {finding.component.note}" if finding.component.note else ""
            lines.append(f"  {head}: no known advisory{note}")
        else:
            worst = min(("Critical", "High", "Moderate", "Low").index(a.severity) for a, _ in finding.affecting)
            lines.append(f"{'!' if worst == 0 else '~'} {head}: {len(finding.affecting)} known advisories")
            for advisory, exception in finding.affecting:
                status = ""
                if exception is not None:
                    expired = " EXPIRED" if exception.expires < today else ""
                    status = f"  [exception until {exception.expires.isoformat()}{expired}]"
                lines.append(
                    f"    {advisory.severity:<8} {advisory.id}: {advisory.summary}; fixed in {advisory.fixed}{status}"
                )
                lines.append(f"             {advisory.source}" + (f" ({advisory.note})" if advisory.note else ""))
    applied = {e: None for f in findings(cfg, exceptions) for _, e in f.affecting if e is not None}
    reasons = list(applied)
    if reasons:
        lines += ["", "Exceptions recorded (stacks/advisories.py):"]
        lines += [
            f"  {e.component} {e.version} until {e.expires.isoformat()}: {', '.join(e.advisories)}\n    {e.reason}"
            for e in reasons
        ]
    problems = check(cfg, today, exceptions)
    lines += ["", *(f"FAIL {problem}" for problem in problems)] if problems else []
    return "\n".join(lines) + "\n"
