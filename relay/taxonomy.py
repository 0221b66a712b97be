"""ZITADEL's event types → the product's taxonomy, priority and payload allow-list.

ZITADEL has no ``auth.login`` event: the table maps its real types (``internal/repository/...`` constants of
v4.13, see the README's taxonomy table) to the product's names, each entry with the rule that decides it. A type in
no entry is ``unclassified`` and goes to the low stream with its raw type. The payload of an entry keeps only the
fields its class allows: no password hash, secret, OTP material, code or token ever leaves the bridge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

HIGH: Final = "high"
NORMAL: Final = "normal"
LOW: Final = "low"
UNCLASSIFIED: Final = "unclassified"

#: Fields each event class may carry into Redis. Everything else in ZITADEL's payload is dropped, and so is any
#: nested object (ZITADEL stores secrets as crypto-value objects), whatever its name.
ALLOWED_FIELDS: Final[dict[str, frozenset[str]]] = {
    "auth": frozenset(
        {"userID", "userResourceOwner", "userAgentID", "sessionID", "clientID", "triggerOrigin", "checkedAt", "reason"}
    ),
    "user": frozenset(
        {
            "userName",
            "oldUserName",
            "firstName",
            "lastName",
            "nickName",
            "displayName",
            "preferredLanguage",
            "gender",
            "email",
            "isEmailVerified",
            "phone",
            "isPhoneVerified",
            "country",
            "locality",
            "postalCode",
            "region",
            "streetAddress",
            "name",
            "description",
            "accessTokenType",
            "key",
        }
    ),
    "org": frozenset({"name", "domain"}),
    "project": frozenset(
        {"name", "projectRoleAssertion", "projectRoleCheck", "hasProjectCheck", "privateLabelingSetting"}
    ),
    "app": frozenset(
        {
            "appId",
            "name",
            "clientId",
            "redirectUris",
            "responseTypes",
            "grantTypes",
            "applicationType",
            "authMethodType",
            "postLogoutRedirectUris",
            "devMode",
            "accessTokenType",
            "accessTokenRoleAssertion",
            "idTokenRoleAssertion",
            "idTokenUserinfoAssertion",
            "clockSkew",
            "additionalOrigins",
            "skipNativeAppSuccessPage",
            "backChannelLogoutURI",
            "loginVersion",
            "metadataUrl",
            "entityId",
            "version",
        }
    ),
    "policy": frozenset(
        {
            # login
            "allowUsernamePassword",
            "allowRegister",
            "allowExternalIdp",
            "forceMFA",
            "forceMFALocalOnly",
            "passwordlessType",
            "hidePasswordReset",
            "ignoreUnknownUsernames",
            "allowDomainDiscovery",
            "disableLoginWithEmail",
            "disableLoginWithPhone",
            "defaultRedirectURI",
            "passwordCheckLifetime",
            "externalLoginCheckLifetime",
            "mfaInitSkipLifetime",
            "secondFactorCheckLifetime",
            "multiFactorCheckLifetime",
            "idpConfigId",
            "idpProviderType",
            "mfaType",
            # password complexity and age, lockout
            "minLength",
            "hasLowercase",
            "hasUppercase",
            "hasNumber",
            "hasSymbol",
            "expireWarnDays",
            "maxAgeDays",
            "maxPasswordAttempts",
            "maxOTPAttempts",
            "showLockOutFailures",
            # privacy, domain, notification
            "tosLink",
            "privacyLink",
            "helpLink",
            "supportEmail",
            "docsLink",
            "customLink",
            "customLinkText",
            "userLoginMustBeDomain",
            "validateOrgDomains",
            "smtpSenderAddressMatchesInstanceDomain",
            "passwordChange",
            # label (branding)
            "primaryColor",
            "backgroundColor",
            "warnColor",
            "fontColor",
            "primaryColorDark",
            "backgroundColorDark",
            "warnColorDark",
            "fontColorDark",
            "hideLoginNameSuffix",
            "errorMsgPopup",
            "disableWatermark",
            "themeMode",
        }
    ),
    "role": frozenset({"key", "displayName", "group", "roleKeys", "projectId", "projectGrantId", "userId", "grantId"}),
    # Unclassified events carry no payload at all: their fields were never reviewed.
    "none": frozenset(),
}


@dataclass(frozen=True)
class Entry:
    """One taxonomy name: the ZITADEL types it stands for and the rule that decides them."""

    name: str
    priority: str
    event_class: str
    rule: str
    types: tuple[str, ...] = ()
    #: For families too large to list (policies): a full-match regular expression over the type.
    pattern: str | None = None


#: The policy kinds of ``internal/repository/policy`` (``policy.password.lockout`` is the old name of ``lockout``).
_POLICY_KINDS = (
    r"(login|password\.complexity|password\.age|password\.lockout|lockout|label|privacy|domain|notification"
    r"|mail\.template|mail\.text)"
)
_POLICY_OWNER = r"(org|instance)\.policy\."

TAXONOMY: Final[tuple[Entry, ...]] = (
    Entry(
        "auth.login",
        HIGH,
        "auth",
        "A credential or second factor was checked successfully (Login V1 and the Session API of Login V2 both "
        "write these on the user). One login can write several: password, then a second factor.",
        (
            "user.human.password.check.succeeded",
            "user.human.externallogin.check.succeeded",
            "user.human.passwordless.token.check.succeeded",
            "user.human.mfa.otp.check.succeeded",
            "user.human.mfa.otp.sms.check.succeeded",
            "user.human.mfa.otp.email.check.succeeded",
            "user.human.mfa.u2f.token.check.succeeded",
            "user.human.mfa.recoverycode.check.succeeded",
            "user.password.check.succeeded",
            "user.mfa.otp.check.succeeded",
        ),
    ),
    Entry(
        "auth.failed",
        HIGH,
        "auth",
        "A credential or factor check failed, or an auth request failed. A wrong username writes no event "
        "(there is no user aggregate to write it on).",
        (
            "user.human.password.check.failed",
            "user.human.passwordless.token.check.failed",
            "user.human.mfa.otp.check.failed",
            "user.human.mfa.otp.sms.check.failed",
            "user.human.mfa.otp.email.check.failed",
            "user.human.mfa.u2f.token.check.failed",
            "user.human.mfa.recoverycode.check.failed",
            "user.human.initialization.check.failed",
            "auth_request.failed",
            "user.password.check.failed",
            "user.mfa.otp.check.failed",
        ),
    ),
    Entry(
        "auth.locked",
        HIGH,
        "auth",
        "The user was locked: the lockout policy's attempt limit was reached, or an administrator locked it.",
        ("user.locked",),
    ),
    Entry(
        "auth.logout",
        HIGH,
        "auth",
        "A user signed out (Login V1), a session was terminated (Session API, aggregate = session), or a token was "
        "revoked. Token expiry writes no event.",
        (
            "user.human.signed.out",
            "user.signed.out",
            "session.terminated",
            "oidc_session.access_token.revoked",
            "oidc_session.refresh_token.revoked",
            "user.token.removed",
            "user.human.refresh.token.removed",
        ),
    ),
    Entry(
        "auth.token_issued",
        HIGH,
        "auth",
        "ZITADEL issued tokens to a client: an OIDC session, an access token, or a completed auth request.",
        ("oidc_session.added", "user.token.added", "user.token.v2.added", "auth_request.succeeded"),
    ),
    Entry(
        "auth.password_changed",
        HIGH,
        "auth",
        "The password was changed (by the user, set by an administrator, or reset). The rehash on login "
        "(user.human.password.hash.updated) is not a change and stays unclassified.",
        ("user.human.password.changed", "user.password.changed"),
    ),
    Entry(
        "auth.mfa_enabled",
        HIGH,
        "auth",
        "A second factor or passkey became usable: its verification, not the start of its enrolment "
        "(user.human.mfa.otp.added stays unclassified).",
        (
            "user.human.mfa.otp.verified",
            "user.human.mfa.otp.sms.added",
            "user.human.mfa.otp.email.added",
            "user.human.mfa.u2f.token.verified",
            "user.human.passwordless.token.verified",
            "user.human.mfa.recoverycode.added",
            "user.mfa.otp.verified",
        ),
    ),
    Entry(
        "auth.mfa_disabled",
        HIGH,
        "auth",
        "A second factor or passkey was removed.",
        (
            "user.human.mfa.otp.removed",
            "user.human.mfa.otp.sms.removed",
            "user.human.mfa.otp.email.removed",
            "user.human.mfa.u2f.token.removed",
            "user.human.passwordless.token.removed",
            "user.human.mfa.recoverycode.removed",
            "user.mfa.otp.removed",
        ),
    ),
    Entry(
        "user.created",
        NORMAL,
        "user",
        "A human (added by an administrator or self-registered) or machine user was created.",
        ("user.human.added", "user.human.selfregistered", "user.machine.added", "user.added", "user.selfregistered"),
    ),
    Entry(
        "user.updated",
        NORMAL,
        "user",
        "A user's profile, contact data, username, state or metadata changed. One API call can write several.",
        (
            "user.human.profile.changed",
            "user.human.email.changed",
            "user.human.email.verified",
            "user.human.phone.changed",
            "user.human.phone.removed",
            "user.human.phone.verified",
            "user.human.address.changed",
            "user.human.avatar.added",
            "user.human.avatar.removed",
            "user.username.changed",
            "user.machine.changed",
            "user.unlocked",
            "user.deactivated",
            "user.reactivated",
            "user.domain.claimed",
            "user.metadata.set",
            "user.metadata.removed",
            "user.metadata.removed.all",
        ),
    ),
    Entry("user.deleted", NORMAL, "user", "The user was removed.", ("user.removed",)),
    Entry("org.created", NORMAL, "org", "An organization was added.", ("org.added",)),
    Entry(
        "org.updated",
        NORMAL,
        "org",
        "An organization was renamed, deactivated or reactivated, or its domains changed.",
        (
            "org.changed",
            "org.deactivated",
            "org.reactivated",
            "org.domain.added",
            "org.domain.verified",
            "org.domain.primary.set",
            "org.domain.removed",
        ),
    ),
    Entry("org.deleted", NORMAL, "org", "The organization was removed.", ("org.removed",)),
    Entry("project.created", NORMAL, "project", "A project was added.", ("project.added",)),
    Entry(
        "project.updated",
        NORMAL,
        "project",
        "A project was changed, deactivated or reactivated.",
        ("project.changed", "project.deactivated", "project.reactivated"),
    ),
    Entry("project.deleted", NORMAL, "project", "The project was removed.", ("project.removed",)),
    Entry(
        "app.created",
        NORMAL,
        "app",
        "An application was added to a project (aggregate = project; the app is payload.appId).",
        ("project.application.added",),
    ),
    Entry(
        "app.updated",
        NORMAL,
        "app",
        "An application's settings or state changed, including the OIDC/API/SAML configuration written right after "
        "it was added and a regenerated client secret (whose value never passes the allow-list).",
        (
            "project.application.changed",
            "project.application.deactivated",
            "project.application.reactivated",
            "project.application.config.oidc.added",
            "project.application.config.api.added",
            "project.application.config.saml.added",
            "project.application.config.oidc.changed",
            "project.application.config.api.changed",
            "project.application.config.saml.changed",
            "project.application.config.oidc.secret.changed",
            "project.application.config.api.secret.changed",
        ),
    ),
    Entry("app.deleted", NORMAL, "app", "The application was removed.", ("project.application.removed",)),
    Entry(
        "policy.created",
        NORMAL,
        "policy",
        "An organization set its own policy of a kind (org.policy.<kind>.added), or the instance default was first "
        "written (instance.policy.<kind>.added).",
        pattern=_POLICY_OWNER + _POLICY_KINDS + r"\.added",
    ),
    Entry(
        "policy.updated",
        NORMAL,
        "policy",
        "A policy changed: <kind>.changed, the login policy's identity providers and factors, or a label policy "
        "activated.",
        pattern=_POLICY_OWNER
        + r"("
        + _POLICY_KINDS
        + r"\.changed|login\.(idpprovider\.(added|removed|cascade\.removed)|second\.factor\.(added|removed)"
        + r"|multi\.factor\.(added|removed))|label\.activated)",
    ),
    Entry(
        "policy.deleted",
        NORMAL,
        "policy",
        "An organization's own policy was removed (it falls back to the instance default).",
        pattern=_POLICY_OWNER + _POLICY_KINDS + r"\.removed",
    ),
    Entry("role.created", NORMAL, "role", "A project role was added.", ("project.role.added",)),
    Entry("role.updated", NORMAL, "role", "A project role was changed.", ("project.role.changed",)),
    Entry("role.deleted", NORMAL, "role", "A project role was removed.", ("project.role.removed",)),
    Entry("role.assigned", NORMAL, "role", "A user was granted roles of a project.", ("user.grant.added",)),
    Entry(
        "role.assignment_changed",
        NORMAL,
        "role",
        "A user's grant changed roles, or was deactivated or reactivated.",
        ("user.grant.changed", "user.grant.deactivated", "user.grant.reactivated"),
    ),
    Entry(
        "role.unassigned",
        NORMAL,
        "role",
        "A user's grant was removed, directly or because its project or user went away.",
        ("user.grant.removed", "user.grant.cascade.removed"),
    ),
)


@dataclass(frozen=True)
class Classification:
    name: str
    priority: str
    event_class: str


_UNCLASSIFIED: Final = Classification(UNCLASSIFIED, LOW, "none")
_BY_TYPE: Final[dict[str, Classification]] = {}
for _entry in TAXONOMY:
    for _type in _entry.types:
        if _type in _BY_TYPE:
            raise ValueError(f"{_type} is in two taxonomy entries")
        _BY_TYPE[_type] = Classification(_entry.name, _entry.priority, _entry.event_class)
_PATTERNS: Final = tuple(
    (re.compile(e.pattern), Classification(e.name, e.priority, e.event_class)) for e in TAXONOMY if e.pattern
)


def classify(event_type: str) -> Classification:
    """The taxonomy entry of a ZITADEL event type; unknown types are ``unclassified`` and low."""
    found = _BY_TYPE.get(event_type)
    if found is not None:
        return found
    for pattern, classification in _PATTERNS:
        if pattern.fullmatch(event_type):
            return classification
    return _UNCLASSIFIED


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def filter_payload(event_class: str, payload: Any) -> dict[str, Any]:
    """The allow-listed fields of ``payload``: scalars and lists of scalars only."""
    if not isinstance(payload, dict):
        return {}
    allowed = ALLOWED_FIELDS[event_class]
    kept: dict[str, Any] = {}
    for key, value in payload.items():
        if key not in allowed:
            continue
        if _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value)):
            kept[key] = value
    return kept
